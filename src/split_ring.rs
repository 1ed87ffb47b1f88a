//! Split virtqueue, driver side (VIRTIO 1.2 §2.7).
//!
//! Everything the driver needs to remember lives in private shadows: the free
//! list, the chain of each head, the available index. Device memory is read
//! only where the device writes it (the used ring, `avail_event`, `used.flags`)
//! and every value read there is checked before it is used.

use crate::barrier;
use crate::sync::atomic::{AtomicU16, Ordering};

use alloc::vec::Vec;

use crate::error::Error;
use crate::hal::{DmaRegion, Hal};
use crate::ring::{
    direct_slots, DeviceFault, IndirectTables, IndirectUse, Placement, QueueAddresses, Segment,
    Used, UsedNotifications,
};
use crate::shared::{SharedArray, SharedCell};
use crate::spec::{
    need_event, SplitDesc, SplitDescFlags, SplitLayout, UsedElem, MAX_SPLIT_QUEUE_SIZE,
    VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY,
};

/// How far `used_event` may fall behind in poll mode before it is moved: far
/// enough that it is rarely written, near enough that the device's used index
/// (at most a queue size ahead of ours) can never reach it.
const USED_EVENT_REFRESH: u16 = 0x4000;

/// The driver's private record of one descriptor, kept together so placing
/// and freeing a chain touch one array.
#[derive(Clone, Copy, Debug, Default)]
struct Shadow {
    /// The descriptor's `next`: links the free list, and inside a posted
    /// chain its links, so freeing needs no read of device memory.
    next: u16,
    /// When the descriptor heads a chain: descriptors it holds (0 = not in
    /// flight) and its last one.
    chain_len: u16,
    chain_tail: u16,
    /// Indexed by ring position rather than descriptor: the head last
    /// written to `avail.ring` there, or [`NO_AVAIL_HEAD`].
    avail_head: u16,
}

/// No head is a valid descriptor index this large (queues hold at most
/// 32 768), so the first pass over the avail ring writes every entry.
const NO_AVAIL_HEAD: u16 = u16::MAX;

/// The driver side of one split virtqueue.
pub(crate) struct SplitRing<H: Hal> {
    // Views into `memory`, declared before it so they are dropped first.
    desc: SharedArray<SplitDesc>,
    /// `avail.flags`, `avail.idx`, `avail.ring[size]`, `used_event`.
    avail: SharedArray<AtomicU16>,
    /// `used.flags`, `used.idx` (the first 4 bytes of the used ring).
    used_header: SharedArray<AtomicU16>,
    used_ring: SharedArray<UsedElem>,
    /// The fields read or written on every batch, reached without an index
    /// check: `avail.idx`, `used_event`, `used.idx`, and `avail_event`
    /// (after the used ring).
    avail_idx_cell: SharedCell<AtomicU16>,
    used_event_cell: SharedCell<AtomicU16>,
    used_idx_cell: SharedCell<AtomicU16>,
    avail_event_cell: SharedCell<AtomicU16>,
    indirect: Option<IndirectTables<H, SplitDesc>>,
    memory: DmaRegion<H>,
    layout: SplitLayout,
    mask: u16,
    event_idx: bool,
    /// VIRTIO_F_ORDER_PLATFORM: the device is hardware (see `barrier`).
    platform: bool,

    /// Head of the free descriptor list and its length.
    free_head: u16,
    num_free: u16,
    /// Per descriptor, what the driver wrote there or keeps about it (see
    /// [`Shadow`]): never read back from device memory.
    shadow: Vec<Shadow>,
    in_flight: u16,

    /// Our `avail.idx`; the value last published; ours `last_used_idx`.
    avail_idx: u16,
    published_idx: u16,
    /// `avail.idx` at the last doorbell decision (`commit`), and how many
    /// entries were published since (saturating): the range the device's
    /// `avail_event` is judged against.
    decided_idx: u16,
    undecided: u32,
    last_used: u16,
    /// Last `used.idx` read from the device, so a burst is read with one load.
    device_used_idx: u16,
    /// Used elements consumed since the ring was set up (see `Used::seq`).
    consumed: u64,
    notifications: UsedNotifications,
    /// Value last written to `used_event`.
    used_event: u16,
}

