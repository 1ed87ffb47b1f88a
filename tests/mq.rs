//! The queue set: how many queues a device gets, one owner thread per queue,
//! and the explicit shared path for more CPUs than queues.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread::ThreadId;

use common::*;
use virtio_blk_mq::mq::{queue_for_cpu, run_pinned};
use virtio_blk_mq::{BlkDevice, Config, RingKind};
use virtio_blk_sim::{CompletionOrder, DiskKind, SimConfig, SimDevice, SimHal, ThreadMode};

fn device_with_queues(ring: RingKind, offered: u16, wanted: u16) -> (SimDevice, Device) {
    let sim = SimDevice::new(SimConfig {
        num_queues: offered,
        disk: DiskKind::Ram,
        order: CompletionOrder::Shuffled { seed: 7 },
        ..sim_config(ring)
    });
    let config = Config {
        queues: wanted,
        queue_size: Some(64),
        ..Config::default()
    };
    let device = BlkDevice::new(SimHal, sim.transport(), config).expect("device set up");
    (sim, device)
}

fn queue_count_is_min_of_device_and_request(ring: RingKind) {
    for (offered, wanted, expected) in [(4, 2, 2), (4, 8, 4), (1, 4, 1), (3, 3, 3), (2, 0, 1)] {
        let (_sim, mut device) = device_with_queues(ring, offered, wanted);
        let set = device.take_queues();
        assert_eq!(set.len(), expected, "offered {offered}, wanted {wanted}");
        let indices: Vec<u16> = set.into_queues().iter().map(|q| q.index()).collect();
        assert_eq!(indices, (0..expected as u16).collect::<Vec<_>>());
        assert!(
            device.take_queues().is_empty(),
            "queues are handed out once"
        );
    }
}

#[test]
fn split_queue_count_is_min_of_device_and_request() {
    queue_count_is_min_of_device_and_request(RingKind::Split);
}

#[test]
fn packed_queue_count_is_min_of_device_and_request() {
    queue_count_is_min_of_device_and_request(RingKind::Packed);
}

/// Blocks of 4 KiB each queue writes and reads back in its own region.
const BLOCKS_PER_QUEUE: u64 = 300;
const BLOCK: usize = 4096;
const BLOCK_SECTORS: u64 = (BLOCK / 512) as u64;

/// Writes every block of `queue`'s region, then reads each back and checks it,
/// keeping up to 8 requests in flight; returns the thread it ran on.
fn write_then_verify(cpu: usize, queue: &mut Queue) -> ThreadId {
    let first = cpu as u64 * BLOCKS_PER_QUEUE * BLOCK_SECTORS;
    for write in [true, false] {
        let mut next = 0;
        let mut done = 0;
        while done < BLOCKS_PER_QUEUE {
            while next < BLOCKS_PER_QUEUE && queue.in_flight() < 8 {
                let sector = first + next * BLOCK_SECTORS;
                let mut data = buffer(BLOCK);
                let submitted = if write {
                    stamp(data.as_mut_slice(), sector, cpu as u32 + 1);
                    queue.write(sector, data, sector)
                } else {
                    queue.read(sector, data, sector)
                };
                submitted.expect("request accepted");
                next += 1;
            }
            queue.commit();
            done += queue.poll(usize::MAX, |c| {
                c.result.expect("request succeeded");
                if !write {
                    let mut expected = vec![0; BLOCK];
                    stamp(&mut expected, c.tag, cpu as u32 + 1);
                    assert!(
                        c.buffer.expect("read buffer back").as_slice() == expected,
                        "queue {cpu}: sector {} read back wrong",
                        c.tag
                    );
                }
            }) as u64;
        }
    }
    std::thread::current().id()
}

fn every_queue_runs_on_a_thread_of_its_own(ring: RingKind) {
    let (sim, mut device) = device_with_queues(ring, 3, 3);
    let queues = device.take_queues().into_queues();
    let threads = sim.spawn(ThreadMode::Poll);
    let finished = run_pinned(queues, |cpu, queue| {
        assert_eq!(usize::from(queue.index()), cpu, "queue i goes to CPU i");
        write_then_verify(cpu, queue)
    });
    threads.stop();
    assert_eq!(finished.len(), 3);
    let owners: HashSet<ThreadId> = finished.iter().map(|(_, id)| *id).collect();
    assert_eq!(owners.len(), 3, "each queue had an owner thread of its own");
    assert!(!owners.contains(&std::thread::current().id()));
    for (queue, _) in &finished {
        let stats = queue.stats();
        assert_eq!(stats.submitted, 2 * BLOCKS_PER_QUEUE);
        assert_eq!(stats.completed, 2 * BLOCKS_PER_QUEUE);
        assert!(stats.kicks <= stats.commits, "at most one kick per batch");
        assert_eq!(queue.in_flight(), 0);
    }
    assert_eq!(sim.violations(), Vec::<String>::new());
}

