//! `--peer libblkio`: our driver and libblkio's `virtio-driver` run the same
//! job against the same vhost-user export, alternating (which one goes first
//! flips every repeat), at every point of `--compare-queues` ×
//! `--compare-iodepths`; then one table side by side.
//!
//! Both busy-poll a core, so CPU time says nothing; the table has IOPS,
//! p50/p99 completion latency, kicks per I/O and empty polls per I/O. The
//! ratios are taken pair by pair (ours ÷ theirs of runs next to each other
//! in time), then the median, min and max over the pairs, so a drift of the
//! machine's speed during the comparison cancels out. `--output-format
//! json` prints every run and the ratios instead of the table.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::{json, Value};

use crate::args::{Args, OutputFormat, Peer};
use crate::peer;
use crate::sim_target::RunResult;
use crate::summary::summarize;
use crate::vhost_target::{self, Backend};

/// One run's figures.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    iops: f64,
    p50_ns: u64,
    p99_ns: u64,
    kicks_per_io: f64,
    empty_polls_per_io: f64,
    errors: u64,
}

fn figures(args: &Args, run: &RunResult) -> Figures {
    let summary = summarize(args, run);
    let dir = if summary.read.ios >= summary.write.ios {
        &summary.read
    } else {
        &summary.write
    };
    let at = |p: f64| {
        dir.clat
            .percentiles
            .iter()
            .find(|&&(q, _)| q == p)
            .map_or(0, |&(_, v)| v)
    };
    Figures {
        iops: summary.read.iops + summary.write.iops,
        p50_ns: at(50.0),
        p99_ns: at(99.0),
        kicks_per_io: summary.kicks_per_io(),
        empty_polls_per_io: summary.empty_polls_per_io(),
        errors: summary.errors,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / f64::from(n)
    }
}

/// Median, min and max of `values` (NaN-free; empty gives zeros).
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[0], values[n - 1])
}

/// Ours ÷ theirs for each alternating pair (run `i` of each driver).
fn pair_ratios(ours: &[Figures], theirs: &[Figures], field: impl Fn(&Figures) -> f64) -> Vec<f64> {
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| field(a) / field(b))
        .collect()
}

fn runs_json(runs: &[Figures]) -> Value {
    runs.iter()
        .map(|f| {
            json!({
                "iops": f.iops,
                "p50_ns": f.p50_ns,
                "p99_ns": f.p99_ns,
                "kicks_per_io": f.kicks_per_io,
                "empty_polls_per_io": f.empty_polls_per_io,
                "errors": f.errors,
            })
        })
        .collect()
}

fn spread_json((median, min, max): (f64, f64, f64)) -> Value {
    json!({ "median": median, "min": min, "max": max })
}

fn row(out: &mut String, queues: u16, depth: u16, name: &str, runs: &[Figures]) {
    let each: Vec<String> = runs
        .iter()
        .map(|f| format!("{:.0}k", f.iops / 1e3))
        .collect();
    let _ = writeln!(
        out,
        "| {queues} | {depth} | {name} | {:.0}k ({}) | {:.2} | {:.2} | {:.3} | {:.2} |",
        mean(runs.iter().map(|f| f.iops)) / 1e3,
        each.join(", "),
        mean(runs.iter().map(|f| f.p50_ns as f64)) / 1e3,
        mean(runs.iter().map(|f| f.p99_ns as f64)) / 1e3,
        mean(runs.iter().map(|f| f.kicks_per_io)),
        mean(runs.iter().map(|f| f.empty_polls_per_io)),
    );
}

