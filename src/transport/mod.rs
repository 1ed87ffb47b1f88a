//! The device-access layer: one implementation per virtio transport.
//!
//! The driver talks to the device's control plane (status, features, config,
//! queue setup) through [`Transport`], which stays with the [`crate::BlkDevice`].
//! The data plane's only register access, the doorbell, is split off into a
//! [`QueueNotifier`] that each queue owns, so the I/O path never shares the
//! transport between CPUs.

pub mod mmio;
pub mod pci;
mod regs;
#[cfg(test)]
mod testing;

pub use mmio::{MmioInterrupt, MmioNotifier, MmioTransport};
pub use pci::{IsrReader, MsixMessage, PciConfig, PciNotifier, PciTransport};
pub use regs::IsrStatus;

use crate::hal::PhysAddr;
use crate::spec::DeviceStatus;

/// Device addresses of one virtqueue's three areas (VIRTIO 1.2 §2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAddresses {
    /// Split: descriptor table. Packed: descriptor ring.
    pub desc: PhysAddr,
    /// Split: available ring. Packed: driver event suppression structure.
    pub driver: PhysAddr,
    /// Split: used ring. Packed: device event suppression structure.
    pub device: PhysAddr,
}

/// Why the transport refused an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// The queue index is beyond what the device offers.
    NoSuchQueue(u16),
    /// The queue size is zero, too large, or not a power of two where one is needed.
    BadQueueSize(u16),
    /// The queue is already enabled.
    QueueInUse(u16),
    /// The device stopped answering (e.g. the backend went away).
    DeviceGone,
    /// The transport cannot do this (e.g. per-queue reset without RING_RESET).
    Unsupported,
}

impl core::fmt::Display for TransportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TransportError::NoSuchQueue(q) => write!(f, "the device has no queue {q}"),
            TransportError::BadQueueSize(s) => write!(f, "queue size {s} is not accepted"),
            TransportError::QueueInUse(q) => write!(f, "queue {q} is already enabled"),
            TransportError::DeviceGone => write!(f, "the device stopped responding"),
            TransportError::Unsupported => write!(f, "the transport does not support this"),
        }
    }
}

/// Control-plane access to one virtio device (VIRTIO 1.2 §3.1, §4).
pub trait Transport {
    /// The per-queue doorbell this transport hands out.
    type Notifier: QueueNotifier;

    /// Virtio device type (2 for block).
    fn device_type(&self) -> u32;

    /// All 64 feature bits the device offers.
    fn device_features(&mut self) -> u64;

    /// Writes the feature bits the driver accepts.
    fn set_driver_features(&mut self, features: u64);

    /// Reads the device status.
    fn status(&mut self) -> DeviceStatus;

    /// Writes the device status.
    fn set_status(&mut self, status: DeviceStatus);

    /// Resets the device: writes 0 to status and waits until it reads back 0.
    fn reset(&mut self);

    /// The configuration generation counter (§2.5.1).
    fn config_generation(&mut self) -> u32;

    /// Reads a byte of device-specific configuration.
    fn read_config_u8(&mut self, offset: usize) -> u8;

    /// Reads a little-endian 16-bit configuration field.
    fn read_config_u16(&mut self, offset: usize) -> u16;

    /// Reads a little-endian 32-bit configuration field.
    fn read_config_u32(&mut self, offset: usize) -> u32;

    /// Largest size the device accepts for queue `queue`; 0 when it has no such queue.
    fn max_queue_size(&mut self, queue: u16) -> u16;

    /// Programs queue `queue` with `size` entries at `addrs` and enables it.
    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddresses,
    ) -> Result<(), TransportError>;

    /// Returns the doorbell for queue `queue` (only called after `setup_queue` succeeded).
    fn notifier(&mut self, queue: u16) -> Self::Notifier;

    /// Resets queue `queue` alone (VIRTIO_F_RING_RESET, VIRTIO 1.2 §2.6.1) and
    /// returns once the device has let go of it: afterwards the device no
    /// longer reads or writes the queue's memory, and `setup_queue` may set it
    /// up again. Only called when RING_RESET was negotiated; transports
    /// without per-queue reset keep this default, which refuses.
    fn reset_queue(&mut self, queue: u16) -> Result<(), TransportError> {
        let _ = queue;
        Err(TransportError::Unsupported)
    }
}

/// The doorbell of one virtqueue: an available-buffer notification (§2.9).
///
/// Owned by exactly one queue and used only from its owner's CPU.
pub trait QueueNotifier: Send {
    /// Tells the device new buffers are available on this queue.
    fn notify(&self);
}

#[cfg(feature = "vhost-user")]
pub mod vhost_user;
