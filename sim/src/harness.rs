//! The driver against a device that may lie: runs a script of driver calls,
//! honest device steps and hostile acts, and checks what the driver promises
//! a kernel whatever the device does (the SECURITY section of the README):
//!
//! - no panic, and no hang: every loop here is bounded, so a driver that
//!   waits for something that cannot come fails the check instead;
//! - every submitted request completes exactly once, through `poll` or
//!   through a recovery;
//! - every buffer comes back at most once, to the request it was submitted
//!   with, and no DMA memory is leaked once the device is dropped;
//! - a request failed because the device broke does not carry its buffer
//!   (the device could still write it); the buffer comes back only from a
//!   recovery after the device was reset. A queue reset alone
//!   (`recover_queue`) hands none back: they stay parked with the old
//!   queue's memory until the next device reset frees them;
//! - a read completed OK holds data some write put on that block (or the
//!   zeros it started with): a completion the device never served would
//!   still hold the poison the buffer was filled with. A device that names
//!   an in-flight request it has not served (`Hostile::RandomUsed` can) is
//!   indistinguishable from an honest one to any driver, so after such an
//!   act wrong data is counted, not failed.
//!
//! [`Scenario::from_bytes`] turns arbitrary bytes into a script, so the same
//! harness serves the property tests and the `cargo fuzz` target.

use std::collections::{HashMap, HashSet};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

use virtio_blk_mq::spec::blk_status;
use virtio_blk_mq::{
    BlkDevice, BlkQueue, Completion, Config, DeviceFault, DeviceStatus, DmaBuffer, Error, Features,
    Hal, Op, PhysAddr, Recovered, RingKind, Transport,
};

use crate::{
    CompletionOrder, DiskKind, Hostile, Injection, SimConfig, SimDevice, SimHal, SimNotifier,
    SimTransport,
};

/// Blocks (512-byte sectors) the scripted requests touch.
const BLOCKS: u64 = 16;
/// Requests on this sector fail with IOERR, so error completions are exercised.
const IOERR_SECTOR: u64 = 13;
/// What a read buffer holds before the device writes it.
const POISON: u8 = 0xa5;
/// Device steps the final drain may take before it gives up and recovers.
const DRAIN_ROUNDS: usize = 64;
/// Timeout ticks after which the script's owner recovers the device.
const TIMEOUT_TICKS: u32 = 4;

/// One thing that happens, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Submit a 512-byte read of `block`.
    Read {
        /// Block (taken modulo the blocks the script uses).
        block: u8,
    },
    /// Submit a 512-byte write of `block`, stamped with its tag.
    Write {
        /// Block (taken modulo the blocks the script uses).
        block: u8,
    },
    /// Submit a flush.
    Flush,
    /// Publish what was submitted.
    Commit,
    /// One honest device step (out of order: a random subset completes).
    DeviceStep,
    /// A device step that completes everything it holds.
    DeviceDrain,
    /// Queue a hostile act for the device's next step.
    Hostile(Hostile),
    /// Stall or release the device queue.
    Stall(bool),
    /// Poll with a budget.
    Poll {
        /// Most completions taken (at least 1).
        budget: u8,
    },
    /// The device sets DEVICE_NEEDS_RESET.
    NeedsReset,
    /// The driver checks the device status.
    CheckStatus,
    /// The driver resets and re-initialises the device.
    Recover,
    /// The driver resets the queue alone (RING_RESET).
    RecoverQueue,
    /// One tick of the request clock; overdue requests make the owner recover.
    Tick,
}

/// A script and the device it runs against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    /// Ring layout.
    pub ring: RingKind,
    /// Entries in the queue (a power of two for split).
    pub queue_size: u16,
    /// EVENT_IDX offered.
    pub event_idx: bool,
    /// INDIRECT_DESC offered.
    pub indirect: bool,
    /// `Config::max_requests` (with indirect tables: `None` lets the driver
    /// mix direct chains in, `Some(queue_size)` makes every request indirect).
    pub max_requests: Option<u16>,
    /// `Config::publish_batch` (`Some(0)`: only `Step::Commit` publishes).
    pub publish_batch: Option<u16>,
    /// Seed of the device's completion order.
    pub seed: u64,
    /// What happens.
    pub steps: Vec<Step>,
}

