//! Guest memory as the pollers read it: the framework's `GuestMemoryMmap`
//! behind vm-memory's own `GuestMemory` trait, with a short path for the
//! case every ring access and buffer is in: one range inside one region.
//!
//! vm-memory answers every access through `get_slices`, an iterator over
//! the regions a range touches; for `GuestMemoryMmap` that iterator and its
//! region lookup cost about 120 instructions per access under callgrind, and
//! a request makes about ten accesses (descriptors, header, data, status,
//! avail entry, used element and index). Here a range inside one region is
//! one slice from that region (a scan of the few regions and a bounds
//! check); anything else, including a range that crosses regions, goes down
//! vm-memory's general path unchanged. `virtio-queue` and the request code
//! use it through the same traits, so nothing above changes.

use std::sync::Arc;

use vm_memory::bitmap::BS;
use vm_memory::guest_memory::GuestMemorySliceIterator;
use vm_memory::{
    GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestMemoryResult, MemoryRegionAddress, Permissions, VolatileSlice,
};

/// A snapshot of the memory table (see the module documentation).
#[derive(Clone)]
pub struct Memory {
    table: Arc<GuestMemoryMmap>,
}

impl Memory {
    /// The snapshot `table`.
    pub fn new(table: Arc<GuestMemoryMmap>) -> Memory {
        Memory { table }
    }

    /// `count` bytes at `addr`, if they lie inside one region.
    pub fn slice(&self, addr: GuestAddress, count: usize) -> Option<VolatileSlice<'_>> {
        let region = self.table.iter().find(|region| {
            addr >= region.start_addr() && addr.0 - region.start_addr().0 < region.len()
        })?;
        let offset = addr.0 - region.start_addr().0;
        if count as u64 > region.len() - offset {
            return None;
        }
        region.get_slice(MemoryRegionAddress(offset), count).ok()
    }
}

/// The slices of one access: one, or vm-memory's general iterator.
pub enum Slices<'a, I> {
    /// The range lies inside one region (`None` once yielded, or for an
    /// empty range).
    One(Option<VolatileSlice<'a>>),
    /// Anything else.
    General(I),
}

impl<'a, I> Iterator for Slices<'a, I>
where
    I: Iterator<Item = GuestMemoryResult<VolatileSlice<'a>>>,
{
    type Item = GuestMemoryResult<VolatileSlice<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Slices::One(slice) => slice.take().map(Ok),
            Slices::General(slices) => slices.next(),
        }
    }
}

impl<'a, I> std::iter::FusedIterator for Slices<'a, I> where
    I: Iterator<Item = GuestMemoryResult<VolatileSlice<'a>>> + std::iter::FusedIterator
{
}

impl<'a, I> GuestMemorySliceIterator<'a, BS<'a, ()>> for Slices<'a, I> where
    I: Iterator<Item = GuestMemoryResult<VolatileSlice<'a>>> + std::iter::FusedIterator
{
}

impl GuestMemory for Memory {
    type PhysicalMemory = GuestMemoryMmap;
    type Bitmap = ();

    fn check_range(&self, addr: GuestAddress, count: usize, access: Permissions) -> bool {
        GuestMemory::check_range(&*self.table, addr, count, access)
    }

    fn get_slices<'a>(
        &'a self,
        addr: GuestAddress,
        count: usize,
        access: Permissions,
    ) -> GuestMemoryResult<impl GuestMemorySliceIterator<'a, BS<'a, ()>>> {
        if count == 0 {
            return Ok(Slices::One(None));
        }
        if let Some(slice) = self.slice(addr, count) {
            return Ok(Slices::One(Some(slice)));
        }
        let general = GuestMemory::get_slices(&*self.table, addr, count, access)?;
        Ok(Slices::General(general))
    }

    fn physical_memory(&self) -> Option<&GuestMemoryMmap> {
        Some(&self.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::Bytes;

    fn two_regions() -> Memory {
        Memory::new(Arc::new(
            GuestMemoryMmap::from_ranges(&[
                (GuestAddress(0x1000), 0x1000),
                (GuestAddress(0x2000), 0x1000),
                (GuestAddress(0x8000), 0x1000),
            ])
            .unwrap(),
        ))
    }

    #[test]
    fn accesses_inside_a_region_and_across_two_read_back_what_was_written() {
        let memory = two_regions();
        memory
            .write_obj(0x1234_5678u32, GuestAddress(0x8010))
            .unwrap();
        assert_eq!(
            memory.read_obj::<u32>(GuestAddress(0x8010)).unwrap(),
            0x1234_5678
        );
        // Across the boundary of two adjacent regions: the general path.
        memory
            .write_slice(&[7u8; 32], GuestAddress(0x1ff0))
            .unwrap();
        let mut back = [0u8; 32];
        memory.read_slice(&mut back, GuestAddress(0x1ff0)).unwrap();
        assert_eq!(back, [7u8; 32]);
        assert!(memory.slice(GuestAddress(0x1ff0), 32).is_none());
        assert!(memory.slice(GuestAddress(0x2000), 32).is_some());
    }

    #[test]
    fn accesses_outside_the_table_fail() {
        let memory = two_regions();
        assert!(memory.read_obj::<u64>(GuestAddress(0x3000)).is_err());
        assert!(memory.read_obj::<u64>(GuestAddress(0x8ffc)).is_err());
        assert!(memory.read_obj::<u64>(GuestAddress(u64::MAX - 2)).is_err());
        assert!(memory.slice(GuestAddress(0x8000), 0x1001).is_none());
        assert!(!memory.check_range(GuestAddress(0x3000), 1, Permissions::Read));
        let mut nothing = [0u8; 0];
        memory
            .read_slice(&mut nothing, GuestAddress(0x1000))
            .unwrap();
    }
}
