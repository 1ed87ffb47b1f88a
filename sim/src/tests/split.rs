//! Split-ring device tests (VIRTIO 1.2 §2.7), driven by [`MockSplit`].

use virtio_blk_mq::spec::{blk_status, req_type};
use virtio_blk_mq::{DeviceStatus, Features, Transport};

use super::{driver_ok, negotiate, MockSplit, Req};
use crate::{CompletionOrder, DiskKind, Injection, SimConfig};

fn base() -> Features {
    Features::VERSION_1 | Features::BLK_FLUSH
}

fn ram(capacity_sectors: u64) -> SimConfig {
    SimConfig {
        capacity_sectors,
        disk: DiskKind::Ram,
        ..SimConfig::default()
    }
}

#[test]
fn split_write_then_read_round_trips_through_ram_disk() {
    let (dev, mut t) = negotiate(ram(64), base());
    let mut q = MockSplit::new(&mut t, 0, 8, base());
    driver_ok(&mut t);

    let w = Req::new(req_type::OUT, 3, 1024);
    let pattern: Vec<u8> = (0..1024).map(|i| (i * 7 % 251) as u8).collect();
    w.set_data(&pattern);
    let r = Req::new(req_type::IN, 3, 1024);
    let wh = q.add(&w.segs());
    let rh = q.add(&r.segs());
    assert!(q.publish(), "a fresh ring asks for a kick");
    assert_eq!(dev.step(0), 2);

    // In order: the write's head first; used length = bytes written by the device.
    assert_eq!(
        q.used(),
        vec![(u32::from(wh), 1), (u32::from(rh), 1024 + 1)]
    );
    assert_eq!(w.status(), blk_status::OK);
    assert_eq!(r.status(), blk_status::OK);
    assert_eq!(r.data(), pattern);
    let mut disk = vec![0u8; 1024];
    dev.read_disk(3, &mut disk);
    assert_eq!(disk, pattern);
    assert_eq!(dev.stats(0).completed, 2);
    assert_eq!(dev.stats(0).kicks, 1);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn split_null_disk_read_copies_nothing_but_reports_length() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let mut q = MockSplit::new(&mut t, 0, 4, base());
    driver_ok(&mut t);
    let r = Req::new(req_type::IN, 0, 512);
    r.set_data(&[0xaa; 512]);
    let h = q.add(&r.segs());
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used(), vec![(u32::from(h), 513)]);
    assert_eq!(r.status(), blk_status::OK);
    assert_eq!(r.data(), vec![0xaa; 512]);
}

#[test]
fn split_nothing_happens_before_driver_ok() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let mut q = MockSplit::new(&mut t, 0, 4, base());
    let r = Req::new(req_type::FLUSH, 0, 0);
    q.add(&r.segs());
    q.publish();
    assert_eq!(dev.step(0), 0);
    driver_ok(&mut t);
    assert_eq!(dev.step(0), 1);
}

#[test]
fn split_event_idx_sets_avail_event_and_used_event_gates_notifications() {
    let f = base() | Features::EVENT_IDX;
    let (dev, mut t) = negotiate(SimConfig::default(), f);
    let mut q = MockSplit::new(&mut t, 0, 8, f);
    driver_ok(&mut t);
    let notified = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let n2 = notified.clone();
    dev.set_used_notify_callback(
        0,
        Box::new(move || {
            n2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }),
    );
    let reqs: Vec<Req> = (0..6).map(|_| Req::new(req_type::FLUSH, 0, 0)).collect();

    // Batch 1 (indices 0, 1): used_event 0 is in [0, 2): notify.
    q.add(&reqs[0].segs());
    q.add(&reqs[1].segs());
    assert!(q.publish());
    assert_eq!(dev.step(0), 2);
    assert_eq!(
        q.avail_event(),
        2,
        "the device wants a kick for the next index"
    );
    assert_eq!(
        q.used_flags(),
        0,
        "flags must be 0 with EVENT_IDX (§2.7.10)"
    );
    assert_eq!(dev.stats(0).used_notifications, 1);
    q.used();

    // Batch 2 (indices 2, 3) with used_event 5: no notification.
    q.set_used_event(5);
    q.add(&reqs[2].segs());
    q.add(&reqs[3].segs());
    assert!(q.publish(), "avail_event 2 is in the published window");
    assert_eq!(dev.step(0), 2);
    assert_eq!(dev.stats(0).used_notifications, 1);

    // Batch 3 (indices 4, 5) passes used_event 5: notify.
    q.add(&reqs[4].segs());
    q.add(&reqs[5].segs());
    q.publish();
    assert_eq!(dev.step(0), 2);
    let s = dev.stats(0);
    assert_eq!((s.kicks, s.used_notifications, s.completed), (3, 2, 6));
    assert_eq!(notified.load(std::sync::atomic::Ordering::SeqCst), 2);

    // avail_event 6 asks for this kick; used_event 100 is not reached: no notification.
    let extra = Req::new(req_type::FLUSH, 0, 0);
    q.used();
    q.set_used_event(100);
    q.add(&extra.segs());
    assert!(q.publish());
    dev.step(0);
    assert_eq!(dev.stats(0).used_notifications, 2);
}

