//! One queue's job, run by the queue's own CPU: the shared engine of
//! `vblk_report::job` (the bench CLI runs the same), timed with the TSC.

use vblk_report::job::{self, JobHost};
use vblk_report::DirStats;
use virtio_blk_mq::mq::IrqWait;
use virtio_blk_mq::{BlkQueue, Hal, QueueNotifier};

use crate::time;

pub use vblk_report::job::JobSpec;

/// How long a request may stay in flight before the job gives up on it.
pub const REQUEST_TIMEOUT_NS: u64 = 30_000_000_000;

/// What one queue's job produced.
pub type QueueResult = job::QueueResult<DirStats>;

/// This CPU, busy-polling or halting in its waiter; time from the TSC.
struct Cpu;

impl JobHost for Cpu {
    fn now_ns(&self) -> u64 {
        time::now_ns()
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
    job::run(index, queue, hal, spec, waiter, &Cpu)
}
