//! `vblk-fastdev`: a vhost-user-blk device fast enough to measure drivers
//! with, built on rust-vmm's `vhost-user-backend` (the vhost-user protocol)
//! and `virtio-queue` (the split ring, device side).
//!
//! One thread per queue busy-polls its available ring; the disk is null
//! (keeps nothing, touches no data) or a sparse RAM disk. Features offered:
//! VERSION_1, EVENT_IDX, INDIRECT_DESC, SEG_MAX, BLK_SIZE, FLUSH, MQ; split
//! rings only (`virtio-queue` has no packed ring). Requests: IN, OUT, FLUSH,
//! GET_ID; anything else is answered UNSUPP.
//!
//! ```no_run
//! use vblk_fastdev::{DiskKind, FastConfig, FastDevice};
//! let device = FastDevice::spawn(&FastConfig {
//!     size: 1 << 30,
//!     queues: 2,
//!     disk: DiskKind::Ram,
//!     ..FastConfig::default()
//! })?;
//! println!("connect to {}", device.socket().display());
//! # Ok::<(), vblk_fastdev::StartError>(())
//! ```
#![deny(missing_docs)]
#![deny(unsafe_code, clippy::undocumented_unsafe_blocks)]

mod backend;
mod config;
mod device;
mod disk;
mod memory;
mod pin;
mod poller;
mod request;

pub use device::{FastConfig, FastDevice, Idle, QueueCounters, StartError, MAX_QUEUES};
pub use disk::DiskKind;
pub use request::DEVICE_ID;
