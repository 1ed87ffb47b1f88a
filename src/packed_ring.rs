//! Packed virtqueue, driver side (VIRTIO 1.2 §2.8).
//!
//! Laid out to read beside `split_ring.rs`: the same operations under the same
//! names. The driver remembers every chain's length and the free buffer ids in
//! private shadows; the only device-written values it reads are used
//! descriptors and the device event suppression structure, and it checks both.

use crate::barrier;
use crate::sync::atomic::{AtomicU32, Ordering};

use alloc::vec::Vec;

use crate::error::Error;
use crate::hal::{DmaRegion, Hal};
use crate::ring::{
    direct_slots, DeviceFault, IndirectTables, IndirectUse, Placement, QueueAddresses, Segment,
    Used, UsedNotifications,
};
use crate::shared::{SharedArray, SharedCell};
use crate::spec::{
    packed_event, EventSuppress, PackedDesc, PackedDescFlags, PackedLayout, MAX_PACKED_QUEUE_SIZE,
};

/// Sentinel ending the free-id list.
const NO_ID: u16 = u16::MAX;

/// The driver's private record of one buffer id, kept together so placing
/// and freeing a chain touch one array.
#[derive(Clone, Copy, Debug)]
struct Shadow {
    /// The next free id after this one while it is free.
    next_free_id: u16,
    /// Ring slots its chain occupies (0 = not in flight).
    chain_len: u16,
}

/// The driver side of one packed virtqueue.
pub(crate) struct PackedRing<H: Hal> {
    // Views into `memory`, declared before it so they are dropped first.
    desc: SharedArray<PackedDesc>,
    driver_event: SharedCell<EventSuppress>,
    /// The device's event suppression structure, read as one 32-bit word
    /// (`off_wrap` in the low half, `flags` in the high half, little-endian)
    /// so `flags` and `off_wrap` always come from the same device write.
    device_event: SharedCell<AtomicU32>,
    indirect: Option<IndirectTables<H, PackedDesc>>,
    memory: DmaRegion<H>,
    layout: PackedLayout,
    event_idx: bool,
    /// VIRTIO_F_ORDER_PLATFORM: the device is hardware (see `barrier`).
    platform: bool,

    /// Ring slots not holding a posted descriptor.
    num_free: u16,
    /// Free buffer ids, linked through their [`Shadow::next_free_id`].
    free_id_head: u16,
    /// Per buffer id, what the driver keeps about it (see [`Shadow`]).
    shadow: Vec<Shadow>,
    in_flight: u16,

    /// Where the next chain goes, and the wrap counter there (§2.8.1).
    next_avail: u16,
    avail_wrap: bool,
    /// Where the device writes its next used descriptor, and the wrap counter there.
    next_used: u16,
    used_wrap: bool,
    /// The batch's first head and its flags, held back until `publish` (rule 1).
    batch_head: Option<(u16, u16)>,
    /// Ring slots filled since the last publish.
    batch_slots: u16,
    /// Chains added since the last publish: in flight, but not yet the device's.
    batch_chains: u16,
    /// Ring slots published since the last doorbell decision (`commit`),
    /// saturating: the range the device's event offset is judged against.
    undecided_slots: u32,
    /// Used descriptors consumed since the ring was set up (see `Used::seq`).
    consumed: u64,
    notifications: UsedNotifications,
    /// Value last written to the driver event `off_wrap` (EVENT_IDX).
    event_off_wrap: u16,
}

impl<H: Hal> PackedRing<H> {
    /// A ring of `size` descriptors (1..=32768). `indirect` gives the per-slot
    /// indirect table length when INDIRECT_DESC is used.
    pub(crate) fn new(
        hal: &H,
        size: u16,
        event_idx: bool,
        indirect: Option<IndirectUse>,
    ) -> Result<Self, Error> {
        if size == 0 || size > MAX_PACKED_QUEUE_SIZE {
            return Err(Error::BadQueueSize(size));
        }
        let layout = PackedLayout::new(size);
        let memory = DmaRegion::new(hal, layout.total).ok_or(Error::OutOfDmaMemory)?;
        // SAFETY: PackedLayout places each part at an offset aligned for its type
        // inside `layout.total` bytes; all types are atomics valid when zeroed;
        // the views (and the cells taken from the one-element ones) are
        // fields declared before `memory`.
        let (desc, driver_event, device_event) = unsafe {
            (
                SharedArray::new(&memory, layout.desc, usize::from(size)),
                SharedArray::new(&memory, layout.driver_event, 1).cell(0),
                SharedArray::new(&memory, layout.device_event, 1).cell(0),
            )
        };
        let indirect = match indirect {
            Some(use_) => Some(IndirectTables::new(hal, size, use_).ok_or(Error::OutOfDmaMemory)?),
            None => None,
        };
        let mut shadow: Vec<Shadow> = (1..=size)
            .map(|next_free_id| Shadow {
                next_free_id,
                chain_len: 0,
            })
            .collect();
        shadow[usize::from(size) - 1].next_free_id = NO_ID;
        Ok(PackedRing {
            desc,
            driver_event,
            device_event,
            indirect,
            memory,
            layout,
            event_idx,
            platform: false,
            num_free: size,
            free_id_head: 0,
            shadow,
            in_flight: 0,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            batch_head: None,
            batch_slots: 0,
            batch_chains: 0,
            undecided_slots: 0,
            consumed: 0,
            notifications: UsedNotifications::On,
            event_off_wrap: 0,
        })
    }

