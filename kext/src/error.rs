//! Why a synchronous request failed. PR #108's `BlockDriver` returns
//! nothing, so the kext's own API ([`crate::Disk::read`], `write`,
//! `flush`) returns these.

use core::fmt;

/// Bytes in a sector: `sector` arguments count these.
pub const SECTOR_SIZE: usize = 512;

/// Why a block request failed.
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
