//! The block driver the kext registers for each disk: PR #108's
//! `BlockDriver`, a synchronous convenience over [`Disk`]'s seats (see
//! `disk` for the lock it takes). PR #108's methods return nothing, so
//! errors are logged here; callers that need them use [`Disk::read`],
//! [`Disk::write`] and [`Disk::flush`], which return [`BlockError`]s.

use kerla_api::driver::block::BlockDriver;
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

    fn log(&self, what: &str, sector: u64, len: usize, error: BlockError) {
        kerla_api::warn!(
            "{}: {what} of {len} bytes at sector {sector} failed: {error}",
            self.disk.name()
        );
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
        if let Err(error) = self.disk.read(sector, buf) {
            self.log("read", sector, buf.len(), error);
        }
    }

    /// Errors are logged.
    fn write_block(&self, sector: u64, buf: &[u8]) {
        if let Err(error) = self.disk.write(sector, buf) {
            self.log("write", sector, buf.len(), error);
        }
    }
}
