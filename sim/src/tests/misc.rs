//! Transport, configuration and device-thread tests.

use std::time::{Duration, Instant};

use virtio_blk_mq::spec::{blk_config, blk_status, req_type};
use virtio_blk_mq::{DeviceStatus, Features, Transport};

use super::{driver_ok, negotiate, MockPacked, MockSplit, Req};
use crate::{SimConfig, SimDevice, SimHal, ThreadMode};

#[test]
fn transport_reads_config_little_endian() {
    let config = SimConfig {
        capacity_sectors: 0x1_0000_0002,
        num_queues: 3,
        ..SimConfig::default()
    };
    let dev = SimDevice::new(config);
    let mut t = dev.transport();
    assert_eq!(t.device_type(), 2);
    let lo = t.read_config_u32(blk_config::CAPACITY);
    let hi = t.read_config_u32(blk_config::CAPACITY + 4);
    assert_eq!((u64::from(hi) << 32) | u64::from(lo), 0x1_0000_0002);
    assert_eq!(t.read_config_u16(blk_config::NUM_QUEUES), 3);
    assert_eq!(t.read_config_u32(blk_config::SEG_MAX), 254);
    assert_eq!(t.read_config_u32(blk_config::BLK_SIZE), 512);
    assert_eq!(t.read_config_u8(blk_config::WRITE_ZEROES_MAY_UNMAP), 1);
    assert_eq!(t.config_generation(), 0);
    assert_eq!(t.max_queue_size(2), 1024);
    assert_eq!(t.max_queue_size(3), 0);
    assert!(dev.violations().is_empty());
    assert_eq!(t.read_config_u32(blk_config::SIZE), 0);
    assert_eq!(dev.violations().len(), 1);
}

#[test]
fn transport_features_ok_needs_offered_features_and_version_1() {
    let dev = SimDevice::new(SimConfig::default());
    let mut t = dev.transport();
    let offered = Features::from_bits_retain(t.device_features());
    assert!(!offered.contains(Features::ACCESS_PLATFORM) && !offered.contains(Features::BLK_RO));
    assert!(offered.contains(Features::RING_PACKED | Features::EVENT_IDX));

    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    t.set_driver_features((Features::VERSION_1 | Features::ACCESS_PLATFORM).bits());
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    assert!(!t.status().contains(DeviceStatus::FEATURES_OK));

    t.reset();
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    t.set_driver_features(Features::BLK_FLUSH.bits());
    t.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    assert!(
        !t.status().contains(DeviceStatus::FEATURES_OK),
        "VERSION_1 is required"
    );
    assert_eq!(dev.negotiated_features(), Features::empty());

    t.reset();
    let (dev, mut t) = negotiate(
        SimConfig::default(),
        Features::VERSION_1 | Features::RING_PACKED,
    );
    assert_eq!(
        dev.negotiated_features(),
        Features::VERSION_1 | Features::RING_PACKED
    );
    t.reset();
    assert_eq!(dev.negotiated_features(), Features::empty());
    assert_eq!(t.status(), DeviceStatus::empty());
}

#[test]
fn transport_needs_reset_stops_processing_until_reset() {
    let f = Features::VERSION_1 | Features::BLK_FLUSH;
    let (dev, mut t) = negotiate(SimConfig::default(), f);
    let mut q = MockSplit::new(&mut t, 0, 4, f);
    driver_ok(&mut t);
    dev.set_needs_reset();
    let r = Req::new(req_type::FLUSH, 0, 0);
    q.add(&r.segs());
    q.publish();
    assert_eq!(dev.step(0), 0);
    assert!(t.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    t.reset();
    assert_eq!(t.status(), DeviceStatus::empty());
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "device thread did not complete the requests"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn split_poll_thread_completes_requests_without_kicks() {
    let f = Features::VERSION_1 | Features::BLK_FLUSH;
    let (dev, mut t) = negotiate(SimConfig::default(), f);
    let mut q = MockSplit::new(&mut t, 0, 8, f);
    driver_ok(&mut t);
    let threads = dev.spawn(ThreadMode::Poll);
    assert_eq!(threads.len(), 1);
    let reqs: Vec<Req> = (0..8).map(|_| Req::new(req_type::FLUSH, 0, 0)).collect();
    wait_for(|| q.used_flags() == virtio_blk_mq::spec::VIRTQ_USED_F_NO_NOTIFY);
    let mut done = 0;
    for round in 0..4 {
        for r in &reqs[round * 2..round * 2 + 2] {
            q.add(&r.segs());
        }
        assert!(!q.publish(), "a polling device asks for no kicks");
        wait_for(|| {
            done += q.used().len();
            done == (round + 1) * 2
        });
    }
    threads.stop();
    assert!(reqs.iter().all(|r| r.status() == blk_status::OK));
    assert_eq!(dev.stats(0).kicks, 0);
}

#[test]
fn packed_sleep_thread_wakes_on_kicks() {
    let f = Features::VERSION_1 | Features::RING_PACKED | Features::EVENT_IDX | Features::BLK_FLUSH;
    let config = SimConfig {
        num_queues: 2,
        ..SimConfig::default()
    };
    let (dev, mut t) = negotiate(config, f);
    let mut q0 = MockPacked::new(&mut t, 0, 4, f);
    let mut q1 = MockPacked::new(&mut t, 1, 5, f);
    driver_ok(&mut t);
    let threads = dev.spawn(ThreadMode::Sleep);
    assert_eq!(threads.len(), 2);
    let mut done = [0usize; 2];
    let reqs: Vec<Req> = (0..40).map(|_| Req::new(req_type::FLUSH, 0, 0)).collect();
    for (k, pair) in reqs.chunks(2).enumerate() {
        q0.add(&pair[0].segs());
        q1.add(&pair[1].segs());
        q0.publish();
        q1.publish();
        wait_for(|| {
            done[0] += q0.used().len();
            done[1] += q1.used().len();
            done == [k + 1, k + 1]
        });
    }
    drop(threads);
    assert!(reqs.iter().all(|r| r.status() == blk_status::OK));
    assert!(dev.stats(0).kicks >= 1 && dev.stats(1).kicks >= 1);
    assert!(dev.violations().is_empty(), "{:?}", dev.violations());
}

#[test]
fn hal_live_pages_track_mock_allocations() {
    // Other tests allocate concurrently, so only check this allocation's effect
    // is visible while it lives.
    let d = super::Dma::new(5 * 4096);
    assert!(SimHal::live_pages() >= 5);
    drop(d);
}
