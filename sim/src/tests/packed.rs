//! Packed-ring device tests (VIRTIO 1.2 §2.8), driven by [`MockPacked`].

use virtio_blk_mq::spec::{blk_status, packed_event, req_type, PackedDescFlags};
use virtio_blk_mq::{DeviceStatus, Features, Transport};

use super::{driver_ok, negotiate, MockPacked, Req};
use crate::{CompletionOrder, DiskKind, SimConfig};

fn packed() -> Features {
    Features::VERSION_1 | Features::RING_PACKED | Features::BLK_FLUSH
}

fn ram(capacity_sectors: u64) -> SimConfig {
    SimConfig {
        capacity_sectors,
        disk: DiskKind::Ram,
        ..SimConfig::default()
    }
}

#[test]
fn packed_write_then_read_round_trips_through_ram_disk() {
    let (dev, mut t) = negotiate(ram(64), packed());
    let mut q = MockPacked::new(&mut t, 0, 8, packed());
    driver_ok(&mut t);
    let w = Req::new(req_type::OUT, 5, 512);
    w.set_data(&[0xc3; 512]);
    let r = Req::new(req_type::IN, 5, 512);
    let wid = q.add(&w.segs());
    let rid = q.add(&r.segs());
    assert!(q.publish(), "device event flags start ENABLE");
    assert_eq!(dev.step(0), 2);
    // Used descriptors land on the first slot of each chain (in order), 3 slots apart.
    assert_eq!(q.used(), vec![(0, wid, 1), (3, rid, 513)]);
    assert_eq!(r.data(), vec![0xc3; 512]);
    assert_eq!(w.status(), blk_status::OK);
    let flags = PackedDescFlags::from_bits_retain(u16::from_le(
        q.desc(3).flags.load(core::sync::atomic::Ordering::Relaxed),
    ));
    assert!(flags.contains(PackedDescFlags::AVAIL | PackedDescFlags::USED | PackedDescFlags::WRITE));
    assert_eq!(dev.stats(0).kicks, 1);
    assert_eq!(dev.stats(0).used_notifications, 1);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_wrap_around_with_queue_size_3() {
    let f = packed() | Features::INDIRECT_DESC;
    let (dev, mut t) = negotiate(ram(64), f);
    let mut q = MockPacked::new(&mut t, 0, 3, f);
    driver_ok(&mut t);
    // Alternate 3-descriptor chains, 2-descriptor flushes and 1-descriptor
    // indirect reads, so chains start and end at every offset and cross the
    // end of the ring with the wrap counters flipping.
    for round in 0..20u64 {
        let sector = round % 60;
        dev.write_disk(sector, &[round as u8; 512]);
        let r = Req::new(req_type::IN, sector, 512);
        let id = match round % 3 {
            0 => q.add(&r.segs()),
            1 => q.add_indirect(&r.segs()),
            _ => {
                let f = Req::new(req_type::FLUSH, 0, 0);
                let fid = q.add(&f.segs());
                q.publish();
                assert_eq!(dev.step(0), 1);
                let used = q.used();
                assert_eq!(used.len(), 1);
                assert_eq!(used[0].1, fid);
                assert_eq!(f.status(), blk_status::OK);
                q.add_indirect(&r.segs())
            }
        };
        q.publish();
        assert_eq!(dev.step(0), 1, "round {round}");
        let used = q.used();
        assert_eq!(used.len(), 1, "round {round}");
        assert_eq!((used[0].1, used[0].2), (id, 513), "round {round}");
        assert_eq!(r.data(), vec![round as u8; 512], "round {round}");
    }
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_shuffled_writes_used_descriptors_at_the_next_used_slot() {
    let config = SimConfig {
        order: CompletionOrder::Shuffled { seed: 3 },
        ..SimConfig::default()
    };
    let (dev, mut t) = negotiate(config, packed());
    let mut q = MockPacked::new(&mut t, 0, 7, packed());
    driver_ok(&mut t);
    // Chains of 2 (flush) and 3 (read) descriptors: 2 + 3 + 2 = 7 slots.
    let a = Req::new(req_type::FLUSH, 0, 0);
    let b = Req::new(req_type::IN, 0, 512);
    let c = Req::new(req_type::FLUSH, 0, 0);
    let ids = [q.add(&a.segs()), q.add(&b.segs()), q.add(&c.segs())];
    let lens = [2u16, 3, 2];
    q.publish();
    let mut order = Vec::new();
    let mut slots = Vec::new();
    while order.len() < 3 {
        dev.step(0);
        for (slot, id, _) in q.used() {
            order.push(id);
            slots.push(slot);
        }
    }
    assert_ne!(order, ids.to_vec(), "seed 3 completes out of order");
    // Each used descriptor sits where the previous one's chain length ends.
    let mut expect = 0u16;
    for (k, id) in order.iter().enumerate() {
        assert_eq!(slots[k], expect);
        let i = ids.iter().position(|x| x == id).expect("known id");
        expect = (expect + lens[i]) % 7;
    }
    // The ring is consistent afterwards: the next chain (crossing the end) works.
    let d = Req::new(req_type::IN, 0, 512);
    let did = q.add(&d.segs());
    q.publish();
    assert_eq!(dev.drain(0), 1);
    assert_eq!(q.used(), vec![(0, did, 513)]);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn packed_event_idx_uses_desc_events_both_ways() {
    let f = packed() | Features::EVENT_IDX;
    let (dev, mut t) = negotiate(SimConfig::default(), f);
    let mut q = MockPacked::new(&mut t, 0, 4, f);
    driver_ok(&mut t);
    // Setup asked for a kick at position 0, wrap 1.
    assert_eq!(
        q.device_event(),
        (packed_event::DESC, packed_event::WRAP_BIT)
    );

    // Driver wants a notification only when slot 2 (wrap 1) is used.
    q.set_driver_event(packed_event::DESC, 2 | packed_event::WRAP_BIT);
    let a = Req::new(req_type::FLUSH, 0, 0); // slots 0-1
    q.add(&a.segs());
    assert!(q.publish());
    dev.step(0);
    assert_eq!(
        dev.stats(0).used_notifications,
        0,
        "used range [0, 2) misses slot 2"
    );
    assert_eq!(
        q.device_event(),
        (packed_event::DESC, 2 | packed_event::WRAP_BIT)
    );
    q.used();

    let b = Req::new(req_type::FLUSH, 0, 0); // slots 2-3, then the device wraps
    q.add(&b.segs());
    assert!(q.publish());
    dev.step(0);
    assert_eq!(
        dev.stats(0).used_notifications,
        1,
        "used range [2, 4) covers slot 2"
    );
    assert_eq!(
        q.device_event(),
        (packed_event::DESC, 0),
        "next kick at slot 0, wrap 0"
    );
    q.used();

    // An event in the previous lap does not fire; one in this lap across the wrap does.
    q.set_driver_event(packed_event::DESC, 1 | packed_event::WRAP_BIT);
    let c = Req::new(req_type::FLUSH, 0, 0);
    q.add(&c.segs());
    q.publish();
    dev.step(0);
    assert_eq!(dev.stats(0).used_notifications, 1);
    q.used();

    // DISABLE silences, ENABLE always notifies.
    q.set_driver_event(packed_event::DISABLE, 0);
    let d = Req::new(req_type::FLUSH, 0, 0);
    q.add(&d.segs());
    q.publish();
    dev.step(0);
    assert_eq!(dev.stats(0).used_notifications, 1);
    q.used();
    q.set_driver_event(packed_event::ENABLE, 0);
    let e = Req::new(req_type::FLUSH, 0, 0);
    q.add(&e.segs());
    q.publish();
    dev.step(0);
    assert_eq!(dev.stats(0).used_notifications, 2);
    assert_eq!(dev.stats(0).kicks, 5);
}

#[test]
fn packed_without_event_idx_enables_kicks_with_enable_flags() {
    let (dev, mut t) = negotiate(SimConfig::default(), packed());
    let mut q = MockPacked::new(&mut t, 0, 4, packed());
    driver_ok(&mut t);
    let a = Req::new(req_type::FLUSH, 0, 0);
    q.add(&a.segs());
    assert!(q.publish());
    dev.step(0);
    assert_eq!(q.device_event().0, packed_event::ENABLE);
}

#[test]
fn packed_chain_with_unavailable_tail_stops_the_queue() {
    let (dev, mut t) = negotiate(SimConfig::default(), packed());
    let mut q = MockPacked::new(&mut t, 0, 4, packed());
    driver_ok(&mut t);
    let a = Req::new(req_type::FLUSH, 0, 0);
    q.add(&a.segs());
    // Corrupt the second descriptor's avail bit.
    q.desc(1)
        .flags
        .store(0, core::sync::atomic::Ordering::Relaxed);
    q.publish();
    assert_eq!(dev.step(0), 0);
    assert!(t.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert_eq!(dev.violations().len(), 1, "{:?}", dev.violations());
}

#[test]
fn packed_indirect_table_with_next_flag_is_a_violation() {
    let f = packed() | Features::INDIRECT_DESC;
    let (dev, mut t) = negotiate(SimConfig::default(), f);
    let mut q = MockPacked::new(&mut t, 0, 4, f);
    driver_ok(&mut t);
    let a = Req::new(req_type::FLUSH, 0, 0);
    let id = q.add_indirect(&a.segs());
    // Set NEXT inside the table: only WRITE is allowed there (§2.8.7).
    let entry: &virtio_blk_mq::spec::PackedDesc = q.tables[&id].at(0);
    entry.flags.store(
        PackedDescFlags::NEXT.bits().to_le(),
        core::sync::atomic::Ordering::Relaxed,
    );
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used()[0].1, id);
    assert_eq!(a.status(), blk_status::IOERR);
    assert_eq!(dev.violations().len(), 1, "{:?}", dev.violations());
}
