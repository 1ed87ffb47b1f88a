//! Per-queue request memory: headers, inline ranges and status bytes, one of
//! each per slot, allocated once (DESIGN.md §2).
//!
//! Laid out as arrays so consecutive requests share cache lines: the device
//! reads headers together and writes status bytes together.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::error::Error;
use crate::hal::{DmaRegion, Hal, PhysAddr};
use crate::shared::SharedArray;
use crate::spec::{BLK_RANGE_SIZE, BLK_REQ_HEADER_SIZE};

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
    headers: SharedArray<HeaderCell>,
    ranges: SharedArray<RangeCell>,
    statuses: SharedArray<AtomicU8>,
    region: DmaRegion<H>,
    slots: usize,
}

impl<H: Hal> Slab<H> {
    pub(crate) fn new(hal: &H, slots: u16) -> Result<Self, Error> {
        let n = usize::from(slots);
        let region = DmaRegion::new(hal, n * (BLK_REQ_HEADER_SIZE + BLK_RANGE_SIZE + 1))
            .ok_or(Error::OutOfDmaMemory)?;
        // SAFETY: headers at 0 and ranges at 16n are 8-byte aligned, statuses
        // (bytes) follow at 32n; all lie within the region sized above, all
        // types are atomics valid when zeroed, and the views are declared before
        // `region`.
        let (headers, ranges, statuses) = unsafe {
            (
                SharedArray::new(&region, 0, n),
                SharedArray::new(&region, n * BLK_REQ_HEADER_SIZE, n),
                SharedArray::new(&region, n * (BLK_REQ_HEADER_SIZE + BLK_RANGE_SIZE), n),
            )
        };
        Ok(Slab {
            headers,
            ranges,
            statuses,
            region,
            slots: n,
        })
    }

    fn addr(&self, offset: usize) -> PhysAddr {
        self.region.paddr() + offset as u64
    }

    pub(crate) fn header_addr(&self, id: u16) -> PhysAddr {
        self.addr(usize::from(id) * BLK_REQ_HEADER_SIZE)
    }

    pub(crate) fn range_addr(&self, id: u16) -> PhysAddr {
        self.addr(self.slots * BLK_REQ_HEADER_SIZE + usize::from(id) * BLK_RANGE_SIZE)
    }

    pub(crate) fn status_addr(&self, id: u16) -> PhysAddr {
        self.addr(self.slots * (BLK_REQ_HEADER_SIZE + BLK_RANGE_SIZE) + usize::from(id))
    }

    /// Fills slot `id`'s header and resets its status; both are published by
    /// the ring's commit.
    pub(crate) fn prepare(&self, id: u16, kind: u32, sector: u64) {
        let header = self.headers.get(usize::from(id));
        header.kind.store(kind.to_le(), Ordering::Relaxed);
        header.reserved.store(0, Ordering::Relaxed);
        header.sector.store(sector.to_le(), Ordering::Relaxed);
        self.statuses
            .get(usize::from(id))
            .store(STATUS_UNWRITTEN, Ordering::Relaxed);
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
        self.statuses.get(usize::from(id)).load(Ordering::Relaxed)
    }
}
