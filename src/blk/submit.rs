//! Submission: every request is checked against the device's limits, then
//! placed in the ring as header, data and status, invisible to the device until
//! [`BlkQueue::commit`].

use arrayvec::ArrayVec;

use crate::blk::config::{RangeLimits, MAX_DATA_SEGMENTS};
use crate::blk::queue::{BlkQueue, Op, RawSegment, Rejected};
use crate::error::Error;
use crate::hal::{DmaBuffer, Hal};
use crate::ring::{Placement, Segment};
use crate::spec::{BLK_ID_BYTES, BLK_RANGE_SIZE, BLK_REQ_HEADER_SIZE, SECTOR_SIZE};
use crate::transport::QueueNotifier;

/// A chain is header + data + status.
const MAX_CHAIN: usize = MAX_DATA_SEGMENTS + 2;

impl<H: Hal, N: QueueNotifier> BlkQueue<H, N> {
    /// Reads `buffer.len()` bytes starting at `sector` into `buffer`.
    pub fn read(&mut self, sector: u64, buffer: DmaBuffer<H>, tag: u64) -> Result<(), Rejected<H>> {
        self.submit_buffer(Op::Read, sector, buffer, tag)
    }

    /// Writes `buffer` starting at `sector`.
    pub fn write(
        &mut self,
        sector: u64,
        buffer: DmaBuffer<H>,
        tag: u64,
    ) -> Result<(), Rejected<H>> {
        self.submit_buffer(Op::Write, sector, buffer, tag)
    }

    /// Reads the device id string into the first 20 bytes of `buffer`.
    pub fn get_id(&mut self, buffer: DmaBuffer<H>, tag: u64) -> Result<(), Rejected<H>> {
        self.submit_buffer(Op::GetId, 0, buffer, tag)
    }

    /// Flushes the device's write cache.
    pub fn flush(&mut self, tag: u64) -> Result<(), Error> {
        self.check_common(Op::Flush)?;
        if !self.inner.info.flush {
            return Err(Error::NotSupported("flush"));
        }
        self.place(Op::Flush, 0, Payload::Empty, tag)
    }

    /// Discards `sectors` sectors from `sector`.
    pub fn discard(&mut self, sector: u64, sectors: u32, tag: u64) -> Result<(), Error> {
        let limits = self.inner.info.discard;
        self.submit_range(Op::Discard, limits, "discard", sector, sectors, 0, tag)
    }

    /// Writes zeroes over `sectors` sectors from `sector`; `unmap` lets the
    /// device deallocate them when it can.
    pub fn write_zeroes(
        &mut self,
        sector: u64,
        sectors: u32,
        unmap: bool,
        tag: u64,
    ) -> Result<(), Error> {
        let limits = self.inner.info.write_zeroes;
        let flags = if unmap {
            crate::spec::BLK_WRITE_ZEROES_FLAG_UNMAP
        } else {
            0
        };
        self.submit_range(
            Op::WriteZeroes,
            limits,
            "write zeroes",
            sector,
            sectors,
            flags,
            tag,
        )
    }

    /// Securely erases `sectors` sectors from `sector`.
    pub fn secure_erase(&mut self, sector: u64, sectors: u32, tag: u64) -> Result<(), Error> {
        let limits = self.inner.info.secure_erase;
        self.submit_range(
            Op::SecureErase,
            limits,
            "secure erase",
            sector,
            sectors,
            0,
            tag,
        )
    }

