//! Our driver's [`Transport`] onto the `virtio-queue` device: what a
//! virtio-pci or virtio-mmio register file would carry, as direct calls.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_blk_mq::{DeviceStatus, QueueAddresses, QueueNotifier, Transport, TransportError};

use super::device::VmmBlk;

/// Virtio device id of a block device (VIRTIO 1.2 §5).
const DEVICE_ID_BLOCK: u32 = 2;

/// Control-plane access to a [`super::VmmDevice`].
pub struct VmmTransport {
    device: Rc<RefCell<VmmBlk>>,
}

impl VmmTransport {
    pub(super) fn new(device: Rc<RefCell<VmmBlk>>) -> Self {
        VmmTransport { device }
    }
}

/// A queue's doorbell: counts kicks; the device looks at the count when stepped.
pub struct VmmNotifier {
    doorbell: Arc<AtomicU64>,
}

impl QueueNotifier for VmmNotifier {
    fn notify(&self) {
        // Release so a device on another thread would see the published ring
        // before the kick; the inline device reads the count with Acquire.
        self.doorbell.fetch_add(1, Ordering::Release);
    }
}

impl Transport for VmmTransport {
    type Notifier = VmmNotifier;

    fn device_type(&self) -> u32 {
        DEVICE_ID_BLOCK
    }

    fn device_features(&mut self) -> u64 {
        self.device.borrow().offered_features()
    }

    fn set_driver_features(&mut self, features: u64) {
        self.device.borrow_mut().set_driver_features(features);
    }

    fn status(&mut self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.device.borrow().status())
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.device.borrow_mut().set_status(status.bits());
    }

    fn reset(&mut self) {
        self.device.borrow_mut().reset();
    }

    fn config_generation(&mut self) -> u32 {
        // The configuration never changes while the device lives.
        0
    }

    fn read_config_u8(&mut self, offset: usize) -> u8 {
        self.device.borrow_mut().read_config(offset, 1) as u8
    }

    fn read_config_u16(&mut self, offset: usize) -> u16 {
        self.device.borrow_mut().read_config(offset, 2) as u16
    }

    fn read_config_u32(&mut self, offset: usize) -> u32 {
        self.device.borrow_mut().read_config(offset, 4) as u32
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.device.borrow().max_queue_size(queue)
    }

    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddresses,
    ) -> Result<(), TransportError> {
        let mut device = self.device.borrow_mut();
        if device.max_queue_size(queue) == 0 {
            return Err(TransportError::NoSuchQueue(queue));
        }
        device
            .setup_queue(queue, size, addrs.desc, addrs.driver, addrs.device)
            .map_err(|why| {
                // Also a violation: our driver never asks for what the device refuses.
                device.violation(format!("setup_queue refused: {why}"));
                TransportError::BadQueueSize(size)
            })
    }

    fn notifier(&mut self, queue: u16) -> VmmNotifier {
        VmmNotifier {
            doorbell: self.device.borrow().doorbell(queue),
        }
    }
}