/// What a run saw, for tests that want to know the script did something.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Requests submitted.
    pub submitted: u64,
    /// Completions with `Ok`.
    pub ok: u64,
    /// Completions with IOERR or UNSUPP.
    pub io_errors: u64,
    /// Completions with `DeviceBroken` (poll or recovery).
    pub broken: u64,
    /// Faults the driver detected (queues it fenced off).
    pub faults: u64,
    /// What those faults were, in order.
    pub fault_kinds: Vec<DeviceFault>,
    /// Recoveries (full or per queue).
    pub recoveries: u64,
    /// Reads whose data was wrong after an undetectable lie.
    pub tolerated_bad_reads: u64,
}

impl Scenario {
    /// Decodes arbitrary bytes into a scenario: the first byte picks the
    /// device, every following byte (some take one more) a step. Any input
    /// decodes; nothing here can fail.
    pub fn from_bytes(data: &[u8]) -> Scenario {
        let (&head, mut rest) = data.split_first().unwrap_or((&0, &[]));
        let ring = if head & 1 == 0 {
            RingKind::Split
        } else {
            RingKind::Packed
        };
        let size_pick = usize::from(head >> 3 & 7);
        let queue_size = match ring {
            RingKind::Split => [1, 2, 4, 8, 2, 4, 8, 16][size_pick],
            RingKind::Packed => [1, 2, 3, 4, 5, 7, 8, 16][size_pick],
        };
        let indirect = head & 4 != 0;
        // Without indirect tables a read takes three descriptors: a smaller
        // ring could never hold one, and the driver rightly refuses it.
        let queue_size = if indirect {
            queue_size
        } else {
            queue_size.max(4)
        };
        let mut steps = Vec::new();
        let mut seed = u64::from(head);
        while let Some((&byte, tail)) = rest.split_first() {
            rest = tail;
            let mut arg = || {
                let (&value, tail) = rest.split_first().unwrap_or((&0, &[]));
                rest = tail;
                value
            };
            seed = seed.wrapping_mul(31).wrapping_add(u64::from(byte));
            // Weighted: the common calls take several codes each; hostile
            // and control-plane steps are rarer, so most scripts do I/O
            // between two faults.
            let step = match byte % 64 {
                0..=11 => Step::Read { block: arg() },
                12..=21 => Step::Write { block: arg() },
                22..=23 => Step::Flush,
                24..=31 => Step::Commit,
                32..=38 => Step::DeviceStep,
                39..=40 => Step::DeviceDrain,
                41..=48 => Step::Poll {
                    budget: 1 + byte / 64,
                },
                49..=52 => Step::Hostile(hostile(arg(), seed)),
                53 => Step::Stall(byte & 64 != 0),
                54 => Step::NeedsReset,
                55..=56 => Step::CheckStatus,
                57 => Step::Recover,
                58 => Step::RecoverQueue,
                _ => Step::Tick,
            };
            steps.push(step);
        }
        Scenario {
            ring,
            queue_size,
            event_idx: head & 2 != 0,
            indirect,
            max_requests: (head & 64 != 0).then_some(queue_size),
            publish_batch: (head & 128 != 0).then_some(0),
            seed: seed | 1,
            steps,
        }
    }
}

fn hostile(pick: u8, seed: u64) -> Hostile {
    match pick % 10 {
        0 => Hostile::UsedIdOutOfRange,
        1 => Hostile::UsedIdNotInFlight,
        2 => Hostile::RepeatUsedId,
        3 => Hostile::UsedLenTooLong,
        4 => Hostile::GarbageStatus(pick | 3),
        5 => Hostile::StatusNotWritten,
        6 => Hostile::UsedIndexJump,
        7 => Hostile::WrongWrap,
        8 => Hostile::GarbageUsedFlags,
        _ => Hostile::RandomUsed { seed },
    }
}

/// SimHal with a page count of its own, so a run can check it freed all it took.
#[derive(Clone, Default)]
struct CountingHal {
    pages: Arc<AtomicIsize>,
}

