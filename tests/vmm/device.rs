//! A virtio-blk device whose virtqueues are `virtio_queue::Queue`s: the
//! control plane (features, status, configuration, queue setup) here, the
//! stepped queue loop in [`queue_loop`].

mod queue_loop;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::{ByteValued, Le16, Le32, Le64};

use super::config_space::{feature, status, BlkConfigSpace, ID_BYTES, SECTOR};
use super::memory::Memory;
use super::request::{RamDisk, Range};
use super::transport::VmmTransport;

/// In which order the device puts one step's served chains into the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionOrder {
    /// As popped.
    InOrder,
    /// Last popped first.
    Reversed,
    /// A deterministic shuffle per step.
    Shuffled { seed: u64 },
}

/// What the device offers and how it behaves.
#[derive(Clone, Debug)]
pub struct VmmBlkConfig {
    pub capacity_sectors: u64,
    pub event_idx: bool,
    pub indirect: bool,
    pub discard: bool,
    pub write_zeroes: bool,
    pub seg_max: u32,
    pub max_queue_size: u16,
    pub num_queues: u16,
    /// GET_ID answer; shorter ids are NUL-padded to 20 bytes.
    pub id: Vec<u8>,
    pub order: CompletionOrder,
}

impl Default for VmmBlkConfig {
    fn default() -> Self {
        VmmBlkConfig {
            capacity_sectors: 512,
            event_idx: true,
            indirect: true,
            discard: false,
            write_zeroes: false,
            seg_max: 16,
            max_queue_size: 256,
            num_queues: 1,
            id: b"vmm-queue-blk".to_vec(),
            order: CompletionOrder::InOrder,
        }
    }
}

/// Per-queue counters, as the device saw things.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Chains served.
    pub chains: u64,
    /// Chains whose head pointed to an indirect table.
    pub indirect_chains: u64,
    /// Doorbell writes.
    pub kicks: u64,
    /// Kicks that woke the sleeping device (at most one per sleep).
    pub wakeups: u64,
    /// Kicks that arrived while the device was awake with notifications off.
    pub kicks_while_awake: u64,
    /// Steps that put chains into the used ring.
    pub batches: u64,
    /// Steps whose used chains reached the ring in an order other than popped.
    pub reordered_batches: u64,
    /// Used-buffer notifications the device would have sent.
    pub used_notifications: u64,
    /// Batches for which `virtio-queue` wanted to notify but `avail.flags`
    /// said NO_INTERRUPT (only without EVENT_IDX: `virtio-queue` leaves that
    /// flag to the device model).
    pub suppressed_by_flag: u64,
}

/// One virtqueue as the device holds it.
struct QueueSlot {
    /// Set up by the driver (and ready) or `None`.
    queue: Option<Queue>,
    doorbell: Arc<AtomicU64>,
    kicks_seen: u64,
    /// Waiting for a kick; avail notifications are enabled.
    asleep: bool,
    stats: QueueStats,
}

pub(super) struct VmmBlk {
    memory: Arc<Memory>,
    config: VmmBlkConfig,
    space: BlkConfigSpace,
    status: u8,
    driver_features: u64,
    queues: Vec<QueueSlot>,
    disk: RamDisk,
    /// Control-plane and ring-level driver mistakes (request-level ones are
    /// in `disk.violations`).
    violations: Vec<String>,
    rng: u64,
}

impl VmmBlk {
    fn new(memory: Arc<Memory>, config: VmmBlkConfig) -> Self {
        let mut id = [0u8; ID_BYTES];
        let id_len = config.id.len().min(ID_BYTES);
        id[..id_len].copy_from_slice(&config.id[..id_len]);
        let space = BlkConfigSpace {
            capacity: Le64::from(config.capacity_sectors),
            seg_max: Le32::from(config.seg_max),
            blk_size: Le32::from(SECTOR as u32),
            num_queues: Le16::from(config.num_queues),
            max_discard_sectors: Le32::from(64),
            max_discard_seg: Le32::from(1),
            discard_sector_alignment: Le32::from(1),
            max_write_zeroes_sectors: Le32::from(64),
            max_write_zeroes_seg: Le32::from(1),
            write_zeroes_may_unmap: 1,
            ..BlkConfigSpace::default()
        };
        let rng = match config.order {
            CompletionOrder::Shuffled { seed } => seed | 1,
            _ => 1,
        };
        let queues = (0..config.num_queues)
            .map(|_| QueueSlot {
                queue: None,
                doorbell: Arc::new(AtomicU64::new(0)),
                kicks_seen: 0,
                asleep: true,
                stats: QueueStats::default(),
            })
            .collect();
        VmmBlk {
            disk: RamDisk {
                data: vec![0; (config.capacity_sectors * SECTOR) as usize],
                id,
                features: 0,
                seg_max: config.seg_max,
                max_range_sectors: 64,
                flushes: 0,
                discards: Vec::new(),
                write_zeroes: Vec::new(),
                violations: Vec::new(),
            },
            memory,
            config,
            space,
            status: 0,
            driver_features: 0,
            queues,
            violations: Vec::new(),
            rng,
        }
    }