impl<H: Hal> SplitRing<H> {
    /// A ring of `size` entries (a power of two up to 32768). `indirect` says
    /// how INDIRECT_DESC is used, when it is.
    pub(crate) fn new(
        hal: &H,
        size: u16,
        event_idx: bool,
        indirect: Option<IndirectUse>,
    ) -> Result<Self, Error> {
        if size == 0 || !size.is_power_of_two() || size > MAX_SPLIT_QUEUE_SIZE {
            return Err(Error::BadQueueSize(size));
        }
        let layout = SplitLayout::new(size);
        let memory = DmaRegion::new(hal, layout.total).ok_or(Error::OutOfDmaMemory)?;
        let n = usize::from(size);
        // SAFETY: SplitLayout places each part at an offset aligned for its type
        // inside `layout.total` bytes; all types are atomics valid when zeroed;
        // the views are fields declared before `memory`.
        let (desc, avail, used_header, used_ring, avail_event) = unsafe {
            (
                SharedArray::new(&memory, layout.desc, n),
                SharedArray::new(&memory, layout.avail, n + 3),
                SharedArray::new(&memory, layout.used, 2),
                SharedArray::new(&memory, layout.used + 4, n),
                SharedArray::new(&memory, layout.used + 4 + 8 * n, 1),
            )
        };
        // SAFETY: cells of the views above, fields declared before `memory`
        // like them.
        let (avail_idx_cell, used_event_cell, used_idx_cell, avail_event_cell) = unsafe {
            (
                avail.cell(1),
                avail.cell(2 + n),
                used_header.cell(1),
                avail_event.cell(0),
            )
        };
        let indirect = match indirect {
            Some(use_) => Some(IndirectTables::new(hal, size, use_).ok_or(Error::OutOfDmaMemory)?),
            None => None,
        };
        // Free list 0 -> 1 -> ... -> size-1; the last link is never followed.
        let shadow = (1..=size)
            .map(|next| Shadow {
                next,
                avail_head: NO_AVAIL_HEAD,
                ..Shadow::default()
            })
            .collect::<Vec<_>>();
        Ok(SplitRing {
            desc,
            avail,
            used_header,
            used_ring,
            avail_idx_cell,
            used_event_cell,
            used_idx_cell,
            avail_event_cell,
            indirect,
            memory,
            layout,
            mask: size - 1,
            event_idx,
            platform: false,
            free_head: 0,
            num_free: size,
            shadow,
            in_flight: 0,
            avail_idx: 0,
            published_idx: 0,
            decided_idx: 0,
            undecided: 0,
            last_used: 0,
            device_used_idx: 0,
            consumed: 0,
            notifications: UsedNotifications::On,
            used_event: 0,
        })
    }