    pub(crate) fn addresses(&self) -> QueueAddresses {
        let base = self.memory.paddr();
        QueueAddresses {
            desc: base + self.layout.desc as u64,
            driver: base + self.layout.driver_event as u64,
            device: base + self.layout.device_event as u64,
        }
    }

    /// Uses the platform's DMA barriers too (VIRTIO_F_ORDER_PLATFORM).
    pub(crate) fn set_order_platform(&mut self, on: bool) {
        self.platform = on;
    }

    pub(crate) fn size(&self) -> u16 {
        self.layout.size
    }

    pub(crate) fn in_flight(&self) -> u16 {
        self.in_flight
    }

    /// Ring slots a chain of `segments` takes now, if it can be placed.
    #[inline]
    fn slots_needed(&self, segments: usize) -> Option<usize> {
        match &self.indirect {
            Some(tables) => tables.slots_for(segments, self.num_free, self.in_flight),
            None => direct_slots(segments, self.num_free),
        }
    }

    pub(crate) fn max_chain(&self) -> usize {
        match &self.indirect {
            Some(tables) => tables.per_table().max(usize::from(self.layout.size)),
            None => usize::from(self.layout.size),
        }
    }

    /// Where a chain of `segments` would go now, if it fits.
    #[inline(always)]
    pub(crate) fn reserve(&self, segments: usize) -> Option<Placement> {
        let slots = self.slots_needed(segments)?;
        (self.free_id_head != NO_ID).then_some(Placement {
            id: self.free_id_head,
            slots: slots as u16,
        })
    }

    #[cfg(test)]
    pub(crate) fn next_id(&self, segments: usize) -> Option<u16> {
        self.reserve(segments).map(|at| at.id)
    }

    /// Places `chain` where [`Self::reserve`] says.
    #[cfg(test)]
    pub(crate) fn add(&mut self, chain: &[Segment]) -> u16 {
        let at = self.reserve(chain.len()).expect("the chain fits");
        self.add_at(at, chain);
        at.id
    }

    /// The AVAIL/USED bits that mark a descriptor available in the current lap.
    fn avail_bits(&self) -> PackedDescFlags {
        if self.avail_wrap {
            PackedDescFlags::AVAIL
        } else {
            PackedDescFlags::USED
        }
    }

    /// Moves `next_avail` one slot on, flipping the wrap counter at the end.
    fn advance_avail(&mut self) {
        self.next_avail += 1;
        if self.next_avail == self.layout.size {
            self.next_avail = 0;
            self.avail_wrap = !self.avail_wrap;
        }
    }

    /// Writes `chain` at `at`, which [`Self::reserve`] returned for it with
    /// nothing placed in between; the device cannot see it before `publish`.
    #[inline(always)]
    pub(crate) fn add_at(&mut self, at: Placement, chain: &[Segment]) {
        debug_assert_eq!(Some(at), self.reserve(chain.len()));
        let id = at.id;
        let record = &mut self.shadow[usize::from(id)];
        self.free_id_head = record.next_free_id;
        record.chain_len = at.slots;
        let head = self.next_avail;
        // Later heads of a batch are written with their chains: the device
        // cannot pass the batch's first head, which `publish` writes last.
        let first = self.batch_head.is_none();
        let head_flags = if at.slots == 1 && chain.len() > 1 {
            self.write_indirect(id, chain, first)
        } else {
            self.write_direct(id, chain, first)
        };
        if first {
            self.batch_head = Some((head, head_flags));
        }
        self.batch_slots += at.slots;
        self.batch_chains += 1;
        self.num_free -= at.slots;
        self.in_flight += 1;
    }

