//! One transport type for both buses, so a disk has one type whichever bus
//! it sits on: an enum that forwards to the virtio-pci or virtio-mmio
//! transport. The doorbell is an enum too; a kick costs one match, no
//! dynamic dispatch.

use virtio_blk_mq::transport::{
    MmioNotifier, MmioTransport, PciNotifier, PciTransport, QueueAddresses, QueueNotifier,
    Transport, TransportError,
};
use virtio_blk_mq::DeviceStatus;

use crate::pci_view::ConfigView;

/// The transport of a disk the kext drives.
#[derive(Debug)]
pub enum KextTransport {
    /// virtio-pci over the configuration space rebuilt from Kerla's
    /// `PciDevice` (boxed: it carries the 256-byte view; control plane only).
    Pci(alloc::boxed::Box<PciTransport<ConfigView>>),
    /// virtio-mmio (version 2).
    Mmio(MmioTransport),
}

/// A queue's doorbell.
#[derive(Debug)]
pub enum KextNotifier {
    /// virtio-pci: the queue's own notification address.
    Pci(PciNotifier),
    /// virtio-mmio: `QueueNotify`.
    Mmio(MmioNotifier),
}

impl QueueNotifier for KextNotifier {
    #[inline]
    fn notify(&self) {
        match self {
            KextNotifier::Pci(n) => n.notify(),
            KextNotifier::Mmio(n) => n.notify(),
        }
    }
}

macro_rules! forward {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            KextTransport::Pci($t) => $e,
            KextTransport::Mmio($t) => $e,
        }
    };
}

impl Transport for KextTransport {
    type Notifier = KextNotifier;

    fn device_type(&self) -> u32 {
        forward!(self, t => t.device_type())
    }

    fn device_features(&mut self) -> u64 {
        forward!(self, t => t.device_features())
    }

    fn set_driver_features(&mut self, features: u64) {
        forward!(self, t => t.set_driver_features(features))
    }

    fn status(&mut self) -> DeviceStatus {
        forward!(self, t => t.status())
    }

    fn set_status(&mut self, status: DeviceStatus) {
        forward!(self, t => t.set_status(status))
    }

    fn reset(&mut self) {
        forward!(self, t => t.reset())
    }

    fn config_generation(&mut self) -> u32 {
        forward!(self, t => t.config_generation())
    }

    fn read_config_u8(&mut self, offset: usize) -> u8 {
        forward!(self, t => t.read_config_u8(offset))
    }

    fn read_config_u16(&mut self, offset: usize) -> u16 {
        forward!(self, t => t.read_config_u16(offset))
    }

    fn read_config_u32(&mut self, offset: usize) -> u32 {
        forward!(self, t => t.read_config_u32(offset))
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        forward!(self, t => t.max_queue_size(queue))
    }

    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddresses,
    ) -> Result<(), TransportError> {
        forward!(self, t => t.setup_queue(queue, size, addrs))
    }

    fn notifier(&mut self, queue: u16) -> KextNotifier {
        match self {
            KextTransport::Pci(t) => KextNotifier::Pci(t.notifier(queue)),
            KextTransport::Mmio(t) => KextNotifier::Mmio(t.notifier(queue)),
        }
    }

    fn reset_queue(&mut self, queue: u16) -> Result<(), TransportError> {
        forward!(self, t => t.reset_queue(queue))
    }
}