// SAFETY: every call is passed to SimHal unchanged, which upholds the
// contract; the counter only observes.
unsafe impl Hal for CountingHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        let memory = SimHal.dma_alloc(pages)?;
        self.pages.fetch_add(pages as isize, Ordering::Relaxed);
        Some(memory)
    }

    unsafe fn dma_dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        self.pages.fetch_sub(pages as isize, Ordering::Relaxed);
        // SAFETY: our caller's promise is SimHal's precondition.
        unsafe { SimHal.dma_dealloc(paddr, vaddr, pages) }
    }
}

type Queue = BlkQueue<CountingHal, SimNotifier>;

/// A request the driver has not completed yet.
struct Pending {
    op: Op,
    block: u64,
    /// Device address of the buffer moved in, if any.
    buffer: Option<PhysAddr>,
}

/// The run's bookkeeping: what the driver owes.
struct Ledger {
    next_tag: u64,
    pending: HashMap<u64, Pending>,
    /// Requests failed as broken whose buffer the driver still keeps.
    kept: HashMap<u64, PhysAddr>,
    /// Tags of every write ever submitted to each block.
    writes: Vec<HashSet<u64>>,
    /// A lie no driver can see was told since the last reset.
    undetectable_lie: bool,
    outcome: Outcome,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            next_tag: 1,
            pending: HashMap::new(),
            kept: HashMap::new(),
            writes: vec![HashSet::new(); BLOCKS as usize],
            undetectable_lie: false,
            outcome: Outcome::default(),
        }
    }

    fn complete(
        &mut self,
        completion: Completion<CountingHal>,
        after_reset: bool,
    ) -> Result<(), String> {
        let tag = completion.tag;
        let Some(request) = self.pending.remove(&tag) else {
            return Err(format!("request {tag} completed twice or never submitted"));
        };
        if completion.op != request.op {
            return Err(format!(
                "request {tag} came back as {:?}, was {:?}",
                completion.op, request.op
            ));
        }
        match (&completion.buffer, request.buffer) {
            (Some(buffer), Some(addr)) if buffer.paddr() != addr => {
                return Err(format!(
                    "request {tag} came back with another request's buffer"
                ))
            }
            (Some(_), None) => return Err(format!("request {tag} had no buffer but got one")),
            _ => {}
        }
        match completion.result {
            Err(Error::DeviceBroken) => {
                self.outcome.broken += 1;
                match (request.buffer, &completion.buffer) {
                    (Some(addr), None) if !after_reset => {
                        self.kept.insert(tag, addr);
                    }
                    (Some(_), Some(_)) if !after_reset => {
                        return Err(format!(
                            "request {tag} failed as broken handed its buffer back before the device was reset"
                        ))
                    }
                    (Some(_), None) => {
                        return Err(format!("request {tag} recovered without its buffer"))
                    }
                    _ => {}
                }
            }
            Err(Error::IoError) | Err(Error::Unsupported) => {
                self.outcome.io_errors += 1;
                if request.buffer.is_some() && completion.buffer.is_none() {
                    return Err(format!(
                        "request {tag} failed with a status but lost its buffer"
                    ));
                }
            }
            Ok(()) => {
                self.outcome.ok += 1;
                if request.buffer.is_some() && completion.buffer.is_none() {
                    return Err(format!("request {tag} completed but lost its buffer"));
                }
                if let (Op::Read, Some(buffer)) = (request.op, &completion.buffer) {
                    if let Err(why) = self.check_read(request.block, buffer.as_slice()) {
                        if !self.undetectable_lie {
                            return Err(format!("read {tag} of block {}: {why}", request.block));
                        }
                        self.outcome.tolerated_bad_reads += 1;
                    }
                }
            }
            Err(other) => return Err(format!("request {tag} completed with {other:?}")),
        }
        Ok(())
    }

    /// A block read back holds zeros or the stamp of a write submitted to it.
    fn check_read(&self, block: u64, data: &[u8]) -> Result<(), String> {
        if data.iter().all(|&b| b == 0) {
            return Ok(());
        }
        let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap_or([0; 8]));
        let (tag, stamped_block) = (word(0), word(8));
        if stamped_block != block || !self.writes[block as usize].contains(&tag) {
            return Err(format!(
                "holds {:02x?}…, no write to this block wrote that",
                &data[..16]
            ));
        }
        if data[16..].iter().any(|&b| b != (tag as u8)) {
            return Err("is torn".into());
        }
        Ok(())
    }

    fn recovered(&mut self, recovered: Recovered<CountingHal>) -> Result<(), String> {
        match recovered {
            Recovered::Completed(completion) => self.complete(completion, true),
            Recovered::Buffer { tag, buffer } => match self.kept.remove(&tag) {
                Some(addr) if addr == buffer.paddr() => Ok(()),
                Some(_) => Err(format!("request {tag}'s kept buffer came back as another")),
                None => Err(format!(
                    "buffer of request {tag} handed back twice or never kept"
                )),
            },
        }
    }
}

