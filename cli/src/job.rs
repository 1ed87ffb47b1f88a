//! One queue's job: keep `iodepth` requests in flight until the runtime is
//! over, then drain; record completion latencies.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use virtio_blk_mq::mq::{wait_for_completions, IrqWait};
use virtio_blk_mq::{BlkQueue, Completion, DmaBuffer, Error, Hal, Mode, QueueNotifier};

use vblk_report::verify::{self, Verifier};
use vblk_report::workload::{Dir, Picker};

/// How long the drain may wait for requests in flight before giving up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One tick of the queue's request clock (`BlkQueue::check_timeouts`).
const TIMEOUT_TICK: Duration = Duration::from_millis(10);

/// Empty polls between two looks at the clock.
const CLOCK_EVERY_EMPTY_POLLS: u32 = 256;

/// Empty polls between two yields of the CPU, when threads outnumber CPUs.
const YIELD_EVERY_EMPTY_POLLS: u32 = 64;

/// Largest latency the histograms hold exactly (larger ones are clamped): 1 hour.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

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
    /// Empty checks before a hybrid queue sleeps.
    pub spin_budget: u32,
    /// How long to keep submitting.
    pub runtime: Duration,
    /// How long a request may stay in flight before the job gives up on it.
    pub request_timeout: Duration,
    /// A polling queue gives its CPU away now and then while idle: there are
    /// more spinning threads (driver and device) than CPUs.
    pub yield_when_idle: bool,
}

/// One direction's results.
pub struct DirStats {
    /// Requests completed successfully.
    pub ios: u64,
    /// Bytes they moved.
    pub bytes: u64,
    /// Exact smallest completion latency, ns.
    pub min_ns: u64,
    /// Exact largest completion latency, ns.
    pub max_ns: u64,
    /// Sum of latencies, ns (for the exact mean).
    pub sum_ns: u128,
    /// Completion latencies, ns.
    pub clat: Histogram<u64>,
}

impl DirStats {
    fn new() -> DirStats {
        DirStats {
            ios: 0,
            bytes: 0,
            min_ns: u64::MAX,
            max_ns: 0,
            sum_ns: 0,
            clat: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("histogram bounds are valid"),
        }
    }

    #[inline]
    pub(crate) fn record(&mut self, bytes: u64, latency_ns: u64) {
        self.ios += 1;
        self.bytes += bytes;
        self.min_ns = self.min_ns.min(latency_ns);
        self.max_ns = self.max_ns.max(latency_ns);
        self.sum_ns += u128::from(latency_ns);
        self.clat.saturating_record(latency_ns.max(1));
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &DirStats) {
        self.ios += other.ios;
        self.bytes += other.bytes;
        self.min_ns = self.min_ns.min(other.min_ns);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.sum_ns += other.sum_ns;
        // Same bounds on both sides: adding cannot fail.
        self.clat.add(&other.clat).expect("histograms share bounds");
    }

    /// An empty result to merge into.
    pub fn empty() -> DirStats {
        DirStats::new()
    }
}

/// What one queue's job produced.
pub struct QueueResult {
    /// Reads.
    pub read: DirStats,
    /// Writes.
    pub write: DirStats,
    /// Requests that failed (status not OK, or refused by the driver).
    pub errors: u64,
    /// Reads whose data did not match what was written.
    pub verify_errors: u64,
    /// The first problem seen, for the user.
    pub first_problem: Option<String>,
    /// From the first submission to the last completion.
    pub elapsed: Duration,
}

impl QueueResult {
    fn problem(&mut self, message: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(message());
        }
    }
}

/// A request slot: its buffer while idle, what it carries while in flight.
struct Slot<H: Hal> {
    buffer: Option<DmaBuffer<H>>,
    dir: Dir,
    block: u64,
    generation: u32,
    submitted: Instant,
}

/// The running state of one queue's job.
struct Worker<'a, H: Hal> {
    spec: &'a JobSpec,
    queue_index: usize,
    first_sector: u64,
    sectors_per_block: u64,
    slots: Vec<Slot<H>>,
    free: Vec<u16>,
    picker: Picker,
    verifier: Option<Verifier>,
    result: QueueResult,
    /// Stop submitting: runtime over or an error seen.
    stopping: bool,
}

