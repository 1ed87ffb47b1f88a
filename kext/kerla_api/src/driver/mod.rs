//! Device drivers (Kerla's `kerla_api::driver`): probers, interrupts.

pub mod block;
pub mod pci;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::address::PAddr;
use crate::kernel_ops::kernel_ops;
use crate::sync::SpinLock;

use self::pci::PciDevice;

/// A virtio-mmio device the boot loader named: its register window and
/// interrupt line. (As in Kerla, no window size: virtio-mmio windows on
/// QEMU are 0x200 bytes.) No derives, as in Kerla.
pub struct VirtioMmioDevice {
    /// Physical address of the register window.
    pub mmio_base: PAddr,
    /// Interrupt line (I/O APIC input).
    pub irq: u8,
}

/// What every driver is.
pub trait Driver: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &str;
}

/// Looks at each device the kernel found and takes the ones it drives.
pub trait DeviceProber: Send + Sync {
    /// A PCI function.
    fn probe_pci(&self, pci_device: &PciDevice);
    /// A virtio-mmio device.
    fn probe_virtio_mmio(&self, mmio_device: &VirtioMmioDevice);
}

static DEVICE_PROBERS: SpinLock<Vec<Box<dyn DeviceProber>>> = SpinLock::new(Vec::new());

/// Registers a prober; the kernel runs it over its devices in `init_drivers`.
pub fn register_driver_prober(driver: Box<dyn DeviceProber>) {
    DEVICE_PROBERS.lock().push(driver);
}

/// Runs `f` on every interrupt of line `irq` (I/O APIC input, INTx or a
/// virtio-mmio line). `f` runs in interrupt context: no allocation, no
/// lock the interrupted code may hold, no sleeping.
pub fn attach_irq<F: FnMut() + Send + Sync + 'static>(irq: u8, f: F) {
    kernel_ops().attach_irq(irq, Box::new(f))
}

/// Offers the devices to the probers, the prober list's lock held around
/// each device's round as in Kerla (so interrupts are off while a prober
/// runs).
pub(crate) fn probe_all(pci_devices: &[PciDevice], mmio_devices: &[VirtioMmioDevice]) {
    for device in pci_devices {
        for prober in DEVICE_PROBERS.lock().iter() {
            prober.probe_pci(device);
        }
    }
    for device in mmio_devices {
        for prober in DEVICE_PROBERS.lock().iter() {
            prober.probe_virtio_mmio(device);
        }
    }
}
