//! The run's results, merged over queues and reduced to the report's
//! [`Summary`] (the `vblk-report` crate prints it, as the guest kernel does).

use vblk_report::summary::add_stats;
use vblk_report::{Clat, DirSummary, Summary};
use virtio_blk_mq::QueueStats;

use crate::args::{Args, Target};
use crate::job::DirStats;
use crate::sim_target::RunResult;

fn value_name<T: clap::ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// One direction's figures over `seconds`, percentiles from its hdrhistogram.
fn direction(stats: &DirStats, seconds: f64) -> DirSummary {
    let mean = if stats.ios == 0 {
        0.0
    } else {
        stats.sum_ns as f64 / stats.ios as f64
    };
    let clat = Clat::new(
        stats.ios,
        stats.min_ns,
        stats.max_ns,
        mean,
        stats.clat.stdev(),
        |q| stats.clat.value_at_quantile(q),
    );
    DirSummary::from_clat(stats.ios, stats.bytes, seconds, clat)
}

/// Merges the queues' results.
pub fn summarize(args: &Args, run: &RunResult) -> Summary {
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
        let nanos = result.elapsed_ns;
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
        disk: match &args.target {
            Target::VhostUser(_) => "export".into(),
            _ => args.disk().name().into(),
        },
        runtime_ms: longest.div_ceil(1_000_000),
        min_runtime_ms: shortest.min(longest).div_ceil(1_000_000),
        read: direction(&read, seconds),
        write: direction(&write, seconds),
        stats,
        used_notifications: run.used_notifications,
        irq_timeouts: run.irq_timeouts,
        errors,
        verify_errors,
        bad_requests: run
            .queues
            .iter()
            .flat_map(|(_, result)| result.bad_requests.iter().cloned())
            .collect(),
    }
}
