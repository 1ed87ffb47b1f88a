//! A device whose control plane lies: impossible configuration values,
//! FEATURES_OK dropped, a generation that never settles, DEVICE_NEEDS_RESET
//! in the middle of I/O. Setup refuses with a clear error or the I/O fails
//! cleanly; nothing panics, hangs or leaks.

mod common;

use common::*;
use virtio_blk_mq::{BlkDevice, Config, Error, Recovered, RingKind};
use virtio_blk_sim::{SimConfig, SimDevice, SimHal};

fn setup(config: SimConfig) -> Result<Device, Error> {
    let sim = SimDevice::new(config);
    BlkDevice::new(SimHal, sim.transport(), Config::default())
}

fn refused(ring: RingKind, change: impl FnOnce(&mut SimConfig)) -> Error {
    let mut config = sim_config(ring);
    change(&mut config);
    match setup(config) {
        Ok(_) => panic!("an impossible device was accepted"),
        Err(error) => error,
    }
}

fn impossible_values_are_refused(ring: RingKind) {
    for blk_size in [0, 3, 1 << 31, 256, 1 << 17] {
        assert_eq!(
            refused(ring, |c| c.blk_size = blk_size),
            Error::BadConfig("blk_size"),
            "blk_size {blk_size}"
        );
    }
    assert_eq!(
        refused(ring, |c| c.num_queues_reported = Some(0)),
        Error::BadConfig("num_queues")
    );
    assert_eq!(
        refused(ring, |c| c.capacity_sectors = u64::MAX - 7),
        Error::BadConfig("capacity")
    );
    assert_eq!(
        refused(ring, |c| c.seg_max = 0),
        Error::BadConfig("seg_max")
    );
    assert_eq!(
        refused(ring, |c| c.size_max = 511),
        Error::BadConfig("size_max")
    );
    assert_eq!(
        refused(ring, |c| c.size_max = 1),
        Error::BadConfig("size_max")
    );
    // 0 means "no limit" (QEMU's vhost-user export sends it), as in Linux.
    let unlimited = setup(SimConfig {
        size_max: 0,
        ..sim_config(ring)
    })
    .expect("size_max 0 is accepted");
    assert_eq!(unlimited.info().max_segment_size, u32::MAX);
    // topology.physical_block_exp at config offset 24: 2^200 blocks.
    assert_eq!(
        refused(ring, |c| c.config_patches = vec![(24, vec![200])]),
        Error::BadConfig("physical_block_exp")
    );
    assert_eq!(
        refused(ring, |c| c.refuse_features_ok = true),
        Error::FeaturesRejected
    );
    assert_eq!(
        refused(ring, |c| c.unstable_config_generation = true),
        Error::ConfigUnstable
    );
}

#[test]
fn hostile_config_split_impossible_values_are_refused() {
    impossible_values_are_refused(RingKind::Split);
}

#[test]
fn hostile_config_packed_impossible_values_are_refused() {
    impossible_values_are_refused(RingKind::Packed);
}

/// A device that claims 65535 queues gets as many as asked for and exist.
fn claimed_queues_are_capped_by_what_exists(ring: RingKind) {
    let sim = SimDevice::new(SimConfig {
        num_queues: 2,
        num_queues_reported: Some(65535),
        ..sim_config(ring)
    });
    let config = Config {
        queues: 8,
        ..Config::default()
    };
    let mut device = BlkDevice::new(SimHal, sim.transport(), config).expect("set up");
    assert_eq!(device.info().device_queues, 65535, "what the device claims");
    let mut queues = device.take_queues().into_queues();
    assert_eq!(queues.len(), 2, "what the device has");
    for queue in &mut queues {
        queue.read(0, buffer(512), 1).unwrap();
        queue.commit();
        assert_eq!(complete_all(&sim, queue)[0].result, Ok(()));
    }
}

#[test]
fn hostile_config_split_claimed_queues_are_capped_by_what_exists() {
    claimed_queues_are_capped_by_what_exists(RingKind::Split);
}

#[test]
fn hostile_config_packed_claimed_queues_are_capped_by_what_exists() {
    claimed_queues_are_capped_by_what_exists(RingKind::Packed);
}

/// DEVICE_NEEDS_RESET after the third completion, with requests in flight:
/// check_status fails them all, recovery brings the device back.
fn needs_reset_mid_run_fails_cleanly(ring: RingKind) {
    let sim = SimDevice::new(SimConfig {
        needs_reset_after: Some(3),
        ..sim_config(ring)
    });
    let (mut device, mut queue) = start(&sim, Config::default());
    for tag in 0..8 {
        queue.read(tag * 8, buffer(512), tag).unwrap();
    }
    queue.commit();
    sim.step(0);
    let mut ok = 0;
    queue.poll(usize::MAX, |c| {
        c.result.unwrap();
        ok += 1;
    });
    assert_eq!(ok, 3);
    assert_eq!(device.check_status(), Err(Error::DeviceNeedsReset));
    let mut broken = 0;
    queue.poll(usize::MAX, |c| {
        assert_eq!(c.result, Err(Error::DeviceBroken));
        broken += 1;
    });
    assert_eq!(broken, 5);
    let mut buffers = 0;
    let fresh = device
        .recover([queue], |r| {
            assert!(matches!(r, Recovered::Buffer { .. }));
            buffers += 1;
        })
        .expect("recovers");
    assert_eq!(buffers, 5);
    let mut queue = fresh.into_queues().remove(0);
    queue.read(0, buffer(512), 9).unwrap();
    queue.commit();
    assert_eq!(complete_all(&sim, &mut queue)[0].result, Ok(()));
}

#[test]
fn hostile_config_split_needs_reset_mid_run_fails_cleanly() {
    needs_reset_mid_run_fails_cleanly(RingKind::Split);
}

#[test]
fn hostile_config_packed_needs_reset_mid_run_fails_cleanly() {
    needs_reset_mid_run_fails_cleanly(RingKind::Packed);
}
