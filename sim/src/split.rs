//! Device side of a split virtqueue (VIRTIO 1.2 §2.7).
//!
//! The device keeps private shadows of its positions (`next_avail`,
//! `next_used`) and never reads back what it wrote to shared memory.

use core::sync::atomic::{fence, Ordering};

use virtio_blk_mq::spec::{
    need_event, SplitDescFlags, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY,
};

use crate::mem::{GuestRange, MemCheck, SplitAreas};
use crate::request::{RawSeg, Segs};
use crate::ring::{ChainRing, Next, Popped};

/// The device's view of one split ring.
pub(crate) struct SplitRing {
    areas: SplitAreas,
    size: u16,
    event_idx: bool,
    indirect: bool,
    /// Next `avail.ring` index to read (free-running, wraps at 2^16).
    next_avail: u16,
    /// Next `used.ring` index to write (free-running).
    next_used: u16,
    /// `next_used` when the last batch was published.
    published_used: u16,
    /// `avail.idx` as last loaded (and checked): entries up to it are
    /// visible without another load.
    avail_seen: u16,
    /// The kick suppression state last written (`used.flags`,
    /// `avail_event`), so a polling device does not rewrite the driver's
    /// cache line on every round; `None` until the first write.
    kicks_written: Option<(u16, u16)>,
    /// What [`Self::disable_kicks`] needs of `kicks_written`, in the form
    /// it tests: the state written disables kicks (NO_NOTIFY; with
    /// EVENT_IDX, flags 0 and an `avail_event` that stays behind the
    /// device while `next_avail - off_from <= event_lag`) ...
    kicks_off: bool,
    /// ... where `off_from` is that `avail_event + 1`.
    off_from: u16,
    /// See [`Self::event_lag`]; without EVENT_IDX `u16::MAX`, as NO_NOTIFY
    /// never falls behind.
    event_lag: u16,
}

impl SplitRing {
    pub(crate) fn new(areas: SplitAreas, size: u16, event_idx: bool, indirect: bool) -> SplitRing {
        SplitRing {
            areas,
            size,
            event_idx,
            indirect,
            next_avail: 0,
            next_used: 0,
            published_used: 0,
            avail_seen: 0,
            kicks_written: None,
            kicks_off: false,
            off_from: 0,
            event_lag: if event_idx {
                SplitRing::event_lag(size)
            } else {
                u16::MAX
            },
        }
    }

    /// Swaps in re-checked areas (after some DMA memory was freed).
    pub(crate) fn replace_areas(&mut self, areas: SplitAreas) {
        self.areas = areas;
    }

    /// True when `avail.idx` shows entries the device has not taken yet.
    pub(crate) fn has_available(&self) -> bool {
        // Acquire pairs with the driver's Release store of avail.idx.
        u16::from_le(self.areas.avail_idx().load(Ordering::Acquire)) != self.next_avail
    }

    /// Takes the next available chain (§2.7.13 from the device's side), its
    /// buffers appended to `out`. `Err` is a fault that leaves the ring unusable.
    #[inline(always)]
    pub(crate) fn pop(
        &mut self,
        mem: &mut MemCheck,
        out: &mut Segs,
    ) -> Result<Option<Popped>, String> {
        if self.avail_seen == self.next_avail && !self.load_avail_idx()? {
            return Ok(None);
        }
        let head = u16::from_le(
            self.areas
                .avail_ring(self.next_avail)
                .load(Ordering::Relaxed),
        );
        self.next_avail = self.next_avail.wrapping_add(1);
        if head >= self.size {
            return Err(format!(
                "avail.ring names head {head}, queue size is {}",
                self.size
            ));
        }
        let fault = self.walk(mem, head, out).err();
        Ok(Some(Popped {
            id: head,
            skip: 1,
            fault,
        }))
    }

