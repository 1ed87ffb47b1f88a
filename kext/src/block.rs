//! The block driver the kext registers for each disk (PR #108's
//! `BlockDriver`, with the stand-in's Result-returning methods). A
//! synchronous convenience over [`Disk`]'s seats: see `disk` for the lock
//! it takes.

use kerla_api::driver::block::{BlockDriver, BlockError};
use kerla_api::driver::Driver;

use crate::disk::Disk;

/// A disk as a Kerla block device.
pub struct VirtioBlkDriver {
    disk: &'static Disk,
}

impl VirtioBlkDriver {
    pub(crate) fn new(disk: &'static Disk) -> VirtioBlkDriver {
        VirtioBlkDriver { disk }
    }

    /// The disk behind it (for the native per-CPU API).
    pub fn disk(&self) -> &'static Disk {
        self.disk
    }
}

impl Driver for VirtioBlkDriver {
    fn name(&self) -> &str {
        self.disk.name()
    }
}

impl BlockDriver for VirtioBlkDriver {
    /// PR #108's read: errors are logged (the signature cannot return
    /// them) and `buf` is then left as it was or partly filled.
    fn read_block(&self, sector: u64, buf: &mut [u8]) {
        if let Err(error) = self.try_read_block(sector, buf) {
            kerla_api::warn!(
                "{}: read of {} bytes at sector {sector} failed: {error}",
                self.disk.name(),
                buf.len()
            );
        }
    }

    /// PR #108's write: errors are logged (the signature cannot return them).
    fn write_block(&self, sector: u64, buf: &[u8]) {
        if let Err(error) = self.try_write_block(sector, buf) {
            kerla_api::warn!(
                "{}: write of {} bytes at sector {sector} failed: {error}",
                self.disk.name(),
                buf.len()
            );
        }
    }

    fn try_read_block(&self, sector: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.disk.read(sector, buf)
    }

    fn try_write_block(&self, sector: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.disk.write(sector, buf)
    }

    fn flush(&self) -> Result<(), BlockError> {
        self.disk.flush()
    }

    fn capacity_sectors(&self) -> u64 {
        self.disk.info().capacity_sectors
    }
}
