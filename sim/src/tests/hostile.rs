//! Hostile acts (VIRTIO 1.2 §2.7.8, §2.8): each lands in ring memory exactly
//! as documented, read back the way a driver reads it.

use core::sync::atomic::Ordering;

use virtio_blk_mq::spec::{blk_status, req_type, PackedDescFlags, UsedElem};
use virtio_blk_mq::Features;

use super::{driver_ok, negotiate, MockPacked, MockSplit, Req};
use crate::{DiskKind, Hostile, SimConfig, SimDevice, ThreadMode};

/// Status byte the mock driver pre-fills: still there means never written.
const UNWRITTEN: u8 = 0xff;

fn split() -> Features {
    Features::VERSION_1 | Features::BLK_FLUSH | Features::INDIRECT_DESC
}

fn packed() -> Features {
    split() | Features::RING_PACKED
}

fn ram() -> SimConfig {
    SimConfig {
        capacity_sectors: 64,
        disk: DiskKind::Ram,
        ..SimConfig::default()
    }
}

fn split_queue(config: SimConfig, size: u16) -> (SimDevice, MockSplit) {
    let (dev, mut t) = negotiate(config, split());
    let q = MockSplit::new(&mut t, 0, size, split());
    driver_ok(&mut t);
    (dev, q)
}

fn packed_queue(config: SimConfig, size: u16) -> (SimDevice, MockPacked) {
    let (dev, mut t) = negotiate(config, packed());
    let q = MockPacked::new(&mut t, 0, size, packed());
    driver_ok(&mut t);
    (dev, q)
}

/// `used.idx`, loaded as a driver does (Acquire, rule 3).
fn used_idx(q: &MockSplit) -> u16 {
    u16::from_le(q.used_word(1).load(Ordering::Acquire))
}

/// `used.ring[i]` as `(id, len)`.
fn used_elem(q: &MockSplit, i: u16) -> (u32, u32) {
    let slot = usize::from(i % q.layout.size);
    let e: &UsedElem = q.ring.at(q.layout.used + 4 + 8 * slot);
    (
        u32::from_le(e.id.load(Ordering::Relaxed)),
        u32::from_le(e.len.load(Ordering::Relaxed)),
    )
}

/// Descriptor `slot` as `(flags, id, len)`, flags loaded first (Acquire).
fn slot(q: &MockPacked, slot: u16) -> (PackedDescFlags, u16, u32) {
    let d = q.desc(slot);
    let flags = PackedDescFlags::from_bits_retain(u16::from_le(d.flags.load(Ordering::Acquire)));
    (
        flags,
        u16::from_le(d.id.load(Ordering::Relaxed)),
        u32::from_le(d.len.load(Ordering::Relaxed)),
    )
}

const USED_WRAP_1: PackedDescFlags = PackedDescFlags::AVAIL.union(PackedDescFlags::USED);

fn flush() -> Req {
    Req::new(req_type::FLUSH, 0, 0)
}

