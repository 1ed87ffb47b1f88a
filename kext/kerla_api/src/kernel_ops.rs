//! What the kernel provides to this API (Kerla's `kerla_api::kernel_ops`).
//! **Kexts never call these**: the kernel implements [`KernelOps`], hands it
//! over with [`init`] before loading kexts, and runs the probers with
//! [`init_drivers`] after.
//!
//! Kerla's own `KernelOps` has `attach_irq` and the network hooks; its page
//! allocator, PCI port I/O and spin lock live in its runtime crate, which
//! `kerla_api` calls directly. This stand-in has no runtime under it, so
//! those services are hooks here too.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::address::PAddr;
use crate::driver::block::BlockDriver;
use crate::driver::pci::PciDevice;
use crate::driver::{self, VirtioMmioDevice};

/// The kernel's side of the API.
pub trait KernelOps: Sync {
    /// `num_pages` contiguous pages, page-aligned, inside the straight map
    /// (below 4 GiB); `None` when out of memory. They need not be zeroed.
    fn alloc_pages(&self, num_pages: usize) -> Option<PAddr>;

    /// Runs `f` whenever interrupt line `irq` (an I/O APIC input) fires,
    /// and unmasks the line. Several handlers may share a line.
    fn attach_irq(&self, irq: u8, f: Box<dyn FnMut() + Send + Sync + 'static>);

    /// Takes a block device driver (PR #108's `register_block_driver`).
    fn register_block_driver(&self, driver: Box<dyn BlockDriver>);

    /// The PCI functions found, with their capability lists.
    fn pci_devices(&self) -> Vec<PciDevice>;

    /// Reads the configuration dword at `offset` (4-byte aligned) of a function.
    fn pci_config_read32(&self, bus: u8, slot: u8, function: u8, offset: u8) -> u32;

    /// Writes the configuration dword at `offset` (4-byte aligned) of a function.
    fn pci_config_write32(&self, bus: u8, slot: u8, function: u8, offset: u8, value: u32);

    /// The virtio-mmio devices the boot loader named (the kernel command line).
    fn virtio_mmio_devices(&self) -> Vec<VirtioMmioDevice>;

    /// CPUs running.
    fn num_cpus(&self) -> usize;

    /// The calling CPU's index.
    fn cpu_id(&self) -> usize;

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
    fn pci_devices(&self) -> Vec<PciDevice> {
        Vec::new()
    }
    fn pci_config_read32(&self, _bus: u8, _slot: u8, _function: u8, _offset: u8) -> u32 {
        u32::MAX
    }
    fn pci_config_write32(&self, _bus: u8, _slot: u8, _function: u8, _offset: u8, _value: u32) {}
    fn virtio_mmio_devices(&self) -> Vec<VirtioMmioDevice> {
        Vec::new()
    }
    fn num_cpus(&self) -> usize {
        1
    }
    fn cpu_id(&self) -> usize {
        0
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

/// Offers every PCI function, then every virtio-mmio device, to every
/// registered prober (Kerla's `init_drivers`; the device lists come from
/// the kernel's hooks).
pub fn init_drivers() {
    let ops = kernel_ops();
    driver::probe_all(&ops.pci_devices(), &ops.virtio_mmio_devices());
}