    /// Writes `chain` into consecutive ring slots, the head's flags last and
    /// only when the head is not the batch's `first` (that one is `publish`'s
    /// to write); returns the head's flags.
    #[inline(always)]
    fn write_direct(&mut self, id: u16, chain: &[Segment], first: bool) -> u16 {
        let descs = self.desc.as_slice();
        debug_assert_eq!(descs.len(), usize::from(self.layout.size));
        let start = usize::from(self.next_avail);
        let end = start + chain.len();
        // The common case: the chain ends inside this lap. Its slots are then
        // one sub-slice (one bound check for the chain, not one per slot) and
        // all take this lap's AVAIL/USED bits.
        if let Some(slots) = descs.get(start..end) {
            let avail = self.avail_bits();
            let mut head_flags = 0;
            for (n, (desc, segment)) in slots.iter().zip(chain).enumerate() {
                let flags = (avail | chain_flags(segment, n + 1 != chain.len())).bits();
                store_desc(desc, segment, id);
                if n == 0 {
                    head_flags = flags;
                } else {
                    desc.flags.store(flags.to_le(), Ordering::Relaxed);
                }
            }
            if end == descs.len() {
                self.next_avail = 0;
                self.avail_wrap = !self.avail_wrap;
            } else {
                // `end` is below the ring size, itself a u16.
                self.next_avail = end as u16;
            }
            if let (false, Some(head)) = (first, slots.first()) {
                head.flags.store(head_flags.to_le(), Ordering::Relaxed);
            }
            return head_flags;
        }
        self.write_direct_wrapping(id, chain, first)
    }

    /// [`Self::write_direct`] for a chain that crosses the end of the ring,
    /// with one lap's bits before the end and the next lap's after it.
    /// Inlined like the rest: out of line, the chain would have to be built
    /// in memory for it on every request, split ones included.
    #[inline(always)]
    fn write_direct_wrapping(&mut self, id: u16, chain: &[Segment], first: bool) -> u16 {
        let descs = self.desc.as_slice();
        let size = self.layout.size;
        let head = usize::from(self.next_avail);
        let (mut position, mut wrap) = (self.next_avail, self.avail_wrap);
        let mut head_flags = 0;
        for (n, segment) in chain.iter().enumerate() {
            let avail = if wrap {
                PackedDescFlags::AVAIL
            } else {
                PackedDescFlags::USED
            };
            let flags = (avail | chain_flags(segment, n + 1 != chain.len())).bits();
            let desc = &descs[usize::from(position)];
            store_desc(desc, segment, id);
            if n == 0 {
                head_flags = flags;
            } else {
                desc.flags.store(flags.to_le(), Ordering::Relaxed);
            }
            position += 1;
            if position == size {
                position = 0;
                wrap = !wrap;
            }
        }
        self.next_avail = position;
        self.avail_wrap = wrap;
        if !first {
            descs[head]
                .flags
                .store(head_flags.to_le(), Ordering::Relaxed);
        }
        head_flags
    }

    /// Writes `chain` into slot `id`'s indirect table and one ring slot
    /// pointing at it, that slot's flags only when it is not the batch's
    /// `first` head; returns that slot's flags.
    #[inline(always)]
    fn write_indirect(&mut self, id: u16, chain: &[Segment], first: bool) -> u16 {
        let Some(tables) = &self.indirect else {
            unreachable!("slots_needed said indirect")
        };
        let (table, table_addr) = tables.entries(id, chain.len());
        for (entry, segment) in table.iter().zip(chain) {
            // §2.8.7: only WRITE counts in an indirect table; ids are ignored.
            let flags = if segment.device_writable {
                PackedDescFlags::WRITE.bits()
            } else {
                0
            };
            store_desc(entry, segment, 0);
            entry.flags.store(flags.to_le(), Ordering::Relaxed);
        }
        let table_segment = Segment {
            addr: table_addr,
            len: (chain.len() * 16) as u32,
            device_writable: false,
        };
        let desc = self.desc.get(usize::from(self.next_avail));
        store_desc(desc, &table_segment, id);
        let flags = (self.avail_bits() | PackedDescFlags::INDIRECT).bits();
        if !first {
            desc.flags.store(flags.to_le(), Ordering::Relaxed);
        }
        self.advance_avail();
        flags
    }

    /// Hands the chains added since the last publish to the device, without
    /// a doorbell decision (`commit` takes that for everything published
    /// since the last one).
    #[inline]
    pub(crate) fn publish(&mut self) {
        let Some((head, flags)) = self.batch_head.take() else {
            return;
        };
        // Rule 1: every descriptor of the batch, and every later head, is
        // written before the first head's flags hand the batch over (Release;
        // for a hardware device, the platform's write barrier too).
        barrier::before_publish(self.platform);
        self.desc
            .get(usize::from(head))
            .flags
            .store(flags.to_le(), Ordering::Release);
        self.undecided_slots = self
            .undecided_slots
            .saturating_add(u32::from(self.batch_slots));
        self.batch_slots = 0;
        self.batch_chains = 0;
    }

    /// Publishes the batch; true when the device wants a notification about
    /// anything published since the last commit.
    #[cfg(test)]
    pub(crate) fn commit(&mut self) -> bool {
        self.publish();
        self.decide() == Some(true)
    }