    /// Submits a request whose data the caller manages by device address.
    ///
    /// For [`Op::Read`] / [`Op::Write`] the segments are the data; for
    /// [`Op::GetId`] one writable segment of at least 20 bytes; for the range
    /// commands arrays of 16-byte ranges (§5.2.6) the caller has encoded; for
    /// [`Op::Flush`] none. Sector, length, alignment and segment limits are
    /// checked here.
    ///
    /// # Safety
    /// Every segment must be memory the device may access for the given
    /// direction, must stay valid and untouched by the CPU until this request's
    /// completion is returned by `poll` (or, if the queue breaks, until the
    /// device is reset), and ranges must be valid encodings.
    pub unsafe fn submit_raw(
        &mut self,
        op: Op,
        sector: u64,
        segments: &[RawSegment],
        tag: u64,
    ) -> Result<(), Error> {
        self.check_common(op)?;
        if segments.len() > usize::from(self.inner.info.max_segments) {
            return Err(Error::TooManySegments);
        }
        let writable = op.device_writes_data();
        let mut data: ArrayVec<Segment, MAX_DATA_SEGMENTS> = ArrayVec::new();
        let mut total: u64 = 0;
        for raw in segments {
            if raw.len == 0 {
                return Err(Error::Empty);
            }
            if raw.len > self.inner.info.max_segment_size {
                return Err(Error::TooLarge);
            }
            total += u64::from(raw.len);
            data.push(Segment {
                addr: raw.addr,
                len: raw.len,
                device_writable: writable,
            });
        }
        match op {
            Op::Read | Op::Write => self.check_data_range(sector, total)?,
            Op::GetId if segments.len() != 1 || total < BLK_ID_BYTES as u64 => {
                return Err(Error::TooSmall)
            }
            Op::GetId => {}
            Op::Flush if !segments.is_empty() => return Err(Error::TooManySegments),
            Op::Flush if !self.inner.info.flush => return Err(Error::NotSupported("flush")),
            Op::Flush => {}
            Op::Discard | Op::WriteZeroes | Op::SecureErase => {
                let limits = self.range_limits(op)?;
                if total == 0 || total % (BLK_RANGE_SIZE as u64) != 0 {
                    return Err(Error::Misaligned);
                }
                if total / BLK_RANGE_SIZE as u64 > u64::from(limits.max_ranges) {
                    return Err(Error::TooManySegments);
                }
            }
        }
        self.place(op, sector, Payload::Data(&data), tag)
    }

