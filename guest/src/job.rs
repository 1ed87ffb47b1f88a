//! One queue's job, run by the queue's own CPU: keep `iodepth` requests in
//! flight until the runtime is over, then drain; stamp and check data like
//! the bench CLI; record completion latencies with the TSC.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use vblk_report::verify::{self, Verifier};
use vblk_report::workload::{Dir, Picker};
use vblk_report::DirStats;
use virtio_blk_mq::mq::{wait_for_completions, IrqWait};
use virtio_blk_mq::{BlkQueue, Completion, DmaBuffer, Error, Hal, Mode, QueueNotifier};

use crate::time;

/// How long the drain may wait for requests in flight before giving up.
const DRAIN_TIMEOUT_NS: u64 = 10_000_000_000;
/// Empty polls between two looks at the clock.
const CLOCK_EVERY_EMPTY_POLLS: u32 = 64;

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
    /// How long to keep submitting, ns.
    pub runtime_ns: u64,
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
    /// From the first submission to the last completion, ns.
    pub elapsed_ns: u64,
}

impl QueueResult {
    fn problem(&mut self, message: impl FnOnce() -> String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(message());
        }
    }
}

struct Slot<H: Hal> {
    buffer: Option<DmaBuffer<H>>,
    dir: Dir,
    block: u64,
    generation: u32,
    submitted_ns: u64,
}

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
    stopping: bool,
}

/// Runs the job on `queue`, the `index`-th queue, with buffers from `hal`;
/// `waiter` sleeps until its notification (Interrupt and Hybrid modes).
pub fn run<H: Hal, N: QueueNotifier>(
    index: usize,
    queue: &mut BlkQueue<H, N>,
    spec: &JobSpec,
    waiter: &dyn IrqWait,
    hal: &H,
) -> QueueResult {
    let mut worker = match Worker::new(index, spec, hal) {
        Ok(worker) => worker,
        Err(result) => return *result,
    };
    let mut done: Vec<Completion<H>> = Vec::with_capacity(usize::from(spec.iodepth));
    let start = time::now_ns();
    let deadline = start + spec.runtime_ns;
    let mut now = start;
    let mut empty_polls = 0u32;
    loop {
        if !worker.stopping && now >= deadline {
            worker.stopping = true;
        }
        if !worker.stopping {
            worker.submit(queue, now);
        }
        if queue.in_flight() == 0 {
            if worker.stopping {
                break;
            }
            now = time::now_ns();
            continue;
        }
        queue.poll(usize::from(spec.iodepth), |c| done.push(c));
        if done.is_empty() {
            empty_polls = empty_polls.wrapping_add(1);
            if queue.mode() != Mode::Poll {
                wait_for_completions(queue, spec.spin_budget, waiter);
                now = time::now_ns();
            } else if empty_polls.is_multiple_of(CLOCK_EVERY_EMPTY_POLLS) {
                now = time::now_ns();
            }
            if worker.stopping && now >= deadline + DRAIN_TIMEOUT_NS {
                let in_flight = queue.in_flight();
                worker.result.errors += u64::from(in_flight);
                worker
                    .result
                    .problem(|| format!("queue {index}: {in_flight} requests never completed"));
                break;
            }
            continue;
        }
        now = time::now_ns();
        for completion in done.drain(..) {
            worker.complete(completion, now);
        }
    }
    worker.result.elapsed_ns = now.saturating_sub(start);
    worker.result
}

impl<'a, H: Hal> Worker<'a, H> {
    fn new(index: usize, spec: &'a JobSpec, hal: &H) -> Result<Worker<'a, H>, Box<QueueResult>> {
        let mut result = QueueResult {
            read: DirStats::new(),
            write: DirStats::new(),
            errors: 0,
            verify_errors: 0,
            first_problem: None,
            elapsed_ns: 0,
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
            verifier: spec.verify.then(|| Verifier::new(spec.blocks_per_queue)),
            result,
            stopping: false,
        })
    }

    /// Fills every free slot, then publishes the batch with one commit.
    fn submit<N: QueueNotifier>(&mut self, queue: &mut BlkQueue<H, N>, now: u64) {
        let mut placed = false;
        while let Some(&slot_index) = self.free.last() {
            let Some((dir, block)) = self.picker.pick() else {
                break;
            };
            let sector = self.first_sector + block * self.sectors_per_block;
            let slot = &mut self.slots[usize::from(slot_index)];
            let Some(mut buffer) = slot.buffer.take() else {
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