    /// Whether the device wants a notification about what was published
    /// since the last decision (`publish` first); `None` when nothing was.
    #[inline]
    pub(crate) fn decide(&mut self) -> Option<bool> {
        if self.undecided_slots == 0 {
            return None;
        }
        // Rule 2: publish before reading the device's event suppression state.
        barrier::full(self.platform);
        let added = self.undecided_slots;
        self.undecided_slots = 0;
        // One load: flags and off_wrap from the same device write, never a
        // new `flags` with a stale `off_wrap` (or the other way round).
        let snapshot = u32::from_le(self.device_event.get().load(Ordering::Relaxed));
        let (off_wrap, flags) = (snapshot as u16, (snapshot >> 16) as u16);
        Some(match flags {
            packed_event::DISABLE => false,
            // More than a lap since the last decision: the event lies among
            // them wherever it is, unless the device took everything; an
            // extra doorbell is always allowed (§2.9).
            packed_event::DESC if self.event_idx => match u16::try_from(added) {
                Ok(added) if added <= self.size() => self.event_in_batch(off_wrap, added),
                _ => true,
            },
            _ => true,
        })
    }

    /// Whether the device, as its event area reads now, waits for a doorbell
    /// about descriptors already published: ENABLE, or (EVENT_IDX) DESC at a
    /// position in the lap before our published end. DESC at the end itself
    /// is a device that took everything; DISABLE, a device busy with the
    /// ring or polling it, which looks again before it waits.
    #[cold]
    pub(crate) fn device_awaits_kick(&self) -> bool {
        // A heuristic after many empty polls, never a publish decision: a
        // stale value only delays the next look, so no fence.
        let snapshot = u32::from_le(self.device_event.get().load(Ordering::Relaxed));
        let (off_wrap, flags) = (snapshot as u16, (snapshot >> 16) as u16);
        match flags {
            packed_event::DISABLE => false,
            packed_event::DESC if self.event_idx => {
                let published_end = i32::from(self.next_avail) - i32::from(self.batch_slots);
                let event = self.event_on_line(off_wrap);
                published_end - i32::from(self.layout.size) <= event && event < published_end
            }
            _ => true,
        }
    }

    /// The event position `off_wrap` on the line where `next_avail` is its
    /// offset and the previous lap counts negative.
    fn event_on_line(&self, off_wrap: u16) -> i32 {
        let offset = i32::from(off_wrap & !packed_event::WRAP_BIT);
        let wrap = off_wrap & packed_event::WRAP_BIT != 0;
        if wrap == self.avail_wrap {
            offset
        } else {
            offset - i32::from(self.layout.size)
        }
    }

    /// §2.8.10: does the event position `off_wrap` lie among the `added` slots
    /// just published? Positions are put on one line (the previous lap counts
    /// negative) so the test holds for any queue size and across the wrap.
    fn event_in_batch(&self, off_wrap: u16, added: u16) -> bool {
        let event = self.event_on_line(off_wrap);
        let new = i32::from(self.next_avail);
        let old = new - i32::from(added);
        old <= event && event < new
    }

    /// Whether the descriptor at `next_used` is used in the current lap.
    ///
    /// Only read while a published chain is outstanding: then the slot holds
    /// either our available descriptor (AVAIL = wrap, USED = !wrap) or the
    /// device's used one (both = wrap), and anything else is a device fault
    /// (§2.8.1). With nothing published the slot is ours, perhaps the held-back
    /// head of the next batch, and a "used" mark there cannot be genuine.
    #[inline]
    fn used_ready(&self) -> Result<bool, DeviceFault> {
        if self.in_flight == self.batch_chains {
            return Ok(false);
        }
        let desc = self.desc.get(usize::from(self.next_used));
        // Rule 3: Acquire on the flags before reading id and len.
        let raw = u16::from_le(desc.flags.load(Ordering::Acquire));
        let flags = PackedDescFlags::from_bits_retain(raw);
        let avail = flags.contains(PackedDescFlags::AVAIL);
        let used = flags.contains(PackedDescFlags::USED);
        match (avail == self.used_wrap, used == self.used_wrap) {
            (true, true) => Ok(true),
            (true, false) => Ok(false),
            _ => Err(DeviceFault::BadUsedFlags {
                slot: self.next_used,
                flags: raw,
            }),
        }
    }

    #[inline]
    pub(crate) fn has_used(&self) -> bool {
        // A fault counts as "something to poll": poll() will report it.
        !matches!(self.used_ready(), Ok(false))
    }

