//! The storage behind the device: nothing (null) or a RAM disk.

use std::sync::{Mutex, PoisonError};

use virtio_blk_mq::spec::SECTOR_SIZE;

use crate::config::DiskKind;

/// Backing store of a [`SimDevice`](crate::SimDevice).
pub(crate) enum Disk {
    /// Reads copy nothing, writes are dropped.
    Null,
    /// The bytes of every sector.
    Ram(Mutex<Vec<u8>>),
}

impl Disk {
    pub(crate) fn new(kind: DiskKind, capacity_sectors: u64) -> Disk {
        match kind {
            DiskKind::Null => Disk::Null,
            DiskKind::Ram => {
                let bytes = capacity_sectors
                    .checked_mul(SECTOR_SIZE)
                    .and_then(|b| usize::try_from(b).ok())
                    .expect("RAM disk capacity does not fit in memory");
                Disk::Ram(Mutex::new(vec![0; bytes]))
            }
        }
    }

    /// Runs `f` on the bytes of `[sector, sector + bytes / 512)`; `None` for a
    /// null disk. The caller has checked the range against the capacity.
    pub(crate) fn with_bytes<R>(
        &self,
        sector: u64,
        bytes: usize,
        f: impl FnOnce(Option<&mut [u8]>) -> R,
    ) -> R {
        match self {
            Disk::Null => f(None),
            Disk::Ram(m) => {
                let mut data = m.lock().unwrap_or_else(PoisonError::into_inner);
                let start = usize::try_from(sector * SECTOR_SIZE).unwrap_or(usize::MAX);
                match start
                    .checked_add(bytes)
                    .and_then(|end| data.get_mut(start..end))
                {
                    Some(slice) => f(Some(slice)),
                    None => f(None),
                }
            }
        }
    }

    /// Test access: copies sectors out (zeros for a null disk).
    pub(crate) fn read(&self, sector: u64, buf: &mut [u8]) {
        match self {
            Disk::Null => buf.fill(0),
            Disk::Ram(_) => self.with_bytes(sector, buf.len(), |d| {
                buf.copy_from_slice(d.expect("read_disk beyond the disk's capacity"))
            }),
        }
    }

    /// Test access: copies sectors in (dropped for a null disk).
    pub(crate) fn write(&self, sector: u64, buf: &[u8]) {
        if let Disk::Ram(_) = self {
            self.with_bytes(sector, buf.len(), |d| {
                d.expect("write_disk beyond the disk's capacity")
                    .copy_from_slice(buf)
            })
        }
    }
}
