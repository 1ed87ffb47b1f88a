//! Every item of `kerla_api` this kext uses, pinned to one exact type.
//!
//! The kext compiles against two `kerla_api`s: the project's stand-in
//! (`kext/kerla_api`, for the host tests and the guest kernel) and Kerla's
//! real one with the project's patch series (`cargo xtask kerla`). Each
//! line below coerces an item to the signature the kext relies on, so if
//! either crate's item differs (a parameter, a return type, a variant, a
//! required trait method), that build fails here, naming the item. Nothing
//! here runs.
#![allow(dead_code)]

use alloc::boxed::Box;
use alloc::vec::Vec;

use kerla_api::address::PAddr;
use kerla_api::arch::PAGE_SIZE;
use kerla_api::driver::block::{register_block_driver, BlockDriver};
use kerla_api::driver::pci::{Bar, PciCapability, PciConfig, PciDevice};
use kerla_api::driver::{
    attach_irq, register_driver_prober, DeviceProber, Driver, VirtioMmioDevice,
};
use kerla_api::mm::{alloc_pages, AllocPageFlags, PageAllocError};
use kerla_api::sync::{SpinLock, SpinLockGuard};

const PROBER: fn(Box<dyn DeviceProber>) = register_driver_prober;
const BLOCK: fn(Box<dyn BlockDriver>) = register_block_driver;
const IRQ: fn(u8, fn()) = attach_irq::<fn()>;
const ALLOC: fn(usize, AllocPageFlags) -> Result<PAddr, PageAllocError> = alloc_pages;
const KERNEL_PAGES: AllocPageFlags = AllocPageFlags::KERNEL;
const PAGE: usize = PAGE_SIZE;

const PADDR_NEW: fn(usize) -> PAddr = PAddr::new;
const PADDR_VALUE: fn(PAddr) -> usize = PAddr::value;
const PADDR_IS_NULL: fn(PAddr) -> bool = PAddr::is_null;
const PADDR_PTR: fn(PAddr) -> *mut u8 = PAddr::as_mut_ptr::<u8>;

const CONFIG: fn(&PciDevice) -> &PciConfig = PciDevice::config;
const BUS_MASTER: fn(&PciDevice) = PciDevice::enable_bus_master;
const BUS: fn(&PciDevice) -> u8 = PciDevice::bus;
const SLOT: fn(&PciDevice) -> u8 = PciDevice::slot;
const CAPABILITIES: fn(&PciDevice) -> &[PciCapability] = PciDevice::capabilities;
const BAR: fn(&PciConfig, usize) -> Bar = PciConfig::bar;
const VENDOR: fn(&PciConfig) -> u16 = PciConfig::vendor_id;
const DEVICE: fn(&PciConfig) -> u16 = PciConfig::device_id;
const LINE: fn(&PciConfig) -> u8 = PciConfig::interrupt_line;

const LOCK_NEW: fn(u8) -> SpinLock<u8> = SpinLock::<u8>::new;

fn lock(lock: &SpinLock<u8>) -> SpinLockGuard<'_, u8> {
    lock.lock()
}

fn capability(cap: &PciCapability) -> (u8, &Vec<u8>) {
    (cap.id, &cap.data)
}

/// An exhaustive match: a variant added or renamed on either side fails.
fn bar(bar: Bar) -> (Option<u16>, Option<PAddr>) {
    match bar {
        Bar::IOMapped { port } => (Some(port), None),
        Bar::MemoryMapped { paddr } => (None, Some(paddr)),
    }
}

fn mmio(device: &VirtioMmioDevice) -> (PAddr, u8) {
    (device.mmio_base, device.irq)
}

fn driver<T: Driver>() -> fn(&T) -> &str {
    T::name
}

fn probe_pci<T: DeviceProber>() -> fn(&T, &PciDevice) {
    T::probe_pci
}

fn probe_virtio_mmio<T: DeviceProber>() -> fn(&T, &VirtioMmioDevice) {
    T::probe_virtio_mmio
}

// The kext implements BlockDriver, so a required method added on either
// side also fails the build, in `block.rs`.

fn read_block<T: BlockDriver>() -> fn(&T, u64, &mut [u8]) {
    T::read_block
}

fn write_block<T: BlockDriver>() -> fn(&T, u64, &[u8]) {
    T::write_block
}