#[test]
fn split_no_interrupt_flag_suppresses_notifications_without_event_idx() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let mut q = MockSplit::new(&mut t, 0, 4, base());
    driver_ok(&mut t);
    let a = Req::new(req_type::FLUSH, 0, 0);
    let b = Req::new(req_type::FLUSH, 0, 0);
    q.set_no_interrupt(true);
    q.add(&a.segs());
    q.publish();
    dev.step(0);
    assert_eq!(dev.stats(0).used_notifications, 0);
    q.used();
    q.set_no_interrupt(false);
    q.add(&b.segs());
    q.publish();
    dev.step(0);
    assert_eq!(dev.stats(0).used_notifications, 1);
    assert_eq!(q.used_flags(), 0, "inline steps leave kicks enabled");
}

#[test]
fn split_indices_wrap_past_u16_with_event_idx() {
    let f = base() | Features::EVENT_IDX;
    let (dev, mut t) = negotiate(SimConfig::default(), f);
    let mut q = MockSplit::new(&mut t, 0, 8, f);
    driver_ok(&mut t);
    let reqs: Vec<Req> = (0..3).map(|_| Req::new(req_type::FLUSH, 0, 0)).collect();
    let rounds = 70_000u32 / 3;
    for _ in 0..rounds {
        for r in &reqs {
            q.add(&r.segs());
        }
        // Ask to be notified for the last entry of the batch.
        q.set_used_event(q.avail_idx.wrapping_sub(1));
        assert!(q.publish(), "every batch passes avail_event");
        assert_eq!(dev.step(0), 3);
        assert_eq!(q.used().len(), 3);
    }
    let s = dev.stats(0);
    assert_eq!(s.kicks, u64::from(rounds));
    assert_eq!(s.used_notifications, u64::from(rounds));
    assert!(dev.violations().is_empty());
}

#[test]
fn split_polling_device_with_event_idx_is_never_kicked_across_u16_wrap() {
    // A polling device keeps avail_event behind what it consumed and moves
    // it only now and then: no batch of any size may cross it, whichever
    // side of the u16 wrap the indices are on.
    let f = base() | Features::EVENT_IDX;
    // A FLUSH takes two descriptors: a batch of size / 2 fills the ring.
    for (size, batch) in [(8u16, 4usize), (8, 3), (256, 128), (1024, 512), (1024, 7)] {
        let config = SimConfig {
            max_queue_size: size,
            ..SimConfig::default()
        };
        let (dev, mut t) = negotiate(config, f);
        let mut q = MockSplit::new(&mut t, 0, size, f);
        driver_ok(&mut t);
        // The device's first round turns kicks off.
        assert_eq!(dev.poll_step(0), 0);
        let reqs: Vec<Req> = (0..batch)
            .map(|_| Req::new(req_type::FLUSH, 0, 0))
            .collect();
        let mut done = 0usize;
        while done < 140_000 {
            for r in &reqs {
                q.add(&r.segs());
            }
            assert!(
                !q.publish(),
                "size {size}, batch {batch}: kicked after {done}"
            );
            assert_eq!(dev.poll_step(0), batch);
            assert_eq!(q.used().len(), batch);
            done += batch;
        }
        assert_eq!(dev.stats(0).kicks, 0);
        assert!(dev.violations().is_empty());
    }
}

