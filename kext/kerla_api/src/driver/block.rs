//! Block device drivers: PR #108's `kerla_api::driver::block` (not merged
//! in Kerla main; the project's Kerla patch series adds it), with the four
//! methods a block device file needs (the series' patch 0006): the size,
//! read and write that say whether they worked, and flush. They have
//! default bodies, so a driver written for PR #108 compiles unchanged.
//! This module has the same items with the same signatures as the patched
//! Kerla's.

use alloc::boxed::Box;

use crate::driver::Driver;
use crate::kernel_ops::kernel_ops;

/// A block request the device could not do (an I/O error, a device that
/// failed or stopped answering).
#[derive(Debug, Copy, Clone, Eq, PartialEq)]
pub struct BlockIoError;

/// A block device (PR #108). `sector` counts 512-byte sectors; buffers
/// are whole sectors.
pub trait BlockDriver: Driver {
    /// Reads `buf.len()` bytes from `sector` into `buf`.
    fn read_block(&self, sector: u64, buf: &mut [u8]);

    /// Writes `buf` at `sector`.
    fn write_block(&self, sector: u64, buf: &[u8]);

    /// The device's size in sectors; 0 when the driver does not say.
    fn num_sectors(&self) -> u64 {
        0
    }

    /// `read_block`, saying whether it worked.
    fn try_read_block(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockIoError> {
        self.read_block(sector, buf);
        Ok(())
    }

    /// `write_block`, saying whether it worked.
    fn try_write_block(&self, sector: u64, buf: &[u8]) -> Result<(), BlockIoError> {
        self.write_block(sector, buf);
        Ok(())
    }

    /// Makes every completed write durable (the device's write cache).
    fn flush(&self) -> Result<(), BlockIoError> {
        Ok(())
    }
}

/// Hands a block driver to the kernel (PR #108).
pub fn register_block_driver(driver: Box<dyn BlockDriver>) {
    kernel_ops().register_block_driver(driver)
}
