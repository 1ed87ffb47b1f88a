//! `cargo xtask perf`: our driver beside libblkio's on vblk-fastdev (the
//! busy-polling vhost-user-blk backend), and the idealised ring between two
//! threads beside both, from one command.
//!
//! 1. Builds `vblk-bench` (release) and runs its comparison mode against a
//!    fast backend it spawns: `--spawn-backend fast --peer libblkio`, every
//!    queue count × depth, the drivers alternating pair by pair.
//! 2. Runs the `threaded/limit` criterion bench (one ring, two pinned
//!    threads, nothing but the handover) for the ring limit.
//! 3. Prints one table with the ratios (medians over the pairs, with their
//!    min and max) and how each compares with issue 15's targets, writes
//!    every figure as JSON, and plots IOPS against depth when asked. Each
//!    driver's IOPS is the median of its runs, with the best run beside it:
//!    on a shared machine preemption only ever slows a run down. The rate
//!    ratio is the inverse of the p50 ratio: at depth, with the device the
//!    bottleneck, qd ÷ p50 is the rate while the pipeline ran (Little's
//!    law), which preemption barely moves; the IOPS targets are judged on
//!    both.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde_json::{json, Value};

use crate::qemu::repo_root;

/// Flags of `cargo xtask perf`.
#[derive(Clone, Debug, clap::Args)]
pub struct PerfArgs {
    /// Queue depths to compare (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    pub iodepths: Vec<u16>,
    /// Queue counts to compare (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub queues: Vec<u16>,
    /// Seconds per run.
    #[arg(long, default_value = "2")]
    pub runtime: String,
    /// Runs of each driver at each point (alternating, the order flipping).
    #[arg(long, default_value_t = 3)]
    pub repeat: u32,
    /// Skip the ring-limit bench.
    #[arg(long)]
    pub no_limit: bool,
    /// Where every figure goes, as JSON (relative to the repository).
    #[arg(long, default_value = "target/perf/perf.json")]
    pub json_out: PathBuf,
    /// Also plot IOPS against depth to this PNG (scripts/plot-perf.py;
    /// matplotlib is installed into target/plot-venv on first use).
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// What the run ended as.
pub enum Outcome {
    /// Every run completed without errors (targets met or not: they are
    /// benchmarks, reported, never enforced).
    Done,
    /// A run had errors.
    Failed,
}

impl Outcome {
    /// The task's exit status.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Done => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::FAILURE,
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run_checked(command: &mut Command, what: &str) -> Result<String, String> {
    let output = command
        .current_dir(repo_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("{what} failed ({}):\n{stdout}", output.status));
    }
    Ok(stdout)
}

fn list(values: &[u16]) -> String {
    values
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The comparison, as `vblk-bench --output-format json` reports it.
fn compare(args: &PerfArgs) -> Result<Value, String> {
    run_checked(
        cargo().args(["build", "--release", "-q", "-p", "vblk-bench"]),
        "cargo build -p vblk-bench",
    )?;
    let binary = repo_root().join("target/release/vblk-bench");
    let stdout = run_checked(
        Command::new(&binary).args([
            "--target",
            "vhost-user",
            "--spawn-backend",
            "fast",
            "--peer",
            "libblkio",
            "--compare-queues",
            &list(&args.queues),
            "--compare-iodepths",
            &list(&args.iodepths),
            "--runtime",
            &args.runtime,
            "--repeat",
            &args.repeat.to_string(),
            "--output-format",
            "json",
        ]),
        "vblk-bench --peer libblkio",
    )?;
    serde_json::from_str(&stdout).map_err(|e| format!("vblk-bench's JSON: {e}"))
}

/// Requests per second of the idealised ring at each depth it was benched
/// at, from criterion's estimates under target/criterion.
fn ring_limit() -> Result<Vec<(u16, f64)>, String> {
    run_checked(
        cargo().args(["bench", "--bench", "threaded", "--", "threaded/limit"]),
        "cargo bench --bench threaded -- threaded/limit",
    )?;
    let mut found = Vec::new();
    collect_limit(&repo_root().join("target/criterion"), &mut found);
    found.sort_by_key(|&(depth, _)| depth);
    Ok(found)
}

fn collect_limit(dir: &Path, found: &mut Vec<(u16, f64)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_limit(&path, found);
            continue;
        }
        if !path.ends_with("new/benchmark.json") {
            continue;
        }
        let read = |p: &Path| -> Option<Value> {
            serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()
        };
        let Some(id) = read(&path).and_then(|b| b["full_id"].as_str().map(String::from)) else {
            continue;
        };
        let Some(depth) = id
            .strip_prefix("threaded/limit/qd")
            .and_then(|d| d.parse().ok())
        else {
            continue;
        };
        let ns = read(&path.with_file_name("estimates.json"))
            .and_then(|e| e["mean"]["point_estimate"].as_f64());
        if let Some(ns) = ns.filter(|&ns| ns > 0.0) {
            found.push((depth, 1e9 / ns));
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn field(runs: &Value, name: &str) -> Vec<f64> {
    runs.as_array()
        .map(|r| r.iter().filter_map(|f| f[name].as_f64()).collect())
        .unwrap_or_default()
}

/// Issue 15's IOPS target at this depth: ours ÷ libblkio at least this.
fn iops_target(depth: u64) -> Option<f64> {
    match depth {
        1 => Some(1.0),
        32 | 128 => Some(1.2),
        _ => None,
    }
}

fn verdict(value: f64, target: f64, higher_is_better: bool) -> String {
    let met = if higher_is_better {
        value >= target
    } else {
        value <= target
    };
    if met {
        "met".into()
    } else {
        let off = if higher_is_better {
            (target - value) / target
        } else {
            (value - target) / target
        };
        format!("missed by {:.0} %", off * 100.0)
    }
}

/// The table printed and put into the README.
fn table(report: &Value, limit: &[(u16, f64)]) -> (String, bool) {
    let mut out = String::new();
    let mut errors = false;
    let _ = writeln!(
        out,
        "| queues | iodepth | ours IOPS (best) | libblkio IOPS (best) | ours ÷ libblkio (min–max) | \
         p50 ours µs | p50 libblkio µs | p50 ratio (min–max) | rate ratio (qd ÷ p50) | \
         IOPS target: by IOPS, by rate | p50 target | ring-limit IOPS | ours ÷ limit |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | ---: | ---: | --- | ---: | ---: | --- | ---: | --- | --- | ---: | ---: |"
    );
    for point in report["points"].as_array().into_iter().flatten() {
        let queues = point["queues"].as_u64().unwrap_or(0);
        let depth = point["iodepth"].as_u64().unwrap_or(0);
        for side in ["ours", "libblkio"] {
            errors |= field(&point[side], "errors").iter().any(|&e| e > 0.0);
        }
        let ours = median(field(&point["ours"], "iops"));
        let theirs = median(field(&point["libblkio"], "iops"));
        let best = |side: &str| field(&point[side], "iops").into_iter().fold(0.0, f64::max);
        let ratio = &point["iops_ratio"];
        let p50 = &point["p50_ratio"];
        let r = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
        // The rate while the pipeline ran (Little's law): preemption, which
        // decides IOPS on a busy machine, barely moves the median latency.
        let rate = if r(p50, "median") > 0.0 {
            1.0 / r(p50, "median")
        } else {
            0.0
        };
        let iops_verdict = iops_target(depth).map_or("–".into(), |t| {
            format!(
                "≥ {t:.1}: {}; {}",
                verdict(r(ratio, "median"), t, true),
                verdict(rate, t, true)
            )
        });
        let limit_iops = (queues == 1)
            .then(|| limit.iter().find(|&&(d, _)| u64::from(d) == depth))
            .flatten()
            .map(|&(_, iops)| iops);
        let _ = writeln!(
            out,
            "| {queues} | {depth} | {:.0}k ({:.0}k) | {:.0}k ({:.0}k) | {:.2} ({:.2}–{:.2}) | \
             {:.2} | {:.2} | {:.2} ({:.2}–{:.2}) | {rate:.2} | {iops_verdict} | ≤ 1.0: {} | {} | {} |",
            ours / 1e3,
            best("ours") / 1e3,
            theirs / 1e3,
            best("libblkio") / 1e3,
            r(ratio, "median"),
            r(ratio, "min"),
            r(ratio, "max"),
            median(field(&point["ours"], "p50_ns")) / 1e3,
            median(field(&point["libblkio"], "p50_ns")) / 1e3,
            r(p50, "median"),
            r(p50, "min"),
            r(p50, "max"),
            verdict(r(p50, "median"), 1.0, false),
            limit_iops.map_or("–".into(), |l| format!("{:.1} M", l / 1e6)),
            limit_iops.map_or("–".into(), |l| format!("{:.3}", ours / l)),
        );
    }
    (out, errors)
}

/// Runs the comparison, prints the table, writes the JSON (and the plot).
pub fn run(args: &PerfArgs) -> Result<Outcome, String> {
    let report = compare(args)?;
    let limit = if args.no_limit {
        Vec::new()
    } else {
        ring_limit()?
    };
    let (table, errors) = table(&report, &limit);
    println!(
        "{}; rw={} bs={}, {} s per run, {} runs of each driver per point; \
         load average before: {}, after: {}",
        report["backend"].as_str().unwrap_or("?"),
        report["rw"].as_str().unwrap_or("?"),
        report["bs"],
        report["runtime_s"],
        report["repeat"],
        report["load_before"].as_str().unwrap_or("?"),
        report["load_after"].as_str().unwrap_or("?"),
    );
    println!();
    print!("{table}");
    let json_out = repo_root().join(&args.json_out);
    if let Some(parent) = json_out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let all = json!({
        "compare": report,
        "ring_limit": limit
            .iter()
            .map(|&(depth, iops)| json!({ "iodepth": depth, "iops": iops }))
            .collect::<Vec<_>>(),
    });
    std::fs::write(
        &json_out,
        serde_json::to_string_pretty(&all).unwrap_or_default(),
    )
    .map_err(|e| format!("{}: {e}", json_out.display()))?;
    println!("\nevery figure: {}", json_out.display());
    if let Some(plot) = &args.plot {
        run_checked(
            Command::new("python3")
                .arg(repo_root().join("scripts/plot-perf.py"))
                .arg(&json_out)
                .arg(repo_root().join(plot)),
            "scripts/plot-perf.py",
        )?;
        println!("plot: {}", repo_root().join(plot).display());
    }
    Ok(if errors {
        Outcome::Failed
    } else {
        Outcome::Done
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_say_by_how_much_a_target_is_missed() {
        assert_eq!(verdict(1.25, 1.2, true), "met");
        assert_eq!(verdict(0.9, 1.2, true), "missed by 25 %");
        assert_eq!(verdict(0.95, 1.0, false), "met");
        assert_eq!(verdict(1.1, 1.0, false), "missed by 10 %");
        assert_eq!(iops_target(8), None);
    }

    #[test]
    fn the_table_has_a_row_per_point_with_the_limit_on_one_queue() {
        let runs = |iops: f64| json!([{ "iops": iops, "p50_ns": 1000, "errors": 0 }]);
        let report = json!({ "points": [
            { "queues": 1, "iodepth": 32, "ours": runs(300e3), "libblkio": runs(200e3),
              "iops_ratio": { "median": 1.5, "min": 1.5, "max": 1.5 },
              "p50_ratio": { "median": 1.0, "min": 1.0, "max": 1.0 } },
            { "queues": 2, "iodepth": 32, "ours": runs(300e3), "libblkio": runs(300e3),
              "iops_ratio": { "median": 1.0, "min": 1.0, "max": 1.0 },
              "p50_ratio": { "median": 1.0, "min": 1.0, "max": 1.0 } },
        ]});
        let (text, errors) = table(&report, &[(32, 3e6)]);
        assert!(!errors);
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(rows.len(), 2);
        assert!(
            rows[0].starts_with("| 1 | 32 | 300k (300k) | 200k (200k) | 1.50"),
            "{}",
            rows[0]
        );
        assert!(
            rows[0].contains("| 1.00 | ≥ 1.2: met; missed by 17 %")
                && rows[0].ends_with("| 3.0 M | 0.100 |"),
            "{}",
            rows[0]
        );
        assert!(rows[1].contains("missed by 17 %") && rows[1].ends_with("| – | – |"));
    }
}
