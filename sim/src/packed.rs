//! Device side of a packed virtqueue (VIRTIO 1.2 §2.8).
//!
//! Parallel to `split.rs`. Positions are `(index, wrap counter)` pairs; both
//! wrap counters start at 1 (§2.8.1). Used descriptors are written at the
//! device's own next used position in completion order, each advancing that
//! position by the number of descriptors in its chain (§2.8.6), so with
//! out-of-order completion a used descriptor can land on a slot that held a
//! different chain.

use core::sync::atomic::{fence, Ordering};

use virtio_blk_mq::spec::{packed_event, PackedDesc, PackedDescFlags};

use crate::hostile::used_bits;
use crate::mem::{GuestRange, MemCheck, PackedAreas};
use crate::request::{RawSeg, Segs};
use crate::ring::{ChainRing, Next, Popped};

/// The device's view of one packed ring.
pub(crate) struct PackedRing {
    areas: PackedAreas,
    size: u16,
    event_idx: bool,
    indirect: bool,
    /// Next descriptor to read and the wrap counter it must be marked with.
    next_avail: u16,
    avail_wrap: bool,
    /// Next slot to write a used descriptor to, and the device ring wrap counter.
    next_used: u16,
    used_wrap: bool,
    /// Ring slots taken by chains that are not yet used.
    in_flight: u32,
    /// Used position when the last batch was published.
    published: (u16, bool),
    /// Slots advanced since then.
    unpublished: u32,
    /// The device event suppression word last written, so a polling device
    /// does not rewrite the driver's cache line on every round.
    event_written: Option<u32>,
}

/// Flags of a used descriptor written in the lap of wrap counter `wrap`
/// (§2.8.1: AVAIL = USED = wrap), with WRITE when `len` bytes were written
/// (§2.8.3: then `len` is valid).
pub(crate) fn used_flags(wrap: bool, len: u32) -> u16 {
    let mut flags = used_bits(wrap);
    if len > 0 {
        flags |= PackedDescFlags::WRITE.bits();
    }
    flags
}

/// True when `flags` mark a descriptor available in the lap of wrap counter `wrap` (§2.8.1).
#[inline]
fn is_avail(flags: PackedDescFlags, wrap: bool) -> bool {
    // AVAIL == wrap and USED != wrap: of the two bits, exactly the one the
    // lap says.
    let expected = if wrap {
        PackedDescFlags::AVAIL
    } else {
        PackedDescFlags::USED
    };
    flags.intersection(PackedDescFlags::AVAIL | PackedDescFlags::USED) == expected
}

impl PackedRing {
    pub(crate) fn new(
        areas: PackedAreas,
        size: u16,
        event_idx: bool,
        indirect: bool,
    ) -> PackedRing {
        PackedRing {
            areas,
            size,
            event_idx,
            indirect,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            in_flight: 0,
            published: (0, true),
            unpublished: 0,
            event_written: None,
        }
    }

    /// Swaps in re-checked areas (after some DMA memory was freed).
    pub(crate) fn replace_areas(&mut self, areas: PackedAreas) {
        self.areas = areas;
    }

    fn head_flags(&self) -> PackedDescFlags {
        // Acquire pairs with the driver's Release store of the head's flags:
        // the rest of the chain is visible once the head is.
        PackedDescFlags::from_bits_retain(u16::from_le(
            self.areas
                .desc(self.next_avail)
                .flags
                .load(Ordering::Acquire),
        ))
    }

    /// True when the descriptor at the device's next position is available.
    #[inline]
    pub(crate) fn has_available(&self) -> bool {
        is_avail(self.head_flags(), self.avail_wrap)
    }