    #[inline]
    pub(crate) fn pop_used(&mut self) -> Result<Option<Used>, DeviceFault> {
        // Rule 4: when the event position moved, look again after the fence.
        let ready = self.used_ready()? || (self.follow_used_event() && self.used_ready()?);
        if !ready {
            return Ok(None);
        }
        barrier::after_consume(self.platform);
        let desc = self.desc.get(usize::from(self.next_used));
        let id = u16::from_le(desc.id.load(Ordering::Relaxed));
        let len = u32::from_le(desc.len.load(Ordering::Relaxed));
        if id >= self.layout.size {
            return Err(DeviceFault::IdOutOfRange(u32::from(id)));
        }
        let record = &mut self.shadow[usize::from(id)];
        let slots = record.chain_len;
        if slots == 0 {
            return Err(DeviceFault::IdNotInFlight(id));
        }
        record.chain_len = 0;
        record.next_free_id = self.free_id_head;
        self.free_id_head = id;
        self.num_free += slots;
        self.in_flight -= 1;
        // §2.8.6: the device skips the slots of the chain it used.
        (self.next_used, self.used_wrap) = self.skip(self.next_used, self.used_wrap, slots);
        let seq = self.consumed;
        self.consumed += 1;
        Ok(Some(Used { id, len, seq }))
    }

    /// `off_wrap` naming the next used position (§2.8.10).
    fn next_used_off_wrap(&self) -> u16 {
        let wrap = if self.used_wrap {
            packed_event::WRAP_BIT
        } else {
            0
        };
        self.next_used | wrap
    }

    /// With notifications on and EVENT_IDX, moves the driver event
    /// `off_wrap` to the next used position, so the device notifies at the
    /// next completion after the ones we took (§2.8.10): a queue drained from
    /// its interrupt handler stays armed without calling `arm_and_check`.
    /// True when it moved it and fenced; the caller must then look again.
    #[inline]
    fn follow_used_event(&mut self) -> bool {
        if !self.event_idx || self.notifications == UsedNotifications::Off {
            return false;
        }
        let off_wrap = self.next_used_off_wrap();
        if off_wrap == self.event_off_wrap {
            return false;
        }
        self.event_off_wrap = off_wrap;
        // `flags` is DESC already (set by `arm_and_check`); only the position moves.
        self.driver_event
            .get()
            .off_wrap
            .store(off_wrap.to_le(), Ordering::Relaxed);
        // Rule 4: the new position is visible before we look at the ring
        // again; pairs with the device's fence between writing a used
        // descriptor and reading our event suppression structure.
        barrier::full(self.platform);
        true
    }

    /// The ring position `slots` on from `(position, wrap)`.
    #[inline]
    fn skip(&self, position: u16, wrap: bool, slots: u16) -> (u16, bool) {
        // Both are below 2^15, so the sum cannot overflow.
        let next = position + slots;
        if next >= self.layout.size {
            (next - self.layout.size, !wrap)
        } else {
            (next, wrap)
        }
    }

    /// Walks the used descriptors already visible past `next_used`, as far as
    /// they name chains in flight (poll reports anything else).
    pub(crate) fn used_horizon(&self) -> Option<u64> {
        let mut outstanding = self.in_flight - self.batch_chains;
        let (mut position, mut wrap) = (self.next_used, self.used_wrap);
        let mut visible = 0u64;
        while outstanding > 0 {
            let desc = self.desc.get(usize::from(position));
            // Rule 3: Acquire on the flags before reading the id.
            let flags =
                PackedDescFlags::from_bits_retain(u16::from_le(desc.flags.load(Ordering::Acquire)));
            let used = flags.contains(PackedDescFlags::AVAIL) == wrap
                && flags.contains(PackedDescFlags::USED) == wrap;
            let id = usize::from(u16::from_le(desc.id.load(Ordering::Relaxed)));
            let slots = self.shadow.get(id).map_or(0, |record| record.chain_len);
            if !used || slots == 0 {
                break;
            }
            (position, wrap) = self.skip(position, wrap, slots);
            outstanding -= 1;
            visible += 1;
        }
        (visible > 0).then(|| self.consumed + visible)
    }

    pub(crate) fn set_used_notifications(&mut self, mode: UsedNotifications) {
        self.notifications = mode;
        match mode {
            UsedNotifications::Off => self
                .driver_event
                .get()
                .flags
                .store(packed_event::DISABLE.to_le(), Ordering::Relaxed),
            UsedNotifications::On => {
                self.arm_and_check();
            }
        }
    }

    /// Rule 4: ask for a notification at the next used descriptor, fence, and
    /// report whether one is already there.
    pub(crate) fn arm_and_check(&mut self) -> bool {
        self.notifications = UsedNotifications::On;
        let event = self.driver_event.get();
        if self.event_idx {
            self.event_off_wrap = self.next_used_off_wrap();
            event
                .off_wrap
                .store(self.event_off_wrap.to_le(), Ordering::Relaxed);
            // `flags` last, with Release: a device that sees DESC (reading
            // `flags` with Acquire, or the structure as one word) sees the
            // position written above, never the one from an earlier arm.
            event
                .flags
                .store(packed_event::DESC.to_le(), Ordering::Release);
        } else {
            event
                .flags
                .store(packed_event::ENABLE.to_le(), Ordering::Relaxed);
        }
        // The re-arm must be visible before we look at the ring again, pairing
        // with the device's fence between writing a used descriptor and reading
        // our event suppression structure.
        barrier::full(self.platform);
        self.has_used()
    }
}