/// The device, the driver and the one queue under test.
struct Rig {
    sim: SimDevice,
    hal: CountingHal,
    device: Option<BlkDevice<CountingHal, SimTransport>>,
    queue: Option<Queue>,
    ring: RingKind,
    ledger: Ledger,
    hostile_seen: usize,
}

/// Runs `scenario`; `Err` describes the first promise the driver broke.
pub fn run(scenario: &Scenario) -> Result<Outcome, String> {
    let hal = CountingHal::default();
    let mut rig = Rig::new(scenario, hal.clone())?;
    for (index, step) in scenario.steps.iter().enumerate() {
        rig.step(*step)
            .map_err(|why| format!("step {index} ({step:?}): {why}"))?;
    }
    rig.finish()?;
    let outcome = std::mem::take(&mut rig.ledger.outcome);
    drop(rig);
    match hal.pages.load(Ordering::Relaxed) {
        0 => Ok(outcome),
        pages => Err(format!("{pages} pages of DMA memory were not freed")),
    }
}

impl Rig {
    fn new(scenario: &Scenario, hal: CountingHal) -> Result<Rig, String> {
        let mut features =
            Features::SUPPORTED.difference(Features::ACCESS_PLATFORM | Features::BLK_RO);
        if scenario.ring == RingKind::Split {
            features.remove(Features::RING_PACKED);
        }
        if !scenario.event_idx {
            features.remove(Features::EVENT_IDX);
        }
        if !scenario.indirect {
            features.remove(Features::INDIRECT_DESC);
        }
        let sim = SimDevice::new(SimConfig {
            capacity_sectors: BLOCKS,
            disk: DiskKind::Ram,
            features,
            blk_size: 512,
            discard_sector_alignment: 1,
            secure_erase_sector_alignment: 1,
            order: CompletionOrder::Shuffled {
                seed: scenario.seed,
            },
            inject: vec![Injection {
                sectors: IOERR_SECTOR..IOERR_SECTOR + 1,
                status: blk_status::IOERR,
            }],
            ..SimConfig::default()
        });
        let config = Config {
            queue_size: Some(scenario.queue_size),
            max_requests: scenario.max_requests,
            publish_batch: scenario.publish_batch,
            max_segments: 1,
            ..Config::default()
        };
        let mut device = BlkDevice::new(hal.clone(), sim.transport(), config)
            .map_err(|e| format!("an honest device was refused: {e}"))?;
        let queue = device.take_queues().into_queues().pop();
        if queue.is_none() {
            return Err("the device set up no queue".into());
        }
        Ok(Rig {
            sim,
            hal,
            device: Some(device),
            queue,
            ring: scenario.ring,
            ledger: Ledger::new(),
            hostile_seen: 0,
        })
    }

    fn device(&mut self) -> Result<&mut BlkDevice<CountingHal, SimTransport>, String> {
        self.device
            .as_mut()
            .ok_or_else(|| "the device is gone".to_string())
    }

    /// Notes lies no driver can detect, from what the device did so far.
    fn watch_device(&mut self) {
        let log = self.sim.hostile_log();
        for (_, act) in &log[self.hostile_seen.min(log.len())..] {
            if matches!(act, Hostile::RandomUsed { .. }) {
                self.ledger.undetectable_lie = true;
            }
        }
        self.hostile_seen = log.len();
    }

