//! `threaded/{split,packed}/q{1,2}/qd32` and `threaded/limit/qd{1,32,128}`
//! (DESIGN.md §7): the device on threads of its own, so every request crosses
//! cores twice (descriptor to the device, used element back).
//!
//! - `threaded/<ring>/q<n>/qd32` (and `q1/qd{1,128}`, to read against the
//!   limit at the same depths): the sim polls each queue on its own thread
//!   ([`ThreadMode::Poll`]: the driver is told not to kick); each queue is
//!   driven by its own driver thread (pinned to CPU `i` when the crate's `std`
//!   support offers pinning) keeping 32 4 KiB reads in flight on a null disk.
//! - `threaded/limit/qd<d>`: an idealised one-descriptor packed ring between
//!   two pinned threads, written here in a few lines: the driver publishes a
//!   16-byte descriptor by flipping its flags with Release, the device spins
//!   on them with Acquire and marks the descriptor used, the driver reaps it.
//!   No validation, no request header, no status byte, no locks: the physical
//!   cost of handing a request across cores and back, which the figures above
//!   are read against.
//!
//! One iteration is one request; the time criterion reports is per request and
//! its throughput is IOPS (summed over the queues for `q2`).
//!
//! The machine these run on may have as few as two CPUs: `q2` then runs four
//! busy threads (two drivers, two device pollers) on two CPUs, and measures
//! oversubscription as much as the driver.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use crossbeam_utils::CachePadded;
use virtio_blk_mq::mq::pin_current_thread;
use virtio_blk_mq::{BlkDevice, BlkQueue, Config, DmaBuffer, Features, RingKind};
use virtio_blk_sim::{
    DiskKind, SimConfig, SimDevice, SimHal, SimNotifier, SimThreads, SimTransport, ThreadMode,
};

/// Entries per queue, at least: deeper runs take 3 × depth rounded up to a
/// power of two, as vblk-bench sizes its rings, so every read can go as a
/// direct chain.
const QUEUE_SIZE: u16 = 256;
/// Requests each driver keeps in flight in the fixed `q{1,2}/qd32` runs.
const DEPTH: usize = 32;
/// Extra one-queue depths, read against `threaded/limit/qd{1,128}`.
const LIMIT_DEPTHS: [usize; 2] = [1, 128];
/// Bytes per read.
const BLOCK: usize = 4096;
/// Sectors per read.
const BLOCK_SECTORS: u64 = (BLOCK / 512) as u64;
/// Ring layouts measured, with the name each has in the benchmark id.
const RINGS: [(RingKind, &str); 2] = [(RingKind::Split, "split"), (RingKind::Packed, "packed")];
/// Empty polls between yields: with more busy threads than CPUs a waiting
/// driver must let the device thread run.
const SPINS_PER_YIELD: u32 = 64;

/// The driver side of one queue: the queue and the buffers circulating in it.
struct Driver {
    queue: BlkQueue<SimHal, SimNotifier>,
    /// Buffers not in flight; one per request the driver keeps in flight.
    free: Vec<DmaBuffer<SimHal>>,
    next_sector: u64,
    sector_span: u64,
}

