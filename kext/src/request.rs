//! The block driver's request checks and chunking: pure arithmetic, so
//! they are unit-tested on the host.

use core::ops::Range;

use crate::error::{BlockError, SECTOR_SIZE};
use virtio_blk_mq::{DeviceInfo, Error};

/// What a request is checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Device size in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Logical block size (a power of two, 512 or more).
    pub block_size: u32,
    /// Writes are refused.
    pub read_only: bool,
}

impl From<&DeviceInfo> for Geometry {
    fn from(info: &DeviceInfo) -> Self {
        Geometry {
            capacity_sectors: info.capacity_sectors,
            block_size: info.block_size,
            read_only: info.read_only,
        }
    }
}

/// Checks a transfer of `len` bytes at `sector` before anything reaches
/// the device: a non-empty whole number of logical blocks, starting on a
/// block, ending inside the device (overflow-safe), and no write to a
/// read-only device.
pub fn check(sector: u64, len: usize, write: bool, geometry: &Geometry) -> Result<(), BlockError> {
    let block = u64::from(geometry.block_size.max(SECTOR_SIZE as u32));
    let len = len as u64;
    if len == 0 || len % block != 0 {
        return Err(BlockError::Misaligned);
    }
    if sector % (block / SECTOR_SIZE as u64) != 0 {
        return Err(BlockError::Misaligned);
    }
    match sector.checked_add(len / SECTOR_SIZE as u64) {
        Some(end) if end <= geometry.capacity_sectors => {}
        _ => return Err(BlockError::OutOfRange),
    }
    if write && geometry.read_only {
        return Err(BlockError::ReadOnly);
    }
    Ok(())
}

/// The largest bounce chunk: at most `want` bytes, within the device's
/// segment limit, a whole number of logical blocks. `None` when not even
/// one block fits a segment.
pub fn chunk_bytes(want: usize, max_segment_size: u32, block_size: u32) -> Option<usize> {
    let block = (block_size as usize).max(SECTOR_SIZE);
    let limit = want.min(max_segment_size as usize);
    let chunk = limit / block * block;
    (chunk > 0).then_some(chunk)
}

/// Splits a checked transfer of `len` bytes at `sector` into pieces of at
/// most `chunk` bytes: (first sector, byte range of the caller's buffer).
pub fn chunks(sector: u64, len: usize, chunk: usize) -> impl Iterator<Item = (u64, Range<usize>)> {
    let chunk = chunk.max(SECTOR_SIZE);
    (0..len).step_by(chunk).map(move |start| {
        let end = (start + chunk).min(len);
        (sector + (start / SECTOR_SIZE) as u64, start..end)
    })
}

/// The block API's error for a driver error.
pub fn block_error(error: Error) -> BlockError {
    match error {
        Error::OutOfRange => BlockError::OutOfRange,
        Error::Misaligned | Error::Empty => BlockError::Misaligned,
        Error::ReadOnly => BlockError::ReadOnly,
        Error::IoError => BlockError::IoError,
        Error::Unsupported | Error::NotSupported(_) => BlockError::Unsupported,
        Error::QueueFull => BlockError::Busy,
        _ => BlockError::DeviceFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::vec::Vec;

    const DISK: Geometry = Geometry {
        capacity_sectors: 2048,
        block_size: 512,
        read_only: false,
    };

    #[test]
    fn whole_sectors_of_any_count_pass() {
        assert_eq!(check(0, 512, false, &DISK), Ok(()));
        assert_eq!(check(7, 3 * 512, true, &DISK), Ok(()));
        assert_eq!(check(2047, 512, true, &DISK), Ok(()));
        assert_eq!(check(0, 2048 * 512, false, &DISK), Ok(()));
    }

    #[test]
    fn partial_sectors_and_empty_buffers_are_misaligned() {
        for len in [0, 1, 100, 511, 513, 1000] {
            assert_eq!(
                check(0, len, false, &DISK),
                Err(BlockError::Misaligned),
                "{len}"
            );
        }
    }

    #[test]
    fn past_the_end_is_out_of_range_even_when_it_overflows() {
        assert_eq!(check(2048, 512, false, &DISK), Err(BlockError::OutOfRange));
        assert_eq!(check(2047, 1024, false, &DISK), Err(BlockError::OutOfRange));
        assert_eq!(
            check(u64::MAX, 512, false, &DISK),
            Err(BlockError::OutOfRange)
        );
    }

    #[test]
    fn a_4k_device_wants_whole_aligned_blocks() {
        let disk = Geometry {
            block_size: 4096,
            ..DISK
        };
        assert_eq!(check(8, 4096, false, &disk), Ok(()));
        assert_eq!(check(8, 512, false, &disk), Err(BlockError::Misaligned));
        assert_eq!(check(3, 4096, false, &disk), Err(BlockError::Misaligned));
    }

    #[test]
    fn writes_to_a_read_only_device_are_refused_reads_are_not() {
        let disk = Geometry {
            read_only: true,
            ..DISK
        };
        assert_eq!(check(0, 512, true, &disk), Err(BlockError::ReadOnly));
        assert_eq!(check(0, 512, false, &disk), Ok(()));
    }

    #[test]
    fn chunks_fit_the_bounce_buffer_and_the_segment_limit() {
        assert_eq!(chunk_bytes(65536, u32::MAX, 512), Some(65536));
        assert_eq!(chunk_bytes(65536, 4000, 512), Some(3584));
        assert_eq!(chunk_bytes(65536, 4000, 4096), None);
        let pieces: Vec<_> = chunks(10, 5 * 512, 2 * 512).collect();
        assert_eq!(pieces, [(10, 0..1024), (12, 1024..2048), (14, 2048..2560)]);
        assert_eq!(chunks(0, 512, 65536).count(), 1);
    }

    #[test]
    fn driver_errors_map_to_block_errors() {
        assert_eq!(block_error(Error::IoError), BlockError::IoError);
        assert_eq!(block_error(Error::DeviceBroken), BlockError::DeviceFailed);
        assert_eq!(block_error(Error::Misaligned), BlockError::Misaligned);
        assert_eq!(
            block_error(Error::NotSupported("flush")),
            BlockError::Unsupported
        );
    }
}
