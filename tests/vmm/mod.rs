//! A virtio-blk device whose split-ring side is rust-vmm's `virtio-queue`,
//! over `vm-memory` guest memory (DESIGN.md §6): our driver against ring
//! code this project did not write.
//!
//! Everything runs on the test's thread; the test steps the device, so every
//! run is deterministic.

mod config_space;
mod device;
mod memory;
mod request;
mod transport;

pub use config_space::{feature, status};
pub use device::{CompletionOrder, VmmBlkConfig, VmmDevice};
pub use memory::{guest_memory, VmmHal};
pub use request::Range;
pub use transport::{VmmNotifier, VmmTransport};
