//! Project tasks.
//!
//! `cargo xtask guest [flags]` builds the guest kernel (`guest/`, its own
//! workspace) and runs one fio-style job in QEMU: virtio-blk-pci on the `pc`
//! machine or virtio-blk-device (virtio-mmio) on `microvm`, a null or file
//! backend, one vCPU per queue. The guest's report goes to stdout; the exit
//! status is 0 only when the guest passed.
//!
//! `cargo xtask linux-fio [flags]` runs the same job with Linux's virtio_blk
//! and real fio on the same QEMU line; `cargo xtask compare` runs both guests
//! over a matrix of jobs and prints one table.
//!
//! `cargo xtask perf` runs our driver beside libblkio's on vblk-fastdev and
//! the idealised ring beside both, and prints one table of ratios.
//!
//! `cargo xtask kerla` builds the real Kerla from `../shared/kerla/` with
//! the project's patch series and the kext, boots it in QEMU with the
//! kext's self-test, and checks the disk image on the host.
//!
//! `cargo xtask soak` runs our guest many times over a matrix of modes,
//! rings, iothread on/off, depths and ring sizes and counts how each run
//! ended (passed, stalled and what the stall report found, failed).
#![deny(missing_docs)]

mod args;
mod compare;
mod cpio;
mod hash;
mod kerla;
mod linux;
mod perf;
mod qemu;
mod soak;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    match cli.task {
        args::Task::Guest(guest) => match qemu::run(&guest) {
            Ok(outcome) => outcome.exit_code(),
            Err(error) => {
                eprintln!("xtask guest: error: {error}");
                ExitCode::from(2)
            }
        },
        args::Task::LinuxFio(linux) => match linux::run(&linux) {
            Ok(outcome) => outcome.exit_code(),
            Err(error) => {
                eprintln!("xtask linux-fio: error: {error}");
                ExitCode::from(2)
            }
        },
        args::Task::Compare(compare) => match compare::run(&compare) {
            Ok(outcome) => outcome.exit_code(),
            Err(error) => {
                eprintln!("xtask compare: error: {error}");
                ExitCode::from(2)
            }
        },
        args::Task::Kerla(kerla) => match kerla::run(&kerla) {
            Ok(outcome) => outcome.exit_code(),
            Err(error) => {
                eprintln!("xtask kerla: error: {error}");
                ExitCode::from(2)
            }
        },
        args::Task::Perf(perf) => match perf::run(&perf) {
            Ok(outcome) => outcome.exit_code(),
            Err(error) => {
                eprintln!("xtask perf: error: {error}");
                ExitCode::from(2)
            }
        },
        args::Task::Soak(soak) => match soak::run(&soak) {
            Ok(outcome) => outcome.exit_code(),
            Err(error) => {
                eprintln!("xtask soak: error: {error}");
                ExitCode::from(2)
            }
        },
    }
}
