//! The device-access layer: one implementation per virtio transport.
//!
//! The driver talks to the device's control plane (status, features, config,
//! queue setup) through [`Transport`], which stays with the [`crate::BlkDevice`].
//! The data plane's only register access, the doorbell, is split off into a
//! [`QueueNotifier`] that each queue owns, so the I/O path never shares the
//! transport between CPUs. The other direction, sleeping until the device's
//! used-buffer notification, is an [`IrqWait`].

pub mod mmio;
pub mod pci;
mod regs;
#[cfg(test)]
mod testing;

pub use mmio::{MmioInterrupt, MmioNotifier, MmioTransport};
pub use pci::{IsrReader, MsixMessage, PciConfig, PciNotifier, PciTransport};
pub use regs::IsrStatus;

use crate::error::Error;
use crate::spec::DeviceStatus;

// Both are defined below this layer and named here, where transports use
// them: the error beside the driver's other errors, so that the error type
// needs nothing from the transport; the addresses beside the rings, which lay
// out the memory a transport only passes on.
pub use crate::error::TransportError;
pub use crate::ring::QueueAddresses;

/// A transport's refusal, as the driver reports it ([`Error::Transport`]).
impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        Error::Transport(e)
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

/// How a queue's owner sleeps until its used-buffer notification arrives
/// (§2.9, the device-to-driver direction): an interrupt in a kernel, an
/// eventfd under vhost-user. [`crate::mq::wait_for_completions`] sleeps in it.
///
/// # Contract for implementors
/// `wait` returns once a notification arrived after the previous `wait`
/// returned (a notification that came before `wait` was called must make it
/// return at once, or the wake-up is lost). Returning early is allowed: the
/// caller re-checks the ring.
pub trait IrqWait {
    /// Blocks until the queue's notification arrives (or returns spuriously).
    fn wait(&self);
}

#[cfg(feature = "vhost-user")]
pub mod vhost_user;
