//! Random read/write/verify against the RAM-disk sim, for both ring layouts:
//! out-of-order completion, index and wrap-counter wrap-around, indirect on
//! and off, and the queue sizes at the edges.

mod common;

use std::collections::HashMap;

use common::*;
use virtio_blk_mq::{Config, DmaBuffer, Error, Features, RingKind};
use virtio_blk_sim::{CompletionOrder, DiskKind, SimDevice, SimHal};

const DISK_SECTORS: u64 = 256;

struct Workload {
    requests: u64,
    queue_size: u16,
    indirect: bool,
    seed: u64,
}

/// Runs `w` and checks every read against a model of the disk. Returns the
/// number of requests completed.
fn random_verify(ring: RingKind, w: Workload) -> u64 {
    let mut sim_config = sim_config(ring);
    sim_config.disk = DiskKind::Ram;
    sim_config.capacity_sectors = DISK_SECTORS;
    sim_config.order = CompletionOrder::Shuffled { seed: w.seed };
    let sim = SimDevice::new(sim_config);
    let mut config = Config {
        queue_size: Some(w.queue_size),
        ..Config::default()
    };
    if !w.indirect {
        config = config.without(Features::INDIRECT_DESC);
    }
    let (device, mut queue) = start(&sim, config);
    assert_eq!(queue.ring_kind(), ring);
    assert_eq!(
        device.info().features.contains(Features::INDIRECT_DESC),
        w.indirect
    );

    let mut rng = Rng(w.seed | 1);
    let mut generation_of = vec![0u32; DISK_SECTORS as usize];
    let mut busy = vec![false; DISK_SECTORS as usize];
    let mut pool: HashMap<usize, Vec<DmaBuffer<SimHal>>> = HashMap::new();
    // tag -> (is_write, first sector, sectors)
    let mut in_flight: HashMap<u64, (bool, u64, u64)> = HashMap::new();
    let (mut submitted, mut completed, mut next_generation) = (0u64, 0u64, 1u32);

    while completed < w.requests {
        // Submit until the ring is full or the sectors we pick are busy.
        while submitted < w.requests {
            let sectors = 1 + rng.below(8);
            let first = rng.below(DISK_SECTORS - sectors + 1);
            let range = first as usize..(first + sectors) as usize;
            if busy[range.clone()].iter().any(|b| *b) {
                break;
            }
            let len = (sectors * 512) as usize;
            let mut buf = pool
                .entry(len)
                .or_default()
                .pop()
                .unwrap_or_else(|| buffer(len));
            let is_write = rng.below(2) == 0;
            let result = if is_write {
                stamp(buf.as_mut_slice(), first, next_generation);
                queue.write(first, buf, submitted)
            } else {
                queue.read(first, buf, submitted)
            };
            match result {
                Ok(()) => {}
                Err(rejected) => {
                    assert_eq!(rejected.error, Error::QueueFull);
                    pool.entry(len).or_default().push(rejected.buffer);
                    break;
                }
            }
            if is_write {
                for g in &mut generation_of[range.clone()] {
                    *g = next_generation;
                }
                next_generation += 1;
            }
            busy[range].iter_mut().for_each(|b| *b = true);
            in_flight.insert(submitted, (is_write, first, sectors));
            submitted += 1;
        }
        queue.commit();
        sim.step(queue.index());
        let mut finished = Vec::new();
        if queue.poll(usize::MAX, |c| finished.push(c)) == 0 && !in_flight.is_empty() {
            sim.drain(queue.index());
        }
        for completion in finished {
            completion.result.expect("request failed");
            let (is_write, first, sectors) =
                in_flight.remove(&completion.tag).expect("known tag, once");
            let buf = completion.buffer.expect("buffer returned");
            if !is_write {
                let mut expected = vec![0u8; buf.len()];
                for (i, block) in expected.chunks_mut(512).enumerate() {
                    let sector = first + i as u64;
                    let generation = generation_of[sector as usize];
                    if generation != 0 {
                        stamp(block, sector, generation);
                    }
                }
                assert!(
                    buf.as_slice() == expected.as_slice(),
                    "read of {first}+{sectors} returned stale data"
                );
            }
            for b in &mut busy[first as usize..(first + sectors) as usize] {
                *b = false;
            }
            pool.entry(buf.len()).or_default().push(buf);
            completed += 1;
        }
    }
    assert!(in_flight.is_empty());
    assert_eq!(sim.violations(), Vec::<String>::new());
    // Every doorbell the driver counted reached the device, and no more.
    assert_eq!(queue.stats().kicks, sim.stats(queue.index()).kicks);
    assert_eq!(queue.stats().completed, completed);
    // The disk itself agrees with the model.
    let mut disk = vec![0u8; 512];
    for sector in 0..DISK_SECTORS {
        sim.read_disk(sector, &mut disk);
        let mut expected = vec![0u8; 512];
        if generation_of[sector as usize] != 0 {
            stamp(&mut expected, sector, generation_of[sector as usize]);
        }
        assert!(disk == expected, "sector {sector} differs on disk");
    }
    drop(device);
    drop(queue);
    completed
}