    /// Takes the next available chain (§2.8.21 from the device's side), its
    /// buffers appended to `out`. `Err` is a fault that leaves the ring unusable.
    #[inline(always)]
    pub(crate) fn pop(
        &mut self,
        mem: &mut MemCheck,
        out: &mut Segs,
    ) -> Result<Option<Popped>, String> {
        let head = self.head_flags();
        if !is_avail(head, self.avail_wrap) {
            return Ok(None);
        }
        let (mut pos, mut wrap) = (self.next_avail, self.avail_wrap);
        let mut count: u16 = 0;
        let mut fault = None;
        let id = loop {
            let d = self.areas.desc(pos);
            let flags = if count == 0 {
                head
            } else {
                // Ordered after the head's Acquire load above.
                PackedDescFlags::from_bits_retain(u16::from_le(d.flags.load(Ordering::Relaxed)))
            };
            if !is_avail(flags, wrap) {
                return Err(format!(
                    "descriptor {pos} continues a chain but is not marked available for wrap counter {}",
                    u8::from(wrap)
                ));
            }
            count += 1;
            let addr = u64::from_le(d.addr.load(Ordering::Relaxed));
            let len = u32::from_le(d.len.load(Ordering::Relaxed));
            let id = u16::from_le(d.id.load(Ordering::Relaxed));
            pos += 1;
            if pos == self.size {
                pos = 0;
                wrap = !wrap;
            }
            if flags.contains(PackedDescFlags::INDIRECT) {
                // Still read the table on a violation, so the status byte can report it.
                let table = walk_indirect(mem, addr, len, out).err();
                let err = if !self.indirect {
                    Some(
                        "INDIRECT descriptor without negotiated INDIRECT_DESC (§2.8.7)".to_string(),
                    )
                } else if count > 1 || flags.contains(PackedDescFlags::NEXT) {
                    Some("INDIRECT descriptor inside a NEXT-linked list (§2.8.7)".to_string())
                } else {
                    table
                };
                if fault.is_none() {
                    fault = err;
                }
            } else {
                out.push(RawSeg {
                    addr,
                    len,
                    write: flags.contains(PackedDescFlags::WRITE),
                });
            }
            if !flags.contains(PackedDescFlags::NEXT) {
                break id;
            }
            if count == self.size {
                return Err(format!(
                    "chain at descriptor {} is longer than the queue size",
                    self.next_avail
                ));
            }
        };
        if self.in_flight + u32::from(count) > u32::from(self.size) {
            return Err(format!(
                "a chain of {count} descriptors was made available while {} of {} slots are in flight",
                self.in_flight, self.size
            ));
        }
        self.in_flight += u32::from(count);
        self.next_avail = pos;
        self.avail_wrap = wrap;
        Ok(Some(Popped {
            id,
            skip: count,
            fault,
        }))
    }

    /// [`ChainRing::take_three`]: the next chain, if it is three plain
    /// descriptors inside this lap or one indirect descriptor whose table
    /// holds three.
    #[inline(always)]
    pub(crate) fn take_three(&mut self, mem: &mut MemCheck) -> Next {
        let descs = self.areas.descs();
        let pos = self.next_avail;
        let Some(d0) = descs.get(usize::from(pos)) else {
            return Next::Other;
        };
        // Acquire: as in `head_flags`.
        let head =
            PackedDescFlags::from_bits_retain(u16::from_le(d0.flags.load(Ordering::Acquire)));
        if !is_avail(head, self.avail_wrap) {
            return Next::Empty;
        }
        // The two flags that decide the walk: NEXT (go on) and INDIRECT.
        let walk = PackedDescFlags::NEXT | PackedDescFlags::INDIRECT;
        let seg = |d: &PackedDesc, flags: PackedDescFlags| RawSeg {
            addr: u64::from_le(d.addr.load(Ordering::Relaxed)),
            len: u32::from_le(d.len.load(Ordering::Relaxed)),
            write: flags.contains(PackedDescFlags::WRITE),
        };
        let (id, count, segs) = if head.intersection(walk) == PackedDescFlags::INDIRECT {
            if !self.indirect {
                return Next::Other;
            }
            let addr = u64::from_le(d0.addr.load(Ordering::Relaxed));
            let len = u32::from_le(d0.len.load(Ordering::Relaxed));
            let Some(segs) = three_indirect(mem, addr, len) else {
                return Next::Other;
            };
            (u16::from_le(d0.id.load(Ordering::Relaxed)), 1, segs)
        } else {
            // Three slots inside this lap: the wrap counter stays the same
            // for all of them (a chain across the lap's end goes to `pop`).
            let start = usize::from(pos);
            let Some([_, d1, d2]) = descs.get(start..start + 3) else {
                return Next::Other;
            };
            if head.intersection(walk) != PackedDescFlags::NEXT {
                return Next::Other;
            }
            // Ordered after the head's Acquire load in `head_flags`.
            let f1 =
                PackedDescFlags::from_bits_retain(u16::from_le(d1.flags.load(Ordering::Relaxed)));
            let f2 =
                PackedDescFlags::from_bits_retain(u16::from_le(d2.flags.load(Ordering::Relaxed)));
            if !is_avail(f1, self.avail_wrap)
                || !is_avail(f2, self.avail_wrap)
                || f1.intersection(walk) != PackedDescFlags::NEXT
                || f2.intersects(walk)
            {
                return Next::Other;
            }
            let segs = [seg(d0, head), seg(d1, f1), seg(d2, f2)];
            (u16::from_le(d2.id.load(Ordering::Relaxed)), 3, segs)
        };
        if self.in_flight + u32::from(count) > u32::from(self.size) {
            return Next::Other;
        }
        self.in_flight += u32::from(count);
        self.next_avail = pos + count;
        if self.next_avail == self.size {
            self.next_avail = 0;
            self.avail_wrap = !self.avail_wrap;
        }
        Next::Three {
            id,
            skip: count,
            segs,
        }
    }

