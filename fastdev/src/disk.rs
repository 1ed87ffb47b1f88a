//! The disk behind the device: null (keeps nothing) or a sparse RAM disk.
//!
//! The RAM disk is one anonymous private mapping of the whole size with
//! MAP_NORESERVE (vm-memory's `MmapRegion::new`): a page costs memory only
//! once written, an untouched one reads as zeros. Every queue's thread
//! copies in and out of it through vm-memory's volatile slices, so two
//! queues writing the same block at once race on the bytes (as on real
//! hardware) but never make the program's behaviour undefined.

use std::fmt;

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{MmapRegion, VolatileMemory, VolatileSlice};

/// What backs the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskKind {
    /// Keeps nothing; reads leave the driver's buffer as it was (like
    /// QEMU's null-co with read-zeroes=off): the cheapest device, the one to
    /// measure drivers with.
    Null,
    /// A sparse RAM disk: reads return what was last written, or zeros.
    Ram,
}

impl fmt::Display for DiskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DiskKind::Null => "null",
            DiskKind::Ram => "ram",
        })
    }
}

/// A request's data fell outside the disk, or the copy failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// The disk: its capacity and, for RAM, its bytes.
pub struct Disk {
    capacity: u64,
    ram: Option<MmapRegion>,
}

impl Disk {
    /// A disk of `capacity` bytes.
    pub fn new(kind: DiskKind, capacity: u64) -> std::io::Result<Disk> {
        let ram = match kind {
            DiskKind::Null => None,
            DiskKind::Ram => {
                let size = usize::try_from(capacity).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        "the RAM disk does not fit in the address space",
                    )
                })?;
                Some(MmapRegion::new(size).map_err(|e| {
                    std::io::Error::other(format!("cannot map a RAM disk of {size} bytes: {e}"))
                })?)
            }
        };
        Ok(Disk { capacity, ram })
    }

    /// Size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// What backs it.
    pub fn kind(&self) -> DiskKind {
        if self.ram.is_some() {
            DiskKind::Ram
        } else {
            DiskKind::Null
        }
    }

    /// The disk's bytes at `offset..offset + len`, if inside the disk; for
    /// the null disk `None` inside the range means "nothing to copy".
    fn range(&self, offset: u64, len: usize) -> Result<Option<VolatileSlice<'_>>, OutOfRange> {
        let end = offset.checked_add(len as u64).ok_or(OutOfRange)?;
        if end > self.capacity {
            return Err(OutOfRange);
        }
        match &self.ram {
            None => Ok(None),
            Some(ram) => ram
                .get_slice(offset as usize, len)
                .map(Some)
                .map_err(|_| OutOfRange),
        }
    }

    /// Copies the disk's bytes at `offset` into `dst` (a read request).
    pub fn read_into<B: BitmapSlice>(
        &self,
        offset: u64,
        dst: VolatileSlice<'_, B>,
    ) -> Result<(), OutOfRange> {
        if let Some(src) = self.range(offset, dst.len())? {
            src.copy_to_volatile_slice(dst);
        }
        Ok(())
    }

    /// Copies `src` onto the disk at `offset` (a write request).
    pub fn write_from<B: BitmapSlice>(
        &self,
        offset: u64,
        src: VolatileSlice<'_, B>,
    ) -> Result<(), OutOfRange> {
        if let Some(dst) = self.range(offset, src.len())? {
            src.copy_to_volatile_slice(dst);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(bytes: &mut [u8]) -> VolatileSlice<'_> {
        VolatileSlice::from(bytes)
    }

    #[test]
    fn ram_reads_back_what_was_written_and_zeros_elsewhere() {
        let disk = Disk::new(DiskKind::Ram, 1 << 20).unwrap();
        let mut data = [0xa5u8; 4096];
        disk.write_from(8192, buffer(&mut data)).unwrap();
        let mut back = [0u8; 4096];
        disk.read_into(8192, buffer(&mut back)).unwrap();
        assert_eq!(back, data);
        disk.read_into(0, buffer(&mut back)).unwrap();
        assert_eq!(back, [0u8; 4096]);
    }

    #[test]
    fn a_range_past_the_end_is_refused_on_both_kinds() {
        for kind in [DiskKind::Null, DiskKind::Ram] {
            let disk = Disk::new(kind, 8192).unwrap();
            let mut data = [0u8; 4096];
            assert_eq!(disk.read_into(4096, buffer(&mut data)), Ok(()));
            assert_eq!(disk.read_into(4097, buffer(&mut data)), Err(OutOfRange));
            assert_eq!(
                disk.write_from(u64::MAX - 10, buffer(&mut data)),
                Err(OutOfRange)
            );
            assert_eq!(disk.read_into(8192, buffer(&mut [])), Ok(()));
            assert_eq!(disk.read_into(8193, buffer(&mut [])), Err(OutOfRange));
        }
    }

    #[test]
    fn null_leaves_the_buffer_alone() {
        let disk = Disk::new(DiskKind::Null, 1 << 30).unwrap();
        let mut data = [7u8; 512];
        disk.read_into(0, buffer(&mut data)).unwrap();
        assert_eq!(data, [7u8; 512]);
        assert_eq!(disk.kind(), DiskKind::Null);
    }
}
