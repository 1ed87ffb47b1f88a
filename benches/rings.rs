//! `rings/{split,packed}/qd{1,32,128}` (DESIGN.md §7): what one 4 KiB read
//! costs the driver and the device together, with both on one thread.
//!
//! The sim runs inline over a null disk, so there is no cross-core traffic and
//! no data copy: the figure is ring work (place, publish, consume, validate)
//! plus the sim's request handling. One measured iteration is one batch:
//! submit `qd` reads, commit once, step the device once, poll them all back.
//! The time criterion reports is per request (the batch time divided by
//! `qd`), and its throughput figure is therefore IOPS.
//!
//! Buffers are allocated before measuring and recycled from the completions,
//! so the measured loop allocates nothing.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use virtio_blk_mq::{BlkDevice, BlkQueue, Config, DmaBuffer, Features, RingKind};
use virtio_blk_sim::{DiskKind, SimConfig, SimDevice, SimHal, SimNotifier, SimTransport};

/// Entries per queue.
const QUEUE_SIZE: u16 = 256;
/// Bytes per read.
const BLOCK: usize = 4096;
/// Sectors per read.
const BLOCK_SECTORS: u64 = (BLOCK / 512) as u64;
/// Queue depths measured.
const DEPTHS: [u16; 3] = [1, 32, 128];
/// Ring layouts measured, with the name each has in the benchmark id.
const RINGS: [(RingKind, &str); 2] = [(RingKind::Split, "split"), (RingKind::Packed, "packed")];

/// One device, one queue, and the buffers that circulate through it.
struct Rig {
    sim: SimDevice,
    // Kept alive: dropping the device resets it.
    _device: BlkDevice<SimHal, SimTransport>,
    queue: BlkQueue<SimHal, SimNotifier>,
    /// Buffers not in flight; exactly `depth` of them exist.
    free: Vec<DmaBuffer<SimHal>>,
    depth: u16,
    next_sector: u64,
    /// Reads start below this, so every read lies inside the disk.
    sector_span: u64,
}

impl Rig {
    fn new(ring: RingKind, depth: u16) -> Rig {
        let mut sim_config = SimConfig {
            disk: DiskKind::Null,
            ..SimConfig::default()
        };
        if ring == RingKind::Split {
            sim_config.features.remove(Features::RING_PACKED);
        }
        let sector_span = sim_config.capacity_sectors / BLOCK_SECTORS * BLOCK_SECTORS;
        let sim = SimDevice::new(sim_config);
        let config = Config {
            queue_size: Some(QUEUE_SIZE),
            ..Config::default()
        };
        let mut device =
            BlkDevice::new(SimHal, sim.transport(), config).expect("the sim accepts the driver");
        assert_eq!(device.info().ring, ring, "negotiated the wrong ring layout");
        let queue = device
            .take_queues()
            .into_queues()
            .into_iter()
            .next()
            .expect("one queue");
        let free = (0..depth)
            .map(|_| DmaBuffer::new(&SimHal, BLOCK).expect("dma memory for a buffer"))
            .collect();
        Rig {
            sim,
            _device: device,
            queue,
            free,
            depth,
            next_sector: 0,
            sector_span,
        }
    }

    /// Submits `depth` reads, commits once, steps the device, polls them back.
    #[inline]
    fn batch(&mut self) {
        for _ in 0..self.depth {
            let buffer = self
                .free
                .pop()
                .expect("a buffer for every request in flight");
            let sector = self.next_sector;
            self.next_sector = (sector + BLOCK_SECTORS) % self.sector_span;
            if let Err(rejected) = self.queue.read(sector, buffer, sector) {
                panic!("read refused: {rejected}");
            }
        }
        self.queue.commit();
        self.sim.step(self.queue.index());
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
        assert_eq!(
            done,
            usize::from(self.depth),
            "a step completes the whole batch"
        );
    }

    /// Checks that nothing went wrong on either side while measuring.
    fn check(&self) {
        assert_eq!(self.queue.fault(), None, "the driver saw a device fault");
        assert_eq!(self.sim.violations(), Vec::<String>::new());
    }
}

fn rings(c: &mut Criterion) {
    let mut group = c.benchmark_group("rings");
    group.throughput(Throughput::Elements(1));
    for (ring, ring_name) in RINGS {
        for depth in DEPTHS {
            let mut rig = Rig::new(ring, depth);
            group.bench_function(format!("{ring_name}/qd{depth}"), |b| {
                b.iter_custom(|batches| {
                    let start = Instant::now();
                    for _ in 0..batches {
                        rig.batch();
                    }
                    // One iteration is one request: divide the batch time.
                    start.elapsed() / u32::from(depth)
                })
            });
            rig.check();
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = rings
}
criterion_main!(benches);
