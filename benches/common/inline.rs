//! Our driver against the sim stepped inline: one thread, one queue, batches
//! of `depth` 4 KiB reads on a null disk (no copy, no cross-core traffic).
//! `rings/*` and `peers/ours/*` both measure this rig.

use virtio_blk_mq::{BlkDevice, BlkQueue, Config, DmaBuffer, Rejected, RingKind};
use virtio_blk_sim::{SimConfig, SimDevice, SimHal, SimNotifier, SimTransport};

/// Bytes per read.
pub const BLOCK: usize = 4096;
/// Sectors per read.
pub const BLOCK_SECTORS: u64 = (BLOCK / 512) as u64;

/// The queue the rig drives.
pub type Queue = BlkQueue<SimHal, SimNotifier>;
/// A data buffer of the rig.
pub type Buffer = DmaBuffer<SimHal>;
/// What submitting a read returns.
pub type Submitted = Result<(), Rejected<SimHal>>;

/// One device, one queue, and the buffers that circulate through it.
pub struct InlineRig {
    pub sim: SimDevice,
    // Kept alive: dropping the device resets it.
    _device: BlkDevice<SimHal, SimTransport>,
    queue: Queue,
    /// Buffers not in flight; exactly `depth` of them exist.
    free: Vec<Buffer>,
    depth: u16,
    next_sector: u64,
    /// Reads start below this, so every read lies inside the disk.
    sector_span: u64,
    /// Reads submitted so far.
    pub submitted: u64,
}

impl InlineRig {
    /// A device made from `sim_config`, driven with `config`; it must
    /// negotiate `ring`.
    pub fn new(sim_config: SimConfig, ring: RingKind, config: Config, depth: u16) -> InlineRig {
        let sector_span = sim_config.capacity_sectors / BLOCK_SECTORS * BLOCK_SECTORS;
        let sim = SimDevice::new(sim_config);
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
        InlineRig {
            sim,
            _device: device,
            queue,
            free,
            depth,
            next_sector: 0,
            sector_span,
            submitted: 0,
        }
    }

    /// Submits `depth` reads, commits once, steps the device, polls them back.
    #[inline]
    pub fn batch(&mut self) {
        for _ in 0..self.depth {
            self.submit_one();
        }
        self.commit();
        self.step_device();
        self.reap();
    }

    /// Submits one read (not yet visible to the device).
    #[inline]
    pub fn submit_one(&mut self) {
        self.submit_one_with(|queue, sector, buffer, tag| queue.read(sector, buffer, tag));
    }

    /// Submits one read through `read` (which calls [`BlkQueue::read`]),
    /// so a caller can count the read's own instructions.
    #[inline]
    pub fn submit_one_with(
        &mut self,
        read: impl FnOnce(&mut Queue, u64, Buffer, u64) -> Submitted,
    ) {
        let buffer = self
            .free
            .pop()
            .expect("a buffer for every request in flight");
        let sector = self.next_sector;
        self.next_sector = (sector + BLOCK_SECTORS) % self.sector_span;
        if let Err(rejected) = read(&mut self.queue, sector, buffer, sector) {
            panic!("read refused: {rejected}");
        }
        self.submitted += 1;
    }

    /// Publishes the reads submitted since the last commit.
    #[inline]
    pub fn commit(&mut self) {
        self.queue.commit();
    }

    /// Steps the device once, as [`SimDevice::step`] does inline.
    #[inline]
    pub fn step_device(&self) {
        self.sim.step(self.queue.index());
    }

    /// Steps the device once, as a polling device thread does.
    #[inline]
    pub fn poll_device(&self) {
        self.sim.poll_step(self.queue.index());
    }

    /// Polls every completion back; the device must have served the whole batch.
    #[inline]
    pub fn reap(&mut self) {
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

    /// Requests kept in flight per batch.
    pub fn depth(&self) -> u16 {
        self.depth
    }

    /// Checks that nothing went wrong on either side while measuring.
    pub fn check(&self) {
        assert_eq!(self.queue.fault(), None, "the driver saw a device fault");
        assert_eq!(self.sim.violations(), Vec::<String>::new());
    }
}