    /// Loads `avail.idx` into `avail_seen` after checking it; true when it
    /// shows entries the device has not taken.
    fn load_avail_idx(&mut self) -> Result<bool, String> {
        // Acquire pairs with the driver's Release store of avail.idx: the ring
        // entries and descriptors it published are visible to every read of
        // them after this load, until the next one.
        let avail_idx = u16::from_le(self.areas.avail_idx().load(Ordering::Acquire));
        if avail_idx == self.next_avail {
            return Ok(false);
        }
        if !self.plausible(avail_idx) {
            let in_flight = self.next_avail.wrapping_sub(self.next_used);
            return Err(format!(
                "avail.idx {avail_idx} is {} entries past the device's {} with {in_flight} in flight; \
                 at most {} buffers can be outstanding",
                avail_idx.wrapping_sub(self.next_avail),
                self.next_avail,
                self.size
            ));
        }
        self.avail_seen = avail_idx;
        Ok(true)
    }

    /// True when `avail_idx` makes no more buffers available than the ring
    /// has room for beside the ones in flight.
    #[inline(always)]
    fn plausible(&self, avail_idx: u16) -> bool {
        let in_flight = self.next_avail.wrapping_sub(self.next_used);
        avail_idx.wrapping_sub(self.next_avail) <= self.size - in_flight.min(self.size)
    }

    /// [`ChainRing::any_available`]: loads `avail.idx` only when the
    /// entries up to the last one loaded are taken, and keeps it (when
    /// plausible; else `pop` reports it).
    #[inline(always)]
    pub(crate) fn any_available(&mut self) -> bool {
        if self.avail_seen != self.next_avail {
            return true;
        }
        // Acquire: as in `load_avail_idx`.
        let avail_idx = u16::from_le(self.areas.avail_idx().load(Ordering::Acquire));
        if avail_idx == self.next_avail {
            return false;
        }
        if self.plausible(avail_idx) {
            self.avail_seen = avail_idx;
        }
        true
    }

    /// [`ChainRing::take_three`]: the next chain, if it is three plain
    /// descriptors or one indirect descriptor whose table holds three.
    #[inline(always)]
    pub(crate) fn take_three(&mut self, mem: &mut MemCheck, look: bool) -> Next {
        if self.avail_seen == self.next_avail {
            if !look {
                return Next::Empty;
            }
            // Acquire: as in `load_avail_idx`, whose checks this repeats
            // (leaving the report of a bad index to it).
            let avail_idx = u16::from_le(self.areas.avail_idx().load(Ordering::Acquire));
            if avail_idx == self.next_avail {
                return Next::Empty;
            }
            if !self.plausible(avail_idx) {
                return Next::Other;
            }
            self.avail_seen = avail_idx;
        }
        let head = u16::from_le(
            self.areas
                .avail_ring(self.next_avail)
                .load(Ordering::Relaxed),
        );
        // A head beyond the table is `pop`'s to report: `three` declines it.
        let Some(segs) = self.three(mem, head) else {
            return Next::Other;
        };
        self.next_avail = self.next_avail.wrapping_add(1);
        Next::Three {
            id: head,
            skip: 1,
            segs,
        }
    }

