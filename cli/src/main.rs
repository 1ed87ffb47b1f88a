//! `vblk-bench`: fio-style jobs against the virtio-blk-mq driver.
//!
//! ```text
//! vblk-bench --rw randread --bs 4k --iodepth 32 --queues 2 --ring packed --runtime 3
//! ```
//!
//! Exit status: 0 on success, 1 when any request failed or read back wrong
//! data (or the device could not be set up), 2 for bad flags.
#![deny(missing_docs)]

mod args;
mod job;
mod json;
mod progress;
mod report;
mod sim_target;
mod summary;
mod verify;
mod workload;

use std::process::ExitCode;

use args::{Args, OutputFormat, Target};
use summary::Summary;

fn main() -> ExitCode {
    let args = Args::parse_checked();
    if let Target::VhostUser(_) = args.target {
        eprintln!(
            "vblk-bench: error: --target {} is not yet supported; only --target sim is available",
            args.target
        );
        return ExitCode::FAILURE;
    }
    let run = match sim_target::run(&args) {
        Ok(run) => run,
        Err(error) => {
            eprintln!("vblk-bench: error: {error}");
            return ExitCode::FAILURE;
        }
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