    fn submit(&mut self, op: Op, block: u8) -> Result<(), String> {
        let Some(queue) = self.queue.as_mut() else {
            return Ok(());
        };
        let block = u64::from(block) % BLOCKS;
        let tag = self.ledger.next_tag;
        self.ledger.next_tag += 1;
        let result = match op {
            Op::Flush => queue.flush(tag).map(|()| None),
            Op::Read | Op::Write => {
                let mut buffer = DmaBuffer::new(&self.hal, 512).ok_or("out of DMA memory")?;
                if op == Op::Write {
                    let data = buffer.as_mut_slice();
                    data.fill(tag as u8);
                    data[..8].copy_from_slice(&tag.to_le_bytes());
                    data[8..16].copy_from_slice(&block.to_le_bytes());
                } else {
                    buffer.as_mut_slice().fill(POISON);
                }
                let addr = buffer.paddr();
                let submitted = if op == Op::Read {
                    queue.read(block, buffer, tag)
                } else {
                    queue.write(block, buffer, tag)
                };
                match submitted {
                    Ok(()) => Ok(Some(addr)),
                    Err(rejected) if rejected.buffer.paddr() != addr => {
                        return Err("a refused request came back with another buffer".into())
                    }
                    Err(rejected) => Err(rejected.error),
                }
            }
            other => return Err(format!("the script cannot submit {other:?}")),
        };
        match result {
            Ok(buffer) => {
                if op == Op::Write {
                    self.ledger.writes[block as usize].insert(tag);
                }
                self.ledger.outcome.submitted += 1;
                self.ledger
                    .pending
                    .insert(tag, Pending { op, block, buffer });
                Ok(())
            }
            Err(Error::QueueFull | Error::DeviceBroken) => Ok(()),
            Err(other) => Err(format!("a valid request was refused: {other}")),
        }
    }

    fn poll(&mut self, budget: usize) -> Result<usize, String> {
        let Some(queue) = self.queue.as_mut() else {
            return Ok(0);
        };
        let was_broken = queue.fault().is_some();
        let mut completions = Vec::new();
        let done = queue.poll(budget, |c| completions.push(c));
        if done != completions.len() {
            return Err(format!(
                "poll said {done} but delivered {}",
                completions.len()
            ));
        }
        if let (false, Some(fault)) = (was_broken, queue.fault()) {
            self.ledger.outcome.faults += 1;
            self.ledger.outcome.fault_kinds.push(fault);
        }
        for completion in completions {
            self.ledger.complete(completion, false)?;
        }
        Ok(done)
    }

    fn recover(&mut self) -> Result<(), String> {
        let queue = self.queue.take();
        let device = self.device.as_mut().ok_or("the device is gone")?;
        let mut recovered = Vec::new();
        let fresh = device
            .recover(queue, |r| recovered.push(r))
            .map_err(|e| format!("recovery failed: {e}"))?;
        for r in recovered {
            self.ledger.recovered(r)?;
        }
        self.queue = fresh.into_queues().pop();
        self.ledger.undetectable_lie = false;
        self.ledger.outcome.recoveries += 1;
        if self.queue.is_none() {
            return Err("recovery set up no queue".into());
        }
        Ok(())
    }

    fn recover_queue(&mut self) -> Result<(), String> {
        let Some(queue) = self.queue.take() else {
            return Ok(());
        };
        let device = self.device.as_mut().ok_or("the device is gone")?;
        let mut recovered = Vec::new();
        let mut reset_alone = false;
        match device.recover_queue(queue, |r| recovered.push(r)) {
            Ok(fresh) => {
                reset_alone = true;
                self.queue = Some(fresh);
                self.ledger.undetectable_lie = false;
                self.ledger.outcome.recoveries += 1;
            }
            // The device as a whole failed first: only a full recovery helps.
            Err(refused) if refused.error == Error::DeviceBroken => self.queue = refused.queue,
            Err(other) => return Err(format!("per-queue recovery failed: {:?}", other.error)),
        }
        for r in recovered {
            match r {
                // A queue reset alone: requests fail without their buffers.
                Recovered::Completed(completion) => self.ledger.complete(completion, false)?,
                Recovered::Buffer { tag, .. } => {
                    return Err(format!(
                        "buffer of request {tag} handed back after a queue reset alone"
                    ))
                }
            }
        }
        if reset_alone {
            // Parked with the retired queue's memory: the next device reset
            // frees them, and the leak check at the end sees that it did.
            self.ledger.kept.clear();
        }
        if self.queue.is_none() {
            self.recover()?;
        }
        Ok(())
    }

