//! Block device drivers: PR #108's `kerla_api::driver::block` (not merged
//! in Kerla main; the project's Kerla patch series adds it, and this module
//! has the same items with the same signatures).
//!
//! PR #108's methods return nothing, so a driver can only log its errors;
//! a driver that wants to return them offers its own API beside the trait
//! (the kext does: `Disk::read` / `write` / `flush`).

use alloc::boxed::Box;

use crate::driver::Driver;
use crate::kernel_ops::kernel_ops;

/// A block device (PR #108). `sector` counts 512-byte sectors.
pub trait BlockDriver: Driver {
    /// Reads `buf.len()` bytes from `sector` into `buf`.
    fn read_block(&self, sector: u64, buf: &mut [u8]);

    /// Writes `buf` at `sector`.
    fn write_block(&self, sector: u64, buf: &[u8]);
}

/// Hands a block driver to the kernel (PR #108).
pub fn register_block_driver(driver: Box<dyn BlockDriver>) {
    kernel_ops().register_block_driver(driver)
}