    pub(super) fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    pub(super) fn offered_features(&self) -> u64 {
        let c = &self.config;
        let optional = [
            (c.event_idx, feature::EVENT_IDX),
            (c.indirect, feature::INDIRECT_DESC),
            (c.discard, feature::DISCARD),
            (c.write_zeroes, feature::WRITE_ZEROES),
            (c.num_queues > 1, feature::MQ),
        ];
        optional.iter().filter(|(on, _)| *on).fold(
            feature::VERSION_1 | feature::FLUSH | feature::BLK_SIZE | feature::SEG_MAX,
            |bits, (_, bit)| bits | bit,
        )
    }

    fn negotiated(&self, bit: u64) -> bool {
        self.status & status::FEATURES_OK != 0 && self.driver_features & bit != 0
    }

    pub(super) fn status(&self) -> u8 {
        self.status
    }

    /// §3.1.1 steps 4–5: features are written after DRIVER and before FEATURES_OK.
    pub(super) fn set_driver_features(&mut self, features: u64) {
        if self.status & status::DRIVER == 0 || self.status & status::FEATURES_OK != 0 {
            self.violation(format!(
                "driver features written in status {:#x}",
                self.status
            ));
            return;
        }
        self.driver_features = features;
    }

    /// §2.1, §3.1.1: status bits are only ever added; FEATURES_OK is kept
    /// only for an acceptable feature set; DRIVER_OK starts the queues.
    pub(super) fn set_status(&mut self, new: u8) {
        let old = self.status;
        if new & old != old {
            self.violation(format!("status {old:#x} -> {new:#x} clears bits"));
        }
        let added = new & !old;
        let mut kept = new;
        if added & status::FEATURES_OK != 0 {
            let offered = self.offered_features();
            let unknown = self.driver_features & !offered;
            if unknown != 0 || self.driver_features & feature::VERSION_1 == 0 {
                // §2.2.2: the device refuses by not keeping FEATURES_OK.
                self.violation(format!(
                    "driver accepted {:#x}; offered {offered:#x}",
                    self.driver_features
                ));
                kept &= !status::FEATURES_OK;
            } else {
                self.disk.features = self.driver_features;
            }
        }
        if added & status::FAILED != 0 {
            // Not a protocol error, but no test here expects the driver to give up.
            self.violation(format!("driver set FAILED (status {new:#x})"));
        }
        if added & status::DRIVER_OK != 0 {
            if old & status::FEATURES_OK == 0 {
                self.violation("DRIVER_OK before FEATURES_OK".into());
            }
            self.start_queues();
        }
        self.status = kept;
    }

    /// Every ready queue starts asleep with avail notifications on: the
    /// driver's first publish must kick.
    fn start_queues(&mut self) {
        let memory = self.memory.clone();
        let mut failures = Vec::new();
        for (index, slot) in self.queues.iter_mut().enumerate() {
            if let Some(queue) = slot.queue.as_mut() {
                if let Err(error) = queue.enable_notification(&*memory) {
                    failures.push(format!("queue {index}: enabling notifications: {error}"));
                }
                slot.asleep = true;
            }
        }
        self.violations.extend(failures);
    }

