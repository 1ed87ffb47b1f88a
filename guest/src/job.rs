//! One queue's job, run by the queue's own CPU: the shared engine of
//! `vblk_report::job` (the bench CLI runs the same), timed with the TSC.

use vblk_report::job::{self, JobHost};
use vblk_report::DirStats;
use virtio_blk_mq::mq::IrqWait;
use virtio_blk_mq::{BlkQueue, Hal, QueueNotifier};

use crate::health::Watch;
use crate::time;

pub use vblk_report::job::JobSpec;

/// How long a request may stay in flight before the job gives up on it.
pub const REQUEST_TIMEOUT_NS: u64 = 30_000_000_000;

/// Empty polls between two looks at the device's health (each look reads
/// the clock; the status only every few tens of milliseconds).
const WATCH_EVERY_EMPTY_POLLS: u32 = 64;

/// What one queue's job produced.
pub type QueueResult = job::QueueResult<DirStats>;

/// This CPU, busy-polling or halting in its waiter; time from the TSC.
struct Cpu<'a> {
    watch: Option<&'a Watch<'a>>,
}

impl JobHost for Cpu<'_> {
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }

    fn idle(&self, empty_polls: u32) {
        if let Some(watch) = self.watch {
            if empty_polls.is_multiple_of(WATCH_EVERY_EMPTY_POLLS) {
                watch.tick();
            }
        }
    }
}

/// A waiter that looks at the device's health each time it wakes.
struct Watched<'a> {
    waiter: &'a dyn IrqWait,
    watch: &'a Watch<'a>,
}

impl IrqWait for Watched<'_> {
    fn wait(&self) {
        self.waiter.wait();
        self.watch.tick();
    }
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
    job::run(index, queue, hal, spec, waiter, &Cpu { watch: None })
}

/// [`run`], looking at the device's health through `watch` while the queue
/// waits for completions (a device that needs a reset fails the job at
/// once instead of after the drain timeout).
pub fn run_watched<H: Hal, N: QueueNotifier>(
    index: usize,
    queue: &mut BlkQueue<H, N>,
    spec: &JobSpec,
    waiter: &dyn IrqWait,
    hal: &H,
    watch: &Watch<'_>,
) -> QueueResult {
    let watched = Watched { waiter, watch };
    let host = Cpu { watch: Some(watch) };
    job::run(index, queue, hal, spec, &watched, &host)
}
