//! The hostile control plane: stalls, per-queue reset (VIRTIO 1.2 §2.6.1),
//! impossible configuration values (§5.2.4), FEATURES_OK refused (§3.1.1),
//! an unstable configuration generation (§2.5.1) and DEVICE_NEEDS_RESET
//! after N requests (§2.1.1).

use std::time::{Duration, Instant};

use virtio_blk_mq::spec::{blk_config, blk_status, req_type};
use virtio_blk_mq::{DeviceStatus, Features, Transport, TransportError};

use super::{driver_ok, negotiate, MockPacked, MockSplit, Req};
use crate::{DiskKind, Hostile, SimConfig, SimDevice, SimTransport, ThreadMode};

const UNWRITTEN: u8 = 0xff;

fn base() -> Features {
    Features::VERSION_1 | Features::BLK_FLUSH
}

fn resettable() -> Features {
    base() | Features::RING_RESET
}

fn flush() -> Req {
    Req::new(req_type::FLUSH, 0, 0)
}

/// Resets the device and negotiates `accept` again (FEATURES_OK must stick).
fn renegotiate(t: &mut SimTransport, accept: Features) {
    t.reset();
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    t.set_driver_features(accept.bits());
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    assert!(t.status().contains(DeviceStatus::FEATURES_OK));
}

#[test]
fn stall_holds_requests_on_inline_steps_until_released() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let mut q = MockSplit::new(&mut t, 0, 4, base());
    driver_ok(&mut t);
    dev.stall(0, true);
    let a = flush();
    let h = q.add(&a.segs());
    q.publish();
    assert_eq!(dev.step(0) + dev.drain(0), 0);
    assert_eq!(a.status(), UNWRITTEN);
    assert!(q.used().is_empty());
    // The request was taken: kicks are asked for the next index.
    dev.stall(0, false);
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used(), vec![(u32::from(h), 1)]);
    assert_eq!(a.status(), blk_status::OK);
}

