//! `--peer libblkio`: our driver and libblkio's `virtio-driver` run the same
//! job against the same vhost-user export, alternating (which one goes first
//! flips every repeat), at every point of `--compare-queues` ×
//! `--compare-iodepths`; then one table side by side.
//!
//! Both busy-poll a core, so CPU time says nothing; the table has IOPS,
//! p50/p99 completion latency, kicks per I/O and empty polls per I/O.

use std::fmt::Write as _;
use std::process::ExitCode;

use crate::args::{Args, Peer};
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
                        peer::run(&point, backend.socket())
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
            let ratio = mean(ours.iter().map(|f| f.iops)) / mean(theirs.iter().map(|f| f.iops));
            let p50 = mean(ours.iter().map(|f| f.p50_ns as f64))
                / mean(theirs.iter().map(|f| f.p50_ns as f64));
            let _ = writeln!(
                ratios,
                "q{queues} qd{depth}: IOPS ours/libblkio {ratio:.2}x, p50 ours/libblkio {p50:.2}x"
            );
        }
    }
    println!(
        "vhost-user-blk export: {}; rw={:?} bs={} runtime={}s per run, {} runs each; \
         load average before: {load_before}, after: {}",
        backend.describe(args),
        args.rw,
        args.bs,
        args.runtime,
        args.repeat,
        load_average()
    );
    println!();
    print!("{table}");
    println!();
    print!("{ratios}");
    if failed {
        eprintln!("vblk-bench: some runs had errors");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