/// Runs the job on `queue`, the `index`-th queue, with buffers from `hal`;
/// `irq` is its used-buffer notification (unused in poll mode); `progress`
/// receives the completed count. Any transport: the sim, vhost-user, ...
pub fn run<H: Hal, N: QueueNotifier, W: IrqWait>(
    index: usize,
    queue: &mut BlkQueue<H, N>,
    hal: &H,
    spec: &JobSpec,
    irq: &W,
    progress: Option<&AtomicU64>,
) -> QueueResult {
    let mut worker = match Worker::new(index, hal, spec) {
        Ok(worker) => worker,
        Err(result) => return *result,
    };
    let mut done: Vec<Completion<H>> = Vec::with_capacity(usize::from(spec.iodepth));
    let start = Instant::now();
    let deadline = start + spec.runtime;
    let mut now = start;
    let mut empty_polls = 0u32;
    let mut completed = 0u64;
    // The queue's request clock ticks every TIMEOUT_TICK of our time.
    let mut next_tick = start + TIMEOUT_TICK;
    let timeout_ticks = (spec.request_timeout.as_nanos() / TIMEOUT_TICK.as_nanos()).max(1);
    let timeout_ticks = u32::try_from(timeout_ticks).unwrap_or(u32::MAX);
    loop {
        if now >= next_tick {
            next_tick = now + TIMEOUT_TICK;
            if worker.report_overdue(queue, timeout_ticks) {
                // The device sits on requests: waiting for them to drain would
                // only wait longer.
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
            now = Instant::now();
            continue;
        }
        queue.poll(usize::from(spec.iodepth), |c| done.push(c));
        if done.is_empty() {
            empty_polls = empty_polls.wrapping_add(1);
            if queue.mode() != Mode::Poll {
                wait_for_completions(queue, spec.spin_budget, irq);
                now = Instant::now();
            } else {
                if spec.yield_when_idle && empty_polls.is_multiple_of(YIELD_EVERY_EMPTY_POLLS) {
                    std::thread::yield_now();
                }
                if empty_polls.is_multiple_of(CLOCK_EVERY_EMPTY_POLLS) {
                    now = Instant::now();
                }
            }
            if worker.stopping && now >= deadline + DRAIN_TIMEOUT {
                let in_flight = queue.in_flight();
                worker.result.errors += u64::from(in_flight);
                worker
                    .result
                    .problem(|| format!("queue {index}: {in_flight} requests never completed"));
                break;
            }
            continue;
        }
        now = Instant::now();
        completed += done.len() as u64;
        for completion in done.drain(..) {
            worker.complete(completion, now);
        }
        if let Some(progress) = progress {
            progress.store(completed, Ordering::Relaxed);
        }
    }
    worker.result.elapsed = now.saturating_duration_since(start);
    worker.result
}

impl<'a, H: Hal> Worker<'a, H> {
    /// Ticks the queue's request clock; requests in flight for `limit` ticks
    /// are errors. True when there were any.
    fn report_overdue<N: QueueNotifier>(&mut self, queue: &mut BlkQueue<H, N>, limit: u32) -> bool {
        let queue_index = self.queue_index;
        let timeout = self.spec.request_timeout;
        let result = &mut self.result;
        let overdue = queue.check_timeouts(limit, |o| {
            result.errors += 1;
            result.problem(|| {
                format!(
                    "queue {queue_index}: {:?} request {} in flight for over {timeout:?}: the device stopped answering",
                    o.op, o.tag
                )
            });
        });
        if overdue > 0 {
            self.stopping = true;
        }
        overdue > 0
    }

    fn new(index: usize, hal: &H, spec: &'a JobSpec) -> Result<Worker<'a, H>, Box<QueueResult>> {
        let mut result = QueueResult {
            read: DirStats::new(),
            write: DirStats::new(),
            errors: 0,
            verify_errors: 0,
            first_problem: None,
            elapsed: Duration::ZERO,
        };
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
                submitted: Instant::now(),
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
            verifier: spec.verify.then(|| Verifier::new(spec.blocks_per_queue)),
            result,
            stopping: false,
        })
    }

    fn sector_of(&self, block: u64) -> u64 {
        self.first_sector + block * self.sectors_per_block
    }

    /// Fills every free slot, then publishes the batch with one commit.
    #[inline]
    fn submit<N: QueueNotifier>(&mut self, queue: &mut BlkQueue<H, N>, now: Instant) {
        let mut placed = false;
        while let Some(&slot_index) = self.free.last() {
            let Some((dir, block)) = self.picker.pick() else {
                break;
            };
            let sector = self.sector_of(block);
            let slot = &mut self.slots[usize::from(slot_index)];
            let mut buffer = slot.buffer.take().expect("a free slot holds its buffer");
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
                    *slot = Slot {
                        buffer: None,
                        dir,
                        block,
                        generation,
                        submitted: now,
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
    fn complete(&mut self, completion: Completion<H>, now: Instant) {
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
        let latency = now.saturating_duration_since(slot.submitted);
        let latency_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        slot.buffer = completion.buffer;
        let sector = self.first_sector + block * self.sectors_per_block;
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
                            let expected = verifier.expected(block);
                            if let Err(mismatch) =
                                verify::check(buffer.as_slice(), sector, expected)
                            {
                                self.result.verify_errors += 1;
                                self.result.problem(|| {
                                    format!(
                                        "queue {queue_index}: verify: sector {}: {}",
                                        mismatch.sector, mismatch.what
                                    )
                                });
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
                self.stopping = true;
            }
        }
        self.picker.release(block);
        // A request failed by a broken device keeps its buffer; its slot is retired.
        if self.slots[slot_index].buffer.is_some() {
            self.free.push(slot_index as u16);
        }
    }
}
