//! `vblk-bench`: fio-style jobs against the virtio-blk-mq driver.
//!
//! ```text
//! vblk-bench --rw randread --bs 4k --iodepth 32 --queues 2 --ring packed --runtime 3
//!
//! vblk-bench --target vhost-user --spawn-daemon --iodepth 32      # qemu-storage-daemon
//! vblk-bench --target vhost-user --spawn-daemon --peer libblkio \
//!            --compare-iodepths 1,8,32,128 --compare-queues 1,2   # ours beside libblkio
//! ```
//!
//! Exit status: 0 on success, 1 when any request failed or read back wrong
//! data (or the device could not be set up), 2 for bad flags.
#![deny(missing_docs)]

mod args;
mod compare;
mod job;
mod peer;
mod progress;
mod sim_target;
mod summary;
mod vhost_target;

use std::process::ExitCode;

use args::{Args, OutputFormat, Target};

/// What the JSON report's `fio version` field says.
const REPORT_VERSION: &str = concat!("vblk-bench-", env!("CARGO_PKG_VERSION"));

fn main() -> ExitCode {
    let mut args = Args::parse_checked();
    if args.peer.is_some() {
        return compare::run(&args);
    }
    let run = match &args.target {
        Target::Sim => sim_target::run(&args),
        Target::VhostUser(_) | Target::VhostUserSpawn => {
            vhost_target::Backend::open(&args, args.queues).and_then(|backend| {
                let run = vhost_target::run(&args, &backend);
                if run.as_ref().map_or(true, |r| r.failure.is_some()) {
                    if let Some(log) = backend.daemon_log().filter(|l| !l.is_empty()) {
                        eprintln!("vblk-bench: qemu-storage-daemon said: {log}");
                    }
                }
                run
            })
        }
    };
    let run = match run {
        Ok(run) => run,
        Err(error) => {
            eprintln!("vblk-bench: error: {error}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(failure) = &run.failure {
        eprintln!("vblk-bench: {failure}");
    }
    // The report names the ring the device negotiated (a vhost-user backend
    // may not offer packed rings).
    args.ring = match run.ring {
        virtio_blk_mq::RingKind::Split => args::Ring::Split,
        virtio_blk_mq::RingKind::Packed => args::Ring::Packed,
    };
    for problem in run
        .queues
        .iter()
        .filter_map(|(_, r)| r.first_problem.as_ref())
    {
        eprintln!("vblk-bench: {problem}");
    }
    for violation in &run.violations {
        eprintln!("vblk-bench: device saw a driver protocol violation: {violation}");
    }
    let summary = summary::summarize(&args, &run);
    match args.output_format {
        OutputFormat::Normal => print!(
            "{}",
            vblk_report::normal::normal(&summary, std::process::id())
        ),
        OutputFormat::Json => {
            let line = vblk_report::json::report(&summary, REPORT_VERSION);
            // Pretty-printed, as fio prints it; the guest prints the same one line.
            match serde_json::from_str::<serde_json::Value>(&line)
                .and_then(|value| serde_json::to_string_pretty(&value))
            {
                Ok(text) => println!("{text}"),
                Err(error) => {
                    eprintln!("vblk-bench: error: cannot encode the report: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if summary.failed() {
        eprintln!(
            "vblk-bench: run failed: {} errors, {} verify errors",
            summary.errors, summary.verify_errors
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
