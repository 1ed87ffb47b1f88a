//! Shared helpers for the driver-against-sim scenarios.
#![allow(dead_code)]

use std::cell::Cell;

use virtio_blk_mq::mq::IrqWait;
use virtio_blk_mq::{BlkDevice, BlkQueue, Completion, Config, DmaBuffer, Features, RingKind};
use virtio_blk_sim::{SimConfig, SimDevice, SimHal, SimNotifier, SimTransport};

pub type Device = BlkDevice<SimHal, SimTransport>;
pub type Queue = BlkQueue<SimHal, SimNotifier>;

/// The ring layouts every scenario runs on.
pub const RINGS: [RingKind; 2] = [RingKind::Split, RingKind::Packed];

/// Device features for `ring`: packed offered only for the packed runs.
pub fn sim_config(ring: RingKind) -> SimConfig {
    let mut config = SimConfig::default();
    if ring == RingKind::Split {
        config.features.remove(Features::RING_PACKED);
    }
    config
}

/// A device with one queue, driven by `config`.
pub fn start(sim: &SimDevice, config: Config) -> (Device, Queue) {
    let mut device = BlkDevice::new(SimHal, sim.transport(), config).expect("device set up");
    let queue = device.take_queues().into_queues().remove(0);
    (device, queue)
}

/// A device with one queue in `mode`, otherwise the default config.
pub fn start_mode(sim: &SimDevice, mode: virtio_blk_mq::Mode) -> (Device, Queue) {
    start(
        sim,
        Config {
            mode,
            ..Config::default()
        },
    )
}

/// Steps the sim and polls until `queue` has nothing in flight; returns the completions.
pub fn complete_all(sim: &SimDevice, queue: &mut Queue) -> Vec<Completion<SimHal>> {
    let mut done = Vec::new();
    let mut idle_rounds = 0;
    while queue.in_flight() > 0 {
        sim.step(queue.index());
        if queue.poll(usize::MAX, |c| done.push(c)) == 0 {
            sim.drain(queue.index());
            idle_rounds += 1;
            assert!(idle_rounds < 1000, "requests never completed");
        }
    }
    done
}

/// Places `count` 4 KiB reads (sectors 0, 8, 16, ...; tags 0, 1, 2, ...).
pub fn submit_reads(queue: &mut Queue, count: u64) {
    for i in 0..count {
        queue.read(i * 8, buffer(4096), i).unwrap();
    }
}

/// A waiter for inline tests: each sleep lets the device run one step of
/// queue 0 and then returns as if its slice ran out (nothing is signalled).
pub struct StepWhileAsleep {
    pub sim: SimDevice,
    pub sleeps: Cell<u32>,
}

impl StepWhileAsleep {
    pub fn new(sim: &SimDevice) -> Self {
        StepWhileAsleep {
            sim: sim.clone(),
            sleeps: Cell::new(0),
        }
    }
}

impl IrqWait for StepWhileAsleep {
    fn wait(&self) {
        self.sleeps.set(self.sleeps.get() + 1);
        self.sim.step(0);
    }
}

/// A buffer of `len` bytes.
pub fn buffer(len: usize) -> DmaBuffer<SimHal> {
    DmaBuffer::new(&SimHal, len).expect("dma memory")
}

/// Fills each 512-byte block with its sector number and a generation.
pub fn stamp(data: &mut [u8], first_sector: u64, generation: u32) {
    for (i, block) in data.chunks_mut(512).enumerate() {
        let sector = first_sector + i as u64;
        for (j, word) in block.chunks_mut(12).enumerate() {
            let mut bytes = [0u8; 12];
            bytes[..8].copy_from_slice(&sector.to_le_bytes());
            bytes[8..].copy_from_slice(&(generation ^ j as u32).to_le_bytes());
            word.copy_from_slice(&bytes[..word.len()]);
        }
    }
}

/// A small deterministic PRNG (xorshift64*).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}