    pub(crate) fn addresses(&self) -> QueueAddresses {
        let base = self.memory.paddr();
        QueueAddresses {
            desc: base + self.layout.desc as u64,
            driver: base + self.layout.avail as u64,
            device: base + self.layout.used as u64,
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

    fn avail_flags(&self) -> &AtomicU16 {
        self.avail.get(0)
    }

    fn avail_idx_field(&self) -> &AtomicU16 {
        self.avail_idx_cell.get()
    }

    #[cfg(test)]
    fn avail_entry(&self, idx: u16) -> &AtomicU16 {
        self.avail_slot(usize::from(idx & self.mask))
    }

    /// Available ring entry `position` (already reduced by `mask`).
    fn avail_slot(&self, position: usize) -> &AtomicU16 {
        self.avail.get(2 + position)
    }

    fn used_event_field(&self) -> &AtomicU16 {
        self.used_event_cell.get()
    }

    /// Descriptors a chain of `segments` takes now, if it can be placed.
    #[inline]
    fn descriptors_needed(&self, segments: usize) -> Option<usize> {
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
        let slots = self.descriptors_needed(segments)?;
        Some(Placement {
            id: self.free_head,
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

    /// Writes `chain` at `at`, which [`Self::reserve`] returned for it with
    /// nothing placed in between; the device cannot see it before `publish`.
    #[inline(always)]
    pub(crate) fn add_at(&mut self, at: Placement, chain: &[Segment]) {
        let head = at.id;
        debug_assert_eq!(Some(at), self.reserve(chain.len()));
        let tail = if at.slots == 1 && chain.len() > 1 {
            self.write_indirect(head, chain);
            head
        } else {
            self.write_direct(head, chain)
        };
        self.free_head = self.shadow[usize::from(tail)].next;
        self.num_free -= at.slots;
        let record = &mut self.shadow[usize::from(head)];
        record.chain_len = at.slots;
        record.chain_tail = tail;
        self.in_flight += 1;
        // The device cannot see this entry before `publish` stores avail.idx.
        // In-order completion reuses the same head at the same position on
        // every lap; skipping the unchanged store leaves the line clean in the
        // device's cache, which saves it a transfer per request. The device
        // never writes the avail ring, so our record of it stays true.
        // The position is worked out once: reloaded after the store above,
        // `avail_idx` and `mask` cost two loads and an AND more per request.
        let position = usize::from(self.avail_idx & self.mask);
        let record = &mut self.shadow[position];
        if record.avail_head != head {
            record.avail_head = head;
            self.avail_slot(position)
                .store(head.to_le(), Ordering::Relaxed);
        }
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Writes `chain` into free descriptors starting at `head`, following the
    /// free list; returns the last one it took.
    #[inline(always)]
    fn write_direct(&mut self, head: u16, chain: &[Segment]) -> u16 {
        // One view for the whole chain: its base and length stay in registers.
        let descs = self.desc.as_slice();
        let mut index = head;
        let mut tail = head;
        for (position, segment) in chain.iter().enumerate() {
            let last = position + 1 == chain.len();
            let next = self.shadow[usize::from(index)].next;
            let mut flags = SplitDescFlags::empty();
            if segment.device_writable {
                flags |= SplitDescFlags::WRITE;
            }
            if !last {
                flags |= SplitDescFlags::NEXT;
            }
            store_desc(
                &descs[usize::from(index)],
                segment,
                flags,
                if last { 0 } else { next },
            );
            tail = index;
            index = next;
        }
        tail
    }

    /// Writes `chain` into `head`'s indirect table and `head` to point at it.
    #[inline(always)]
    fn write_indirect(&mut self, head: u16, chain: &[Segment]) {
        let Some(tables) = &self.indirect else {
            unreachable!("descriptors_needed said indirect")
        };
        // One check that the chain fits the table, none per entry.
        let (table, table_addr) = tables.entries(head, chain.len());
        for (position, (entry, segment)) in table.iter().zip(chain).enumerate() {
            let last = position + 1 == chain.len();
            let mut flags = SplitDescFlags::empty();
            if segment.device_writable {
                flags |= SplitDescFlags::WRITE;
            }
            if !last {
                flags |= SplitDescFlags::NEXT;
            }
            let next = if last { 0 } else { position as u16 + 1 };
            store_desc(entry, segment, flags, next);
        }
        let table_segment = Segment {
            addr: table_addr,
            len: (chain.len() * 16) as u32,
            device_writable: false,
        };
        store_desc(
            self.desc.get(usize::from(head)),
            &table_segment,
            SplitDescFlags::INDIRECT,
            0,
        );
    }

    /// Hands the chains added since the last publish to the device, without
    /// a doorbell decision (`commit` takes that for everything published
    /// since the last one).
    #[inline]
    pub(crate) fn publish(&mut self) {
        if self.avail_idx == self.published_idx {
            return;
        }
        // Rule 1: the ring entries and descriptors above are written before
        // avail.idx hands them over; Release orders them (and, for a
        // hardware device, the platform's write barrier).
        barrier::before_publish(self.platform);
        self.avail_idx_field()
            .store(self.avail_idx.to_le(), Ordering::Release);
        let added = self.avail_idx.wrapping_sub(self.published_idx);
        self.undecided = self.undecided.saturating_add(u32::from(added));
        self.published_idx = self.avail_idx;
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
        if self.undecided == 0 {
            return None;
        }
        // Rule 2: the index store must be visible before we read the device's
        // suppression state, or both sides can decide the other is awake.
        barrier::full(self.platform);
        let old = self.decided_idx;
        // need_event's u16 window cannot tell a range of a whole index lap
        // from an empty one; an extra doorbell is always allowed (§2.9).
        let beyond_window = self.undecided > u32::from(u16::MAX);
        self.decided_idx = self.published_idx;
        self.undecided = 0;
        Some(if self.event_idx {
            let event = u16::from_le(self.avail_event_cell.get().load(Ordering::Relaxed));
            beyond_window || need_event(event, self.published_idx, old)
        } else {
            let flags = u16::from_le(self.used_header.get(0).load(Ordering::Relaxed));
            flags & VIRTQ_USED_F_NO_NOTIFY == 0
        })
    }

    /// Whether the device, as its suppression state reads now, waits for a
    /// doorbell about chains already published: the one state in which a
    /// doorbell can have been lost. A device that suppressed doorbells (busy
    /// or polling) looks at the ring again before it waits.
    #[cold]
    pub(crate) fn device_awaits_kick(&self) -> bool {
        let unpublished = self.avail_idx.wrapping_sub(self.published_idx);
        let published_in_flight = self.in_flight - unpublished;
        if published_in_flight == 0 {
            return false;
        }
        // A heuristic after many empty polls, never a publish decision: a
        // stale value only delays the next look, so no fence.
        if self.event_idx {
            let event = u16::from_le(self.avail_event_cell.get().load(Ordering::Relaxed));
            // The device takes chains in order, so those still in flight sit
            // in the last `published_in_flight` entries: an event among them
            // is a device waiting for one of them.
            self.published_idx.wrapping_sub(event).wrapping_sub(1) < published_in_flight
        } else {
            let flags = u16::from_le(self.used_header.get(0).load(Ordering::Relaxed));
            flags & VIRTQ_USED_F_NO_NOTIFY == 0
        }
    }

    #[inline]
    pub(crate) fn pop_used(&mut self) -> Result<Option<Used>, DeviceFault> {
        if self.last_used == self.device_used_idx {
            // Rule 3: Acquire on used.idx before reading the elements it covers.
            let mut published = self.load_used_idx();
            if published == self.last_used && self.follow_used_event() {
                // Rule 4: used_event moved; look again after the fence.
                published = self.load_used_idx();
            }
            if published == self.last_used {
                return Ok(None);
            }
            barrier::after_consume(self.platform);
            // Only published chains are the device's to complete.
            let unpublished = self.avail_idx.wrapping_sub(self.published_idx);
            if published.wrapping_sub(self.last_used) > self.in_flight - unpublished {
                return Err(DeviceFault::UsedIndexJump {
                    last: self.last_used,
                    published,
                });
            }
            self.device_used_idx = published;
        }
        let element = self.used_ring.get(usize::from(self.last_used & self.mask));
        let id = u32::from_le(element.id.load(Ordering::Relaxed));
        let len = u32::from_le(element.len.load(Ordering::Relaxed));
        if id >= u32::from(self.layout.size) {
            return Err(DeviceFault::IdOutOfRange(id));
        }
        let head = id as u16;
        let record = &mut self.shadow[usize::from(head)];
        let descriptors = record.chain_len;
        if descriptors == 0 {
            return Err(DeviceFault::IdNotInFlight(head));
        }
        record.chain_len = 0;
        let tail = record.chain_tail;
        self.shadow[usize::from(tail)].next = self.free_head;
        self.free_head = head;
        self.num_free += descriptors;
        self.in_flight -= 1;
        self.last_used = self.last_used.wrapping_add(1);
        let seq = self.consumed;
        self.consumed += 1;
        if self.event_idx
            && self.notifications == UsedNotifications::Off
            && self.last_used.wrapping_sub(self.used_event) > USED_EVENT_REFRESH
        {
            self.park_used_event();
        }
        Ok(Some(Used { id: head, len, seq }))
    }

    /// `used.idx`. Acquire pairs with the device's Release of it (rule 3):
    /// the elements it covers were written before this load.
    #[inline]
    fn load_used_idx(&self) -> u16 {
        u16::from_le(self.used_idx_cell.get().load(Ordering::Acquire))
    }

    /// With notifications on and EVENT_IDX, moves `used_event` to what we
    /// have consumed, so the device notifies at the next completion after
    /// the ones we took (VIRTIO 1.2 §2.7.7.2): a queue drained from its
    /// interrupt handler stays armed without calling `arm_and_check`. True
    /// when it moved it and fenced; the caller must then re-check used.idx.
    #[inline]
    fn follow_used_event(&mut self) -> bool {
        if !self.event_idx
            || self.notifications == UsedNotifications::Off
            || self.used_event == self.last_used
        {
            return false;
        }
        self.used_event = self.last_used;
        self.used_event_field()
            .store(self.used_event.to_le(), Ordering::Relaxed);
        // Rule 4: the new used_event is visible before we look at used.idx
        // again; pairs with the device's fence between publishing used.idx
        // and reading used_event. Either it sees the new event, or we see
        // its completion.
        barrier::full(self.platform);
        true
    }

    #[inline]
    pub(crate) fn used_horizon(&self) -> Option<u64> {
        let published = self.load_used_idx();
        // Not clamped to what is in flight: elements beyond it are exactly
        // the ones no request of the new batch may take (poll also reports
        // the jump).
        let visible = published.wrapping_sub(self.last_used);
        (visible > 0).then(|| self.consumed + u64::from(visible))
    }

    #[inline]
    pub(crate) fn has_used(&self) -> bool {
        self.last_used != self.device_used_idx || self.load_used_idx() != self.last_used
    }

    /// Puts `used_event` just behind our position: the device would have to
    /// complete 65535 more buffers to cross it.
    fn park_used_event(&mut self) {
        self.used_event = self.last_used.wrapping_sub(1);
        self.used_event_field()
            .store(self.used_event.to_le(), Ordering::Relaxed);
    }

    pub(crate) fn set_used_notifications(&mut self, mode: UsedNotifications) {
        self.notifications = mode;
        match (mode, self.event_idx) {
            // With EVENT_IDX the device ignores avail.flags (§2.7.7); used_event rules.
            (UsedNotifications::Off, true) => self.park_used_event(),
            (UsedNotifications::Off, false) => self
                .avail_flags()
                .store(VIRTQ_AVAIL_F_NO_INTERRUPT.to_le(), Ordering::Relaxed),
            (UsedNotifications::On, _) => {
                self.arm_and_check();
            }
        }
    }

    /// Rule 4: ask for a notification at the next used element, fence, and
    /// report whether one is already there.
    pub(crate) fn arm_and_check(&mut self) -> bool {
        self.notifications = UsedNotifications::On;
        if self.event_idx {
            self.used_event = self.last_used;
            self.used_event_field()
                .store(self.used_event.to_le(), Ordering::Relaxed);
        } else {
            self.avail_flags().store(0, Ordering::Relaxed);
        }
        // The re-arm store must be visible before we look at used.idx again,
        // pairing with the device's fence between used.idx and reading used_event.
        barrier::full(self.platform);
        self.has_used()
    }
}

/// Diagnostics (see [`crate::snapshot`]): read-only, never on the I/O path.
impl<H: Hal> SplitRing<H> {
    pub(crate) fn snapshot(&self) -> crate::snapshot::SplitSnapshot {
        crate::snapshot::SplitSnapshot {
            size: self.layout.size,
            in_flight: self.in_flight,
            avail_idx: self.avail_idx,
            published_idx: self.published_idx,
            last_used: self.last_used,
            avail_flags: u16::from_le(self.avail_flags().load(Ordering::Relaxed)),
            shared_avail_idx: u16::from_le(self.avail_idx_field().load(Ordering::Relaxed)),
            used_event: u16::from_le(self.used_event_field().load(Ordering::Relaxed)),
            // Acquire: read the device's fields as they are now.
            used_flags: u16::from_le(self.used_header.get(0).load(Ordering::Acquire)),
            used_idx: u16::from_le(self.used_header.get(1).load(Ordering::Acquire)),
            avail_event: u16::from_le(self.avail_event_cell.get().load(Ordering::Acquire)),
            event_idx: self.event_idx,
        }
    }
}

/// The ring's shared memory as the model checker's device thread sees it.
#[cfg(all(test, loom))]
pub(crate) struct SplitMemory {
    pub(crate) desc: alloc::sync::Arc<[SplitDesc]>,
    /// `flags`, `idx`, `ring[size]`, `used_event`.
    pub(crate) avail: alloc::sync::Arc<[AtomicU16]>,
    /// `flags`, `idx`.
    pub(crate) used_header: alloc::sync::Arc<[AtomicU16]>,
    pub(crate) used_ring: alloc::sync::Arc<[UsedElem]>,
    pub(crate) avail_event: alloc::sync::Arc<[AtomicU16]>,
}

#[cfg(all(test, loom))]
impl<H: Hal> SplitRing<H> {
    pub(crate) fn model_memory(&self) -> SplitMemory {
        SplitMemory {
            desc: self.desc.share(),
            avail: self.avail.share(),
            used_header: self.used_header.share(),
            used_ring: self.used_ring.share(),
            avail_event: self.avail_event_cell.share(),
        }
    }

    /// Puts every index, ours and the shared ones, at `index`, as if that
    /// many buffers had gone through the ring already (to model the u16
    /// wrap without 65535 requests). The device starts at `index` too and
    /// asks for a kick there. Call before anything else touches the ring.
    pub(crate) fn model_start_at(&mut self, index: u16) {
        self.avail_idx = index;
        self.published_idx = index;
        self.decided_idx = index;
        self.last_used = index;
        self.device_used_idx = index;
        self.used_event = index;
        self.avail_idx_field()
            .store(index.to_le(), Ordering::Relaxed);
        self.used_header
            .get(1)
            .store(index.to_le(), Ordering::Relaxed);
        self.used_event_field()
            .store(index.to_le(), Ordering::Relaxed);
        self.avail_event_cell
            .get()
            .store(index.to_le(), Ordering::Relaxed);
    }
}

/// Fills one descriptor; ordering is provided by the later publish.
#[inline]
fn store_desc(desc: &SplitDesc, segment: &Segment, flags: SplitDescFlags, next: u16) {
    desc.addr.store(segment.addr.to_le(), Ordering::Relaxed);
    desc.len.store(segment.len.to_le(), Ordering::Relaxed);
    desc.flags.store(flags.bits().to_le(), Ordering::Relaxed);
    desc.next.store(next.to_le(), Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::test_hal::TestHal;

    fn segment(device_writable: bool) -> Segment {
        Segment {
            addr: 0x2000,
            len: 512,
            device_writable,
        }
    }

    #[test]
    fn split_direct_chain_follows_the_free_list_and_frees_back() {
        let mut r = SplitRing::new(&TestHal, 4, false, None).expect("ring");
        let chain = [segment(false), segment(true), segment(true)];
        assert_eq!(r.next_id(3), Some(0));
        assert_eq!(r.add(&chain), 0);
        assert_eq!(r.next_id(3), None, "one descriptor left");
        assert_eq!(r.next_id(1), Some(3));
        let d = |i: usize| r.desc.get(i);
        assert_eq!(u16::from_le(d(0).next.load(Ordering::Relaxed)), 1);
        assert_eq!(u16::from_le(d(1).next.load(Ordering::Relaxed)), 2);
        let last =
            SplitDescFlags::from_bits_retain(u16::from_le(d(2).flags.load(Ordering::Relaxed)));
        assert_eq!(last, SplitDescFlags::WRITE);
        assert!(r.commit(), "used.flags is 0: the device wants a kick");
        // Play device: use head 0.
        r.used_ring.get(0).id.store(0, Ordering::Relaxed);
        r.used_ring
            .get(0)
            .len
            .store(1u32.to_le(), Ordering::Relaxed);
        r.used_header.get(1).store(1u16.to_le(), Ordering::Release);
        assert_eq!(
            r.pop_used(),
            Ok(Some(Used {
                id: 0,
                len: 1,
                seq: 0
            }))
        );
        assert_eq!(r.pop_used(), Ok(None));
        assert_eq!(r.num_free, 4);
        // The freed chain is reused first.
        assert_eq!(r.next_id(3), Some(0));
    }

    #[test]
    fn split_device_awaits_a_kick_only_for_published_chains_in_flight() {
        let mut r = SplitRing::new(&TestHal, 8, true, None).expect("ring");
        // Three chains published across the u16 wrap of avail.idx.
        r.avail_idx = 65534;
        r.published_idx = 65534;
        r.decided_idx = 65534;
        r.last_used = 65534;
        let set = |r: &SplitRing<TestHal>, event: u16| {
            r.avail_event_cell
                .get()
                .store(event.to_le(), Ordering::Relaxed);
        };
        set(&r, 65534);
        assert!(!r.device_awaits_kick(), "nothing in flight");
        for _ in 0..3 {
            r.add(&[segment(false), segment(true)]);
        }
        r.commit();
        for (event, waits) in [
            (65533, false),
            (65534, true),
            (65535, true),
            (0, true),
            (1, false),
        ] {
            set(&r, event);
            assert_eq!(r.device_awaits_kick(), waits, "avail_event {event}");
        }
        // A chain placed and not published changes nothing.
        r.add(&[segment(false), segment(true)]);
        set(&r, 1);
        assert!(
            !r.device_awaits_kick(),
            "the device has everything published"
        );

        let mut r = SplitRing::new(&TestHal, 8, false, None).expect("ring");
        r.add(&[segment(false), segment(true)]);
        r.commit();
        assert!(r.device_awaits_kick(), "used.flags 0: doorbells wanted");
        r.used_header
            .get(0)
            .store(VIRTQ_USED_F_NO_NOTIFY.to_le(), Ordering::Relaxed);
        assert!(!r.device_awaits_kick(), "NO_NOTIFY: busy, not waiting");
    }

    #[test]
    fn split_used_id_checks() {
        let mut r = SplitRing::new(&TestHal, 4, false, None).expect("ring");
        r.add(&[segment(false), segment(true)]);
        r.commit();
        r.used_ring.get(0).id.store(9u32.to_le(), Ordering::Relaxed);
        r.used_header.get(1).store(1u16.to_le(), Ordering::Release);
        assert_eq!(r.pop_used(), Err(DeviceFault::IdOutOfRange(9)));

        let mut r = SplitRing::new(&TestHal, 4, false, None).expect("ring");
        r.add(&[segment(false), segment(true)]);
        r.commit();
        r.used_ring.get(0).id.store(2u32.to_le(), Ordering::Relaxed);
        r.used_header.get(1).store(1u16.to_le(), Ordering::Release);
        assert_eq!(r.pop_used(), Err(DeviceFault::IdNotInFlight(2)));

        let mut r = SplitRing::new(&TestHal, 4, false, None).expect("ring");
        r.add(&[segment(false), segment(true)]);
        r.commit();
        r.used_header.get(1).store(3u16.to_le(), Ordering::Release);
        assert_eq!(
            r.pop_used(),
            Err(DeviceFault::UsedIndexJump {
                last: 0,
                published: 3
            })
        );
    }

    #[test]
    fn split_avail_entries_name_each_lap_s_heads_whatever_the_completion_order() {
        // Size 4, two-descriptor chains: completing in reverse order moves a
        // head to another ring position on the next lap, in order keeps it.
        let mut r = SplitRing::new(&TestHal, 4, false, None).expect("ring");
        let chain = [segment(false), segment(true)];
        let mut used_idx = 0u16;
        let mut complete = |r: &mut SplitRing<TestHal>, id: u16| {
            let element = r.used_ring.get(usize::from(used_idx & 3));
            element.id.store(u32::from(id).to_le(), Ordering::Relaxed);
            used_idx = used_idx.wrapping_add(1);
            r.used_header
                .get(1)
                .store(used_idx.to_le(), Ordering::Release);
            assert_eq!(r.pop_used().map(|used| used.map(|u| u.id)), Ok(Some(id)));
        };
        let mut seen = std::collections::BTreeSet::new();
        for lap in 0u16..8 {
            let first = r.add(&chain);
            let second = r.add(&chain);
            r.commit();
            for (offset, head) in [(0, first), (1, second)] {
                let entry = r.avail_entry(2 * lap + offset).load(Ordering::Relaxed);
                assert_eq!(u16::from_le(entry), head, "lap {lap}, entry {offset}");
                seen.insert((usize::from((2 * lap + offset) & 3), head));
            }
            if lap % 3 == 0 {
                complete(&mut r, second);
                complete(&mut r, first);
            } else {
                complete(&mut r, first);
                complete(&mut r, second);
            }
        }
        assert!(
            seen.len() > 4,
            "some position must have held two different heads: {seen:?}"
        );
    }

    #[test]
    fn split_commit_decides_over_every_piece_published_since_the_last() {
        let mut r = SplitRing::new(&TestHal, 8, true, None).expect("ring");
        let chain = [segment(false), segment(true)];
        r.add(&chain);
        r.publish();
        r.add(&chain);
        r.publish();
        let set_event = |r: &SplitRing<TestHal>, event: u16| {
            r.avail_event_cell
                .get()
                .store(event.to_le(), Ordering::Relaxed);
        };
        // The device asked to hear of entry 0, in the first piece.
        set_event(&r, 0);
        assert_eq!(r.decide(), Some(true));
        assert_eq!(r.decide(), None, "nothing published since");
        // A whole index lap since the last decision (a caller that never
        // commits): need_event's u16 window cannot place the event, so ring
        // anyway, even for an event at the published end.
        r.undecided = u32::from(u16::MAX) + 1;
        set_event(&r, r.published_idx);
        assert_eq!(r.decide(), Some(true));
    }

    #[test]
    fn split_used_index_may_not_cover_unpublished_chains() {
        let mut r = SplitRing::new(&TestHal, 4, false, None).expect("ring");
        r.add(&[segment(false), segment(true)]);
        r.commit();
        r.add(&[segment(false), segment(true)]);
        // Two chains in flight, but only one was ever published.
        r.used_ring.get(0).id.store(0, Ordering::Relaxed);
        r.used_ring.get(1).id.store(2u32.to_le(), Ordering::Relaxed);
        r.used_header.get(1).store(2u16.to_le(), Ordering::Release);
        assert_eq!(
            r.pop_used(),
            Err(DeviceFault::UsedIndexJump {
                last: 0,
                published: 2
            })
        );
    }

    #[test]
    fn split_event_idx_kick_across_u16_wrap() {
        let indirect = IndirectUse {
            per_table: 4,
            max_in_flight: Some(8),
        };
        let mut r = SplitRing::new(&TestHal, 8, true, Some(indirect)).expect("ring");
        // Pretend 65529 buffers went through; the device asked for 65530.
        r.avail_idx = 65529;
        r.published_idx = 65529;
        r.decided_idx = 65529;
        r.last_used = 65529;
        r.device_used_idx = 65529;
        r.avail_event_cell
            .get()
            .store(65530u16.to_le(), Ordering::Relaxed);
        for _ in 0..8 {
            r.add(&[segment(false), segment(true)]);
        }
        assert_eq!(r.avail_idx, 1);
        assert!(r.commit(), "old 65529, new 1, event 65530 must notify");
        assert_eq!(u16::from_le(r.avail_idx_field().load(Ordering::Relaxed)), 1);
    }
}