fn wraps(ring: RingKind, indirect: bool) {
    // More than 2^16 requests on a 64-entry ring: the split avail/used indices
    // wrap at 65536, the packed wrap counters flip every lap.
    let completed = random_verify(
        ring,
        Workload {
            requests: 70_000,
            queue_size: 64,
            indirect,
            seed: 0x5eed_0001,
        },
    );
    assert_eq!(completed, 70_000);
}

#[test]
fn split_random_verify_wraps_indices_indirect() {
    wraps(RingKind::Split, true);
}

#[test]
fn split_random_verify_wraps_indices_direct() {
    wraps(RingKind::Split, false);
}

#[test]
fn packed_random_verify_wraps_indices_indirect() {
    wraps(RingKind::Packed, true);
}

#[test]
fn packed_random_verify_wraps_indices_direct() {
    wraps(RingKind::Packed, false);
}

fn sizes(ring: RingKind, sizes: &[u16], indirect: bool) {
    for &size in sizes {
        let completed = random_verify(
            ring,
            Workload {
                requests: 3_000,
                queue_size: size,
                indirect,
                seed: 0xabc0 + u64::from(size),
            },
        );
        assert_eq!(completed, 3_000, "queue size {size}");
    }
}

#[test]
fn split_queue_sizes_1_2_256_1024() {
    // A direct chain needs 3 descriptors, so sizes 1 and 2 work through indirect tables.
    sizes(RingKind::Split, &[1, 2, 256, 1024], true);
    sizes(RingKind::Split, &[256, 1024], false);
}

#[test]
fn packed_queue_sizes_1_2_3_256_1024() {
    sizes(RingKind::Packed, &[1, 2, 3, 256, 1024], true);
    // Size 3 without indirect holds exactly one direct chain per lap.
    sizes(RingKind::Packed, &[3, 256, 1024], false);
}

#[test]
fn split_rejects_size_that_is_not_a_power_of_two() {
    let sim = SimDevice::new(sim_config(RingKind::Split));
    let config = Config {
        queue_size: Some(3),
        ..Config::default()
    };
    let err = virtio_blk_mq::BlkDevice::new(SimHal, sim.transport(), config).err();
    assert_eq!(err, Some(Error::BadQueueSize(3)));
}

#[test]
fn split_falls_back_when_packed_not_offered() {
    let sim = SimDevice::new(sim_config(RingKind::Split));
    let (device, queue) = start(&sim, Config::default());
    assert_eq!(device.info().ring, RingKind::Split);
    assert_eq!(queue.ring_kind(), RingKind::Split);
    assert!(!sim.negotiated_features().contains(Features::RING_PACKED));
}

#[test]
fn packed_preferred_when_offered_and_switchable_off() {
    let sim = SimDevice::new(sim_config(RingKind::Packed));
    let (device, _queue) = start(&sim, Config::default());
    assert_eq!(device.info().ring, RingKind::Packed);
    let sim = SimDevice::new(sim_config(RingKind::Packed));
    let (device, _queue) = start(&sim, Config::default().without(Features::RING_PACKED));
    assert_eq!(device.info().ring, RingKind::Split);
}

/// Issue 14 item 6: VIRTIO_F_ORDER_PLATFORM is accepted when offered (a
/// hardware device may refuse to run without it, §6.1), and the rings run
/// on the platform's barriers then; switched off in the Config, a device
/// that requires it refuses FEATURES_OK.
fn order_platform_is_accepted_when_offered(ring: RingKind) {
    let mut hardware = sim_config(ring);
    hardware.features |= Features::ORDER_PLATFORM;
    hardware.required_features = Features::ORDER_PLATFORM;
    let sim = SimDevice::new(hardware.clone());
    let (device, mut queue) = start(&sim, Config::default());
    assert!(device.info().features.contains(Features::ORDER_PLATFORM));
    assert!(sim.negotiated_features().contains(Features::ORDER_PLATFORM));
    for round in 0..64u64 {
        for i in 0..8 {
            queue.read(i * 8, buffer(4096), round * 8 + i).unwrap();
        }
        queue.commit();
        assert_eq!(complete_all(&sim, &mut queue).len(), 8);
    }
    assert_eq!(sim.violations(), Vec::<String>::new());

    let sim = SimDevice::new(hardware);
    let refused = virtio_blk_mq::BlkDevice::new(
        SimHal,
        sim.transport(),
        Config::default().without(Features::ORDER_PLATFORM),
    );
    assert_eq!(refused.err(), Some(Error::FeaturesRejected));

    // A software device does not offer it: the driver does not ask for it.
    let sim = SimDevice::new(sim_config(ring));
    let (device, _queue) = start(&sim, Config::default());
    assert!(!device.info().features.contains(Features::ORDER_PLATFORM));
}

#[test]
fn split_order_platform_is_accepted_when_offered() {
    order_platform_is_accepted_when_offered(RingKind::Split);
}

#[test]
fn packed_order_platform_is_accepted_when_offered() {
    order_platform_is_accepted_when_offered(RingKind::Packed);
}