    pub(super) fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.disk.features = 0;
        for slot in &mut self.queues {
            slot.queue = None;
            slot.asleep = true;
            slot.kicks_seen = slot.doorbell.load(Ordering::Acquire);
        }
    }

    /// Little-endian bytes of the configuration space (§5.2.4); `width` bytes at `offset`.
    pub(super) fn read_config(&mut self, offset: usize, width: usize) -> u64 {
        let bytes = self.space.as_slice();
        match bytes.get(offset..offset + width) {
            Some(field) => field
                .iter()
                .rev()
                .fold(0u64, |value, byte| value << 8 | u64::from(*byte)),
            None => {
                self.violation(format!(
                    "config read of {width} bytes at {offset} is beyond the {}-byte space",
                    bytes.len()
                ));
                0
            }
        }
    }

    pub(super) fn max_queue_size(&self, index: u16) -> u16 {
        if index < self.config.num_queues {
            self.config.max_queue_size
        } else {
            0
        }
    }

    /// Queue setup as a virtio-pci / mmio device does it, register by
    /// register (§4.1.4.3, §4.2.2): size, the three addresses, EVENT_IDX, ready.
    pub(super) fn setup_queue(
        &mut self,
        index: u16,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<(), String> {
        if self.status & status::FEATURES_OK == 0 || self.status & status::DRIVER_OK != 0 {
            return Err(format!("queue setup in status {:#x}", self.status));
        }
        let event_idx = self.negotiated(feature::EVENT_IDX);
        let max = self.max_queue_size(index);
        let memory = self.memory.clone();
        let Some(slot) = self.queues.get_mut(usize::from(index)) else {
            return Err(format!("no queue {index}"));
        };
        if slot.queue.is_some() {
            return Err(format!("queue {index} is already ready"));
        }
        let mut queue = Queue::new(max).map_err(|e| e.to_string())?;
        queue
            .try_set_size(size)
            .map_err(|e| format!("size {size}: {e}"))?;
        let split = |addr: u64| (Some(addr as u32), Some((addr >> 32) as u32));
        let (low, high) = split(desc);
        queue.set_desc_table_address(low, high);
        let (low, high) = split(driver);
        queue.set_avail_ring_address(low, high);
        let (low, high) = split(device);
        queue.set_used_ring_address(low, high);
        if (queue.desc_table(), queue.avail_ring(), queue.used_ring()) != (desc, driver, device) {
            // virtio-queue keeps the old address when the new one is misaligned.
            return Err(format!(
                "queue {index}: misaligned areas {desc:#x} {driver:#x} {device:#x}"
            ));
        }
        queue.set_event_idx(event_idx);
        queue.set_ready(true);
        if !queue.is_valid(&*memory) {
            return Err(format!("queue {index}: areas are not inside guest memory"));
        }
        slot.queue = Some(queue);
        Ok(())
    }

    pub(super) fn doorbell(&self, index: u16) -> Arc<AtomicU64> {
        self.queues[usize::from(index)].doorbell.clone()
    }
}

/// The test's handle on the device; the transport holds another.
#[derive(Clone)]
pub struct VmmDevice {
    inner: Rc<RefCell<VmmBlk>>,
}

impl VmmDevice {
    pub fn new(memory: Arc<Memory>, config: VmmBlkConfig) -> Self {
        VmmDevice {
            inner: Rc::new(RefCell::new(VmmBlk::new(memory, config))),
        }
    }

    /// A transport for `BlkDevice::new`.
    pub fn transport(&self) -> VmmTransport {
        VmmTransport::new(self.inner.clone())
    }

    /// Lets queue `index` run once, serving at most `budget` chains.
    pub fn step(&self, index: u16, budget: usize) -> usize {
        self.inner.borrow_mut().step(index, budget)
    }

    /// The device is waiting for a kick on queue `index`: the driver's next
    /// publish must notify, or the device never sees it.
    pub fn asleep(&self, index: u16) -> bool {
        self.inner.borrow().queues[usize::from(index)].asleep
    }

    /// A kick on queue `index` the device has not looked at yet.
    pub fn kick_pending(&self, index: u16) -> bool {
        let inner = self.inner.borrow();
        let slot = &inner.queues[usize::from(index)];
        slot.doorbell.load(Ordering::Acquire) != slot.kicks_seen
    }

    pub fn stats(&self, index: u16) -> QueueStats {
        self.inner.borrow().queues[usize::from(index)].stats
    }

    /// Every driver mistake the device noticed.
    pub fn violations(&self) -> Vec<String> {
        let inner = self.inner.borrow();
        inner
            .violations
            .iter()
            .chain(&inner.disk.violations)
            .cloned()
            .collect()
    }

    pub fn driver_features(&self) -> u64 {
        self.inner.borrow().driver_features
    }

    pub fn offered_features(&self) -> u64 {
        self.inner.borrow().offered_features()
    }

    pub fn status(&self) -> u8 {
        self.inner.borrow().status
    }

    /// Whether queue `index` is set up and ready.
    pub fn queue_ready(&self, index: u16) -> bool {
        self.inner.borrow().queues[usize::from(index)]
            .queue
            .is_some()
    }

    pub fn read_disk(&self, sector: u64, buf: &mut [u8]) {
        let start = (sector * SECTOR) as usize;
        buf.copy_from_slice(&self.inner.borrow().disk.data[start..start + buf.len()]);
    }

    pub fn write_disk(&self, sector: u64, data: &[u8]) {
        let start = (sector * SECTOR) as usize;
        self.inner.borrow_mut().disk.data[start..start + data.len()].copy_from_slice(data);
    }

    pub fn flushes(&self) -> u64 {
        self.inner.borrow().disk.flushes
    }

    pub fn discards(&self) -> Vec<Range> {
        self.inner.borrow().disk.discards.clone()
    }

    pub fn write_zeroes(&self) -> Vec<Range> {
        self.inner.borrow().disk.write_zeroes.clone()
    }
}
