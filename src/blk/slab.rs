//! Per-queue request memory: headers, inline ranges and status bytes, one of
//! each per slot, allocated once (DESIGN.md §2).
//!
//! A slot's header and status byte share one 32-byte record, two records to
//! a cache line; the inline ranges (discard and write-zeroes only) are an
//! array after them. DESIGN.md §2 asked for a headers array and a status
//! array, so that requests at depth share lines. Measured, the record is the
//! better layout: at depth the two do the same (the device takes a line
//! of two requests instead of four headers, and the status array was
//! written by both sides anyway: our 0xff reset and the device's status),
//! while at qd1 a request moves one line fewer between the cores, because the
//! line the driver's header write takes is the one the device's status
//! write needs (docs/perf.md, "The slab's layout").

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::error::Error;
use crate::hal::{DmaRegion, Hal, PhysAddr};
use crate::shared::SharedArray;
use crate::spec::{BLK_RANGE_SIZE, BLK_REQ_HEADER_SIZE};

const _: () = assert!(core::mem::offset_of!(SlotCell, status) == BLK_REQ_HEADER_SIZE);
const _: () = assert!(core::mem::size_of::<SlotCell>() == 32);

/// Written before the device can see a request, so a status the device never
/// wrote is caught as a protocol fault instead of read as success.
pub(crate) const STATUS_UNWRITTEN: u8 = 0xff;

/// `struct virtio_blk_req` header (§5.2.6).
#[repr(C)]
#[derive(Default)]
struct HeaderCell {
    kind: AtomicU32,
    reserved: AtomicU32,
    sector: AtomicU64,
}

/// One slot's header and status byte. 32-byte aligned, so a record never
/// straddles two cache lines.
#[repr(C, align(32))]
#[derive(Default)]
struct SlotCell {
    header: HeaderCell,
    status: AtomicU8,
}

/// Bytes of one [`SlotCell`], the stride of the records.
const SLOT_BYTES: usize = core::mem::size_of::<SlotCell>();
/// Where a record's status byte sits.
const STATUS_OFFSET: usize = core::mem::offset_of!(SlotCell, status);

/// One discard / write-zeroes / secure-erase range (§5.2.6).
#[repr(C)]
#[derive(Default)]
struct RangeCell {
    sector: AtomicU64,
    sectors: AtomicU32,
    flags: AtomicU32,
}

pub(crate) struct Slab<H: Hal> {
    // Views into `region`, declared before it so they are dropped first.
    cells: SharedArray<SlotCell>,
    ranges: SharedArray<RangeCell>,
    region: DmaRegion<H>,
    slots: usize,
}

impl<H: Hal> Slab<H> {
    pub(crate) fn new(hal: &H, slots: u16) -> Result<Self, Error> {
        let n = usize::from(slots);
        let region =
            DmaRegion::new(hal, n * (SLOT_BYTES + BLK_RANGE_SIZE)).ok_or(Error::OutOfDmaMemory)?;
        // SAFETY: the records at 0 and the ranges at 32n are aligned for
        // their types (the region starts on a page; `SharedArray::new`
        // checks), both lie within the region sized above, all fields are
        // atomics valid when zeroed, and the views are declared before `region`.
        let (cells, ranges) = unsafe {
            (
                SharedArray::new(&region, 0, n),
                SharedArray::new(&region, n * SLOT_BYTES, n),
            )
        };
        Ok(Slab {
            cells,
            ranges,
            region,
            slots: n,
        })
    }

    fn addr(&self, offset: usize) -> PhysAddr {
        self.region.paddr() + offset as u64
    }

    #[inline]
    pub(crate) fn header_addr(&self, id: u16) -> PhysAddr {
        self.addr(usize::from(id) * SLOT_BYTES)
    }

    #[inline]
    pub(crate) fn range_addr(&self, id: u16) -> PhysAddr {
        self.addr(self.slots * SLOT_BYTES + usize::from(id) * BLK_RANGE_SIZE)
    }

