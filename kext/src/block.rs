//! The block driver the kext registers for each disk: PR #108's
//! `BlockDriver` with the series' size, flush and Result-returning
//! methods, a synchronous convenience over [`Disk`]'s seats (see `disk`
//! for the lock it takes). Kerla's block device files (`/dev/vda`) use it.
//! PR #108's own `read_block`/`write_block` return nothing, so their errors
//! are only logged; the kext's [`Disk::read`], [`Disk::write`] and
//! [`Disk::flush`] return the precise [`BlockError`].

use kerla_api::driver::block::{BlockDriver, BlockIoError};
use kerla_api::driver::Driver;

use crate::disk::Disk;
use crate::error::BlockError;

/// A disk as a Kerla block device.
pub struct VirtioBlkDriver {
    disk: &'static Disk,
}

impl VirtioBlkDriver {
    pub(crate) fn new(disk: &'static Disk) -> VirtioBlkDriver {
        VirtioBlkDriver { disk }
    }

    /// The disk behind it (for the native per-CPU API and the
    /// Result-returning synchronous one).
    pub fn disk(&self) -> &'static Disk {
        self.disk
    }

    /// Logs a failed request (the block API's error carries no cause).
    fn failed(&self, what: &str, sector: u64, len: usize, error: BlockError) -> BlockIoError {
        kerla_api::warn!(
            "{}: {what} of {len} bytes at sector {sector} failed: {error}",
            self.disk.name()
        );
        BlockIoError
    }
}

impl Driver for VirtioBlkDriver {
    fn name(&self) -> &str {
        self.disk.name()
    }
}

impl BlockDriver for VirtioBlkDriver {
    /// Errors are logged; `buf` is then left as it was or partly filled.
    fn read_block(&self, sector: u64, buf: &mut [u8]) {
        let _ = self.try_read_block(sector, buf);
    }

    /// Errors are logged.
    fn write_block(&self, sector: u64, buf: &[u8]) {
        let _ = self.try_write_block(sector, buf);
    }

    fn num_sectors(&self) -> u64 {
        self.disk.info().capacity_sectors
    }

    fn try_read_block(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockIoError> {
        self.disk
            .read(sector, buf)
            .map_err(|e| self.failed("read", sector, buf.len(), e))
    }

    fn try_write_block(&self, sector: u64, buf: &[u8]) -> Result<(), BlockIoError> {
        self.disk
            .write(sector, buf)
            .map_err(|e| self.failed("write", sector, buf.len(), e))
    }

    fn flush(&self) -> Result<(), BlockIoError> {
        self.disk.flush().map_err(|e| self.failed("flush", 0, 0, e))
    }
}