    /// Writes one used descriptor at the next used slot (§2.8.5) and skips the
    /// chain's other slots (§2.8.6).
    #[inline]
    pub(crate) fn push_used(&mut self, id: u16, skip: u16, len: u32) {
        let flags = used_flags(self.used_wrap, len);
        self.push_used_flags(id, skip, len, flags);
    }

    /// The device ring wrap counter at the next used slot.
    pub(crate) fn used_wrap(&self) -> bool {
        self.used_wrap
    }

    /// Writes a used descriptor with the given `flags` at the next used slot
    /// and moves that slot `skip` on: [`Self::push_used`], or a hostile act
    /// that writes flags of its own.
    #[inline]
    pub(crate) fn push_used_flags(&mut self, id: u16, skip: u16, len: u32, flags: u16) {
        let d = self.areas.desc(self.next_used);
        d.id.store(id.to_le(), Ordering::Relaxed);
        d.len.store(len.to_le(), Ordering::Relaxed);
        // Release: id and len are visible before the flags that hand the descriptor back.
        d.flags.store(flags.to_le(), Ordering::Release);
        let next = u32::from(self.next_used) + u32::from(skip);
        if next >= u32::from(self.size) {
            self.next_used = (next - u32::from(self.size)) as u16;
            self.used_wrap = !self.used_wrap;
        } else {
            self.next_used = next as u16;
        }
        self.in_flight = self.in_flight.saturating_sub(u32::from(skip));
        self.unpublished += u32::from(skip);
    }

    /// Ends a batch of used descriptors; true when the driver asked for a
    /// used-buffer notification for them (§2.8.10, §2.8.14).
    pub(crate) fn publish(&mut self) -> bool {
        let (old, old_wrap) = self.published;
        let added = self.unpublished;
        self.published = (self.next_used, self.used_wrap);
        self.unpublished = 0;
        if added == 0 {
            return false;
        }
        // Full fence between the used flags stored above and reading the
        // driver's event suppression area; pairs with the driver's fence
        // between re-enabling notifications and re-checking the ring.
        fence(Ordering::SeqCst);
        let event = self.areas.driver_event();
        // Acquire pairs with the driver's Release store of `flags` (written
        // after `off_wrap`): a DESC seen here comes with its position.
        match u16::from_le(event.flags.load(Ordering::Acquire)) & 3 {
            packed_event::DISABLE => false,
            packed_event::DESC if self.event_idx => {
                let off_wrap = u16::from_le(event.off_wrap.load(Ordering::Relaxed));
                let off = off_wrap & !packed_event::WRAP_BIT;
                let wrap = off_wrap & packed_event::WRAP_BIT != 0;
                self.passes(old, old_wrap, added, off, wrap)
            }
            // ENABLE; DESC without EVENT_IDX and the reserved value 3 count as enabled.
            _ => true,
        }
    }

    /// True when the `added` slots used from position `(old, old_wrap)` include
    /// position `(off, wrap)`. Positions are counted modulo two laps: lap
    /// position = index + size when the wrap counter is 0.
    fn passes(&self, old: u16, old_wrap: bool, added: u32, off: u16, wrap: bool) -> bool {
        let size = u32::from(self.size);
        if added >= size {
            return true;
        }
        if u32::from(off) >= size {
            return false;
        }
        let lin = |idx: u16, w: bool| u32::from(idx) + if w { 0 } else { size };
        let distance = (lin(off, wrap) + 2 * size - lin(old, old_wrap)) % (2 * size);
        distance < added
    }

    /// Asks for a kick for the next available descriptor (§2.8.10): DESC at the
    /// device's next position with EVENT_IDX, else ENABLE. The caller fences.
    pub(crate) fn enable_kicks(&mut self) {
        let word = if self.event_idx {
            let wrap = if self.avail_wrap {
                packed_event::WRAP_BIT
            } else {
                0
            };
            packed_event::word(self.next_avail | wrap, packed_event::DESC)
        } else {
            packed_event::word(0, packed_event::ENABLE)
        };
        self.write_event(word);
    }