#[test]
fn split_used_id_out_of_range_names_the_queue_size_and_stops_the_queue() {
    let (dev, mut q) = split_queue(SimConfig::default(), 4);
    let a = flush();
    q.add(&a.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::UsedIdOutOfRange).unwrap();
    assert_eq!(dev.step(0), 0);
    assert_eq!(used_idx(&q), 1);
    assert_eq!(used_elem(&q, 0), (4, 0));
    assert_eq!(a.status(), UNWRITTEN, "the pending request is never served");
    assert_eq!(dev.hostile_log(), vec![(0, Hostile::UsedIdOutOfRange)]);
    // Stopped: a later request is neither taken nor completed.
    let b = flush();
    q.add(&b.segs());
    q.publish();
    assert_eq!(dev.step(0) + dev.drain(0), 0);
    assert_eq!(used_idx(&q), 1);
    assert_eq!(b.status(), UNWRITTEN);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_used_id_out_of_range_names_the_queue_size_and_stops_the_queue() {
    let (dev, mut q) = packed_queue(SimConfig::default(), 4);
    let a = flush();
    q.add(&a.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::UsedIdOutOfRange).unwrap();
    assert_eq!(dev.step(0), 0);
    assert_eq!(slot(&q, 0), (USED_WRAP_1, 4, 0));
    assert_eq!(a.status(), UNWRITTEN);
    let b = flush();
    q.add(&b.segs());
    q.publish();
    assert_eq!(dev.drain(0), 0);
    assert_eq!(
        slot(&q, 2).0,
        PackedDescFlags::AVAIL | PackedDescFlags::NEXT,
        "b's head is as the driver wrote it"
    );
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn split_used_id_not_in_flight_avoids_pending_and_recent_ids() {
    let (dev, mut q) = split_queue(SimConfig::default(), 8);
    let a = flush();
    assert_eq!(q.add(&a.segs()), 0);
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used(), vec![(0, 1)]);
    // The mock's free list hands out descriptor 1 first now: b = 1 -> 0.
    let b = flush();
    assert_eq!(q.add(&b.segs()), 1);
    q.publish();
    dev.inject_hostile(0, Hostile::UsedIdNotInFlight).unwrap();
    assert_eq!(dev.step(0), 0);
    assert_eq!(used_idx(&q), 2);
    // 0 was completed recently (the driver may not have seen it), 1 is pending.
    assert_eq!(used_elem(&q, 1), (2, 0));
    assert_eq!(b.status(), UNWRITTEN);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_used_id_not_in_flight_avoids_pending_and_recent_ids() {
    let (dev, mut q) = packed_queue(SimConfig::default(), 8);
    let a = flush();
    assert_eq!(q.add(&a.segs()), 0);
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used(), vec![(0, 0, 1)]);
    let b = flush();
    assert_eq!(q.add(&b.segs()), 0, "the mock reuses id 0");
    q.publish();
    dev.inject_hostile(0, Hostile::UsedIdNotInFlight).unwrap();
    assert_eq!(dev.step(0), 0);
    // Written at the next used slot (2, wrap 1) with honest flags and id 1.
    assert_eq!(slot(&q, 2), (USED_WRAP_1, 1, 0));
    assert_eq!(b.status(), UNWRITTEN);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn split_used_id_not_in_flight_waits_while_every_id_is_taken() {
    let (dev, mut q) = split_queue(SimConfig::default(), 2);
    let (a, b) = (flush(), flush());
    q.add_indirect(&a.segs());
    q.add_indirect(&b.segs());
    q.publish();
    dev.stall(0, true);
    assert_eq!(dev.step(0), 0, "both taken, held by the stall");
    dev.stall(0, false);
    dev.inject_hostile(0, Hostile::UsedIdNotInFlight).unwrap();
    // Ids 0 and 1 are pending: the act waits while the queue serves honestly.
    assert_eq!(dev.step(0), 2);
    assert!(dev.hostile_log().is_empty());
    assert_eq!(q.used(), vec![(0, 1), (1, 1)]);
    assert_eq!((a.status(), b.status()), (blk_status::OK, blk_status::OK));
}

#[test]
fn split_repeat_used_id_completes_once_then_publishes_the_id_again() {
    let (dev, mut q) = split_queue(SimConfig::default(), 8);
    let (a, b) = (flush(), flush());
    let h = q.add(&a.segs());
    q.add(&b.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::RepeatUsedId).unwrap();
    assert_eq!(dev.step(0), 1);
    assert_eq!(used_idx(&q), 2);
    assert_eq!(used_elem(&q, 0), (u32::from(h), 1));
    assert_eq!(used_elem(&q, 1), (u32::from(h), 1));
    assert_eq!(a.status(), blk_status::OK);
    assert_eq!(b.status(), UNWRITTEN, "the queue stopped after the lie");
    assert_eq!(dev.stats(0).completed, 1);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_repeat_used_id_writes_the_id_at_the_next_used_slot_too() {
    let (dev, mut q) = packed_queue(SimConfig::default(), 8);
    let (a, b) = (flush(), flush());
    let id = q.add(&a.segs());
    q.add(&b.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::RepeatUsedId).unwrap();
    assert_eq!(dev.step(0), 1);
    let used = USED_WRAP_1 | PackedDescFlags::WRITE;
    assert_eq!(slot(&q, 0), (used, id, 1));
    // a's chain is 2 slots: the second copy lands on b's head.
    assert_eq!(slot(&q, 2), (used, id, 1));
    assert_eq!(a.status(), blk_status::OK);
    assert_eq!(b.status(), UNWRITTEN);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn split_used_len_too_long_adds_4096_and_keeps_serving() {
    let (dev, mut q) = split_queue(ram(), 8);
    dev.write_disk(2, &[0x5a; 512]);
    let (r1, r2) = (
        Req::new(req_type::IN, 2, 512),
        Req::new(req_type::IN, 2, 512),
    );
    let h1 = q.add(&r1.segs());
    let h2 = q.add(&r2.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::UsedLenTooLong).unwrap();
    assert_eq!(dev.step(0), 2);
    assert_eq!(
        q.used(),
        vec![(u32::from(h1), 513 + 4096), (u32::from(h2), 513)]
    );
    assert_eq!(r1.data(), vec![0x5a; 512], "the request was really served");
    assert_eq!((r1.status(), r2.status()), (blk_status::OK, blk_status::OK));
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_used_len_too_long_adds_4096_and_keeps_serving() {
    let (dev, mut q) = packed_queue(ram(), 8);
    let (r1, r2) = (
        Req::new(req_type::IN, 0, 512),
        Req::new(req_type::IN, 0, 512),
    );
    let id1 = q.add(&r1.segs());
    let id2 = q.add(&r2.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::UsedLenTooLong).unwrap();
    assert_eq!(dev.step(0), 2);
    let used = USED_WRAP_1 | PackedDescFlags::WRITE;
    assert_eq!(slot(&q, 0), (used, id1, 513 + 4096));
    assert_eq!(slot(&q, 3), (used, id2, 513));
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn used_len_too_long_waits_for_a_pending_request() {
    let (dev, mut q) = split_queue(SimConfig::default(), 4);
    dev.inject_hostile(0, Hostile::UsedLenTooLong).unwrap();
    assert_eq!(dev.step(0), 0);
    assert!(dev.hostile_log().is_empty());
    let a = flush();
    let h = q.add(&a.segs());
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used(), vec![(u32::from(h), 1 + 4096)]);
    assert_eq!(dev.hostile_log(), vec![(0, Hostile::UsedLenTooLong)]);
}

#[test]
fn split_garbage_status_writes_the_given_bytes_in_order() {
    let (dev, mut q) = split_queue(SimConfig::default(), 8);
    let reqs = [flush(), flush(), flush()];
    let heads: Vec<u16> = reqs.iter().map(|r| q.add(&r.segs())).collect();
    q.publish();
    dev.inject_hostile(0, Hostile::GarbageStatus(7)).unwrap();
    dev.inject_hostile(0, Hostile::GarbageStatus(0x80)).unwrap();
    assert_eq!(dev.step(0), 3);
    let statuses: Vec<u8> = reqs.iter().map(Req::status).collect();
    assert_eq!(statuses, vec![7, 0x80, blk_status::OK]);
    let lens: Vec<(u32, u32)> = heads.iter().map(|&h| (u32::from(h), 1)).collect();
    assert_eq!(q.used(), lens, "used lengths stay honest");
    assert_eq!(dev.hostile_log().len(), 2);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_garbage_status_writes_the_given_byte() {
    let (dev, mut q) = packed_queue(SimConfig::default(), 8);
    let (a, b) = (flush(), flush());
    let ida = q.add(&a.segs());
    q.add(&b.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::GarbageStatus(0x80)).unwrap();
    assert_eq!(dev.step(0), 2);
    assert_eq!((a.status(), b.status()), (0x80, blk_status::OK));
    assert_eq!(slot(&q, 0), (USED_WRAP_1 | PackedDescFlags::WRITE, ida, 1));
}

#[test]
fn split_status_not_written_leaves_the_prefill_and_counts_data_only() {
    let (dev, mut q) = split_queue(ram(), 8);
    dev.write_disk(1, &[0x11; 512]);
    let (r1, r2) = (
        Req::new(req_type::IN, 1, 512),
        Req::new(req_type::IN, 1, 512),
    );
    let h1 = q.add(&r1.segs());
    let h2 = q.add(&r2.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::StatusNotWritten).unwrap();
    assert_eq!(dev.step(0), 2);
    assert_eq!(q.used(), vec![(u32::from(h1), 512), (u32::from(h2), 513)]);
    assert_eq!(r1.status(), UNWRITTEN);
    assert_eq!(r1.data(), vec![0x11; 512]);
    assert_eq!(r2.status(), blk_status::OK);
}

#[test]
fn packed_status_not_written_leaves_the_prefill() {
    let (dev, mut q) = packed_queue(SimConfig::default(), 4);
    let a = flush();
    let id = q.add(&a.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::StatusNotWritten).unwrap();
    assert_eq!(dev.step(0), 1);
    // Nothing written: used length 0, so no WRITE flag either.
    assert_eq!(slot(&q, 0), (USED_WRAP_1, id, 0));
    assert_eq!(a.status(), UNWRITTEN);
}

#[test]
fn split_used_index_jump_moves_used_idx_past_the_queue_size() {
    let (dev, mut q) = split_queue(SimConfig::default(), 4);
    let a = flush();
    q.add(&a.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::UsedIndexJump).unwrap();
    assert_eq!(dev.step(0), 0);
    assert_eq!(used_idx(&q), 5, "queue size + 1 past 0");
    assert_eq!(used_elem(&q, 0), (0, 0), "no element was written");
    assert_eq!(a.status(), UNWRITTEN);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_wrong_wrap_marks_both_bits_with_the_inverted_counter() {
    // Lap 1 (wrap 1): AVAIL = USED = 0.
    let (dev, mut q) = packed_queue(SimConfig::default(), 4);
    let a = flush();
    let id = q.add(&a.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::WrongWrap).unwrap();
    assert_eq!(dev.step(0), 1);
    assert_eq!(slot(&q, 0), (PackedDescFlags::WRITE, id, 1));
    assert_eq!(a.status(), blk_status::OK, "served, just not handed back");
    assert!(q.used().is_empty(), "a driver sees nothing used");

    // Lap 2 (wrap 0): AVAIL = USED = 1.
    let (dev, mut q) = packed_queue(SimConfig::default(), 2);
    let a = flush();
    q.add(&a.segs());
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used().len(), 1);
    let b = flush();
    let id = q.add(&b.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::WrongWrap).unwrap();
    assert_eq!(dev.step(0), 1);
    assert_eq!(slot(&q, 0), (USED_WRAP_1 | PackedDescFlags::WRITE, id, 1));
    assert!(q.used().is_empty());
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_garbage_used_flags_pair_avail_not_wrap_with_used_wrap() {
    let (dev, mut q) = packed_queue(SimConfig::default(), 4);
    let a = flush();
    let id = q.add(&a.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::GarbageUsedFlags).unwrap();
    assert_eq!(dev.step(0), 1);
    let (flags, got_id, len) = slot(&q, 0);
    assert_eq!((got_id, len), (id, 1));
    assert_eq!(
        flags & USED_WRAP_1,
        PackedDescFlags::USED,
        "wrap 1: AVAIL 0, USED 1"
    );
    assert!(
        !(flags - USED_WRAP_1).is_empty(),
        "other bits set: {flags:?}"
    );
    assert!(q.used().is_empty());
    // Nothing else is served after it.
    let b = flush();
    q.add(&b.segs());
    q.publish();
    assert_eq!(dev.drain(0), 0);
    assert_eq!(b.status(), UNWRITTEN);
}

/// What `RandomUsed { seed }` writes on a fresh split ring: `(used.idx, id, len)`.
fn split_random(seed: u64) -> (u16, u32, u32) {
    let (dev, q) = split_queue(SimConfig::default(), 4);
    dev.inject_hostile(0, Hostile::RandomUsed { seed }).unwrap();
    assert_eq!(dev.step(0), 0);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
    let (id, len) = used_elem(&q, 0);
    (used_idx(&q), id, len)
}

/// What `RandomUsed { seed }` writes on a fresh packed ring at slot 0.
fn packed_random(seed: u64) -> (PackedDescFlags, u16, u32) {
    let (dev, q) = packed_queue(SimConfig::default(), 4);
    dev.inject_hostile(0, Hostile::RandomUsed { seed }).unwrap();
    assert_eq!(dev.step(0), 0);
    slot(&q, 0)
}

#[test]
fn random_used_writes_the_same_values_for_the_same_seed() {
    let a = split_random(42);
    assert_eq!(a.0, 1, "one element published");
    assert_eq!(split_random(42), a);
    assert_ne!(split_random(43), a);
    assert_ne!((a.1, a.2), (0, 0));

    let p = packed_random(42);
    assert_eq!(packed_random(42), p);
    assert_ne!(packed_random(43), p);
    assert_ne!(p, (PackedDescFlags::empty(), 0, 0));
}

#[test]
fn acts_that_do_not_fit_the_queue_are_refused() {
    let (dev, mut t) = negotiate(SimConfig::default(), split());
    let err = dev
        .inject_hostile(0, Hostile::GarbageStatus(7))
        .unwrap_err();
    assert!(err.contains("not enabled"), "{err}");
    let _q = MockSplit::new(&mut t, 0, 4, split());
    for act in [Hostile::WrongWrap, Hostile::GarbageUsedFlags] {
        let err = dev.inject_hostile(0, act).unwrap_err();
        assert!(err.contains("split"), "{err}");
    }
    let err = dev
        .inject_hostile(1, Hostile::UsedIdOutOfRange)
        .unwrap_err();
    assert!(err.contains("no queue 1"), "{err}");

    let (dev, mut t) = negotiate(SimConfig::default(), packed());
    let _q = MockPacked::new(&mut t, 0, 4, packed());
    let err = dev.inject_hostile(0, Hostile::UsedIndexJump).unwrap_err();
    assert!(err.contains("packed"), "{err}");
    assert_eq!(dev.inject_hostile(0, Hostile::WrongWrap), Ok(()));
    assert!(dev.hostile_log().is_empty());
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn device_threads_perform_acts() {
    let (dev, mut q) = packed_queue(SimConfig::default(), 4);
    let threads = dev.spawn(ThreadMode::Sleep);
    dev.inject_hostile(0, Hostile::GarbageStatus(9)).unwrap();
    let a = flush();
    let id = q.add(&a.segs());
    q.publish();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut used = Vec::new();
    while used.is_empty() {
        assert!(std::time::Instant::now() < deadline, "never completed");
        std::thread::sleep(std::time::Duration::from_millis(1));
        used = q.used();
    }
    threads.stop();
    assert_eq!(used, vec![(0, id, 1)]);
    assert_eq!(a.status(), 9);
    assert_eq!(dev.hostile_log(), vec![(0, Hostile::GarbageStatus(9))]);
}

#[test]
fn hostile_classification_matches_the_documentation() {
    use virtio_blk_mq::RingKind;
    let all = [
        Hostile::UsedIdOutOfRange,
        Hostile::UsedIdNotInFlight,
        Hostile::RepeatUsedId,
        Hostile::UsedLenTooLong,
        Hostile::GarbageStatus(7),
        Hostile::StatusNotWritten,
        Hostile::UsedIndexJump,
        Hostile::WrongWrap,
        Hostile::GarbageUsedFlags,
        Hostile::RandomUsed { seed: 1 },
    ];
    let keeps: Vec<_> = all.iter().filter(|a| !a.stops_queue()).collect();
    assert_eq!(
        keeps,
        [
            &Hostile::UsedLenTooLong,
            &Hostile::GarbageStatus(7),
            &Hostile::StatusNotWritten
        ]
    );
    let split_only: Vec<_> = all
        .iter()
        .filter(|a| !a.applies_to(RingKind::Packed))
        .collect();
    assert_eq!(split_only, [&Hostile::UsedIndexJump]);
    let packed_only: Vec<_> = all
        .iter()
        .filter(|a| !a.applies_to(RingKind::Split))
        .collect();
    assert_eq!(
        packed_only,
        [&Hostile::WrongWrap, &Hostile::GarbageUsedFlags]
    );
}
