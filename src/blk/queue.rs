//! One request queue, owned by one CPU: submit, commit, poll.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::mem::ManuallyDrop;

use arrayvec::ArrayVec;
use crossbeam_utils::CachePadded;

use crate::blk::config::{DeviceInfo, Mode, RangeLimits, MAX_DATA_SEGMENTS};
use crate::blk::slab::Slab;
use crate::blk::teardown::Teardown;
use crate::error::Error;
use crate::hal::{DmaBuffer, Hal, PhysAddr};
use crate::ring::{DeviceFault, Ring, RingKind, Segment, Used, UsedNotifications};
use crate::spec::{
    blk_status, req_type, BLK_ID_BYTES, BLK_RANGE_SIZE, BLK_REQ_HEADER_SIZE, SECTOR_SIZE,
};
use crate::transport::QueueNotifier;

/// A chain is header + data + status.
const MAX_CHAIN: usize = MAX_DATA_SEGMENTS + 2;

/// The request types (§5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read sectors into the buffer.
    Read,
    /// Write the buffer to sectors.
    Write,
    /// Flush the device's volatile write cache.
    Flush,
    /// Read the 20-byte device id string.
    GetId,
    /// Discard ranges.
    Discard,
    /// Write zeroes over ranges.
    WriteZeroes,
    /// Securely erase ranges.
    SecureErase,
}

impl Op {
    fn wire_type(self) -> u32 {
        match self {
            Op::Read => req_type::IN,
            Op::Write => req_type::OUT,
            Op::Flush => req_type::FLUSH,
            Op::GetId => req_type::GET_ID,
            Op::Discard => req_type::DISCARD,
            Op::WriteZeroes => req_type::WRITE_ZEROES,
            Op::SecureErase => req_type::SECURE_ERASE,
        }
    }

    /// The device writes the data buffers (otherwise it reads them).
    fn device_writes_data(self) -> bool {
        matches!(self, Op::Read | Op::GetId)
    }

    /// The request changes the disk: refused on a read-only device.
    fn modifies_disk(self) -> bool {
        matches!(
            self,
            Op::Write | Op::Discard | Op::WriteZeroes | Op::SecureErase
        )
    }
}

/// A finished request.
#[derive(Debug)]
pub struct Completion<H: Hal> {
    /// The caller's tag, as submitted.
    pub tag: u64,
    /// What the request was.
    pub op: Op,
    /// Ok, or why it failed.
    pub result: Result<(), Error>,
    /// The buffer moved in at submission, given back. `None` for requests
    /// without one, and for requests failed because the device broke: their
    /// buffers stay with the queue until the device is reset, since a broken
    /// device may still write them.
    pub buffer: Option<DmaBuffer<H>>,
}

/// A submission refused before it reached the ring; the buffer comes back.
pub struct Rejected<H: Hal> {
    /// Why.
    pub error: Error,
    /// The caller's buffer, untouched.
    pub buffer: DmaBuffer<H>,
}

impl<H: Hal> fmt::Debug for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl<H: Hal> fmt::Display for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

/// One data buffer of a raw request, by device address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawSegment {
    /// Device address.
    pub addr: PhysAddr,
    /// Length in bytes.
    pub len: u32,
}

/// Counters kept by the queue's owner; no atomics, no sharing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests placed in the ring.
    pub submitted: u64,
    /// Requests completed (any result).
    pub completed: u64,
    /// Batches published.
    pub commits: u64,
    /// Doorbells rung: commits the device asked to hear about.
    pub kicks: u64,
    /// `poll` calls that found nothing.
    pub empty_polls: u64,
    /// Times the owner slept for a used-buffer notification and was woken.
    pub interrupts: u64,
}

/// Per-slot driver state: who asked, what they handed over, what the device may write.
struct Slot<H: Hal> {
    tag: u64,
    op: Op,
    /// Writable bytes posted (data the device writes plus the status byte).
    writable: u32,
    buffer: Option<DmaBuffer<H>>,
    in_flight: bool,
}

