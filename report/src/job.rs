//! One queue's fio-style job, the same in the bench CLI and the guest kernel:
//! keep `iodepth` requests in flight until the runtime is over (or
//! `number_ios` were issued), then drain; stamp writes and check reads when
//! verifying; record completion latencies; give up on requests the device
//! sits on. A request the device fails (IOERR, UNSUPP) is counted and listed,
//! and the job goes on; a broken device or queue stops it.
//!
//! What differs between the two lives behind [`JobHost`] (the clock, what to
//! do on an empty poll, where progress goes) and [`Recorder`] (the CLI keeps
//! latencies in hdrhistogram, the guest in [`crate::DirStats`]).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use virtio_blk_mq::mq::{wait_for_completions, IrqWait};
use virtio_blk_mq::{BlkQueue, Completion, DmaBuffer, Error, Hal, Mode, QueueNotifier};

use crate::verify::{self, Initial, Mismatch, Verifier};
use crate::workload::{Dir, Picker};

/// How long the drain may wait for requests in flight before giving up, ns.
const DRAIN_TIMEOUT_NS: u64 = 10_000_000_000;

/// One tick of the queue's request clock (`BlkQueue::check_timeouts`), ns.
const TIMEOUT_TICK_NS: u64 = 10_000_000;

/// Empty polls between two looks at the clock.
const CLOCK_EVERY_EMPTY_POLLS: u32 = 64;

/// Bad requests each queue lists (the counts stay exact beyond them).
pub const MAX_BAD_REQUESTS: usize = 64;

/// What every queue's job does.
#[derive(Clone, Copy, Debug)]
pub struct JobSpec {
    /// Bytes per request.
    pub block_size: u64,
    /// Blocks in each queue's region.
    pub blocks_per_queue: u64,
    /// Random offsets (otherwise sequential).
    pub random: bool,
    /// Percentage of reads.
    pub read_percent: u8,
    /// Requests in flight per queue.
    pub iodepth: u16,
    /// Stamp writes, check reads, never two requests on one block at once.
    pub verify: bool,
    /// With `verify`: what a block holds before this job writes it.
    pub verify_initial: Initial,
    /// Requests each queue issues at most (fio's `number_ios`); `None`: as
    /// many as the runtime allows.
    pub number_ios: Option<u64>,
    /// Empty checks before a hybrid queue sleeps.
    pub spin_budget: u32,
    /// How long to keep submitting, ns.
    pub runtime_ns: u64,
    /// How long a request may stay in flight before the job gives up on it
    /// (the device stopped answering), ns.
    pub request_timeout_ns: u64,
}

/// Where one direction's completion latencies go.
pub trait Recorder: Default {
    /// One request of `bytes` completed after `latency_ns`.
    fn record(&mut self, bytes: u64, latency_ns: u64);
}

impl Recorder for crate::DirStats {
    fn record(&mut self, bytes: u64, latency_ns: u64) {
        crate::DirStats::record(self, bytes, latency_ns);
    }
}

/// What the job needs from where it runs.
pub trait JobHost {
    /// A monotonic clock, ns.
    fn now_ns(&self) -> u64;

    /// A poll-mode queue found nothing; `empty_polls` counts them. A host
    /// may pause, or give the CPU away when threads outnumber CPUs.
    fn idle(&self, empty_polls: u32) {
        let _ = empty_polls;
    }

    /// `completed` requests so far (for a progress display).
    fn progress(&self, completed: u64) {
        let _ = completed;
    }
}

/// A request that failed, or read back data that did not match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRequest {
    /// The queue it ran on.
    pub queue: usize,
    /// Its direction.
    pub dir: Dir,
    /// Its first sector.
    pub sector: u64,
    /// Its length in sectors.
    pub sectors: u64,
    /// What went wrong.
    pub problem: Problem,
}

/// What went wrong with a [`BadRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// The request completed with this error.
    Failed(Error),
    /// The read completed, but its data was wrong: the first sector that
    /// differed, and how.
    Mismatch(Mismatch),
}

