//! The storage behind the device: nothing (null) or a RAM disk.

use std::alloc::{alloc_zeroed, Layout};
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

/// `bytes` zero bytes, or `None` when the allocator refuses them (where
/// `vec![0; bytes]` would abort the process).
fn zeroed(bytes: usize) -> Option<Vec<u8>> {
    if bytes == 0 {
        return Some(Vec::new());
    }
    let layout = Layout::array::<u8>(bytes).ok()?;
    // SAFETY: the layout has a non-zero size.
    let ptr = unsafe { alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of
    // `bytes` u8s (size `bytes`, align 1), which is how a `Vec<u8>` of
    // capacity `bytes` allocates; all `bytes` bytes are initialised (zeroed),
    // and the Vec becomes the allocation's only owner.
    Some(unsafe { Vec::from_raw_parts(ptr, bytes, bytes) })
}

impl Disk {
    /// The disk, or why a RAM disk of `capacity_sectors` cannot be had.
    pub(crate) fn new(kind: DiskKind, capacity_sectors: u64) -> Result<Disk, String> {
        match kind {
            DiskKind::Null => Ok(Disk::Null),
            DiskKind::Ram => capacity_sectors
                .checked_mul(SECTOR_SIZE)
                .and_then(|b| usize::try_from(b).ok())
                .and_then(zeroed)
                .map(|bytes| Disk::Ram(Mutex::new(bytes)))
                .ok_or_else(|| {
                    format!(
                        "a RAM disk of {capacity_sectors} sectors does not fit in memory \
                         (use DiskKind::Null for huge capacities)"
                    )
                }),
        }
    }

    /// Runs `f` on the bytes of `[sector, sector + bytes / 512)`; `None` for a
    /// null disk. The caller has checked the range against the capacity.
    #[inline(always)]
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