/// The DMA memory a queue owns, released through [`Teardown`].
pub(crate) struct QueueMemory<H: Hal> {
    ring: Ring<H>,
    slab: Slab<H>,
    slots: Vec<Slot<H>>,
}

struct Inner<H: Hal, N: QueueNotifier> {
    memory: ManuallyDrop<QueueMemory<H>>,
    notifier: N,
    info: DeviceInfo,
    index: u16,
    mode: Mode,
    fault: Option<DeviceFault>,
    /// Requests placed since the last commit.
    unpublished: u16,
    stats: QueueStats,
    teardown: Arc<Teardown<H>>,
}

/// One virtio-blk request queue. `Send`, not `Sync`: exactly one CPU owns it.
///
/// Requests are placed with the submit methods (invisible to the device),
/// published with [`BlkQueue::commit`], and collected with [`BlkQueue::poll`].
///
/// A queue moves to the CPU that will own it:
/// ```
/// fn moves_to_its_owner<T: Send>() {}
/// moves_to_its_owner::<virtio_blk_mq::BlkQueue<virtio_blk_sim::SimHal, virtio_blk_sim::SimNotifier>>();
/// ```
/// but cannot be shared between CPUs without a lock
/// ([`crate::mq::SharedQueue`] is that lock):
/// ```compile_fail
/// fn shared_between_cpus<T: Sync>() {}
/// shared_between_cpus::<virtio_blk_mq::BlkQueue<virtio_blk_sim::SimHal, virtio_blk_sim::SimNotifier>>();
/// ```
pub struct BlkQueue<H: Hal, N: QueueNotifier> {
    // Padded so no two queues, and nothing else, share the owner's hot lines.
    inner: CachePadded<Inner<H, N>>,
    _not_sync: core::marker::PhantomData<core::cell::Cell<()>>,
}

impl<H: Hal, N: QueueNotifier> BlkQueue<H, N> {
    pub(crate) fn new(
        hal: &H,
        index: u16,
        mut ring: Ring<H>,
        notifier: N,
        info: DeviceInfo,
        mode: Mode,
        teardown: Arc<Teardown<H>>,
    ) -> Result<Self, Error> {
        let size = ring.size();
        let slab = Slab::new(hal, size)?;
        let slots = (0..size)
            .map(|_| Slot {
                tag: 0,
                op: Op::Flush,
                writable: 0,
                buffer: None,
                in_flight: false,
            })
            .collect();
        // Hybrid polls while busy and arms only before it sleeps.
        ring.set_used_notifications(match mode {
            Mode::Poll | Mode::Hybrid => UsedNotifications::Off,
            Mode::Interrupt => UsedNotifications::On,
        });
        Ok(BlkQueue {
            inner: CachePadded::new(Inner {
                memory: ManuallyDrop::new(QueueMemory { ring, slab, slots }),
                notifier,
                info,
                index,
                mode,
                fault: None,
                unpublished: 0,
                stats: QueueStats::default(),
                teardown,
            }),
            _not_sync: core::marker::PhantomData,
        })
    }

    /// Queue index on the device.
    pub fn index(&self) -> u16 {
        self.inner.index
    }

    /// What the device offers, as negotiated.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// Ring layout of this queue.
    pub fn ring_kind(&self) -> RingKind {
        self.inner.memory.ring.kind()
    }

    /// Entries in the ring.
    pub fn size(&self) -> u16 {
        self.inner.memory.ring.size()
    }

    /// Completion mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Requests submitted and not yet completed.
    pub fn in_flight(&self) -> u16 {
        self.inner.memory.ring.in_flight()
    }

    /// Counters.
    pub fn stats(&self) -> QueueStats {
        self.inner.stats
    }

