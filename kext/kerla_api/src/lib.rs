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
//! What kexts see here that Kerla main does not have, each marked
//! "Extension" in its documentation: `driver::block` (PR #108) with four
//! more methods, and `arch::{num_cpus, cpu_id}`. The kernel's side has
//! constructors Kerla keeps private (`PciDevice::new`, `PciDevice::read`,
//! `PciConfig::from_header`) and `kernel_ops::init_drivers()` without
//! arguments (the device lists come from the hooks). Types derive what
//! Kerla's derive and no more, so a kext cannot come to rely on a `Clone`
//! Kerla lacks.
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