#[test]
fn split_shuffled_completes_out_of_order_and_drain_finishes() {
    let config = SimConfig {
        order: CompletionOrder::Shuffled { seed: 7 },
        ..SimConfig::default()
    };
    let (dev, mut t) = negotiate(config, base());
    let mut q = MockSplit::new(&mut t, 0, 32, base());
    driver_ok(&mut t);
    let reqs: Vec<Req> = (0..16).map(|_| Req::new(req_type::FLUSH, 0, 0)).collect();
    let heads: Vec<u16> = reqs.iter().map(|r| q.add(&r.segs())).collect();
    q.publish();
    let mut seen = Vec::new();
    let mut steps = 0;
    while seen.len() < 16 {
        let n = dev.step(0);
        assert!(
            n >= 1,
            "a step with pending requests completes at least one"
        );
        let used = q.used();
        assert_eq!(used.len(), n);
        seen.extend(used.into_iter().map(|(id, _)| id as u16));
        steps += 1;
    }
    assert!(steps > 1, "some requests were held back");
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    let mut expect = heads.clone();
    expect.sort_unstable();
    assert_eq!(sorted, expect, "each request completes exactly once");
    assert_ne!(seen, heads, "seeded shuffle is not ring order");
    assert!(reqs.iter().all(|r| r.status() == blk_status::OK));

    // drain completes everything at once.
    let more: Vec<Req> = (0..8).map(|_| Req::new(req_type::FLUSH, 0, 0)).collect();
    for r in &more {
        q.add(&r.segs());
    }
    q.publish();
    assert_eq!(dev.drain(0), 8);
    assert_eq!(q.used().len(), 8);
}

#[test]
fn split_indirect_chain_is_served() {
    let f = base() | Features::INDIRECT_DESC;
    let (dev, mut t) = negotiate(ram(16), f);
    let mut q = MockSplit::new(&mut t, 0, 2, f);
    driver_ok(&mut t);
    dev.write_disk(1, &[0x5a; 512]);
    let r = Req::new(req_type::IN, 1, 512);
    let h = q.add_indirect(&r.segs());
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used(), vec![(u32::from(h), 513)]);
    assert_eq!(r.data(), vec![0x5a; 512]);
    assert!(dev.violations().is_empty());
}

#[test]
fn split_malformed_indirect_tables_are_violations_and_the_ring_goes_on() {
    use virtio_blk_mq::spec::{SplitDesc, SplitDescFlags};

    use super::Dma;

    const NEXT: SplitDescFlags = SplitDescFlags::NEXT;
    const WRITE: SplitDescFlags = SplitDescFlags::WRITE;
    let f = base() | Features::INDIRECT_DESC;
    let (dev, mut t) = negotiate(ram(16), f);
    let mut q = MockSplit::new(&mut t, 0, 8, f);
    driver_ok(&mut t);
    // Each case: the table's entries as (which buffer of the FLUSH: 0 header,
    // 1 status; flags; next), its length in bytes, and the words the
    // violation names.
    // Whether the device found the status byte before the fault decides
    // whether the request completes with IOERR or with nothing written.
    type Case<'a> = (&'a [(usize, SplitDescFlags, u16)], u32, &'a str, bool);
    let cases: [Case; 4] = [
        (
            &[(0, NEXT, 1), (1, SplitDescFlags::INDIRECT, 0)],
            32,
            "INDIRECT descriptor inside",
            false,
        ),
        (
            &[(0, NEXT, 1), (1, WRITE | NEXT, 7)],
            32,
            "chains to 7",
            true,
        ),
        (&[(0, NEXT, 1), (1, WRITE | NEXT, 0)], 32, "loop", true),
        (&[(0, NEXT, 1), (1, WRITE, 0)], 24, "multiple of 16", false),
    ];
    for (entries, table_len, words, status_found) in cases {
        let r = Req::new(req_type::FLUSH, 0, 0);
        let untouched = r.status();
        let segs = r.segs();
        let table = Dma::new(16 * entries.len());
        for (k, &(buffer, flags, next)) in entries.iter().enumerate() {
            let (addr, len, _) = segs[buffer];
            let d: &SplitDesc = table.at(16 * k);
            d.addr
                .store(addr.to_le(), core::sync::atomic::Ordering::Relaxed);
            d.len
                .store(len.to_le(), core::sync::atomic::Ordering::Relaxed);
            d.flags
                .store(flags.bits().to_le(), core::sync::atomic::Ordering::Relaxed);
            d.next
                .store(next.to_le(), core::sync::atomic::Ordering::Relaxed);
        }
        let head = q.free.pop().expect("free descriptor");
        q.write_desc(head, table.addr(), table_len, SplitDescFlags::INDIRECT, 0);
        q.tables.insert(head, table);
        q.chains.insert(head, vec![head]);
        q.put_avail(head);
        q.publish();
        let before = dev.violations().len();
        assert_eq!(dev.step(0), 1, "{words}: completed");
        let used = q.used();
        assert_eq!(used.len(), 1, "{words}");
        let violations = dev.violations();
        assert_eq!(violations.len(), before + 1, "{words}: {violations:?}");
        assert!(
            violations[before].contains(words),
            "{words}: {}",
            violations[before]
        );
        if status_found {
            assert_eq!(r.status(), blk_status::IOERR, "{words}");
            assert_eq!(used[0].1, 1, "{words}: the status byte was written");
        } else {
            assert_eq!(r.status(), untouched, "{words}");
            assert_eq!(used[0].1, 0, "{words}: nothing was written");
        }
    }
    // The ring still serves a good request.
    let r = Req::new(req_type::FLUSH, 0, 0);
    q.add_indirect(&r.segs());
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(r.status(), blk_status::OK);
    assert_eq!(dev.violations().len(), 4);
}

