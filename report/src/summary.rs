//! The run's results, merged over queues and reduced to what the reports print.

use alloc::string::String;
use alloc::vec::Vec;

use virtio_blk_mq::QueueStats;

use crate::histogram::DirStats;
use crate::job::{BadRequest, QueueResult};

/// The percentiles fio prints by default.
pub const PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// Completion latency figures, in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Clat {
    /// Samples.
    pub samples: u64,
    /// Smallest.
    pub min: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stddev: f64,
    /// `(percentile, value)` for each of [`PERCENTILES`] (zeros without samples).
    pub percentiles: Vec<(f64, u64)>,
}

/// One direction, all queues together.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DirSummary {
    /// Requests completed successfully.
    pub ios: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Requests per second over the run.
    pub iops: f64,
    /// Bytes per second over the run.
    pub bw_bytes: f64,
    /// Completion latencies.
    pub clat: Clat,
}

impl Clat {
    /// The figures of `samples` latencies; `value_at_quantile(q)` gives the
    /// latency at quantile `q` (0..=1) from whatever histogram recorded them.
    /// With no samples, everything is 0.
    pub fn new(
        samples: u64,
        min: u64,
        max: u64,
        mean: f64,
        stddev: f64,
        value_at_quantile: impl Fn(f64) -> u64,
    ) -> Clat {
        if samples == 0 {
            return Clat {
                percentiles: PERCENTILES.iter().map(|&p| (p, 0)).collect(),
                ..Clat::default()
            };
        }
        Clat {
            samples,
            min,
            max,
            mean,
            stddev,
            percentiles: PERCENTILES
                .iter()
                // The top of a bucket may lie above the largest value seen.
                .map(|&p| (p, value_at_quantile(p / 100.0).min(max)))
                .collect(),
        }
    }
}

impl DirSummary {
    /// Reduces one direction's merged results over a run of `seconds`.
    pub fn new(stats: &DirStats, seconds: f64) -> DirSummary {
        let clat = Clat::new(
            stats.ios,
            stats.min_ns,
            stats.max_ns,
            stats.mean_ns(),
            stats.stddev_ns(),
            |q| stats.clat.value_at_quantile(q),
        );
        DirSummary::from_clat(stats.ios, stats.bytes, seconds, clat)
    }

    /// One direction's figures from its totals and latencies over `seconds`.
    pub fn from_clat(ios: u64, bytes: u64, seconds: f64, clat: Clat) -> DirSummary {
        let seconds = seconds.max(1e-9);
        DirSummary {
            ios,
            bytes,
            iops: ios as f64 / seconds,
            bw_bytes: bytes as f64 / seconds,
            clat,
        }
    }
}

/// What the job was, and what it measured.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Job name.
    pub name: String,
    /// The I/O pattern as fio names it (`randread`, `randrw`, ...).
    pub rw: String,
    /// Bytes per request.
    pub block_size: u64,
    /// `split` or `packed`.
    pub ring: String,
    /// Queues (one CPU or thread each).
    pub queues: u16,
    /// Requests in flight per queue.
    pub iodepth: u16,
    /// The depth the job asked for, when it was more than a ring holds:
    /// `iodepth` is then the depth that ran (like fio, the runner takes any
    /// depth, and the queue bounds the real one).
    pub iodepth_asked: Option<u16>,
    /// `poll`, `irq` or `hybrid`.
    pub mode: String,
    /// What backs the disk (`null`, `ram`, `file`, ...).
    pub disk: String,
    /// The slowest queue's run time, ms.
    pub runtime_ms: u64,
    /// The fastest queue's run time, ms.
    pub min_runtime_ms: u64,
    /// Reads.
    pub read: DirSummary,
    /// Writes.
    pub write: DirSummary,
    /// The driver's counters, summed over queues.
    pub stats: QueueStats,
    /// Used-buffer notifications the device sent (where known).
    pub used_notifications: u64,
    /// Notification waits that timed out.
    pub irq_timeouts: u64,
    /// Failed requests, plus protocol violations seen.
    pub errors: u64,
    /// Reads that returned the wrong data.
    pub verify_errors: u64,
    /// The requests that failed or read back wrong data, as the queues
    /// listed them (at most [`crate::job::MAX_BAD_REQUESTS`] each).
    pub bad_requests: Vec<BadRequest>,
}

