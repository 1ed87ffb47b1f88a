//! The run's results, merged over queues and reduced to what the reports print.

use virtio_blk_mq::QueueStats;

use crate::args::Args;
use crate::job::DirStats;
use crate::sim_target::RunResult;

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

impl DirSummary {
    fn new(stats: &DirStats, seconds: f64) -> DirSummary {
        let clat = if stats.ios == 0 {
            Clat {
                percentiles: PERCENTILES.iter().map(|&p| (p, 0)).collect(),
                ..Clat::default()
            }
        } else {
            Clat {
                samples: stats.ios,
                min: stats.min_ns,
                max: stats.max_ns,
                mean: stats.sum_ns as f64 / stats.ios as f64,
                stddev: stats.clat.stdev(),
                percentiles: PERCENTILES
                    .iter()
                    .map(|&p| (p, stats.clat.value_at_quantile(p / 100.0)))
                    .collect(),
            }
        };
        DirSummary {
            ios: stats.ios,
            bytes: stats.bytes,
            iops: stats.ios as f64 / seconds,
            bw_bytes: stats.bytes as f64 / seconds,
            clat,
        }
    }
}

/// What the job was, and what it measured.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Job name.
    pub name: String,
    /// `--rw` as typed.
    pub rw: String,
    /// Bytes per request.
    pub block_size: u64,
    /// `split` or `packed`.
    pub ring: String,
    /// Queues (one thread each).
    pub queues: u16,
    /// Requests in flight per queue.
    pub iodepth: u16,
    /// `poll`, `irq` or `hybrid`.
    pub mode: String,
    /// `null` or `ram`.
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
    /// Used-buffer notifications the device sent.
    pub used_notifications: u64,
    /// Notification waits that timed out.
    pub irq_timeouts: u64,
    /// Failed requests, plus protocol violations the device saw.
    pub errors: u64,
    /// Reads that returned the wrong data.
    pub verify_errors: u64,
}

fn value_name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn add_stats(total: &mut QueueStats, more: &QueueStats) {
    total.submitted += more.submitted;
    total.completed += more.completed;
    total.commits += more.commits;
    total.kicks += more.kicks;
    total.empty_polls += more.empty_polls;
    total.interrupts += more.interrupts;
}

impl Summary {
    /// Merges the queues' results.
    pub fn new(args: &Args, run: &RunResult) -> Summary {
        let (mut read, mut write) = (DirStats::empty(), DirStats::empty());
        let mut stats = QueueStats::default();
        let (mut errors, mut verify_errors) = (run.violations.len() as u64, 0);
        let (mut longest, mut shortest) = (0u64, u64::MAX);
        for (queue_stats, result) in &run.queues {
            read.merge(&result.read);
            write.merge(&result.write);
            add_stats(&mut stats, queue_stats);
            errors += result.errors;
            verify_errors += result.verify_errors;
            let nanos = u64::try_from(result.elapsed.as_nanos()).unwrap_or(u64::MAX);
            longest = longest.max(nanos);
            shortest = shortest.min(nanos);
        }
        let seconds = (longest as f64 / 1e9).max(1e-9);
        Summary {
            name: args.name.clone(),
            rw: value_name(&args.rw),
            block_size: args.bs,
            ring: value_name(&args.ring),
            queues: args.queues,
            iodepth: args.iodepth,
            mode: value_name(&args.mode),
            disk: value_name(&args.disk),
            runtime_ms: longest.div_ceil(1_000_000),
            min_runtime_ms: shortest.min(longest).div_ceil(1_000_000),
            read: DirSummary::new(&read, seconds),
            write: DirSummary::new(&write, seconds),
            stats,
            used_notifications: run.used_notifications,
            irq_timeouts: run.irq_timeouts,
            errors,
            verify_errors,
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

    /// Commits (published batches) per request.
    pub fn commits_per_io(&self) -> f64 {
        self.stats.commits as f64 / self.completed()
    }

    /// Polls that found nothing, per request.
    pub fn empty_polls_per_io(&self) -> f64 {
        self.stats.empty_polls as f64 / self.completed()
    }

    /// Whether the run failed: any error or wrong data.
    pub fn failed(&self) -> bool {
        self.errors > 0 || self.verify_errors > 0
    }
}