#[test]
fn split_indirect_without_feature_is_a_violation_completed_with_ioerr() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let mut q = MockSplit::new(&mut t, 0, 2, base());
    driver_ok(&mut t);
    let r = Req::new(req_type::FLUSH, 0, 0);
    q.add_indirect(&r.segs());
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used().len(), 1);
    assert_eq!(dev.violations().len(), 1, "{:?}", dev.violations());
    assert!(dev.violations()[0].contains("INDIRECT"));
}

#[test]
fn split_bad_chain_shapes_are_violations_not_crashes() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let mut q = MockSplit::new(&mut t, 0, 8, base());
    driver_ok(&mut t);
    // Status byte device-readable, then a readable after a writable.
    let a = Req::new(req_type::IN, 0, 512);
    let mut segs = a.segs();
    segs[2].2 = false;
    q.add(&segs);
    // Header too short.
    let b = Req::new(req_type::FLUSH, 0, 0);
    let mut segs = b.segs();
    segs[0].1 = 8;
    q.add(&segs);
    // Buffer outside DMA memory.
    let c = Req::new(req_type::IN, 0, 512);
    let mut segs = c.segs();
    segs[1].0 = 0x10;
    q.add(&segs);
    q.publish();
    assert_eq!(dev.step(0), 3);
    let used = q.used();
    assert_eq!(used.len(), 3);
    assert_eq!(b.status(), blk_status::IOERR);
    assert_eq!(used[1].1, 1);
    assert_eq!(c.status(), blk_status::IOERR);
    let v = dev.violations();
    assert_eq!(v.len(), 3, "{v:?}");
    assert!(v[2].contains("DMA memory"), "{v:?}");
}

#[test]
fn split_head_out_of_range_stops_the_queue_and_needs_reset() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let mut q = MockSplit::new(&mut t, 0, 4, base());
    driver_ok(&mut t);
    let r = Req::new(req_type::FLUSH, 0, 0);
    q.add(&r.segs());
    // Overwrite the avail entry with a head beyond the queue.
    let slot: &core::sync::atomic::AtomicU16 = q.ring.at(q.layout.avail + 4);
    slot.store(9u16.to_le(), core::sync::atomic::Ordering::Relaxed);
    q.publish();
    assert_eq!(dev.step(0), 0);
    assert!(t.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert_eq!(dev.violations().len(), 1);
    // A reset brings the device back.
    t.reset();
    assert_eq!(t.status(), DeviceStatus::empty());
}

