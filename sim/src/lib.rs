//! A simulated virtio-blk device: the device side of split (VIRTIO 1.2 §2.7)
//! and packed (§2.8) virtqueues over a null or RAM disk, with fault injection,
//! exposed to the `virtio-blk-mq` driver through its [`Transport`] trait.
//!
//! Device addresses are process virtual addresses of memory from [`SimHal`].
//! The device checks every address the driver gives it against the live
//! `SimHal` allocations, and every other driver mistake it can see, and
//! reports them through [`SimDevice::violations`] instead of crashing: a
//! malformed request completes with IOERR, a corrupted ring stops the queue
//! and sets DEVICE_NEEDS_RESET.
//!
//! Run the device inline with [`SimDevice::step`] / [`SimDevice::drain`]
//! (deterministic, single-threaded) or on threads with [`SimDevice::spawn`].
//!
//! The device can also be hostile, deterministically and on demand: lie on a
//! queue's used side ([`SimDevice::inject_hostile`] with a [`Hostile`] act),
//! hold requests forever ([`SimDevice::stall`]), report impossible
//! configuration values, refuse FEATURES_OK, never settle its configuration
//! generation, or ask for a reset after N requests (see [`SimConfig`]).
//!
//! [`Transport`]: virtio_blk_mq::Transport
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

mod config;
mod device;
mod disk;
mod hal;
pub mod harness;
mod hostile;
mod lock;
mod mem;
mod packed;
mod queue;
mod request;
mod ring;
mod simple;
mod split;
mod threads;
mod transport;

#[cfg(test)]
mod tests;

pub use config::{CompletionOrder, DiskKind, Injection, SimConfig};
pub use device::{QueueStats, SimDevice};
pub use hal::SimHal;
pub use hostile::Hostile;
pub use threads::{SimThreads, ThreadMode};
pub use transport::{SimNotifier, SimTransport};