    /// The buffers of the chain at `head` when [`Self::walk`] would find
    /// exactly three and no fault: a direct chain of three linked by NEXT,
    /// or a lone INDIRECT descriptor (negotiated) whose table links three.
    /// Any other chain (a head beyond the table too), `None`. The walk
    /// follows at most `size` descriptors, and so does this: a direct chain
    /// ends on a descriptor without NEXT after two with it, three distinct
    /// ones, which a ring of fewer than three does not have.
    #[inline(always)]
    fn three(&self, mem: &mut MemCheck, head: u16) -> Option<[RawSeg; 3]> {
        // The two flags that decide the walk: NEXT (go on) and INDIRECT.
        let walk = SplitDescFlags::NEXT | SplitDescFlags::INDIRECT;
        let seg = |addr: u64, len: u32, flags: SplitDescFlags| RawSeg {
            addr,
            len,
            write: flags.contains(SplitDescFlags::WRITE),
        };
        let descs = self.areas.descs();
        let d0 = descs.get(usize::from(head))?;
        let f0 = SplitDescFlags::from_bits_retain(u16::from_le(d0.flags.load(Ordering::Relaxed)));
        let a0 = u64::from_le(d0.addr.load(Ordering::Relaxed));
        let l0 = u32::from_le(d0.len.load(Ordering::Relaxed));
        if f0.intersection(walk) == SplitDescFlags::INDIRECT {
            return if self.indirect {
                three_indirect(mem, a0, l0)
            } else {
                None
            };
        }
        if f0.intersection(walk) != SplitDescFlags::NEXT {
            return None;
        }
        // `descs` holds `size` descriptors: `get` is the walk's `next < size`.
        let n0 = u16::from_le(d0.next.load(Ordering::Relaxed));
        let d1 = descs.get(usize::from(n0))?;
        let f1 = SplitDescFlags::from_bits_retain(u16::from_le(d1.flags.load(Ordering::Relaxed)));
        let n1 = u16::from_le(d1.next.load(Ordering::Relaxed));
        if f1.intersection(walk) != SplitDescFlags::NEXT {
            return None;
        }
        let d2 = descs.get(usize::from(n1))?;
        let f2 = SplitDescFlags::from_bits_retain(u16::from_le(d2.flags.load(Ordering::Relaxed)));
        if f2.intersects(walk) {
            return None;
        }
        Some([
            seg(a0, l0, f0),
            seg(
                u64::from_le(d1.addr.load(Ordering::Relaxed)),
                u32::from_le(d1.len.load(Ordering::Relaxed)),
                f1,
            ),
            seg(
                u64::from_le(d2.addr.load(Ordering::Relaxed)),
                u32::from_le(d2.len.load(Ordering::Relaxed)),
                f2,
            ),
        ])
    }

    /// Follows the chain from `head` (§2.7.5), including one indirect table (§2.7.5.3).
    #[inline(always)]
    fn walk(&self, mem: &mut MemCheck, head: u16, out: &mut Segs) -> Result<(), String> {
        let mut i = head;
        for _ in 0..self.size {
            let d = self.areas.desc(i);
            let addr = u64::from_le(d.addr.load(Ordering::Relaxed));
            let len = u32::from_le(d.len.load(Ordering::Relaxed));
            let flags =
                SplitDescFlags::from_bits_retain(u16::from_le(d.flags.load(Ordering::Relaxed)));
            let next = u16::from_le(d.next.load(Ordering::Relaxed));
            if flags.contains(SplitDescFlags::INDIRECT) {
                // Still read the table on a violation, so the status byte can report it.
                let table = walk_indirect(mem, addr, len, out);
                if !self.indirect {
                    return Err(
                        "INDIRECT descriptor without negotiated INDIRECT_DESC (§2.7.5.3.1)".into(),
                    );
                }
                if flags.contains(SplitDescFlags::NEXT) {
                    return Err("descriptor sets both INDIRECT and NEXT (§2.7.5.3.1)".into());
                }
                return table;
            }
            out.push(RawSeg {
                addr,
                len,
                write: flags.contains(SplitDescFlags::WRITE),
            });
            if !flags.contains(SplitDescFlags::NEXT) {
                return Ok(());
            }
            if next >= self.size {
                return Err(format!(
                    "descriptor {i} chains to {next}, queue size is {}",
                    self.size
                ));
            }
            i = next;
        }
        Err(format!(
            "chain from head {head} is longer than the queue size (a loop?)"
        ))
    }

    /// Writes one used element (§2.7.8); visible to the driver after [`Self::publish`].
    #[inline]
    pub(crate) fn push_used(&mut self, id: u16, len: u32) {
        self.push_used_raw(u32::from(id), len);
    }

    /// Writes one used element with any 32-bit id, also one that names no
    /// chain (hostile acts); visible to the driver after [`Self::publish`].
    #[inline]
    pub(crate) fn push_used_raw(&mut self, id: u32, len: u32) {
        let elem = self.areas.used_elem(self.next_used);
        // Relaxed: ordered before the Release store of used.idx in `publish`.
        elem.id.store(id.to_le(), Ordering::Relaxed);
        elem.len.store(len.to_le(), Ordering::Relaxed);
        self.next_used = self.next_used.wrapping_add(1);
    }

