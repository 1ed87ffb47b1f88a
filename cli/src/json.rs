//! The JSON report: fio's field names for the fields fio has, driver figures
//! under a top-level `vblk` object.

use serde_json::{json, Map, Value};

use crate::summary::{DirSummary, Summary};

fn direction(dir: &DirSummary, runtime_ms: u64) -> Value {
    let percentile: Map<String, Value> = dir
        .clat
        .percentiles
        .iter()
        .map(|&(p, v)| (format!("{p:.6}"), json!(v)))
        .collect();
    json!({
        "io_bytes": dir.bytes,
        "io_kbytes": dir.bytes / 1024,
        "bw_bytes": dir.bw_bytes.round() as u64,
        "bw": (dir.bw_bytes / 1024.0).round() as u64,
        "iops": dir.iops,
        // fio reports 0 for a direction the job did not do.
        "runtime": if dir.ios > 0 { runtime_ms } else { 0 },
        "total_ios": dir.ios,
        "clat_ns": {
            "min": dir.clat.min,
            "max": dir.clat.max,
            "mean": dir.clat.mean,
            "stddev": dir.clat.stddev,
            "N": dir.clat.samples,
            "percentile": percentile,
        },
    })
}

/// The whole report as a JSON document.
pub fn report(summary: &Summary) -> Value {
    let error = if summary.failed() { 5 } else { 0 };
    json!({
        "fio version": concat!("vblk-bench-", env!("CARGO_PKG_VERSION")),
        "jobs": [{
            "jobname": summary.name,
            "groupid": 0,
            "error": error,
            "job options": {
                "rw": summary.rw,
                "bs": summary.block_size.to_string(),
                "iodepth": summary.iodepth.to_string(),
                "numjobs": summary.queues.to_string(),
            },
            "read": direction(&summary.read, summary.runtime_ms),
            "write": direction(&summary.write, summary.runtime_ms),
            "job_runtime": summary.runtime_ms,
        }],
        "vblk": {
            "ring": summary.ring,
            "queues": summary.queues,
            "iodepth": summary.iodepth,
            "mode": summary.mode,
            "disk": summary.disk,
            "submitted": summary.stats.submitted,
            "completed": summary.stats.completed,
            "commits": summary.stats.commits,
            "kicks": summary.stats.kicks,
            "kicks_per_io": summary.kicks_per_io(),
            "commits_per_io": summary.commits_per_io(),
            "interrupts": summary.stats.interrupts,
            "used_notifications": summary.used_notifications,
            "irq_timeouts": summary.irq_timeouts,
            "empty_polls": summary.stats.empty_polls,
            "empty_polls_per_io": summary.empty_polls_per_io(),
            "errors": summary.errors,
            "verify_errors": summary.verify_errors,
        },
    })
}