#[test]
fn stall_holds_requests_on_device_threads() {
    let f = base() | Features::RING_PACKED;
    for mode in [ThreadMode::Sleep, ThreadMode::Poll] {
        let (dev, mut t) = negotiate(SimConfig::default(), f);
        let mut q = MockPacked::new(&mut t, 0, 4, f);
        driver_ok(&mut t);
        dev.stall(0, true);
        let threads = dev.spawn(mode);
        let a = flush();
        q.add(&a.segs());
        q.publish();
        std::thread::sleep(Duration::from_millis(30));
        assert!(q.used().is_empty(), "{mode:?}: completed while stalled");
        assert_eq!(a.status(), UNWRITTEN);
        dev.stall(0, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while q.used().is_empty() {
            assert!(
                Instant::now() < deadline,
                "{mode:?}: not completed after the stall"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        threads.stop();
        assert_eq!(a.status(), blk_status::OK);
    }
}

#[test]
fn reset_queue_without_ring_reset_is_a_violation() {
    let (dev, mut t) = negotiate(SimConfig::default(), base());
    let _q = MockSplit::new(&mut t, 0, 4, base());
    driver_ok(&mut t);
    assert_eq!(t.reset_queue(0), Err(TransportError::Unsupported));
    let v = dev.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("RING_RESET"), "{v:?}");
    assert_eq!(t.reset_queue(5), Err(TransportError::NoSuchQueue(5)));
}

#[test]
fn reset_queue_drops_pending_requests_and_lets_the_queue_be_set_up_again() {
    let (dev, mut t) = negotiate(SimConfig::default(), resettable());
    let mut old = MockSplit::new(&mut t, 0, 4, resettable());
    driver_ok(&mut t);
    dev.stall(0, true);
    let a = flush();
    old.add(&a.segs());
    old.publish();
    assert_eq!(dev.step(0), 0, "taken, held by the stall");
    // Waits for a pending request: must not survive the reset.
    dev.inject_hostile(0, Hostile::UsedLenTooLong).unwrap();
    assert_eq!(t.reset_queue(0), Ok(()));
    assert_eq!(dev.step(0) + dev.drain(0), 0, "no queue to serve");
    // The device is done with the old ring: freeing it is no violation.
    drop(old);
    let mut q = MockSplit::new(&mut t, 0, 8, resettable());
    let b = flush();
    let h = q.add(&b.segs());
    q.publish();
    assert_eq!(dev.step(0), 1, "neither stalled nor hostile any more");
    assert_eq!(q.used(), vec![(u32::from(h), 1)]);
    assert_eq!(
        a.status(),
        UNWRITTEN,
        "the dropped request is never completed"
    );
    assert!(dev.hostile_log().is_empty());
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
    // Enabled again: a second setup without a reset is refused.
    let ring = super::Dma::new(4096);
    let addrs = virtio_blk_mq::QueueAddresses {
        desc: ring.addr(),
        driver: ring.addr() + 1024,
        device: ring.addr() + 2048,
    };
    assert_eq!(
        t.setup_queue(0, 4, addrs),
        Err(TransportError::QueueInUse(0))
    );
}

#[test]
fn reset_queue_revives_a_queue_a_hostile_act_stopped() {
    let f = resettable() | Features::RING_PACKED;
    let (dev, mut t) = negotiate(SimConfig::default(), f);
    let mut q = MockPacked::new(&mut t, 0, 4, f);
    driver_ok(&mut t);
    let a = flush();
    q.add(&a.segs());
    q.publish();
    dev.inject_hostile(0, Hostile::WrongWrap).unwrap();
    assert_eq!(dev.step(0), 1);
    let b = flush();
    q.add(&b.segs());
    q.publish();
    assert_eq!(dev.step(0), 0, "stopped");
    assert_eq!(t.reset_queue(0), Ok(()));
    let mut q = MockPacked::new(&mut t, 0, 4, f);
    let c = flush();
    let id = q.add(&c.segs());
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(q.used(), vec![(0, id, 1)]);
    assert_eq!(b.status(), UNWRITTEN);
    assert_eq!(dev.hostile_log(), vec![(0, Hostile::WrongWrap)]);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn device_reset_clears_stalls_and_acts_but_keeps_config_hostility() {
    let config = SimConfig {
        unstable_config_generation: true,
        ..SimConfig::default()
    };
    let (dev, mut t) = negotiate(config, base());
    let _q = MockSplit::new(&mut t, 0, 4, base());
    driver_ok(&mut t);
    dev.stall(0, true);
    dev.inject_hostile(0, Hostile::GarbageStatus(7)).unwrap();
    renegotiate(&mut t, base());
    let mut q = MockSplit::new(&mut t, 0, 4, base());
    driver_ok(&mut t);
    let a = flush();
    q.add(&a.segs());
    q.publish();
    assert_eq!(dev.step(0), 1);
    assert_eq!(a.status(), blk_status::OK);
    assert!(dev.hostile_log().is_empty());
    assert_ne!(t.config_generation(), t.config_generation());
}

#[test]
fn impossible_config_values_reach_the_config_space() {
    let read = |config: SimConfig| {
        let dev = SimDevice::new(config);
        let mut t = dev.transport();
        let lo = u64::from(t.read_config_u32(blk_config::CAPACITY));
        let hi = u64::from(t.read_config_u32(blk_config::CAPACITY + 4));
        (
            hi << 32 | lo,
            t.read_config_u32(blk_config::BLK_SIZE),
            t.read_config_u16(blk_config::NUM_QUEUES),
            t.read_config_u32(blk_config::SEG_MAX),
            t.read_config_u32(blk_config::SIZE_MAX),
        )
    };
    for blk_size in [0, 3, 1 << 31] {
        let c = SimConfig {
            blk_size,
            ..SimConfig::default()
        };
        assert_eq!(read(c).1, blk_size);
    }
    let c = SimConfig {
        capacity_sectors: u64::MAX - 7,
        disk: DiskKind::Null,
        seg_max: 0,
        size_max: 100,
        ..SimConfig::default()
    };
    assert_eq!(read(c), (u64::MAX - 7, 512, 1, 0, 100));
    for reported in [0, 65535] {
        let c = SimConfig {
            num_queues: 2,
            num_queues_reported: Some(reported),
            ..SimConfig::default()
        };
        let dev = SimDevice::new(c.clone());
        let mut t = dev.transport();
        assert_eq!(read(c).2, reported);
        // The device still has exactly two queues.
        assert_eq!((t.max_queue_size(1), t.max_queue_size(2)), (1024, 0));
    }
    let c = SimConfig {
        config_patches: vec![(blk_config::PHYSICAL_BLOCK_EXP, vec![200])],
        ..SimConfig::default()
    };
    let dev = SimDevice::new(c);
    assert_eq!(
        dev.transport()
            .read_config_u8(blk_config::PHYSICAL_BLOCK_EXP),
        200
    );
    assert!(dev.violations().is_empty());
}

#[test]
fn huge_null_disk_fails_requests_beyond_its_capacity_without_overflow() {
    let config = SimConfig {
        capacity_sectors: u64::MAX - 7,
        ..SimConfig::default()
    };
    let (dev, mut t) = negotiate(config, base());
    let mut q = MockSplit::new(&mut t, 0, 8, base());
    driver_ok(&mut t);
    let inside = Req::new(req_type::IN, u64::MAX - 8, 512);
    let beyond = Req::new(req_type::IN, u64::MAX - 1, 1024);
    q.add(&inside.segs());
    q.add(&beyond.segs());
    q.publish();
    assert_eq!(dev.step(0), 2);
    assert_eq!(inside.status(), blk_status::OK);
    assert_eq!(beyond.status(), blk_status::IOERR);
}

#[test]
#[should_panic(expected = "does not fit in memory")]
fn ram_disk_whose_bytes_overflow_is_refused() {
    SimDevice::new(SimConfig {
        capacity_sectors: u64::MAX - 7,
        disk: DiskKind::Ram,
        ..SimConfig::default()
    });
}

#[test]
#[should_panic(expected = "does not fit in memory")]
fn ram_disk_the_allocator_refuses_is_refused() {
    // 2^62 bytes: representable, never allocatable.
    SimDevice::new(SimConfig {
        capacity_sectors: 1 << 53,
        disk: DiskKind::Ram,
        ..SimConfig::default()
    });
}

#[test]
#[should_panic(expected = "beyond the 72-byte configuration space")]
fn config_patch_beyond_the_space_is_refused() {
    SimDevice::new(SimConfig {
        config_patches: vec![(70, vec![1, 2, 3])],
        ..SimConfig::default()
    });
}

#[test]
fn refuse_features_ok_clears_the_bit_whatever_is_accepted() {
    let config = SimConfig {
        refuse_features_ok: true,
        ..SimConfig::default()
    };
    let dev = SimDevice::new(config);
    let mut t = dev.transport();
    for accept in [Features::VERSION_1, resettable() | Features::RING_PACKED] {
        t.reset();
        t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        t.set_driver_features(accept.bits());
        t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
        assert_eq!(t.status(), DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        assert_eq!(dev.negotiated_features(), Features::empty());
    }
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn unstable_config_generation_changes_on_every_read() {
    let dev = SimDevice::new(SimConfig {
        unstable_config_generation: true,
        ..SimConfig::default()
    });
    let mut t = dev.transport();
    let g: Vec<u32> = (0..4).map(|_| t.config_generation()).collect();
    assert_eq!(g, vec![1, 2, 3, 4]);
    let mut honest = SimDevice::new(SimConfig::default()).transport();
    assert_eq!(
        (honest.config_generation(), honest.config_generation()),
        (0, 0)
    );
}

#[test]
fn needs_reset_after_n_completions_stops_at_exactly_n() {
    let config = SimConfig {
        needs_reset_after: Some(3),
        ..SimConfig::default()
    };
    let (dev, mut t) = negotiate(config, base());
    let mut q = MockSplit::new(&mut t, 0, 16, base());
    driver_ok(&mut t);
    let reqs: Vec<Req> = (0..5).map(|_| flush()).collect();
    for r in &reqs[..2] {
        q.add(&r.segs());
    }
    q.publish();
    assert_eq!(dev.step(0), 2);
    assert!(!t.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    for r in &reqs[2..] {
        q.add(&r.segs());
    }
    q.publish();
    assert_eq!(dev.step(0), 1, "one completion left in the budget");
    assert!(t.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert_eq!(dev.drain(0), 0);
    let statuses: Vec<u8> = reqs.iter().map(Req::status).collect();
    assert_eq!(statuses, vec![0, 0, 0, UNWRITTEN, UNWRITTEN]);
    assert_eq!(q.used().len(), 3);

    // After a reset the device counts again.
    renegotiate(&mut t, base());
    let mut q = MockSplit::new(&mut t, 0, 16, base());
    driver_ok(&mut t);
    let more: Vec<Req> = (0..4).map(|_| flush()).collect();
    for r in &more {
        q.add(&r.segs());
    }
    q.publish();
    assert_eq!(dev.step(0), 3);
    assert!(t.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}