    /// The protocol violation that disabled this queue, if any.
    pub fn fault(&self) -> Option<DeviceFault> {
        self.inner.fault
    }

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
        self.place(Op::Flush, 0, &[], None, None, tag)
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
                if total == 0 || !total.is_multiple_of(BLK_RANGE_SIZE as u64) {
                    return Err(Error::Misaligned);
                }
                if total / BLK_RANGE_SIZE as u64 > u64::from(limits.max_ranges) {
                    return Err(Error::TooManySegments);
                }
            }
        }
        self.place(op, sector, &data, None, None, tag)
    }

    /// Publishes everything submitted since the last commit, ringing the
    /// doorbell only if the device asked for it. Returns whether it rang.
    #[inline]
    pub fn commit(&mut self) -> bool {
        let inner = &mut *self.inner;
        if inner.unpublished == 0 {
            return false;
        }
        inner.unpublished = 0;
        inner.stats.commits += 1;
        if !inner.memory.ring.commit() {
            return false;
        }
        inner.stats.kicks += 1;
        inner.notifier.notify();
        true
    }

    /// Asks the device for a used-buffer notification at the next completion
    /// (Interrupt and Hybrid modes, after draining). Returns true when a
    /// completion is already waiting: poll again instead of sleeping.
    pub fn arm_notifications(&mut self) -> bool {
        self.inner.memory.ring.arm_and_check()
    }

    /// Turns used-buffer notifications off again (Hybrid, after waking).
    pub fn disarm_notifications(&mut self) {
        self.inner
            .memory
            .ring
            .set_used_notifications(UsedNotifications::Off);
    }

    /// Whether a completion is waiting, without taking it.
    #[inline]
    pub fn completions_pending(&self) -> bool {
        self.inner.fault.is_none() && self.inner.memory.ring.has_used()
    }

    /// Counts a wake-up by a used-buffer notification (see [`crate::mq::wait_for_completions`]).
    pub(crate) fn note_interrupt(&mut self) {
        self.inner.stats.interrupts += 1;
    }

    /// Hands up to `budget` completions to `on_complete`; returns how many.
    ///
    /// If the device breaks the protocol, the queue is disabled: every request
    /// in flight completes with [`Error::DeviceBroken`] in this call, and later
    /// submissions fail at once.
    #[inline]
    pub fn poll(&mut self, budget: usize, mut on_complete: impl FnMut(Completion<H>)) -> usize {
        let mut done = 0;
        while done < budget && self.inner.fault.is_none() {
            let popped = self.inner.memory.ring.pop_used();
            match popped {
                Ok(None) => break,
                Ok(Some(used)) => match self.finish(used) {
                    Ok(completion) => {
                        on_complete(completion);
                        done += 1;
                    }
                    Err(fault) => done += self.break_queue(fault, &mut on_complete),
                },
                Err(fault) => done += self.break_queue(fault, &mut on_complete),
            }
        }
        let stats = &mut self.inner.stats;
        stats.completed += done as u64;
        stats.empty_polls += u64::from(done == 0);
        done
    }

    /// Turns a validated used element into a completion.
    #[inline]
    fn finish(&mut self, used: Used) -> Result<Completion<H>, DeviceFault> {
        let memory = &mut *self.inner.memory;
        let slot = &mut memory.slots[usize::from(used.id)];
        if used.len > slot.writable {
            return Err(DeviceFault::UsedLengthTooLong {
                id: used.id,
                len: used.len,
                posted: slot.writable,
            });
        }
        let result = match memory.slab.status(used.id) {
            blk_status::OK => Ok(()),
            blk_status::IOERR => Err(Error::IoError),
            blk_status::UNSUPP => Err(Error::Unsupported),
            status => {
                return Err(DeviceFault::BadStatus {
                    id: used.id,
                    status,
                })
            }
        };
        slot.in_flight = false;
        Ok(Completion {
            tag: slot.tag,
            op: slot.op,
            result,
            buffer: slot.buffer.take(),
        })
    }

    /// Fences the queue off after `fault`: logs once, fails every request in
    /// flight (including one the ring already released but whose completion
    /// was bad) with `DeviceBroken`, and keeps their buffers until the device
    /// is reset.
    #[cold]
    fn break_queue(
        &mut self,
        fault: DeviceFault,
        on_complete: &mut impl FnMut(Completion<H>),
    ) -> usize {
        let inner = &mut *self.inner;
        log::error!("virtio-blk queue {}: {fault}; queue disabled", inner.index);
        inner.fault = Some(fault);
        let mut failed = 0;
        for slot in inner.memory.slots.iter_mut().filter(|slot| slot.in_flight) {
            slot.in_flight = false;
            on_complete(Completion {
                tag: slot.tag,
                op: slot.op,
                result: Err(Error::DeviceBroken),
                buffer: None,
            });
            failed += 1;
        }
        failed
    }

    /// Checks that apply to every request.
    fn check_common(&self, op: Op) -> Result<(), Error> {
        if self.inner.fault.is_some() {
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
        let block = u64::from(info.block_size);
        // Compared in sectors so a huge sector number cannot overflow.
        if !bytes.is_multiple_of(block) || !sector.is_multiple_of(block / SECTOR_SIZE) {
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
        if let Err(error) = checked {
            return Err(Rejected { error, buffer });
        }
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
        let mut buffer = Some(buffer);
        match self.place(op, sector, &data, None, Some(&mut buffer), tag) {
            Ok(()) => Ok(()),
            Err(error) => Err(Rejected {
                error,
                buffer: buffer
                    .take()
                    .expect("a refused buffer stays with the caller"),
            }),
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
        if !sector.is_multiple_of(u64::from(limits.sector_alignment)) {
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
        self.place(op, 0, &[], Some(range), None, tag)
    }

    /// Puts a checked request into the ring: header, `data`, the slot's
    /// inline `range` if any, status. Moves `buffer` into the slot on success.
    fn place(
        &mut self,
        op: Op,
        sector: u64,
        data: &[Segment],
        range: Option<InlineRange>,
        buffer: Option<&mut Option<DmaBuffer<H>>>,
        tag: u64,
    ) -> Result<(), Error> {
        let inner = &mut *self.inner;
        let memory = &mut *inner.memory;
        let segments = data.len() + usize::from(range.is_some()) + 2;
        if segments > memory.ring.max_chain() {
            // It would never fit: QueueFull would make the caller wait forever.
            return Err(Error::TooManySegments);
        }
        let id = memory.ring.next_id(segments).ok_or(Error::QueueFull)?;
        memory.slab.prepare(id, op.wire_type(), sector);
        let mut chain: ArrayVec<Segment, MAX_CHAIN> = ArrayVec::new();
        chain.push(Segment {
            addr: memory.slab.header_addr(id),
            len: BLK_REQ_HEADER_SIZE as u32,
            device_writable: false,
        });
        chain.extend(data.iter().copied());
        if let Some(range) = range {
            memory
                .slab
                .write_range(id, range.sector, range.sectors, range.flags);
            chain.push(Segment {
                addr: memory.slab.range_addr(id),
                len: BLK_RANGE_SIZE as u32,
                device_writable: false,
            });
        }
        chain.push(Segment {
            addr: memory.slab.status_addr(id),
            len: 1,
            device_writable: true,
        });
        let writable: u32 = chain
            .iter()
            .filter(|segment| segment.device_writable)
            .map(|segment| segment.len)
            .fold(0, u32::saturating_add);
        let placed = memory.ring.add(&chain);
        debug_assert_eq!(placed, id);
        let slot = &mut memory.slots[usize::from(id)];
        slot.tag = tag;
        slot.op = op;
        slot.writable = writable;
        slot.buffer = buffer.and_then(Option::take);
        slot.in_flight = true;
        inner.stats.submitted += 1;
        inner.unpublished += 1;
        Ok(())
    }
}

/// One range carried in the slot's own slab entry.
#[derive(Clone, Copy)]
struct InlineRange {
    sector: u64,
    sectors: u32,
    flags: u32,
}

impl<H: Hal, N: QueueNotifier> Drop for BlkQueue<H, N> {
    fn drop(&mut self) {
        // SAFETY: `memory` is taken exactly once, here, and never used again.
        let memory = unsafe { ManuallyDrop::take(&mut self.inner.memory) };
        self.inner.teardown.release(memory);
    }
}
