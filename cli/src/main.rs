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
mod json;
mod peer;
mod progress;
mod report;
mod sim_target;
mod summary;
mod verify;
mod vhost_target;
mod workload;

use std::process::ExitCode;

use args::{Args, OutputFormat, Target};
use summary::Summary;

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
    let summary = Summary::new(&args, &run);
    match args.output_format {
        OutputFormat::Normal => print!("{}", report::normal(&summary)),
        OutputFormat::Json => match serde_json::to_string_pretty(&json::report(&summary)) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("vblk-bench: error: cannot encode the report: {error}");
                return ExitCode::FAILURE;
            }
        },
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