impl Driver {
    /// Completes `requests` reads, keeping every buffer in `free` in flight.
    fn run(&mut self, requests: u64) {
        let (mut submitted, mut completed) = (0u64, 0u64);
        let mut idle = 0u32;
        while completed < requests {
            let before = submitted;
            while submitted < requests {
                let Some(buffer) = self.free.pop() else {
                    break;
                };
                let sector = self.next_sector;
                self.next_sector = (sector + BLOCK_SECTORS) % self.sector_span;
                if let Err(rejected) = self.queue.read(sector, buffer, sector) {
                    panic!("read refused: {rejected}");
                }
                submitted += 1;
            }
            if submitted != before {
                self.queue.commit();
            }
            let free = &mut self.free;
            let done = self.queue.poll(usize::MAX, |completion| {
                if let Err(error) = completion.result {
                    panic!("read of sector {} failed: {error}", completion.tag);
                }
                free.push(
                    completion
                        .buffer
                        .expect("a completed read returns its buffer"),
                );
            });
            completed += done as u64;
            if done > 0 {
                idle = 0;
            } else {
                idle = idle.wrapping_add(1);
                if idle % SPINS_PER_YIELD == 0 {
                    std::thread::yield_now();
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// A device with `queues` queues served by polling device threads.
struct Rig {
    sim: SimDevice,
    drivers: Vec<Driver>,
    threads: Option<SimThreads>,
    // Dropped last: dropping the device resets it.
    _device: BlkDevice<SimHal, SimTransport>,
}

impl Rig {
    fn new(ring: RingKind, queues: u16, depth: usize) -> Rig {
        let mut sim_config = SimConfig {
            disk: DiskKind::Null,
            num_queues: queues,
            ..SimConfig::default()
        };
        if ring == RingKind::Split {
            sim_config.features.remove(Features::RING_PACKED);
        }
        let sector_span = sim_config.capacity_sectors / BLOCK_SECTORS * BLOCK_SECTORS;
        let sim = SimDevice::new(sim_config);
        let config = Config {
            queues,
            queue_size: Some(QUEUE_SIZE.max((3 * depth as u16).next_power_of_two())),
            // The depth the bench keeps, as a kernel gives its tag depth (it
            // also sets how long batches are published in pieces).
            max_requests: Some(depth as u16),
            ..Config::default()
        };
        let mut device =
            BlkDevice::new(SimHal, sim.transport(), config).expect("the sim accepts the driver");
        assert_eq!(device.info().ring, ring, "negotiated the wrong ring layout");
        let drivers: Vec<Driver> = device
            .take_queues()
            .into_iter()
            .enumerate()
            .map(|(i, queue)| Driver {
                queue,
                free: (0..depth)
                    .map(|_| DmaBuffer::new(&SimHal, BLOCK).expect("dma memory for a buffer"))
                    .collect(),
                // Queues read different parts of the disk.
                next_sector: (i as u64 * sector_span / u64::from(queues)) / BLOCK_SECTORS
                    * BLOCK_SECTORS,
                sector_span,
            })
            .collect();
        assert_eq!(drivers.len(), usize::from(queues), "one queue per driver");
        // Driver i on CPU i, its device thread on the next CPUs.
        let threads = sim.spawn_pinned(ThreadMode::Poll, usize::from(queues));
        assert_eq!(
            threads.len(),
            usize::from(queues),
            "one device thread per queue"
        );
        Rig {
            sim,
            drivers,
            threads: Some(threads),
            _device: device,
        }
    }

    /// Completes `requests` reads spread over the queues, each queue driven by
    /// its own pinned thread; returns the time from the common start to the
    /// last driver's finish (thread start-up is not counted).
    fn run(&mut self, requests: u64) -> Duration {
        let queues = self.drivers.len();
        let start_line = Barrier::new(queues);
        std::thread::scope(|scope| {
            let threads: Vec<_> = self
                .drivers
                .iter_mut()
                .enumerate()
                .map(|(i, driver)| {
                    let share =
                        requests / queues as u64 + u64::from((i as u64) < requests % queues as u64);
                    let start_line = &start_line;
                    scope.spawn(move || {
                        pin_current_thread(i);
                        start_line.wait();
                        let start = Instant::now();
                        driver.run(share);
                        start.elapsed()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| thread.join().expect("a driver thread panicked"))
                .max()
                .unwrap_or_default()
        })
    }

    /// Stops the device threads and checks that nothing went wrong.
    fn finish(mut self) {
        drop(self.threads.take());
        for driver in &self.drivers {
            assert_eq!(driver.queue.fault(), None, "the driver saw a device fault");
            assert_eq!(driver.queue.in_flight(), 0);
        }
        assert_eq!(self.sim.violations(), Vec::<String>::new());
    }
}

fn threaded(c: &mut Criterion) {
    let mut group = c.benchmark_group("threaded");
    group.throughput(Throughput::Elements(1));
    let runs = RINGS.iter().flat_map(|&(ring, name)| {
        let fixed = [1u16, 2].map(|queues| (ring, name, queues, DEPTH));
        let extra = LIMIT_DEPTHS.map(|depth| (ring, name, 1, depth));
        fixed.into_iter().chain(extra)
    });
    for (ring, ring_name, queues, depth) in runs {
        let mut rig = Rig::new(ring, queues, depth);
        group.bench_function(format!("{ring_name}/q{queues}/qd{depth}"), |b| {
            b.iter_custom(|requests| rig.run(requests))
        });
        rig.finish();
    }
    group.finish();
}

/// `threaded/limit`: the idealised packed ring.
mod limit {
    use super::*;

    /// Slots in the ring.
    pub const SLOTS: usize = 256;
    /// Packed descriptor flag bits (VIRTIO 1.2 §2.8.1).
    const AVAIL: u16 = 1 << 7;
    const USED: u16 = 1 << 15;
    /// A made-up buffer address the descriptors carry (nobody dereferences it).
    const BUFFER_ADDR: u64 = 0x10_0000;

    /// One 16-byte packed descriptor. Plain fields are atomics accessed
    /// Relaxed (ordinary moves on x86-64), ordered by the Release/Acquire on
    /// `flags`, so the ring needs no `unsafe`.
    #[repr(C, align(16))]
    struct Desc {
        addr: AtomicU64,
        len: AtomicU32,
        id: AtomicU16,
        flags: AtomicU16,
    }

    /// The ring both threads share, and the device thread's stop flag.
    pub struct Ring {
        descs: Box<[Desc]>,
        stop: CachePadded<AtomicBool>,
    }

    /// Available for a reader whose wrap counter is `wrap` (§2.8.1).
    fn is_avail(flags: u16, wrap: bool) -> bool {
        (flags & AVAIL != 0) == wrap && (flags & USED != 0) != wrap
    }

    /// Used, for a driver whose used wrap counter is `wrap` (§2.8.1).
    fn is_used(flags: u16, wrap: bool) -> bool {
        (flags & AVAIL != 0) == wrap && (flags & USED != 0) == wrap
    }

    impl Ring {
        pub fn new() -> Ring {
            Ring {
                descs: (0..SLOTS)
                    .map(|_| Desc {
                        addr: AtomicU64::new(0),
                        len: AtomicU32::new(0),
                        id: AtomicU16::new(0),
                        flags: AtomicU16::new(0),
                    })
                    .collect(),
                stop: CachePadded::new(AtomicBool::new(false)),
            }
        }

        /// The device side: serves descriptors in ring order until `stop`.
        pub fn serve(&self) {
            let (mut pos, mut wrap) = (0usize, true);
            loop {
                let desc = &self.descs[pos];
                // Read the flags before the descriptor they publish.
                if is_avail(desc.flags.load(Ordering::Acquire), wrap) {
                    let len = desc.len.load(Ordering::Relaxed);
                    let id = desc.id.load(Ordering::Relaxed);
                    std::hint::black_box(desc.addr.load(Ordering::Relaxed));
                    desc.id.store(id, Ordering::Relaxed);
                    desc.len.store(len, Ordering::Relaxed);
                    // Write id and len before the flags that hand them back.
                    let used = if wrap { AVAIL | USED } else { 0 };
                    desc.flags.store(used, Ordering::Release);
                    pos += 1;
                    if pos == SLOTS {
                        pos = 0;
                        wrap = !wrap;
                    }
                } else if self.stop.load(Ordering::Relaxed) {
                    return;
                } else {
                    std::hint::spin_loop();
                }
            }
        }
    }

    /// Tells the device side to return when dropped.
    pub struct StopOnDrop<'a>(pub &'a Ring);

    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.stop.store(true, Ordering::Relaxed);
        }
    }

    /// The driver side: avail and used positions with their wrap counters.
    pub struct Driver {
        avail: usize,
        avail_wrap: bool,
        used: usize,
        used_wrap: bool,
        in_flight: usize,
    }

    impl Driver {
        pub fn new() -> Driver {
            Driver {
                avail: 0,
                avail_wrap: true,
                used: 0,
                used_wrap: true,
                in_flight: 0,
            }
        }

        /// Completes `requests` requests, keeping up to `depth` in flight.
        pub fn run(&mut self, ring: &Ring, requests: u64, depth: usize) {
            let (mut submitted, mut completed) = (0u64, 0u64);
            while completed < requests {
                while submitted < requests && self.in_flight < depth {
                    let desc = &ring.descs[self.avail];
                    desc.addr.store(BUFFER_ADDR, Ordering::Relaxed);
                    desc.len.store(4096, Ordering::Relaxed);
                    desc.id.store(self.avail as u16, Ordering::Relaxed);
                    // Write the descriptor before the flags that publish it.
                    let flags = if self.avail_wrap { AVAIL } else { USED };
                    desc.flags.store(flags, Ordering::Release);
                    self.avail += 1;
                    if self.avail == SLOTS {
                        self.avail = 0;
                        self.avail_wrap = !self.avail_wrap;
                    }
                    self.in_flight += 1;
                    submitted += 1;
                }
                let mut reaped = false;
                loop {
                    let desc = &ring.descs[self.used];
                    // Read the flags before the used id and len.
                    if !is_used(desc.flags.load(Ordering::Acquire), self.used_wrap) {
                        break;
                    }
                    std::hint::black_box((
                        desc.id.load(Ordering::Relaxed),
                        desc.len.load(Ordering::Relaxed),
                    ));
                    self.used += 1;
                    if self.used == SLOTS {
                        self.used = 0;
                        self.used_wrap = !self.used_wrap;
                    }
                    self.in_flight -= 1;
                    completed += 1;
                    reaped = true;
                }
                if !reaped {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

fn limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("threaded");
    group.throughput(Throughput::Elements(1));
    for depth in [1usize, 32, 128] {
        assert!(depth <= limit::SLOTS);
        let ring = limit::Ring::new();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                pin_current_thread(1);
                ring.serve();
            });
            // Stops the device thread even if the measurement panics, so the
            // scope can end.
            let _stop = limit::StopOnDrop(&ring);
            let mut driver = limit::Driver::new();
            group.bench_function(format!("limit/qd{depth}"), |b| {
                b.iter_custom(|requests| {
                    // The driver side gets a pinned thread of its own per
                    // measurement: the bench thread stays unpinned, so the
                    // threads it spawns may still be pinned anywhere.
                    std::thread::scope(|inner| {
                        let (ring, driver) = (&ring, &mut driver);
                        inner
                            .spawn(move || {
                                pin_current_thread(0);
                                let start = Instant::now();
                                driver.run(ring, requests, depth);
                                start.elapsed()
                            })
                            .join()
                            .expect("the driver thread panicked")
                    })
                })
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = threaded, limit
}
criterion_main!(benches);