/// Runs the comparison and prints the table; exit status 1 if any run failed.
pub fn run(args: &Args) -> ExitCode {
    let Some(Peer::Libblkio) = args.peer else {
        return ExitCode::FAILURE;
    };
    let depths = if args.compare_iodepths.is_empty() {
        vec![args.iodepth]
    } else {
        args.compare_iodepths.clone()
    };
    let queue_counts = if args.compare_queues.is_empty() {
        vec![args.queues]
    } else {
        args.compare_queues.clone()
    };
    let max_queues = queue_counts.iter().copied().max().unwrap_or(1);
    let backend = match Backend::open(args, max_queues) {
        Ok(backend) => backend,
        Err(e) => {
            eprintln!("vblk-bench: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let load_before = load_average();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| queues | iodepth | driver | IOPS mean (each run) | p50 µs | p99 µs | kicks/IO | empty polls/IO |"
    );
    let _ = writeln!(table, "| --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut ratios = String::new();
    let mut points = Vec::new();
    let mut failed = false;
    for &queues in &queue_counts {
        for &depth in &depths {
            let point = Args {
                queues,
                iodepth: depth,
                ..args.clone()
            };
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            for repeat in 0..args.repeat {
                for turn in 0..2 {
                    let ours_now = (turn == 0) == (repeat % 2 == 0);
                    let name = if ours_now {
                        "virtio-blk-mq"
                    } else {
                        "libblkio"
                    };
                    let run = if ours_now {
                        vhost_target::run(&point, &backend)
                    } else {
                        peer::run(&point, &backend)
                    };
                    let run = match run {
                        Ok(run) => run,
                        Err(e) => {
                            eprintln!("vblk-bench: {name} q{queues} qd{depth}: error: {e}");
                            if let Some(log) = backend.daemon_log().filter(|l| !l.is_empty()) {
                                eprintln!("vblk-bench: qemu-storage-daemon said: {log}");
                            }
                            return ExitCode::FAILURE;
                        }
                    };
                    for problem in run
                        .queues
                        .iter()
                        .filter_map(|(_, r)| r.first_problem.as_ref())
                    {
                        eprintln!("vblk-bench: {name}: {problem}");
                    }
                    let f = figures(&point, &run);
                    failed |= f.errors > 0 || run.failure.is_some();
                    eprintln!(
                        "vblk-bench: q{queues} qd{depth} {name:>13}: {:>8.0} IOPS  p50 {:>6.2} µs  \
                         p99 {:>7.2} µs  kicks/IO {:.3}  empty polls/IO {:.2}",
                        f.iops,
                        f.p50_ns as f64 / 1e3,
                        f.p99_ns as f64 / 1e3,
                        f.kicks_per_io,
                        f.empty_polls_per_io
                    );
                    if ours_now {
                        ours.push(f);
                    } else {
                        theirs.push(f);
                    }
                }
            }
            row(&mut table, queues, depth, "virtio-blk-mq", &ours);
            row(&mut table, queues, depth, "libblkio", &theirs);
            let iops = spread(pair_ratios(&ours, &theirs, |f| f.iops));
            let p50 = spread(pair_ratios(&ours, &theirs, |f| f.p50_ns as f64));
            let _ = writeln!(
                ratios,
                "q{queues} qd{depth}: IOPS ours/libblkio {:.2}x (min {:.2}x, max {:.2}x), \
                 p50 ours/libblkio {:.2}x (min {:.2}x, max {:.2}x); medians of {} pairs",
                iops.0,
                iops.1,
                iops.2,
                p50.0,
                p50.1,
                p50.2,
                ours.len().min(theirs.len())
            );
            points.push(json!({
                "queues": queues,
                "iodepth": depth,
                "ours": runs_json(&ours),
                "libblkio": runs_json(&theirs),
                "iops_ratio": spread_json(iops),
                "p50_ratio": spread_json(p50),
            }));
        }
    }
    let load_after = load_average();
    match args.output_format {
        OutputFormat::Json => {
            let report = json!({
                "backend": backend.describe(args),
                "rw": format!("{:?}", args.rw).to_lowercase(),
                "bs": args.bs,
                "runtime_s": args.runtime,
                "repeat": args.repeat,
                "load_before": load_before,
                "load_after": load_after,
                "points": points,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
        }
        OutputFormat::Normal => {
            println!(
                "vhost-user-blk export: {}; rw={:?} bs={} runtime={}s per run, {} runs each; \
                 load average before: {load_before}, after: {load_after}",
                backend.describe(args),
                args.rw,
                args.bs,
                args.runtime,
                args.repeat,
            );
            println!();
            print!("{table}");
            println!();
            print!("{ratios}");
        }
    }
    if failed {
        eprintln!("vblk-bench: some runs had errors");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