    /// Hostile: moves the used index `by` entries on without writing the
    /// elements it covers; [`Self::publish`] hands the jump to the driver.
    pub(crate) fn jump_used(&mut self, by: u16) {
        self.next_used = self.next_used.wrapping_add(by);
    }

    /// Publishes the used elements written since the last call; true when the
    /// driver asked for a used-buffer notification for them (§2.7.7.2).
    pub(crate) fn publish(&mut self) -> bool {
        let old = self.published_used;
        let new = self.next_used;
        if old == new {
            return false;
        }
        // Release: the used elements above are visible before the index that hands them over.
        self.areas.used_idx().store(new.to_le(), Ordering::Release);
        self.published_used = new;
        // Full fence between publishing used.idx and reading the driver's
        // suppression state; pairs with the driver's fence between re-enabling
        // notifications and re-checking used.idx (DESIGN.md §3 rules 2 and 4).
        fence(Ordering::SeqCst);
        if self.event_idx {
            let used_event = u16::from_le(self.areas.used_event().load(Ordering::Relaxed));
            need_event(used_event, new, old)
        } else {
            u16::from_le(self.areas.avail_flags().load(Ordering::Relaxed))
                & VIRTQ_AVAIL_F_NO_INTERRUPT
                == 0
        }
    }

    /// Asks for a kick when the driver makes the next buffer available (§2.7.10).
    /// The caller fences before re-checking the ring.
    pub(crate) fn enable_kicks(&mut self) {
        self.write_kicks(0, self.next_avail);
    }

    /// Tells the driver not to kick (§2.7.10): `NO_NOTIFY`, or with EVENT_IDX
    /// (where `flags` must stay 0) an `avail_event` behind what the device
    /// has consumed, which the driver's window cannot reach while the device
    /// keeps polling. The event is moved only once it has fallen
    /// `event_lag` behind, so a polling device rewrites it rarely.
    #[inline(always)]
    pub(crate) fn disable_kicks(&mut self) {
        // With EVENT_IDX: `avail_event` is at most `event_lag` behind
        // `next_avail - 1`.
        if !(self.kicks_off && self.next_avail.wrapping_sub(self.off_from) <= self.event_lag) {
            self.write_disabled();
        }
    }

    /// [`Self::disable_kicks`] when the state written does not do.
    #[inline(never)]
    fn write_disabled(&mut self) {
        if self.event_idx {
            self.write_kicks(0, self.next_avail.wrapping_sub(1));
        } else {
            self.write_kicks(VIRTQ_USED_F_NO_NOTIFY, 0);
        }
    }

    /// How far a disabling `avail_event` may fall behind `next_avail - 1`
    /// and still never fall inside a window `[old, new)` the driver checks
    /// (§2.7.10): such a window ends at most `size` past `next_avail`, and
    /// the event falls at most `lag + size` behind before the end of the
    /// step that moves it, so `lag + 2 * size` must stay below 65535.
    fn event_lag(size: u16) -> u16 {
        let room = 65534u32.saturating_sub(2 * u32::from(size));
        room.min(0x4000) as u16
    }

    /// Writes `used.flags` and (with EVENT_IDX) `avail_event`, unless they
    /// already hold these values: the driver reads that line on every
    /// commit, and a store of the same value would still take it from the
    /// driver's cache.
    fn write_kicks(&mut self, flags: u16, avail_event: u16) {
        let event = if self.event_idx { avail_event } else { 0 };
        if self.kicks_written == Some((flags, event)) {
            return;
        }
        self.kicks_written = Some((flags, event));
        self.kicks_off = if self.event_idx {
            flags == 0
        } else {
            flags == VIRTQ_USED_F_NO_NOTIFY
        };
        self.off_from = event.wrapping_add(1);
        // Relaxed: the caller orders them (a fence before re-checking the ring).
        self.areas
            .used_flags()
            .store(flags.to_le(), Ordering::Relaxed);
        if self.event_idx {
            self.areas
                .avail_event()
                .store(event.to_le(), Ordering::Relaxed);
        }
    }
}

impl ChainRing for SplitRing {
    #[inline(always)]
    fn any_available(&mut self) -> bool {
        SplitRing::any_available(self)
    }

