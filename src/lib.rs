//! A `no_std` virtio-blk driver built for high IOPS.
//!
//! One virtqueue per CPU, each owned by exactly one thread and busy-polled;
//! split and packed rings; batched, suppressed doorbells.
//!
//! ```text
//! BlkDevice::new(hal, transport, Config)  negotiate, read config, set up queues
//!   .take_queues()                        one BlkQueue per owner (Send, !Sync)
//! queue.read/write/flush/...(…, tag)      place requests (device cannot see them yet)
//! queue.commit()                          publish the batch, kick only if asked
//! queue.poll(budget, |completion| …)      completions in any order, with tags
//! ```
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod barrier;
pub mod blk;
pub mod error;
pub mod hal;
#[cfg(all(test, loom))]
mod loom_model;
pub mod mq;
mod packed_ring;
mod ring;
mod shared;
pub mod snapshot;
pub mod spec;
mod split_ring;
pub mod sync;
pub mod transport;

pub use blk::{
    BlkDevice, BlkQueue, Completion, Config, DeviceInfo, Mode, NotRecovered, Op, Overdue, QueueSet,
    QueueStats, RangeLimits, RawSegment, Recovered, Rejected, Rekick, MAX_DATA_SEGMENTS,
};
pub use error::{Error, TransportError};
pub use hal::{DmaBuffer, Hal, PhysAddr, PAGE_SIZE};
pub use ring::{DeviceFault, QueueAddresses, RingKind};
pub use spec::{DeviceStatus, Features};
pub use transport::{QueueNotifier, Transport};