    #[inline]
    pub(crate) fn status_addr(&self, id: u16) -> PhysAddr {
        self.addr(usize::from(id) * SLOT_BYTES + STATUS_OFFSET)
    }

    /// Fills slot `id`'s header and resets its status; both are published by
    /// the ring's commit.
    #[inline(always)]
    pub(crate) fn prepare(&self, id: u16, kind: u32, sector: u64) {
        let cell = self.cells.get(usize::from(id));
        let header = &cell.header;
        header.kind.store(kind.to_le(), Ordering::Relaxed);
        header.reserved.store(0, Ordering::Relaxed);
        header.sector.store(sector.to_le(), Ordering::Relaxed);
        cell.status.store(STATUS_UNWRITTEN, Ordering::Relaxed);
    }

    /// Fills slot `id`'s inline range.
    pub(crate) fn write_range(&self, id: u16, sector: u64, sectors: u32, flags: u32) {
        let range = self.ranges.get(usize::from(id));
        range.sector.store(sector.to_le(), Ordering::Relaxed);
        range.sectors.store(sectors.to_le(), Ordering::Relaxed);
        range.flags.store(flags.to_le(), Ordering::Relaxed);
    }

    /// The status byte the device wrote; read after the used element was
    /// acquired, which orders it.
    pub(crate) fn status(&self, id: u16) -> u8 {
        self.cells
            .get(usize::from(id))
            .status
            .load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::test_hal::TestHal;
    use alloc::vec::Vec;

    const LINE: u64 = 64;

    #[test]
    fn a_slots_header_and_status_share_one_cache_line() {
        let slab = Slab::new(&TestHal, 256).expect("DMA memory");
        for id in 0..256u16 {
            let header = slab.header_addr(id);
            let status = slab.status_addr(id);
            assert_eq!(status, header + BLK_REQ_HEADER_SIZE as u64, "slot {id}");
            assert_eq!(header / LINE, status / LINE, "slot {id} straddles a line");
        }
    }

    #[test]
    fn slots_and_ranges_never_overlap() {
        let slab = Slab::new(&TestHal, 8).expect("DMA memory");
        let mut spans: Vec<(u64, u64)> = (0..8u16)
            .flat_map(|id| {
                [
                    (slab.header_addr(id), BLK_REQ_HEADER_SIZE as u64),
                    (slab.status_addr(id), 1),
                    (slab.range_addr(id), BLK_RANGE_SIZE as u64),
                ]
            })
            .collect();
        spans.sort_unstable();
        for pair in spans.windows(2) {
            assert!(pair[0].0 + pair[0].1 <= pair[1].0, "{pair:?} overlap");
        }
        let (last, len) = spans[spans.len() - 1];
        assert!(last + len <= slab.region.paddr() + slab.region.len() as u64);
    }

    #[test]
    fn the_device_sees_what_prepare_wrote_and_the_driver_reads_its_status() {
        let slab = Slab::new(&TestHal, 4).expect("DMA memory");
        slab.prepare(2, 1, 0x0102_0304_0506_0708);
        // TestHal's device address is the pointer: read the record as a device would.
        let header = slab.header_addr(2) as *const u8;
        // SAFETY: the slab's region is live and holds 16 header bytes at this address.
        let bytes = unsafe { core::slice::from_raw_parts(header, 17) };
        assert_eq!(&bytes[0..4], &1u32.to_le_bytes());
        assert_eq!(&bytes[4..8], &[0; 4]);
        assert_eq!(&bytes[8..16], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(bytes[16], STATUS_UNWRITTEN);
        assert_eq!(slab.status(2), STATUS_UNWRITTEN);
        // SAFETY: as above; the status byte is an AtomicU8 in the record.
        unsafe { (*(slab.status_addr(2) as *const AtomicU8)).store(0, Ordering::Relaxed) };
        assert_eq!(slab.status(2), 0);
        assert_eq!(slab.status(1), 0, "slot 1 was never prepared");
    }
}