    /// Tells the driver not to kick (§2.8.10).
    #[inline(always)]
    pub(crate) fn disable_kicks(&mut self) {
        let word = packed_event::word(0, packed_event::DISABLE);
        if self.event_written != Some(word) {
            self.write_event(word);
        }
    }

    /// Writes the device event suppression structure, unless it already
    /// holds `word`: the driver reads that line on every commit, and a
    /// store of the same value would still take it from the driver's cache.
    fn write_event(&mut self, word: u32) {
        if self.event_written == Some(word) {
            return;
        }
        self.event_written = Some(word);
        // One store: the driver reads the structure as one word too.
        // Relaxed: the caller orders it (a fence before re-checking the ring).
        self.areas
            .device_event()
            .store(word.to_le(), Ordering::Relaxed);
    }
}

impl ChainRing for PackedRing {
    #[inline(always)]
    fn any_available(&mut self) -> bool {
        self.has_available()
    }

    #[inline(always)]
    fn pop(&mut self, mem: &mut MemCheck, out: &mut Segs) -> Result<Option<Popped>, String> {
        PackedRing::pop(self, mem, out)
    }

    #[inline(always)]
    /// The head's flags are both the look at the ring and the chain's
    /// first flags, so there is no look to save: `look` changes nothing.
    fn take_three(&mut self, mem: &mut MemCheck, _look: bool) -> Next {
        PackedRing::take_three(self, mem)
    }

    #[inline]
    fn push_used(&mut self, id: u16, skip: u16, len: u32) {
        PackedRing::push_used(self, id, skip, len)
    }

    #[inline]
    fn publish(&mut self) -> bool {
        PackedRing::publish(self)
    }

    #[inline]
    fn enable_kicks(&mut self) {
        PackedRing::enable_kicks(self)
    }

    #[inline]
    fn disable_kicks(&mut self) {
        PackedRing::disable_kicks(self)
    }
}

/// The three buffers of a packed-format indirect table of `len` bytes at
/// `addr` when [`walk_indirect`] would find exactly three and no fault
/// (WRITE the only flag of each); else `None`.
#[inline(always)]
fn three_indirect(mem: &mut MemCheck, addr: u64, len: u32) -> Option<[RawSeg; 3]> {
    if len != 48 {
        return None;
    }
    let table = mem.range(addr, 48).ok()?;
    Some([
        three_entry(&table, 0)?,
        three_entry(&table, 1)?,
        three_entry(&table, 2)?,
    ])
}

/// Entry `i` of an indirect table, if WRITE is its only flag.
#[inline(always)]
fn three_entry(table: &GuestRange, i: usize) -> Option<RawSeg> {
    let (addr, len, _id, flags) = table.desc16(i)?;
    let flags = PackedDescFlags::from_bits_retain(flags);
    if !(flags - PackedDescFlags::WRITE).is_empty() {
        return None;
    }
    Some(RawSeg {
        addr,
        len,
        write: flags.contains(PackedDescFlags::WRITE),
    })
}

/// Reads a packed-format indirect table of `len` bytes at `addr` (§2.8.7):
/// its descriptors are used in order, WRITE is their only valid flag.
fn walk_indirect(mem: &mut MemCheck, addr: u64, len: u32, out: &mut Segs) -> Result<(), String> {
    if len == 0 || len & 15 != 0 {
        return Err(format!(
            "indirect table length {len} is not a non-zero multiple of 16"
        ));
    }
    let table = mem
        .range(addr, u64::from(len))
        .map_err(|e| format!("indirect table: {e}"))?;
    let mut fault = Ok(());
    for i in 0..(len / 16) as usize {
        // `i < len / 16`: the entry lies inside the table.
        let Some((addr, len, _id, flags)) = table.desc16(i) else {
            break;
        };
        let flags = PackedDescFlags::from_bits_retain(flags);
        if !(flags - PackedDescFlags::WRITE).is_empty() && fault.is_ok() {
            fault = Err(format!(
                "indirect descriptor {i} sets flags {:#x}; only WRITE is allowed (§2.8.7)",
                flags.bits()
            ));
        }
        out.push(RawSeg {
            addr,
            len,
            write: flags.contains(PackedDescFlags::WRITE),
        });
    }
    fault
}