/// Adds one queue's counters into a total.
pub fn add_stats(total: &mut QueueStats, more: &QueueStats) {
    total.submitted += more.submitted;
    total.completed += more.completed;
    total.commits += more.commits;
    total.publishes += more.publishes;
    total.kicks += more.kicks;
    total.empty_polls += more.empty_polls;
    total.interrupts += more.interrupts;
    total.rekicks += more.rekicks;
    total.rekicks_declined += more.rekicks_declined;
    total.bad_lengths += more.bad_lengths;
}

/// What a run was, as the reports label it.
#[derive(Clone, Debug, Default)]
pub struct JobLabels {
    /// Job name.
    pub name: String,
    /// The I/O pattern as fio names it.
    pub rw: String,
    /// Bytes per request.
    pub block_size: u64,
    /// `split` or `packed`.
    pub ring: String,
    /// Queues.
    pub queues: u16,
    /// Requests in flight per queue.
    pub iodepth: u16,
    /// `poll`, `irq` or `hybrid`.
    pub mode: String,
    /// What backs the disk.
    pub disk: String,
}

impl Summary {
    /// Merges what each queue's job produced, with the queue's counters,
    /// into the run's summary (a kernel running the job on its own queues:
    /// the guest, the Kerla kext). The run lasted as long as its slowest
    /// queue.
    pub fn of_queues(
        labels: JobLabels,
        finished: &[(QueueStats, QueueResult<DirStats>)],
        used_notifications: u64,
        irq_timeouts: u64,
    ) -> Summary {
        let (mut read, mut write) = (DirStats::new(), DirStats::new());
        let mut stats = QueueStats::default();
        let (mut errors, mut verify_errors) = (0, 0);
        let (mut longest, mut shortest) = (0u64, u64::MAX);
        for (queue_stats, result) in finished {
            read.merge(&result.read);
            write.merge(&result.write);
            add_stats(&mut stats, queue_stats);
            errors += result.errors;
            verify_errors += result.verify_errors;
            longest = longest.max(result.elapsed_ns);
            shortest = shortest.min(result.elapsed_ns);
        }
        let seconds = (longest as f64 / 1e9).max(1e-9);
        Summary {
            name: labels.name,
            rw: labels.rw,
            block_size: labels.block_size,
            ring: labels.ring,
            queues: labels.queues,
            iodepth: labels.iodepth,
            iodepth_asked: None,
            mode: labels.mode,
            disk: labels.disk,
            runtime_ms: longest.div_ceil(1_000_000),
            min_runtime_ms: shortest.min(longest).div_ceil(1_000_000),
            read: DirSummary::new(&read, seconds),
            write: DirSummary::new(&write, seconds),
            stats,
            used_notifications,
            irq_timeouts,
            errors,
            verify_errors,
            bad_requests: finished
                .iter()
                .flat_map(|(_, result)| result.bad_requests.iter().cloned())
                .collect(),
        }
    }

    /// Completed requests (any result), the denominator of the per-I/O figures.
    fn completed(&self) -> f64 {
        self.stats.completed.max(1) as f64
    }

    /// Doorbells per request.
    pub fn kicks_per_io(&self) -> f64 {
        self.stats.kicks as f64 / self.completed()
    }

    /// Commits (doorbell decisions) per request.
    pub fn commits_per_io(&self) -> f64 {
        self.stats.commits as f64 / self.completed()
    }

    /// Hand-overs to the device (commits and the pieces before them) per request.
    pub fn publishes_per_io(&self) -> f64 {
        self.stats.publishes as f64 / self.completed()
    }

    /// Polls that found nothing, per request.
    pub fn empty_polls_per_io(&self) -> f64 {
        self.stats.empty_polls as f64 / self.completed()
    }

    /// The depth as the job gave it: what fio's job options echo.
    pub fn job_iodepth(&self) -> u16 {
        self.iodepth_asked.unwrap_or(self.iodepth)
    }

    /// Whether the run failed: any error or wrong data.
    pub fn failed(&self) -> bool {
        self.errors > 0 || self.verify_errors > 0
    }
}