impl core::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "queue {}: {} of {} sectors at sector {}",
            self.queue,
            self.dir.name(),
            self.sectors,
            self.sector
        )?;
        match &self.problem {
            Problem::Failed(error) => write!(f, " failed: {error}"),
            Problem::Mismatch(m) => {
                write!(f, " returned wrong data: sector {}: {}", m.sector, m.what)
            }
        }
    }
}

/// Whether `error` is the device's verdict on one request (the device and
/// the queue are fine, so the job goes on), rather than a broken device or
/// queue.
fn request_level(error: Error) -> bool {
    matches!(error, Error::IoError | Error::Unsupported)
}

/// What one queue's job produced.
pub struct QueueResult<R> {
    /// Reads.
    pub read: R,
    /// Writes.
    pub write: R,
    /// Requests that failed (status not OK, refused, or overdue).
    pub errors: u64,
    /// Reads whose data did not match what was written.
    pub verify_errors: u64,
    /// The first [`MAX_BAD_REQUESTS`] requests that failed or read back
    /// wrong data, in completion order.
    pub bad_requests: Vec<BadRequest>,
    /// The first problem seen, for the user.
    pub first_problem: Option<String>,
    /// From the first submission to the last completion, ns.
    pub elapsed_ns: u64,
}

impl<R: Recorder> QueueResult<R> {
    /// An empty result.
    pub fn new() -> QueueResult<R> {
        QueueResult {
            read: R::default(),
            write: R::default(),
            errors: 0,
            verify_errors: 0,
            bad_requests: Vec::new(),
            first_problem: None,
            elapsed_ns: 0,
        }
    }
}

impl<R: Recorder> Default for QueueResult<R> {
    fn default() -> Self {
        QueueResult::new()
    }
}

impl<R> QueueResult<R> {
    /// Keeps the first problem's description.
    pub fn problem(&mut self, message: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(message());
        }
    }

    /// Lists a bad request (while the list has room).
    fn bad_request(&mut self, request: BadRequest) {
        if self.bad_requests.len() < MAX_BAD_REQUESTS {
            self.bad_requests.push(request);
        }
    }
}

/// A request slot: its buffer while idle, what it carries while in flight.
struct Slot<H: Hal> {
    buffer: Option<DmaBuffer<H>>,
    dir: Dir,
    block: u64,
    generation: u32,
    submitted_ns: u64,
}

/// The running state of one queue's job.
struct Worker<'a, H: Hal, R> {
    spec: &'a JobSpec,
    queue_index: usize,
    first_sector: u64,
    sectors_per_block: u64,
    slots: Vec<Slot<H>>,
    free: Vec<u16>,
    picker: Picker,
    verifier: Option<Verifier>,
    result: QueueResult<R>,
    /// Requests placed so far.
    issued: u64,
    /// Stop submitting: runtime over, `number_ios` issued, or the device or
    /// queue failed.
    stopping: bool,
}