/// Diagnostics (see [`crate::snapshot`]): read-only, never on the I/O path.
impl<H: Hal> PackedRing<H> {
    pub(crate) fn snapshot(&self) -> crate::snapshot::PackedSnapshot {
        let driver = self.driver_event.get();
        // Acquire: read the device's structure and descriptor as they are now.
        let device = u32::from_le(self.device_event.get().load(Ordering::Acquire));
        let at_used = self.desc.get(usize::from(self.next_used));
        crate::snapshot::PackedSnapshot {
            size: self.layout.size,
            in_flight: self.in_flight,
            next_avail: self.next_avail,
            avail_wrap: self.avail_wrap,
            next_used: self.next_used,
            used_wrap: self.used_wrap,
            driver_event_flags: u16::from_le(driver.flags.load(Ordering::Relaxed)),
            driver_event_off_wrap: u16::from_le(driver.off_wrap.load(Ordering::Relaxed)),
            // One load, as commit reads it: off_wrap low, flags high.
            device_event_flags: (device >> 16) as u16,
            device_event_off_wrap: device as u16,
            flags_at_next_used: u16::from_le(at_used.flags.load(Ordering::Acquire)),
            id_at_next_used: u16::from_le(at_used.id.load(Ordering::Relaxed)),
            event_idx: self.event_idx,
        }
    }
}

/// The ring's shared memory as the model checker's device thread sees it.
#[cfg(all(test, loom))]
pub(crate) struct PackedMemory {
    pub(crate) desc: alloc::sync::Arc<[PackedDesc]>,
    pub(crate) driver_event: alloc::sync::Arc<[EventSuppress]>,
    pub(crate) device_event: alloc::sync::Arc<[AtomicU32]>,
}

#[cfg(all(test, loom))]
impl<H: Hal> PackedRing<H> {
    pub(crate) fn model_memory(&self) -> PackedMemory {
        PackedMemory {
            desc: self.desc.share(),
            driver_event: self.driver_event.share(),
            device_event: self.device_event.share(),
        }
    }
}

/// The WRITE and NEXT bits of a chain's descriptor (the lap's AVAIL/USED
/// bits are the caller's).
#[inline]
fn chain_flags(segment: &Segment, more: bool) -> PackedDescFlags {
    let mut flags = PackedDescFlags::empty();
    if segment.device_writable {
        flags |= PackedDescFlags::WRITE;
    }
    if more {
        flags |= PackedDescFlags::NEXT;
    }
    flags
}

