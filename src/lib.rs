//! A `no_std` virtio-blk driver built for high IOPS.
//!
//! One virtqueue per CPU, each owned by exactly one thread and busy-polled;
//! split and packed rings; batched, suppressed doorbells. See `DESIGN.md` in the
//! shared folder and the README for the architecture.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

pub mod hal;
pub mod spec;
pub mod transport;

pub use hal::{DmaBuffer, Hal, PhysAddr, PAGE_SIZE};
pub use spec::{DeviceStatus, Features};
pub use transport::{QueueAddresses, QueueNotifier, Transport, TransportError};
