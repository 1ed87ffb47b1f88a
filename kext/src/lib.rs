//! virtio-blk-mq as a Kerla kernel extension.
//!
//! Kerla loads a kext by calling its `init()` from `boot_kernel`, after
//! `kerla_api::kernel_ops::init` and before `init_drivers` runs the
//! probers. [`init`] registers this kext's `DeviceProber`, which then:
//!
//! - takes every virtio-blk function on PCI (modern virtio-pci, through a
//!   configuration space rebuilt from what Kerla's `PciDevice` shows:
//!   [`ConfigView`]) and every virtio-mmio device of type 2;
//! - sets each up with one queue per CPU plus one for the block driver
//!   ([`KextConfig`]), polled by default; in Hybrid mode an idle queue
//!   sleeps until the device's interrupt line, attached with `attach_irq`
//!   (INTx: Kerla has no MSI-X);
//! - registers a block driver ([`VirtioBlkDriver`], PR #108's
//!   `BlockDriver`), a synchronous path that locks one queue per request;
//! - keeps the disk for high-IOPS callers: [`disks`] and
//!   [`Disk::take_queue`] hand each CPU its own queue, on which submit,
//!   commit and poll take no lock and allocate nothing.
//!
//! After `init_drivers`, a kernel may hand the kext its command line
//! ([`boot`]) for the `vblk.` options, such as the boot self-test.
//!
//! DMA memory comes from `kerla_api::mm::alloc_pages` (physical address =
//! device address, reached through the straight map): [`KextHal`].
//!
//! The kext uses Kerla main's `kerla_api` plus PR #108's block module and
//! nothing else (`api_surface.rs` pins each item); what Kerla's API lacks
//! (errors from block requests, the CPU count) is the kext's own:
//! [`BlockError`], [`Cpus`].
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod api_surface;
mod block;
mod boot;
mod config;
mod disk;
mod error;
mod hal;
mod irq;
mod pci_view;
mod prober;
mod request;
mod selftest;
mod transport;

use alloc::boxed::Box;
use alloc::vec::Vec;

pub use block::VirtioBlkDriver;
pub use boot::BootOptions;
pub use config::{Cpus, KextConfig, DEFAULT_SPIN_BUDGET};
pub use disk::{CpuQueue, Disk, KextDevice, KextQueue, BOUNCE_BYTES};
pub use error::{BlockError, SECTOR_SIZE};
pub use hal::KextHal;
pub use irq::QueueWaiter;
pub use pci_view::{ConfigView, MAX_BAR_SIZE};
pub use prober::MMIO_WINDOW;
pub use transport::{KextNotifier, KextTransport};

/// The kext's entry point, as Kerla's `boot_kernel` calls it: registers
/// the prober with the default settings (poll mode, one CPU, one queue
/// for it plus one).
pub fn init() {
    init_with(KextConfig::default());
}

/// [`init`] with other settings (a kernel with several CPUs, Hybrid mode,
/// a ring layout, a queue size).
pub fn init_with(config: KextConfig) {
    kerla_api::driver::register_driver_prober(Box::new(prober::Prober::new(config)));
}

/// Every disk the prober has set up, in probe order.
pub fn disks() -> Vec<&'static Disk> {
    prober::DISKS.lock().clone()
}

/// Runs what the `vblk.` options of the kernel command line `cmdline` ask
/// for (after `init_drivers`): `vblk.selftest=GENERATION` runs the boot
/// self-test on every disk. Each result is logged (`vblk-selftest: PASS` /
/// `FAIL`); returns whether everything asked for passed. A malformed
/// option is logged and nothing runs.
pub fn boot(cmdline: &str) -> bool {
    match BootOptions::parse(cmdline) {
        Ok(options) => boot::run(&options),
        Err(why) => {
            kerla_api::warn!("virtio-blk-mq kext: {why}");
            false
        }
    }
}
