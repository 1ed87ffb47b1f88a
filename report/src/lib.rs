//! What a vblk bench job measures and how it is printed, without `std`.
//!
//! The bench CLI (`vblk-bench`) and the guest kernel (`guest/`) run the same
//! fio-style job and must print the same report, so everything of the job that
//! does not need an operating system lives here:
//!
//! - [`summary`]: the run's figures merged over queues ([`Summary`]).
//! - [`normal`]: fio's human-readable layout, plus a `vblk:` line.
//! - [`json`]: fio's JSON field names, plus a top-level `vblk` object.
//! - [`job`]: one queue's job: submit, poll, verify, time out, record.
//! - [`histogram`]: a log-linear latency histogram (no `std`, no float math).
//! - [`units`]: byte counts with k/m/g/t suffixes.
//! - [`verify`]: the data stamp (sector + generation per 512-byte sector).
//! - [`workload`]: which block and direction comes next.
//! - [`blkdebug`]: I/O errors for QEMU's blkdebug driver to inject, as flags
//!   write them and as QEMU's `-blockdev` takes them (the bench CLI's
//!   qemu-storage-daemon and `cargo xtask guest` both use them).
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_code)]

extern crate alloc;

pub mod blkdebug;
pub mod histogram;
pub mod job;
pub mod json;
mod math;
pub mod normal;
pub mod summary;
pub mod units;
pub mod verify;
pub mod workload;

pub use histogram::{DirStats, Histogram};
pub use summary::{Clat, DirSummary, Summary, PERCENTILES};
