//! One queue's job, as the CLI runs it: the shared engine of
//! `vblk_report::job` on a std thread, with latencies in hdrhistogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use vblk_report::job::{self, JobHost, Recorder};
use virtio_blk_mq::mq::IrqWait;
use virtio_blk_mq::{BlkQueue, Hal, QueueNotifier};

pub use vblk_report::job::JobSpec;

/// What one queue's job produced.
pub type QueueResult = job::QueueResult<DirStats>;

/// Empty polls between two yields of the CPU, when threads outnumber CPUs.
const YIELD_EVERY_EMPTY_POLLS: u32 = 64;

/// Largest latency the histograms hold exactly (larger ones are clamped): 1 hour.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

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

impl Default for DirStats {
    fn default() -> DirStats {
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
}

impl Recorder for DirStats {
    #[inline]
    fn record(&mut self, bytes: u64, latency_ns: u64) {
        self.ios += 1;
        self.bytes += bytes;
        self.min_ns = self.min_ns.min(latency_ns);
        self.max_ns = self.max_ns.max(latency_ns);
        self.sum_ns += u128::from(latency_ns);
        self.clat.saturating_record(latency_ns.max(1));
    }
}

impl DirStats {
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
        DirStats::default()
    }
}

/// A std thread as the job's host.
struct ThreadHost<'a> {
    start: Instant,
    /// Give the CPU away now and then while idle: more spinning threads
    /// (driver and device) than CPUs.
    yield_when_idle: bool,
    progress: Option<&'a AtomicU64>,
}

impl JobHost for ThreadHost<'_> {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn idle(&self, empty_polls: u32) {
        if self.yield_when_idle && empty_polls.is_multiple_of(YIELD_EVERY_EMPTY_POLLS) {
            std::thread::yield_now();
        }
    }

    fn progress(&self, completed: u64) {
        if let Some(progress) = self.progress {
            progress.store(completed, Ordering::Relaxed);
        }
    }
}

/// `seconds` (a checked, positive flag value) in nanoseconds.
pub fn seconds_to_ns(seconds: f64) -> u64 {
    (seconds * 1e9) as u64
}

/// Runs the job on `queue`, the `index`-th queue, with buffers from `hal`;
/// `irq` is its used-buffer notification (unused in poll mode); `progress`
/// receives the completed count. Any transport: the sim, vhost-user, ...
pub fn run<H: Hal, N: QueueNotifier, W: IrqWait>(
    index: usize,
    queue: &mut BlkQueue<H, N>,
    hal: &H,
    spec: &JobSpec,
    yield_when_idle: bool,
    irq: &W,
    progress: Option<&AtomicU64>,
) -> QueueResult {
    let host = ThreadHost {
        start: Instant::now(),
        yield_when_idle,
        progress,
    };
    job::run(index, queue, hal, spec, irq, &host)
}
