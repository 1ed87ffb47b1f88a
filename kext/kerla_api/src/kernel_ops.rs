//! What the kernel provides to this API (Kerla's `kerla_api::kernel_ops`).
//! **Kexts never call these**: the kernel implements [`KernelOps`], hands it
//! over with [`init`] before loading kexts, and runs the probers with
//! [`init_drivers`] after.
//!
//! Kerla's own `KernelOps` has `attach_irq` and the network hooks (plus,
//! with the project's patch series, PR #108's `register_block_driver`); its
//! page allocator, PCI port I/O and spin lock live in its runtime crate,
//! which `kerla_api` calls directly. This stand-in has no runtime under it,
//! so those services are hooks here too. What runs above the hooks (the PCI
//! scan, the prober loop, the lock) behaves as Kerla's does: see
//! [`init_drivers`].

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::address::PAddr;
use crate::driver::block::BlockDriver;
use crate::driver::{self, VirtioMmioDevice};

/// The kernel's side of the API.
pub trait KernelOps: Sync {
    /// `num_pages` contiguous pages, page-aligned, inside the straight map
    /// (below 4 GiB); `None` when out of memory. They need not be zeroed.
    fn alloc_pages(&self, num_pages: usize) -> Option<PAddr>;

    /// Runs `f` whenever interrupt line `irq` (an I/O APIC input) fires,
    /// and unmasks the line. Several handlers may share a line. Kerla
    /// programs the line edge-triggered, active high, to CPU 0; a kernel
    /// implementing this stand-in should do the same.
    fn attach_irq(&self, irq: u8, f: Box<dyn FnMut() + Send + Sync + 'static>);

    /// Takes a block device driver (PR #108's `register_block_driver`).
    fn register_block_driver(&self, driver: Box<dyn BlockDriver>);

    /// Reads the configuration dword at `offset` (4-byte aligned) of
    /// function 0 of a slot (the only function Kerla looks at).
    fn pci_config_read32(&self, bus: u8, slot: u8, offset: u8) -> u32;

    /// Writes the configuration dword at `offset` (4-byte aligned) of
    /// function 0 of a slot.
    fn pci_config_write32(&self, bus: u8, slot: u8, offset: u8, value: u32);

    /// The virtio-mmio devices the boot loader named (the kernel command line).
    fn virtio_mmio_devices(&self) -> Vec<VirtioMmioDevice>;

    /// Turns interrupts off on this CPU; returns whether they were on.
    fn save_and_disable_interrupts(&self) -> bool;

    /// Turns interrupts back on if `were_on`.
    fn restore_interrupts(&self, were_on: bool);
}

/// Before `init`: nothing is provided (host unit tests run on this).
struct NopOps;

impl KernelOps for NopOps {
    fn alloc_pages(&self, _num_pages: usize) -> Option<PAddr> {
        None
    }
    fn attach_irq(&self, _irq: u8, _f: Box<dyn FnMut() + Send + Sync + 'static>) {}
    fn register_block_driver(&self, _driver: Box<dyn BlockDriver>) {}
    fn pci_config_read32(&self, _bus: u8, _slot: u8, _offset: u8) -> u32 {
        u32::MAX
    }
    fn pci_config_write32(&self, _bus: u8, _slot: u8, _offset: u8, _value: u32) {}
    fn virtio_mmio_devices(&self) -> Vec<VirtioMmioDevice> {
        Vec::new()
    }
    fn save_and_disable_interrupts(&self) -> bool {
        false
    }
    fn restore_interrupts(&self, _were_on: bool) {}
}

static NOP: NopOps = NopOps;
static NOP_REF: &dyn KernelOps = &NOP;

/// Points at a `&'static dyn KernelOps` (a fat pointer, so one level more).
static OPS: AtomicPtr<&'static dyn KernelOps> = AtomicPtr::new(core::ptr::null_mut());

pub(crate) fn kernel_ops() -> &'static dyn KernelOps {
    let ops = OPS.load(Ordering::Acquire);
    if ops.is_null() {
        return NOP_REF;
    }
    // SAFETY: a non-null OPS was leaked by `init` (never freed) and points
    // at a `&'static dyn KernelOps`.
    unsafe { *ops }
}

/// Hands the kernel's implementation to the API. Call once, first.
pub fn init(ops: &'static dyn KernelOps) {
    let leaked: &'static mut &'static dyn KernelOps = Box::leak(Box::new(ops));
    OPS.store(leaked, Ordering::Release);
}

/// Offers every PCI device Kerla's scan finds (function 0 of each slot,
/// header type 0: [`crate::driver::pci`]), then every virtio-mmio device
/// (from the kernel's hook), to every registered prober, holding the
/// prober list's lock throughout as Kerla's `init_drivers` does: probers
/// run with interrupts off, and a prober that registers another prober
/// deadlocks, in Kerla and here.
pub fn init_drivers() {
    let mmio_devices = kernel_ops().virtio_mmio_devices();
    driver::probe_all(&driver::pci::enumerate(), &mmio_devices);
}
