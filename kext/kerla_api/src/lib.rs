//! A stand-in for the part of Kerla's kext API (`kerla_api`, github
//! nuta/kerla, `libs/kerla_api`) that `virtio_blk_mq_kext` uses, written for
//! this project so the kext builds and runs without Kerla's source.
//!
//! The module paths, type names and signatures a kext sees are Kerla's
//! (main branch, plus PR #108's `driver::block`); the implementation is our
//! own. Where Kerla's kext API calls into its runtime directly (page
//! allocator, PCI port I/O, CPU state), this crate calls a hook of
//! [`kernel_ops::KernelOps`] instead, which the kernel hosting it (the
//! guest kernel in `guest/`) implements, the way Kerla's kernel implements
//! its own `KernelOps`. Kexts never call those hooks themselves.
//!
//! What kexts see here is Kerla main plus PR #108's `driver::block`,
//! which the project's Kerla patch series adds: nothing more. The kext
//! pins every item it uses to one exact signature (`kext/src/api_surface.rs`),
//! and that file compiles against this crate in the project's builds and
//! against the patched real `kerla_api` in `cargo xtask kerla`, so the two
//! cannot drift apart unnoticed.
//!
//! The kernel's side differs, as it must: Kerla's `kerla_api` calls its
//! runtime directly (page allocator, PCI port I/O, interrupt masking), this
//! crate calls [`kernel_ops::KernelOps`] hooks; `PciDevice::new` and
//! `PciConfig::from_header` are public here for the hosting kernel's tests;
//! `kernel_ops::init_drivers()` takes no arguments (the virtio-mmio list
//! comes from a hook). Above the hooks it behaves as Kerla does: the PCI
//! scan looks at function 0 of slots 0..=30 only and skips any header type
//! but 0, more than 16 capabilities panic, the prober lock is held (so
//! interrupts are off) while probers run. Types derive what Kerla's derive
//! and no more.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

pub mod address;
pub mod arch;
pub mod driver;
pub mod kernel_ops;
pub mod mm;
pub mod sync;

pub use log::{debug, error, info, trace, warn};
