//! Block device drivers: PR #108's `kerla_api::driver::block` for Kerla
//! (not merged in Kerla main), with four methods added.
//!
//! PR #108's trait has `read_block` and `write_block`, which return
//! nothing. **Extension**: `try_read_block`, `try_write_block` (the same,
//! returning errors), `flush` and `capacity_sectors`. They have default
//! bodies, so a driver written for PR #108 compiles unchanged against this
//! trait.

use alloc::boxed::Box;
use core::fmt;

use crate::driver::Driver;
use crate::kernel_ops::kernel_ops;

/// Bytes in a sector: `sector` arguments count these.
pub const SECTOR_SIZE: usize = 512;

/// Why a block request failed (extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockError {
    /// The buffer is empty or not a whole number of sectors (or of the
    /// device's logical block), or the sector is not aligned to that block.
    Misaligned,
    /// The request reaches past the end of the device.
    OutOfRange,
    /// The device is read-only.
    ReadOnly,
    /// The device reported an I/O error.
    IoError,
    /// The device does not support the request.
    Unsupported,
    /// The device broke its protocol or stopped answering; it takes no
    /// more requests.
    DeviceFailed,
    /// No queue of the device is free for this request.
    Busy,
}

impl fmt::Display for BlockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BlockError::Misaligned => {
                "the buffer is not a whole number of sectors (or device blocks), or the sector is not block-aligned"
            }
            BlockError::OutOfRange => "the request reaches past the end of the device",
            BlockError::ReadOnly => "the device is read-only",
            BlockError::IoError => "the device reported an I/O error",
            BlockError::Unsupported => "the device does not support this request",
            BlockError::DeviceFailed => "the device failed and takes no more requests",
            BlockError::Busy => "every queue of the device is taken; try again later",
        })
    }
}

/// A block device.
pub trait BlockDriver: Driver {
    /// Reads `buf.len()` bytes from `sector` (PR #108). Errors cannot be
    /// returned here: use [`BlockDriver::try_read_block`].
    fn read_block(&self, sector: u64, buf: &mut [u8]);

    /// Writes `buf` at `sector` (PR #108). Errors cannot be returned here:
    /// use [`BlockDriver::try_write_block`].
    fn write_block(&self, sector: u64, buf: &[u8]);

    /// Extension: reads `buf.len()` bytes (whole sectors) from `sector`.
    fn try_read_block(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.read_block(sector, buf);
        Ok(())
    }

    /// Extension: writes `buf` (whole sectors) at `sector`.
    fn try_write_block(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.write_block(sector, buf);
        Ok(())
    }

    /// Extension: makes every completed write durable (the device's write cache).
    fn flush(&self) -> Result<(), BlockError> {
        Err(BlockError::Unsupported)
    }

    /// Extension: the device's size in 512-byte sectors.
    fn capacity_sectors(&self) -> u64 {
        0
    }
}

/// Hands a block driver to the kernel (PR #108).
pub fn register_block_driver(driver: Box<dyn BlockDriver>) {
    kernel_ops().register_block_driver(driver)
}