    /// Checks that apply to every request.
    fn check_common(&self, op: Op) -> Result<(), Error> {
        if self.inner.fault.is_some() || self.inner.teardown.failure().is_some() {
            return Err(Error::DeviceBroken);
        }
        if op.modifies_disk() && self.inner.info.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// Checks a data transfer of `bytes` bytes at `sector`.
    fn check_data_range(&self, sector: u64, bytes: u64) -> Result<(), Error> {
        let info = &self.inner.info;
        if bytes == 0 {
            return Err(Error::Empty);
        }
        // block_size is a power of two of at least a sector (checked at
        // setup), so alignment is a mask, not a division. Compared in sectors
        // so a huge sector number cannot overflow.
        let block = u64::from(info.block_size);
        let block_sectors = block / SECTOR_SIZE;
        if bytes & (block - 1) != 0 || sector & (block_sectors - 1) != 0 {
            return Err(Error::Misaligned);
        }
        match sector.checked_add(bytes / SECTOR_SIZE) {
            Some(end) if end <= info.capacity_sectors => Ok(()),
            _ => Err(Error::OutOfRange),
        }
    }

    fn range_limits(&self, op: Op) -> Result<RangeLimits, Error> {
        let info = &self.inner.info;
        let (limits, name) = match op {
            Op::Discard => (info.discard, "discard"),
            Op::WriteZeroes => (info.write_zeroes, "write zeroes"),
            _ => (info.secure_erase, "secure erase"),
        };
        limits.ok_or(Error::NotSupported(name))
    }

    /// The path of every read and write: checks, then places the request
    /// with `buffer` moved into its slot. Inlined into each caller, where
    /// `op` is a constant.
    #[inline(always)]
    fn submit_buffer(
        &mut self,
        op: Op,
        sector: u64,
        buffer: DmaBuffer<H>,
        tag: u64,
    ) -> Result<(), Rejected<H>> {
        let checked = self.check_common(op).and_then(|()| {
            let len = buffer.len() as u64;
            if len > u64::from(self.inner.info.max_segment_size) {
                return Err(Error::TooLarge);
            }
            match op {
                Op::GetId if len < BLK_ID_BYTES as u64 => Err(Error::TooSmall),
                Op::GetId => Ok(()),
                _ => self.check_data_range(sector, len),
            }
        });
        let len = if op == Op::GetId {
            BLK_ID_BYTES as u32
        } else {
            buffer.len() as u32
        };
        let data = [Segment {
            addr: buffer.paddr(),
            len,
            device_writable: op.device_writes_data(),
        }];
        let payload = Payload::Data(&data);
        match checked.and_then(|()| self.reserve(&payload)) {
            Ok(at) => {
                self.place_at(at, op, sector, payload, Some(buffer), tag);
                Ok(())
            }
            Err(error) => Err(Rejected { error, buffer }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn submit_range(
        &mut self,
        op: Op,
        limits: Option<RangeLimits>,
        name: &'static str,
        sector: u64,
        sectors: u32,
        flags: u32,
        tag: u64,
    ) -> Result<(), Error> {
        self.check_common(op)?;
        let limits = limits.ok_or(Error::NotSupported(name))?;
        if sectors == 0 {
            return Err(Error::Empty);
        }
        if sectors > limits.max_sectors {
            return Err(Error::TooLarge);
        }
        if sector % u64::from(limits.sector_alignment) != 0 {
            return Err(Error::Misaligned);
        }
        match sector.checked_add(u64::from(sectors)) {
            Some(end) if end <= self.inner.info.capacity_sectors => {}
            _ => return Err(Error::OutOfRange),
        }
        let range = InlineRange {
            sector,
            sectors,
            flags,
        };
        self.place(op, 0, Payload::Range(range), tag)
    }

    /// Puts a checked request without a buffer of its own into the ring.
    fn place(&mut self, op: Op, sector: u64, payload: Payload<'_>, tag: u64) -> Result<(), Error> {
        let at = self.reserve(&payload)?;
        self.place_at(at, op, sector, payload, None, tag);
        Ok(())
    }

    /// Where a request of `payload` goes in the ring, or why it cannot go:
    /// it never fits ([`Error::TooManySegments`]: waiting would not help),
    /// or not now ([`Error::QueueFull`]).
    #[inline(always)]
    fn reserve(&self, payload: &Payload<'_>) -> Result<Placement, Error> {
        let segments = payload.segments() + 2;
        if segments > self.inner.max_chain {
            return Err(Error::TooManySegments);
        }
        self.inner
            .memory
            .ring
            .reserve(segments)
            .ok_or(Error::QueueFull)
    }

    /// Puts a checked request into the ring at `at` (from [`Self::reserve`]
    /// just before): header, the payload, status; `buffer` goes into the
    /// slot.
    #[inline(always)]
    fn place_at(
        &mut self,
        at: Placement,
        op: Op,
        sector: u64,
        payload: Payload<'_>,
        buffer: Option<DmaBuffer<H>>,
        tag: u64,
    ) {
        let inner = &mut *self.inner;
        let memory = &mut *inner.memory;
        let id = at.id;
        memory.slab.prepare(id, op.wire_type(), sector);
        let header = Segment {
            addr: memory.slab.header_addr(id),
            len: BLK_REQ_HEADER_SIZE as u32,
            device_writable: false,
        };
        let status = Segment {
            addr: memory.slab.status_addr(id),
            len: 1,
            device_writable: true,
        };
        // The common shapes go to the ring as fixed arrays: no chain is
        // collected, and the writable bytes are known without a walk.
        let data_writable = match payload {
            Payload::Empty => {
                memory.ring.add_at(at, &[header, status]);
                0
            }
            Payload::Range(range) => {
                memory
                    .slab
                    .write_range(id, range.sector, range.sectors, range.flags);
                let range = Segment {
                    addr: memory.slab.range_addr(id),
                    len: BLK_RANGE_SIZE as u32,
                    device_writable: false,
                };
                memory.ring.add_at(at, &[header, range, status]);
                0
            }
            Payload::Data(&[one]) => {
                memory.ring.add_at(at, &[header, one, status]);
                if one.device_writable {
                    one.len
                } else {
                    0
                }
            }
            Payload::Data(data) => {
                let mut chain: ArrayVec<Segment, MAX_CHAIN> = ArrayVec::new();
                chain.push(header);
                chain.extend(data.iter().copied());
                chain.push(status);
                memory.ring.add_at(at, &chain);
                data.iter()
                    .filter(|segment| segment.device_writable)
                    .map(|segment| segment.len)
                    .fold(0, u32::saturating_add)
            }
        };
        let slot = &mut memory.slots[usize::from(id)];
        slot.tag = tag;
        slot.op = op;
        slot.writable = data_writable.saturating_add(status.len);
        slot.buffer = buffer;
        slot.in_flight = true;
        slot.batch = inner.stats.publishes + 1;
        slot.placed_at = inner.clock;
        slot.overdue_reported = false;
        slot.horizon = 0;
        inner.stats.submitted += 1;
        inner.unpublished.push(id);
        if inner.unpublished.len() >= inner.publish_batch {
            self.publish();
        }
    }
}

/// What sits between a request's header and its status byte.
#[derive(Clone, Copy)]
enum Payload<'a> {
    /// Nothing (flush).
    Empty,
    /// The caller's data segments.
    Data(&'a [Segment]),
    /// One range kept in the slot's own slab entry.
    Range(InlineRange),
}

impl Payload<'_> {
    fn segments(&self) -> usize {
        match self {
            Payload::Empty => 0,
            Payload::Data(data) => data.len(),
            Payload::Range(_) => 1,
        }
    }
}

/// One range carried in the slot's own slab entry.
#[derive(Clone, Copy)]
struct InlineRange {
    sector: u64,
    sectors: u32,
    flags: u32,
}