#[test]
fn split_every_queue_runs_on_a_thread_of_its_own() {
    every_queue_runs_on_a_thread_of_its_own(RingKind::Split);
}

#[test]
fn packed_every_queue_runs_on_a_thread_of_its_own() {
    every_queue_runs_on_a_thread_of_its_own(RingKind::Packed);
}

/// Four CPUs share two queues: every request completes exactly once, though
/// its completion may be taken by whichever CPU polls the queue next.
fn shared_queues_serve_more_cpus_than_queues(ring: RingKind) {
    const CPUS: usize = 4;
    const PER_CPU: u64 = 2000;
    let (sim, mut device) = device_with_queues(ring, 2, 2);
    let shared = device.take_queues().into_shared();
    assert_eq!(shared.len(), 2);
    let threads = sim.spawn(ThreadMode::Poll);
    // The test's own bookkeeping, not the driver's.
    let completed_tags = Mutex::new(HashSet::new());
    let done_per_cpu: [AtomicU64; CPUS] = Default::default();
    std::thread::scope(|scope| {
        for cpu in 0..CPUS {
            let queue = &shared[queue_for_cpu(cpu, shared.len())];
            let (completed_tags, done_per_cpu) = (&completed_tags, &done_per_cpu);
            scope.spawn(move || {
                let mut submitted = 0;
                let mut idle = 0u32;
                loop {
                    let mut queue = queue.lock();
                    if submitted < PER_CPU && queue.in_flight() < queue.size() / 2 {
                        let tag = (cpu as u64) << 32 | submitted;
                        let sector = (tag % 1000) * BLOCK_SECTORS;
                        queue
                            .read(sector, buffer(BLOCK), tag)
                            .expect("read accepted");
                        queue.commit();
                        submitted += 1;
                    }
                    let mut tags = Vec::new();
                    queue.poll(usize::MAX, |c| {
                        c.result.expect("read succeeded");
                        tags.push(c.tag);
                    });
                    let busy = queue.in_flight() > 0;
                    drop(queue);
                    let mut seen = completed_tags.lock().unwrap();
                    for tag in tags {
                        assert!(seen.insert(tag), "tag {tag:#x} completed twice");
                        done_per_cpu[(tag >> 32) as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    drop(seen);
                    if done_per_cpu[cpu].load(Ordering::Relaxed) == PER_CPU {
                        break;
                    }
                    if !busy && submitted == PER_CPU {
                        idle += 1;
                        assert!(idle < 10_000_000, "cpu {cpu}: its requests never completed");
                        std::thread::yield_now();
                    }
                }
            });
        }
    });
    threads.stop();
    assert_eq!(
        completed_tags.into_inner().unwrap().len() as u64,
        CPUS as u64 * PER_CPU
    );
    let queues: Vec<Queue> = shared.into_iter().map(|q| q.into_inner()).collect();
    for queue in &queues {
        assert_eq!(queue.stats().submitted, 2 * PER_CPU, "two CPUs per queue");
        assert_eq!(queue.stats().completed, 2 * PER_CPU);
        assert_eq!(queue.in_flight(), 0);
    }
    assert_eq!(sim.violations(), Vec::<String>::new());
}

#[test]
fn split_shared_queues_serve_more_cpus_than_queues() {
    shared_queues_serve_more_cpus_than_queues(RingKind::Split);
}

#[test]
fn packed_shared_queues_serve_more_cpus_than_queues() {
    shared_queues_serve_more_cpus_than_queues(RingKind::Packed);
}

#[test]
fn cpus_map_round_robin_onto_shared_queues() {
    let mapped: Vec<usize> = (0..6).map(|cpu| queue_for_cpu(cpu, 4)).collect();
    assert_eq!(mapped, [0, 1, 2, 3, 0, 1]);
    assert_eq!(queue_for_cpu(5, 0), 0, "no division by zero");
}