    fn step(&mut self, step: Step) -> Result<(), String> {
        match step {
            Step::Read { block } => self.submit(Op::Read, block)?,
            Step::Write { block } => self.submit(Op::Write, block)?,
            Step::Flush => self.submit(Op::Flush, 0)?,
            Step::Commit => {
                if let Some(queue) = self.queue.as_mut() {
                    queue.commit();
                }
            }
            Step::DeviceStep => {
                self.sim.step(0);
            }
            Step::DeviceDrain => {
                self.sim.drain(0);
            }
            Step::Hostile(act) => {
                if act.applies_to(self.ring) {
                    // Refused only while the queue is not set up.
                    let _ = self.sim.inject_hostile(0, act);
                }
            }
            Step::Stall(stalled) => self.sim.stall(0, stalled),
            Step::Poll { budget } => {
                self.poll(usize::from(budget.max(1)))?;
            }
            Step::NeedsReset => self.sim.set_needs_reset(),
            Step::CheckStatus => match self.device()?.check_status() {
                Ok(()) | Err(Error::DeviceNeedsReset) => {}
                Err(other) => return Err(format!("check_status: {other}")),
            },
            Step::Recover => self.recover()?,
            Step::RecoverQueue => self.recover_queue()?,
            Step::Tick => {
                let mut overdue = Vec::new();
                if let Some(queue) = self.queue.as_mut() {
                    queue.check_timeouts(TIMEOUT_TICKS, |o| overdue.push(o));
                }
                for o in &overdue {
                    if !self.ledger.pending.contains_key(&o.tag) {
                        return Err(format!(
                            "request {} reported overdue but not in flight",
                            o.tag
                        ));
                    }
                }
                if !overdue.is_empty() {
                    self.recover()?;
                }
            }
        }
        self.watch_device();
        Ok(())
    }

    /// Lets the device finish honestly; whatever it will not finish, the
    /// owner recovers. Then checks the device works and everything came back.
    fn finish(&mut self) -> Result<(), String> {
        self.sim.stall(0, false);
        if let Some(queue) = self.queue.as_mut() {
            queue.commit();
        }
        for _ in 0..DRAIN_ROUNDS {
            let broken = self.queue.as_ref().is_none_or(|q| q.fault().is_some());
            if broken || self.ledger.pending.is_empty() {
                break;
            }
            self.sim.drain(0);
            self.poll(usize::MAX)?;
        }
        self.device()?.check_status().ok();
        if !self.ledger.pending.is_empty() || !self.ledger.kept.is_empty() || self.is_broken() {
            // A device that stopped answering: the owner's timeout fires.
            self.recover()?;
        }
        if !self.ledger.pending.is_empty() {
            return Err(format!(
                "{} requests never completed",
                self.ledger.pending.len()
            ));
        }
        if !self.ledger.kept.is_empty() {
            return Err(format!(
                "{} kept buffers never came back",
                self.ledger.kept.len()
            ));
        }
        self.round_trip()
    }

    fn is_broken(&self) -> bool {
        self.queue.as_ref().is_none_or(|q| q.fault().is_some())
            || self
                .sim
                .transport()
                .status()
                .contains(DeviceStatus::DEVICE_NEEDS_RESET)
    }

    /// After everything: a write and a read of it succeed on the device; if
    /// a hostile act still waiting in the device stops the queue, the owner
    /// recovers (as its timeout would make it) and the second try succeeds.
    fn round_trip(&mut self) -> Result<(), String> {
        for attempt in 0..2 {
            for op in [Op::Write, Op::Read] {
                self.submit(op, 1)?;
                self.step(Step::Commit)?;
                for _ in 0..4 {
                    self.sim.drain(0);
                    self.poll(usize::MAX)?;
                }
            }
            if self.ledger.pending.is_empty() && !self.is_broken() {
                return Ok(());
            }
            if attempt == 0 {
                self.recover()?;
            }
        }
        Err(format!(
            "{} requests failed to complete on the recovered device",
            self.ledger.pending.len()
        ))
    }
}