    #[inline(always)]
    fn pop(&mut self, mem: &mut MemCheck, out: &mut Segs) -> Result<Option<Popped>, String> {
        SplitRing::pop(self, mem, out)
    }

    #[inline(always)]
    fn take_three(&mut self, mem: &mut MemCheck, look: bool) -> Next {
        SplitRing::take_three(self, mem, look)
    }

    #[inline]
    fn push_used(&mut self, id: u16, _skip: u16, len: u32) {
        SplitRing::push_used(self, id, len)
    }

    #[inline]
    fn publish(&mut self) -> bool {
        SplitRing::publish(self)
    }

    #[inline]
    fn enable_kicks(&mut self) {
        SplitRing::enable_kicks(self)
    }

    #[inline]
    fn disable_kicks(&mut self) {
        SplitRing::disable_kicks(self)
    }
}

/// Entry `i` of an indirect table of `n` entries, if the walk would take
/// it as one of three: NEXT (to an entry of the table) unless it is the
/// `last`, never INDIRECT. Its buffer and its `next`.
#[inline(always)]
fn three_entry(table: &GuestRange, n: u16, i: u16, last: bool) -> Option<(RawSeg, u16)> {
    let (addr, len, flags, next) = table.desc16(usize::from(i))?;
    let flags = SplitDescFlags::from_bits_retain(flags);
    let expected = if last {
        SplitDescFlags::empty()
    } else {
        SplitDescFlags::NEXT
    };
    let walk = SplitDescFlags::NEXT | SplitDescFlags::INDIRECT;
    if flags.intersection(walk) != expected || (!last && next >= n) {
        return None;
    }
    let seg = RawSeg {
        addr,
        len,
        write: flags.contains(SplitDescFlags::WRITE),
    };
    Some((seg, next))
}

/// The three buffers of a split-format indirect table of `len` bytes at
/// `addr` when [`walk_indirect`] would find exactly three, linked by NEXT
/// from entry 0, and no fault; else `None`.
#[inline(always)]
fn three_indirect(mem: &mut MemCheck, addr: u64, len: u32) -> Option<[RawSeg; 3]> {
    // `walk_indirect` follows at most `n` entries (its count, cut to 16 bits
    // as it cuts it).
    let n = (len / 16) as u16;
    if len & 15 != 0 || n < 3 {
        return None;
    }
    let table = mem.range(addr, u64::from(len)).ok()?;
    let (s0, n0) = three_entry(&table, n, 0, false)?;
    let (s1, n1) = three_entry(&table, n, n0, false)?;
    let (s2, _) = three_entry(&table, n, n1, true)?;
    Some([s0, s1, s2])
}

/// Reads a split-format indirect table of `len` bytes at `addr` (§2.7.5.3).
fn walk_indirect(mem: &mut MemCheck, addr: u64, len: u32, out: &mut Segs) -> Result<(), String> {
    if len == 0 || len & 15 != 0 {
        return Err(format!(
            "indirect table length {len} is not a non-zero multiple of 16"
        ));
    }
    let table = mem
        .range(addr, u64::from(len))
        .map_err(|e| format!("indirect table: {e}"))?;
    let n = (len / 16) as u16;
    let mut i = 0u16;
    for _ in 0..n {
        // `i < n`: the entry lies inside the table's `16 * n` bytes.
        let Some((addr, len, flags, next)) = table.desc16(usize::from(i)) else {
            break;
        };
        let flags = SplitDescFlags::from_bits_retain(flags);
        if flags.contains(SplitDescFlags::INDIRECT) {
            return Err("INDIRECT descriptor inside an indirect table (§2.7.5.3.1)".into());
        }
        out.push(RawSeg {
            addr,
            len,
            write: flags.contains(SplitDescFlags::WRITE),
        });
        if !flags.contains(SplitDescFlags::NEXT) {
            return Ok(());
        }
        i = next;
        if i >= n {
            return Err(format!(
                "indirect descriptor chains to {i}, the table has {n}"
            ));
        }
    }
    Err("indirect chain is longer than its table (a loop?)".into())
}