/// Runs the job on `queue`, the `index`-th queue, with buffers from `hal`;
/// `waiter` sleeps until the queue's notification (Interrupt and Hybrid
/// modes). Any transport, any kernel.
pub fn run<H, N, R, W, J>(
    index: usize,
    queue: &mut BlkQueue<H, N>,
    hal: &H,
    spec: &JobSpec,
    waiter: &W,
    host: &J,
) -> QueueResult<R>
where
    H: Hal,
    N: QueueNotifier,
    R: Recorder,
    W: IrqWait + ?Sized,
    J: JobHost + ?Sized,
{
    let mut worker = match Worker::new(index, hal, spec) {
        Ok(worker) => worker,
        Err(result) => return *result,
    };
    let mut done: Vec<Completion<H>> = Vec::with_capacity(usize::from(spec.iodepth));
    let start = host.now_ns();
    let deadline = start.saturating_add(spec.runtime_ns);
    let mut now = start;
    let mut empty_polls = 0u32;
    let mut completed = 0u64;
    // The queue's request clock ticks every TIMEOUT_TICK_NS of our time.
    let mut next_tick = start + TIMEOUT_TICK_NS;
    let timeout_ticks = (spec.request_timeout_ns / TIMEOUT_TICK_NS).max(1);
    let timeout_ticks = u32::try_from(timeout_ticks).unwrap_or(u32::MAX);
    loop {
        if now >= next_tick {
            next_tick = now + TIMEOUT_TICK_NS;
            if worker.report_overdue(queue, timeout_ticks) {
                // The device sits on requests: waiting for them to drain
                // would only wait longer.
                break;
            }
        }
        if !worker.stopping && now >= deadline {
            worker.stopping = true;
        }
        if !worker.stopping {
            worker.submit(queue, now);
        }
        // A failed queue has completed everything it ever will.
        if queue.in_flight() == 0 || queue.fault().is_some() {
            if worker.stopping {
                break;
            }
            now = host.now_ns();
            continue;
        }
        queue.poll(usize::from(spec.iodepth), |c| done.push(c));
        if done.is_empty() {
            empty_polls = empty_polls.wrapping_add(1);
            if queue.mode() != Mode::Poll {
                wait_for_completions(queue, spec.spin_budget, waiter);
                now = host.now_ns();
            } else {
                host.idle(empty_polls);
                if empty_polls.is_multiple_of(CLOCK_EVERY_EMPTY_POLLS) {
                    now = host.now_ns();
                }
            }
            if worker.stopping && now >= deadline.saturating_add(DRAIN_TIMEOUT_NS) {
                let in_flight = queue.in_flight();
                worker.result.errors += u64::from(in_flight);
                worker
                    .result
                    .problem(|| format!("queue {index}: {in_flight} requests never completed"));
                break;
            }
            continue;
        }
        now = host.now_ns();
        completed += done.len() as u64;
        for completion in done.drain(..) {
            worker.complete(completion, now);
        }
        host.progress(completed);
    }
    worker.result.elapsed_ns = now.saturating_sub(start);
    worker.result
}

impl<'a, H: Hal, R: Recorder> Worker<'a, H, R> {
    fn new(index: usize, hal: &H, spec: &'a JobSpec) -> Result<Self, Box<QueueResult<R>>> {
        let mut result = QueueResult::new();
        let mut slots = Vec::with_capacity(usize::from(spec.iodepth));
        for _ in 0..spec.iodepth {
            let Some(buffer) = DmaBuffer::new(hal, spec.block_size as usize) else {
                result.errors += 1;
                result.problem(|| format!("queue {index}: out of DMA memory for buffers"));
                return Err(Box::new(result));
            };
            slots.push(Slot {
                buffer: Some(buffer),
                dir: Dir::Read,
                block: 0,
                generation: 0,
                submitted_ns: 0,
            });
        }
        let sectors_per_block = spec.block_size / 512;
        Ok(Worker {
            spec,
            queue_index: index,
            first_sector: index as u64 * spec.blocks_per_queue * sectors_per_block,
            sectors_per_block,
            slots,
            // Popped from the back: slot 0 goes first.
            free: (0..spec.iodepth).rev().collect(),
            picker: Picker::new(
                index,
                spec.blocks_per_queue,
                spec.random,
                spec.read_percent,
                spec.verify,
                spec.iodepth,
            ),
            verifier: spec
                .verify
                .then(|| Verifier::new(spec.blocks_per_queue, spec.verify_initial)),
            result,
            issued: 0,
            stopping: false,
        })
    }

    fn sector_of(&self, block: u64) -> u64 {
        self.first_sector + block * self.sectors_per_block
    }

    /// Ticks the queue's request clock; requests in flight for `limit` ticks
    /// are errors. True when there were any.
    fn report_overdue<N: QueueNotifier>(&mut self, queue: &mut BlkQueue<H, N>, limit: u32) -> bool {
        let queue_index = self.queue_index;
        let timeout_ms = self.spec.request_timeout_ns / 1_000_000;
        let result = &mut self.result;
        let overdue = queue.check_timeouts(limit, |o| {
            result.errors += 1;
            result.problem(|| {
                format!(
                    "queue {queue_index}: {:?} request {} in flight for over {timeout_ms} ms: \
                     the device stopped answering",
                    o.op, o.tag
                )
            });
        });
        if overdue > 0 {
            self.stopping = true;
        }
        overdue > 0
    }