/// Fills a descriptor's address, length and id; the flags are stored by the caller.
#[inline]
fn store_desc(desc: &PackedDesc, segment: &Segment, id: u16) {
    desc.addr.store(segment.addr.to_le(), Ordering::Relaxed);
    desc.len.store(segment.len.to_le(), Ordering::Relaxed);
    desc.id.store(id.to_le(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::test_hal::TestHal;

    fn ring(size: u16) -> PackedRing<TestHal> {
        PackedRing::new(&TestHal, size, true, None).expect("ring")
    }

    fn off_wrap(offset: u16, wrap: bool) -> u16 {
        offset | if wrap { packed_event::WRAP_BIT } else { 0 }
    }

    #[test]
    fn packed_device_awaits_a_kick_only_before_the_published_end() {
        let mut r = ring(8);
        let set = |r: &PackedRing<TestHal>, flags: u16, off_wrap: u16| {
            let area = u32::from(off_wrap) | u32::from(flags) << 16;
            r.device_event.get().store(area.to_le(), Ordering::Relaxed);
        };
        // Published up to slot 2 of the lap with wrap 0; the lap before had wrap 1.
        r.next_avail = 2;
        r.avail_wrap = false;
        for (event, waits) in [
            (off_wrap(1, false), true),
            (off_wrap(0, false), true),
            (off_wrap(6, true), true),
            (off_wrap(2, true), true),
            (off_wrap(2, false), false),
        ] {
            set(&r, packed_event::DESC, event);
            assert_eq!(r.device_awaits_kick(), waits, "event {event:#x}");
        }
        set(&r, packed_event::DISABLE, off_wrap(0, false));
        assert!(!r.device_awaits_kick(), "DISABLE: busy, not waiting");
        set(&r, packed_event::ENABLE, off_wrap(2, false));
        assert!(r.device_awaits_kick(), "ENABLE: any doorbell is wanted");
        // Slots 0 and 1 placed but not published: the end is slot 0.
        r.batch_slots = 2;
        set(&r, packed_event::DESC, off_wrap(0, false));
        assert!(
            !r.device_awaits_kick(),
            "the device has everything published"
        );
        set(&r, packed_event::DESC, off_wrap(7, true));
        assert!(r.device_awaits_kick());
    }

    #[test]
    fn packed_commit_decides_over_every_piece_published_since_the_last() {
        let mut r = ring(8);
        let set = |r: &PackedRing<TestHal>, flags: u16, off_wrap: u16| {
            let area = u32::from(off_wrap) | u32::from(flags) << 16;
            r.device_event.get().store(area.to_le(), Ordering::Relaxed);
        };
        // Two pieces of one two-slot chain each: slots 0-1, then 2-3.
        r.add(&two_segments());
        r.publish();
        r.add(&two_segments());
        r.publish();
        // The device asked to hear of slot 1, in the first piece.
        set(&r, packed_event::DESC, off_wrap(1, true));
        assert_eq!(r.decide(), Some(true));
        assert_eq!(r.decide(), None, "nothing published since");
        // More than a lap since the last decision (pieces and completions,
        // no commit): the event cannot be placed in it, so ring anyway, even
        // for an event at the published end.
        r.undecided_slots = 9;
        set(&r, packed_event::DESC, off_wrap(4, true));
        assert_eq!(r.decide(), Some(true));
    }

    #[test]
    fn packed_event_in_batch_across_the_wrap() {
        let mut r = ring(8);
        // Published slots 6, 7 (lap with wrap 1) then 0, 1 (lap with wrap 0).
        r.next_avail = 2;
        r.avail_wrap = false;
        assert!(r.event_in_batch(off_wrap(6, true), 4));
        assert!(r.event_in_batch(off_wrap(7, true), 4));
        assert!(r.event_in_batch(off_wrap(0, false), 4));
        assert!(r.event_in_batch(off_wrap(1, false), 4));
        assert!(!r.event_in_batch(off_wrap(2, false), 4));
        assert!(!r.event_in_batch(off_wrap(5, true), 4));
    }

    /// Against a model on absolute positions (lap × size + offset; the wrap
    /// counter is 1 in lap 0): a batch of slots [old, new) must kick iff the
    /// device's event position lies in it, for every size, batch and event
    /// the device can have set (at most one lap behind `new`).
    #[test]
    fn packed_event_in_batch_matches_a_model_of_absolute_positions() {
        for size in 1..=9u16 {
            let mut r = ring(size);
            let n = u32::from(size);
            for new_abs in n..4 * n {
                r.next_avail = (new_abs % n) as u16;
                r.avail_wrap = (new_abs / n) % 2 == 0;
                for added in 1..=n {
                    let old_abs = new_abs - added;
                    for event_abs in new_abs - n..=new_abs {
                        let encoded = off_wrap((event_abs % n) as u16, (event_abs / n) % 2 == 0);
                        let expected = (old_abs..new_abs).contains(&event_abs);
                        assert_eq!(
                            r.event_in_batch(encoded, added as u16),
                            expected,
                            "size {size} batch [{old_abs}, {new_abs}) event {event_abs}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn packed_event_in_batch_odd_size_full_lap() {
        let mut r = ring(3);
        r.next_avail = 1;
        r.avail_wrap = true;
        // A batch of a whole lap (3 slots) from position 1 of the previous lap.
        assert!(r.event_in_batch(off_wrap(1, false), 3));
        assert!(r.event_in_batch(off_wrap(2, false), 3));
        assert!(r.event_in_batch(off_wrap(0, true), 3));
        assert!(!r.event_in_batch(off_wrap(1, true), 3));
    }

    fn two_segments() -> [Segment; 2] {
        [Segment {
            addr: 0x1000,
            len: 16,
            device_writable: true,
        }; 2]
    }

    /// Plays the device: marks slot `slot` used with `id` and flags `flags`.
    fn device_writes(r: &PackedRing<TestHal>, slot: usize, id: u16, flags: PackedDescFlags) {
        let desc = r.desc.get(slot);
        desc.id.store(id.to_le(), Ordering::Relaxed);
        desc.len.store(1u32.to_le(), Ordering::Relaxed);
        desc.flags.store(flags.bits().to_le(), Ordering::Release);
    }

    #[test]
    fn packed_used_mark_on_an_unpublished_head_is_ignored() {
        let mut r = ring(4);
        let id = r.add(&two_segments());
        // The head's flags are held back until published: the slot is still ours.
        device_writes(&r, 0, id, PackedDescFlags::AVAIL | PackedDescFlags::USED);
        assert_eq!(
            r.pop_used(),
            Ok(None),
            "the device was never given this chain"
        );
        assert!(!r.has_used());
        r.commit();
        // Commit overwrote the forged mark with the available one.
        assert_eq!(r.pop_used(), Ok(None));
        device_writes(&r, 0, id, PackedDescFlags::AVAIL | PackedDescFlags::USED);
        assert_eq!(r.pop_used(), Ok(Some(Used { id, len: 1, seq: 0 })));
    }

    #[test]
    fn packed_wrong_wrap_and_garbage_flags_are_faults() {
        for bad in [
            PackedDescFlags::empty(),
            PackedDescFlags::USED,
            PackedDescFlags::USED | PackedDescFlags::NEXT,
        ] {
            let mut r = ring(4);
            let id = r.add(&two_segments());
            r.commit();
            device_writes(&r, 0, id, bad);
            assert!(r.has_used(), "a fault is something for poll to report");
            assert_eq!(
                r.pop_used(),
                Err(DeviceFault::BadUsedFlags {
                    slot: 0,
                    flags: bad.bits()
                })
            );
        }
    }

    fn three_segments() -> [Segment; 3] {
        [
            Segment {
                addr: 0x1000,
                len: 16,
                device_writable: false,
            },
            Segment {
                addr: 0x2000,
                len: 512,
                device_writable: true,
            },
            Segment {
                addr: 0x3000,
                len: 1,
                device_writable: true,
            },
        ]
    }

    fn flags_at(r: &PackedRing<TestHal>, slot: usize) -> u16 {
        u16::from_le(r.desc.get(slot).flags.load(Ordering::Relaxed))
    }

    /// A chain crossing the end of the ring takes this lap's bits before the
    /// end and the next lap's after it; one ending exactly at the end flips
    /// the wrap counter for the next chain.
    #[test]
    fn packed_chain_across_the_end_takes_both_laps_bits() {
        let (avail, used) = (PackedDescFlags::AVAIL, PackedDescFlags::USED);
        let (write, next) = (PackedDescFlags::WRITE, PackedDescFlags::NEXT);
        for start in 0..4u16 {
            let mut r = ring(4);
            r.next_avail = start;
            let id = r.add(&three_segments());
            r.publish();
            let expected = [next, write | next, write];
            for (n, bits) in expected.into_iter().enumerate() {
                let slot = usize::from(start) + n;
                let lap = if slot < 4 { avail } else { used };
                let desc = r.desc.get(slot % 4);
                assert_eq!(
                    flags_at(&r, slot % 4),
                    (lap | bits).bits(),
                    "start {start} n {n}"
                );
                assert_eq!(u16::from_le(desc.id.load(Ordering::Relaxed)), id);
                let addr = u64::from_le(desc.addr.load(Ordering::Relaxed));
                assert_eq!(addr, three_segments()[n].addr);
            }
            assert_eq!(r.next_avail, (start + 3) % 4, "start {start}");
            assert_eq!(r.avail_wrap, start + 3 < 4, "start {start}");
        }
    }

    /// Only the batch's first head waits for `publish`; later heads are
    /// written with their chains, on either side of the ring's end.
    #[test]
    fn packed_later_heads_of_a_batch_are_written_with_their_chains() {
        for start in [0u16, 2, 5] {
            let mut r = ring(8);
            r.next_avail = start;
            r.add(&three_segments());
            let first = usize::from(start);
            let second = (first + 3) % 8;
            assert_eq!(flags_at(&r, first), 0, "the first head waits for publish");
            r.add(&three_segments());
            let lap = if first + 3 < 8 {
                PackedDescFlags::AVAIL
            } else {
                PackedDescFlags::USED
            };
            assert_eq!(flags_at(&r, second), (lap | PackedDescFlags::NEXT).bits());
            r.publish();
            let head = PackedDescFlags::AVAIL | PackedDescFlags::NEXT;
            assert_eq!(flags_at(&r, first), head.bits(), "start {start}");
        }
    }

    #[test]
    fn packed_chain_wraps_with_flipped_avail_bits() {
        let mut r = ring(3);
        let chain = [Segment {
            addr: 0x1000,
            len: 16,
            device_writable: false,
        }; 2];
        assert_eq!(r.add(&chain), 0);
        r.commit();
        // Second chain takes slot 2 (wrap 1) and slot 0 (wrap 0): needs 2 free, only 1 left.
        assert_eq!(r.next_id(2), None);
        assert_eq!(r.next_id(1), Some(1));
        let flags = |i: usize| {
            PackedDescFlags::from_bits_retain(u16::from_le(
                r.desc.get(i).flags.load(Ordering::Relaxed),
            ))
        };
        assert!(flags(0).contains(PackedDescFlags::AVAIL | PackedDescFlags::NEXT));
        assert!(!flags(0).contains(PackedDescFlags::USED));
        assert!(flags(1).contains(PackedDescFlags::AVAIL));
        assert!(!flags(1).contains(PackedDescFlags::NEXT));
    }
}