#[test]
fn split_request_types_and_errors() {
    let f = base() | Features::BLK_DISCARD | Features::BLK_WRITE_ZEROES;
    let config = SimConfig {
        inject: vec![Injection {
            sectors: 10..12,
            status: blk_status::IOERR,
        }],
        max_discard_sectors: 4,
        ..ram(32)
    };
    let (dev, mut t) = negotiate(config, f);
    let mut q = MockSplit::new(&mut t, 0, 32, f);
    driver_ok(&mut t);
    dev.write_disk(0, &[0x11; 512 * 32]);

    let get_id = Req::new(req_type::GET_ID, 0, 20);
    let beyond = Req::new(req_type::IN, 31, 1024);
    let injected = Req::new(req_type::OUT, 11, 512);
    let unknown = Req::new(99, 0, 0);
    let secure = Req::new(req_type::SECURE_ERASE, 0, 16);
    let wz = Req::new(req_type::WRITE_ZEROES, 0, 16);
    wz.set_data(&[2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0]); // sectors 2..5, unmap
    let discard_unmap = Req::new(req_type::DISCARD, 0, 16);
    discard_unmap.set_data(&[8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0]);
    let discard_big = Req::new(req_type::DISCARD, 0, 16);
    discard_big.set_data(&[8, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]);
    let discard = Req::new(req_type::DISCARD, 0, 32);
    discard.set_data(&[
        20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0,
        0, 0,
    ]);
    let all = [
        &get_id,
        &beyond,
        &injected,
        &unknown,
        &secure,
        &wz,
        &discard_unmap,
        &discard_big,
        &discard,
    ];
    for r in all {
        q.add(&r.segs());
    }
    q.publish();
    assert_eq!(dev.step(0), all.len());
    let used = q.used();
    let mut id = [0u8; 20];
    get_id.mem.read(4096, &mut id);
    assert_eq!(&id, b"virtio-blk-sim\0\0\0\0\0\0");
    assert_eq!(used[0].1, 21);
    assert_eq!(get_id.status(), blk_status::OK);
    assert_eq!(beyond.status(), blk_status::IOERR);
    assert_eq!(injected.status(), blk_status::IOERR);
    assert_eq!(unknown.status(), blk_status::UNSUPP);
    assert_eq!(
        secure.status(),
        blk_status::UNSUPP,
        "SECURE_ERASE not negotiated"
    );
    assert_eq!(wz.status(), blk_status::OK);
    assert_eq!(discard_unmap.status(), blk_status::UNSUPP);
    assert_eq!(discard_big.status(), blk_status::IOERR);
    assert_eq!(discard.status(), blk_status::OK);
    let mut disk = vec![0u8; 512 * 32];
    dev.read_disk(0, &mut disk);
    let zeroed = |s: usize| disk[s * 512..(s + 1) * 512].iter().all(|&b| b == 0);
    assert!(!zeroed(1) && zeroed(2) && zeroed(4) && !zeroed(5));
    assert!(zeroed(20) && !zeroed(21) && zeroed(22) && zeroed(23));
    assert!(!zeroed(11), "the injected write did not touch the disk");
    // Violations: discard with unmap, discard beyond max_discard_sectors.
    assert_eq!(dev.violations().len(), 2, "{:?}", dev.violations());
}

#[test]
fn split_read_only_device_fails_writes() {
    let config = SimConfig {
        features: SimConfig::default().features | Features::BLK_RO,
        ..ram(8)
    };
    let (dev, mut t) = negotiate(config, base() | Features::BLK_RO);
    let mut q = MockSplit::new(&mut t, 0, 4, base());
    driver_ok(&mut t);
    let w = Req::new(req_type::OUT, 0, 512);
    w.set_data(&[1; 512]);
    q.add(&w.segs());
    q.publish();
    dev.step(0);
    assert_eq!(w.status(), blk_status::IOERR);
    let mut s = [0u8; 512];
    dev.read_disk(0, &mut s);
    assert_eq!(s, [0; 512]);
}

#[test]
fn split_queue_size_must_be_a_power_of_two() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let ring = super::Dma::new(4096);
    let a = ring.addr();
    let addrs = virtio_blk_mq::QueueAddresses {
        desc: a,
        driver: a + 1024,
        device: a + 2048,
    };
    assert_eq!(
        t.setup_queue(0, 3, addrs),
        Err(virtio_blk_mq::TransportError::BadQueueSize(3))
    );
    assert_eq!(
        t.setup_queue(0, 2048, addrs),
        Err(virtio_blk_mq::TransportError::BadQueueSize(2048))
    );
    assert_eq!(
        t.setup_queue(1, 4, addrs),
        Err(virtio_blk_mq::TransportError::NoSuchQueue(1))
    );
    assert_eq!(t.setup_queue(0, 4, addrs), Ok(()));
    assert_eq!(
        t.setup_queue(0, 4, addrs),
        Err(virtio_blk_mq::TransportError::QueueInUse(0))
    );
    assert_eq!(dev.violations().len(), 2);
    t.reset();
}