    /// Fills every free slot, then publishes the batch with one commit.
    #[inline]
    fn submit<N: QueueNotifier>(&mut self, queue: &mut BlkQueue<H, N>, now: u64) {
        let mut placed = false;
        while let Some(&slot_index) = self.free.last() {
            if self.spec.number_ios.is_some_and(|n| self.issued >= n) {
                self.stopping = true;
                break;
            }
            let Some((dir, block)) = self.picker.pick() else {
                break;
            };
            let sector = self.sector_of(block);
            let slot = &mut self.slots[usize::from(slot_index)];
            // A free slot always holds its buffer; be safe if it does not.
            let Some(mut buffer) = slot.buffer.take() else {
                self.picker.release(block);
                break;
            };
            let mut generation = 0;
            if let (Dir::Write, Some(verifier)) = (dir, self.verifier.as_mut()) {
                generation = verifier.next_generation();
                verify::stamp(buffer.as_mut_slice(), sector, generation);
            }
            let tag = u64::from(slot_index);
            let submitted = match dir {
                Dir::Read => queue.read(sector, buffer, tag),
                Dir::Write => queue.write(sector, buffer, tag),
            };
            match submitted {
                Ok(()) => {
                    self.free.pop();
                    self.issued += 1;
                    *slot = Slot {
                        buffer: None,
                        dir,
                        block,
                        generation,
                        submitted_ns: now,
                    };
                    placed = true;
                }
                Err(rejected) => {
                    slot.buffer = Some(rejected.buffer);
                    self.picker.release(block);
                    if rejected.error != Error::QueueFull {
                        let queue_index = self.queue_index;
                        self.result.errors += 1;
                        self.result.problem(|| {
                            format!(
                                "queue {queue_index}: {dir:?} at sector {sector} refused: {}",
                                rejected.error
                            )
                        });
                        self.stopping = true;
                    }
                    break;
                }
            }
        }
        if placed {
            queue.commit();
        }
    }

    /// Accounts one completion and frees its slot.
    #[inline]
    fn complete(&mut self, completion: Completion<H>, now: u64) {
        let slot_index = completion.tag as usize;
        let queue_index = self.queue_index;
        let Some(slot) = self.slots.get_mut(slot_index) else {
            self.result.errors += 1;
            self.result.problem(|| {
                format!("queue {queue_index}: completion with unknown tag {slot_index}")
            });
            return;
        };
        let (dir, block, generation) = (slot.dir, slot.block, slot.generation);
        let latency_ns = now.saturating_sub(slot.submitted_ns);
        slot.buffer = completion.buffer;
        let sector = self.first_sector + block * self.sectors_per_block;
        let sectors = self.sectors_per_block;
        let bad = |problem| BadRequest {
            queue: queue_index,
            dir,
            sector,
            sectors,
            problem,
        };
        match completion.result {
            Ok(()) => {
                let stats = match dir {
                    Dir::Read => &mut self.result.read,
                    Dir::Write => &mut self.result.write,
                };
                stats.record(self.spec.block_size, latency_ns);
                if let (Some(verifier), Some(buffer)) = (self.verifier.as_mut(), &slot.buffer) {
                    match dir {
                        Dir::Write => verifier.written(block, generation),
                        Dir::Read => {
                            if let Err(mismatch) = verifier.check(block, buffer.as_slice(), sector)
                            {
                                self.result.verify_errors += 1;
                                self.result.problem(|| {
                                    format!(
                                        "queue {queue_index}: verify: sector {}: {}",
                                        mismatch.sector, mismatch.what
                                    )
                                });
                                self.result.bad_request(bad(Problem::Mismatch(mismatch)));
                            }
                        }
                    }
                }
            }
            Err(error) => {
                self.result.errors += 1;
                self.result.problem(|| {
                    format!("queue {queue_index}: {dir:?} at sector {sector} failed: {error}")
                });
                self.result.bad_request(bad(Problem::Failed(error)));
                if let (Dir::Write, Some(verifier)) = (dir, self.verifier.as_mut()) {
                    verifier.write_failed(block, generation);
                }
                if !request_level(error) {
                    self.stopping = true;
                }
            }
        }
        self.picker.release(block);
        // A request failed by a broken device keeps its buffer; its slot is retired.
        if self.slots[slot_index].buffer.is_some() {
            self.free.push(slot_index as u16);
        }
    }
}
