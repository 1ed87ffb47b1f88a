//! The device's only window on driver memory: checked byte copies and typed
//! views of the ring areas. All of the crate's ring `unsafe` lives here; the
//! ring and request logic above it is safe Rust.
//!
//! Addresses come from the driver and are never trusted: every range is checked
//! against the live [`SimHal`](crate::SimHal) allocations before it is touched
//! (an IOMMU stand-in). Checks are cached per queue and the cache is dropped
//! at the start of the first step after any allocation was freed. A driver
//! that frees memory while the device may still use it breaks the `Hal`
//! contract; the check catches that between steps, but cannot close the race
//! inside one.

use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, AtomicU32};

use virtio_blk_mq::spec::{EventSuppress, PackedDesc, SplitDesc, UsedElem};
use virtio_blk_mq::PAGE_SIZE;

use crate::hal;

/// Slots of the per-queue allocation cache, direct-mapped by page number:
/// enough that the pages of a queue's ring, slab, tables and data buffers,
/// which the heap places close together, rarely share a slot.
const CACHE_SLOTS: usize = 4096;

/// The cache slot of the page holding `addr`.
#[inline]
fn cache_slot(addr: usize) -> usize {
    (addr / PAGE_SIZE) % CACHE_SLOTS
}

/// Cached "is this in DMA memory" checks for one queue.
pub(crate) struct MemCheck {
    epoch: u64,
    /// `(start, len)` of a live allocation, indexed by the page of an address inside it.
    cache: Box<[(usize, usize); CACHE_SLOTS]>,
}

impl MemCheck {
    pub(crate) fn new() -> MemCheck {
        MemCheck {
            epoch: hal::free_epoch(),
            // Built on the heap: 64 KiB is too much for a test thread's stack.
            cache: vec![(0, 0); CACHE_SLOTS]
                .into_boxed_slice()
                .try_into()
                .expect("CACHE_SLOTS entries"),
        }
    }

    /// Drops the cache if some allocation was freed since it was last
    /// dropped; true when it did, so the caller re-checks the ranges it
    /// holds. Called at the start of every step: inside one, the cache is
    /// trusted.
    #[inline]
    pub(crate) fn refresh(&mut self) -> bool {
        let epoch = hal::free_epoch();
        if epoch == self.epoch {
            return false;
        }
        self.epoch = epoch;
        self.cache.fill((0, 0));
        true
    }

    /// True when no allocation was freed since the cache was last dropped:
    /// [`Self::refresh`] would do nothing.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        hal::free_epoch() == self.epoch
    }

    /// Checks that `[addr, addr + len)` lies inside one live DMA allocation.
    ///
    /// The hit path (a range inside the allocation its page's cache slot
    /// holds) is a few instructions and inlined; a miss looks the range up
    /// in the registry. The cache is as fresh as the last [`Self::refresh`].
    #[inline]
    pub(crate) fn range(&mut self, addr: u64, len: u64) -> Result<GuestRange, String> {
        if len == 0 {
            return Ok(GuestRange { start: 0, len: 0 });
        }
        if let (Ok(start), Ok(size)) = (usize::try_from(addr), usize::try_from(len)) {
            if let Some(end) = start.checked_add(size) {
                let (s, l) = self.cache[cache_slot(start)];
                // `s + l` cannot overflow: it is the end of a live allocation.
                if start >= s && end <= s + l {
                    return Ok(GuestRange { start, len: size });
                }
            }
        }
        self.range_slow(addr, len)
    }

    /// [`Self::range`] for callers that report no error of their own: the
    /// same check, `None` where `range` fails. Its miss path answers with a
    /// flag, so the range is built from the caller's registers on both
    /// paths, where `range`'s `Result`, written through memory by the out
    /// of line miss, took the hit path through the stack too.
    #[inline]
    pub(crate) fn check(&mut self, addr: u64, len: u64) -> Option<GuestRange> {
        if len == 0 {
            return Some(GuestRange { start: 0, len: 0 });
        }
        let (Ok(start), Ok(size)) = (usize::try_from(addr), usize::try_from(len)) else {
            return None;
        };
        let end = start.checked_add(size)?;
        let (s, l) = self.cache[cache_slot(start)];
        // `s + l` cannot overflow: it is the end of a live allocation.
        if (start >= s && end <= s + l) || self.cache_allocation(start, size) {
            Some(GuestRange { start, len: size })
        } else {
            None
        }
    }

    /// [`Self::check`] when the cache cannot answer: looks the range up
    /// and caches its allocation; true when it is inside one.
    #[cold]
    #[inline(never)]
    fn cache_allocation(&mut self, start: usize, len: usize) -> bool {
        match hal::find_allocation(start, len) {
            Some(allocation) => {
                self.cache[cache_slot(start)] = allocation;
                true
            }
            None => false,
        }
    }

    /// [`Self::range`] when the cache cannot answer: looks the range up and
    /// caches its allocation.
    #[cold]
    #[inline(never)]
    fn range_slow(&mut self, addr: u64, len: u64) -> Result<GuestRange, String> {
        let fault = || format!("buffer {addr:#x}+{len:#x} is not inside DMA memory from SimHal");
        let start = usize::try_from(addr).map_err(|_| fault())?;
        let len = usize::try_from(len).map_err(|_| fault())?;
        start.checked_add(len).ok_or_else(fault)?;
        self.cache[cache_slot(start)] = hal::find_allocation(start, len).ok_or_else(fault)?;
        Ok(GuestRange { start, len })
    }
}

/// A range of driver memory checked by [`MemCheck::range`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct GuestRange {
    start: usize,
    len: usize,
}

impl GuestRange {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Copies `dst.len()` bytes starting `offset` bytes into the range (clamped to the range).
    pub(crate) fn read(&self, offset: usize, dst: &mut [u8]) {
        let n = dst.len().min(self.len.saturating_sub(offset));
        if n == 0 {
            return;
        }
        // SAFETY: `[start, start + len)` was checked to lie in a live SimHal
        // allocation and `offset + n <= len`. The driver gave this buffer to the
        // device and may not touch it until it is used (VIRTIO 1.2 §2.7.13,
        // §2.8.21), so the copy races with nothing but a driver bug.
        unsafe {
            core::ptr::copy_nonoverlapping((self.start + offset) as *const u8, dst.as_mut_ptr(), n)
        }
    }

    /// Copies `src` to `offset` bytes into the range (clamped to the range).
    pub(crate) fn write(&self, offset: usize, src: &[u8]) {
        let n = src.len().min(self.len.saturating_sub(offset));
        if n == 0 {
            return;
        }
        // SAFETY: as in `read`; the range is device-writable memory of the
        // request, owned by the device until it is marked used.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), (self.start + offset) as *mut u8, n) }
    }

    /// The `N` bytes at `offset` bytes into the range, which must hold them.
    #[inline]
    pub(crate) fn read_array<const N: usize>(&self, offset: usize) -> [u8; N] {
        assert!(
            offset <= self.len && N <= self.len - offset,
            "{N} bytes at {offset} read from a range of {}",
            self.len
        );
        // SAFETY: as in `read`, with `offset + N <= len` asserted above; an
        // unaligned read of plain bytes.
        unsafe { core::ptr::read_unaligned((self.start + offset) as *const [u8; N]) }
    }

    /// Entry `i` of a table of 16-byte descriptors filling the range (split
    /// and packed descriptors share the layout up to their last four bytes):
    /// `(addr, len, u16 at byte 12, u16 at byte 14)`, little-endian; `None`
    /// past the end of the range.
    #[inline]
    pub(crate) fn desc16(&self, i: usize) -> Option<(u64, u32, u16, u16)> {
        let offset = i.checked_mul(16)?;
        if offset >= self.len || self.len - offset < 16 {
            return None;
        }
        let at = self.start + offset;
        // SAFETY: as in `read`, with `offset + 16 <= len` checked above;
        // unaligned reads of plain integers.
        unsafe {
            Some((
                u64::from_le(core::ptr::read_unaligned(at as *const u64)),
                u32::from_le(core::ptr::read_unaligned((at + 8) as *const u32)),
                u16::from_le(core::ptr::read_unaligned((at + 12) as *const u16)),
                u16::from_le(core::ptr::read_unaligned((at + 14) as *const u16)),
            ))
        }
    }

    /// Writes `byte` at `offset` bytes into the range (nothing when the range
    /// is shorter).
    #[inline]
    pub(crate) fn write_byte(&self, offset: usize, byte: u8) {
        if offset < self.len {
            // SAFETY: as in `write`, with `offset < len` checked above.
            unsafe { core::ptr::write((self.start + offset) as *mut u8, byte) }
        }
    }

    /// A typed pointer to `offset`, if the whole `T` fits and is aligned.
    fn typed<T>(&self, offset: usize) -> Result<NonNull<T>, String> {
        let addr = self.start + offset;
        if offset + size_of::<T>() > self.len || addr & (align_of::<T>() - 1) != 0 {
            return Err(format!("ring area at {addr:#x} is misaligned or too short"));
        }
        NonNull::new(addr as *mut T).ok_or_else(|| "ring area at address 0".to_string())
    }
}

/// Checks that a ring area of `len` bytes at `addr` is in DMA memory and aligned to `align`.
fn area(
    mem: &mut MemCheck,
    what: &str,
    addr: u64,
    len: usize,
    align: u64,
) -> Result<GuestRange, String> {
    if addr & (align - 1) != 0 {
        return Err(format!("{what} at {addr:#x} is not {align}-byte aligned"));
    }
    mem.range(addr, len as u64)
        .map_err(|e| format!("{what}: {e}"))
}

/// How ring indices map to slots in a ring of `size` entries: a mask when
/// `size` is a power of two (always, for a split ring the driver set up as
/// the spec asks), else a division. Worked out once, at setup.
#[derive(Clone, Copy)]
struct Slots {
    size: u16,
    /// `size - 1` when `size` is a power of two.
    mask: Option<u16>,
}

impl Slots {
    fn new(size: u16) -> Slots {
        Slots {
            size,
            mask: size.is_power_of_two().then(|| size - 1),
        }
    }

    /// The slot of index `i` (free-running, or a packed position below `size`).
    #[inline]
    fn of(self, i: u16) -> usize {
        usize::from(match self.mask {
            Some(mask) => i & mask,
            None if i < self.size => i,
            None => i % self.size,
        })
    }
}

/// Typed views of a split ring's three areas (VIRTIO 1.2 §2.7), checked once at setup.
pub(crate) struct SplitAreas {
    size: u16,
    slots: Slots,
    desc: NonNull<SplitDesc>,
    /// `avail`: `flags`, `idx`, `ring[size]`, `used_event`, as `u16` words.
    avail: NonNull<AtomicU16>,
    /// `used`: `flags`, `idx` as `u16` words, then `ring[size]` of `UsedElem`, then `avail_event`.
    used: NonNull<AtomicU16>,
}

// SAFETY: the pointers refer to shared DMA memory that is only accessed through
// atomics; nothing in them is tied to the thread that created them.
unsafe impl Send for SplitAreas {}

impl SplitAreas {
    /// Checks sizes and alignment (§2.7.1 table: 16, 2, 4) of the three areas.
    pub(crate) fn new(
        mem: &mut MemCheck,
        size: u16,
        desc: u64,
        avail: u64,
        used: u64,
    ) -> Result<Self, String> {
        let n = usize::from(size);
        let d = area(mem, "descriptor table", desc, 16 * n, 16)?;
        let a = area(mem, "available ring", avail, 6 + 2 * n, 2)?;
        let u = area(mem, "used ring", used, 6 + 8 * n, 4)?;
        Ok(SplitAreas {
            size,
            slots: Slots::new(size),
            desc: d.typed(0)?,
            avail: a.typed(0)?,
            used: u.typed(0)?,
        })
    }

    /// Descriptor `i`, which callers check is below `size` (a head or a
    /// `next` from the driver); the `min` only keeps a wrong one in bounds,
    /// and costs nothing after such a check.
    #[inline]
    pub(crate) fn desc(&self, i: u16) -> &SplitDesc {
        let slot = usize::from(i.min(self.size - 1));
        // SAFETY: the table holds `size` descriptors, checked in `new` (which
        // fails for size 0: no descriptor fits) to lie in a live DMA
        // allocation with 16-byte alignment, and `slot < size`; `SplitDesc`
        // is made of atomics, valid for any bit pattern and shared with the
        // driver.
        unsafe { &*self.desc.as_ptr().add(slot) }
    }

    /// The whole descriptor table.
    #[inline]
    pub(crate) fn descs(&self) -> &[SplitDesc] {
        // SAFETY: as in `desc`: `size` descriptors, checked in `new`.
        unsafe { core::slice::from_raw_parts(self.desc.as_ptr(), usize::from(self.size)) }
    }

    fn avail_word(&self, word: usize) -> &AtomicU16 {
        debug_assert!(word < 3 + usize::from(self.size));
        // SAFETY: the available ring is `3 + size` aligned u16 words, checked in
        // `new`; callers pass `word < 3 + size`.
        unsafe { &*self.avail.as_ptr().add(word) }
    }

    /// `avail.flags`.
    pub(crate) fn avail_flags(&self) -> &AtomicU16 {
        self.avail_word(0)
    }

    /// `avail.idx`.
    pub(crate) fn avail_idx(&self) -> &AtomicU16 {
        self.avail_word(1)
    }

    /// `avail.ring[i % size]`.
    pub(crate) fn avail_ring(&self, i: u16) -> &AtomicU16 {
        self.avail_word(2 + self.slots.of(i))
    }

    /// `used_event`, after the available ring.
    pub(crate) fn used_event(&self) -> &AtomicU16 {
        self.avail_word(2 + usize::from(self.size))
    }

    /// `used.flags`.
    pub(crate) fn used_flags(&self) -> &AtomicU16 {
        // SAFETY: word 0 of the checked used area.
        unsafe { &*self.used.as_ptr() }
    }

    /// `used.idx`.
    pub(crate) fn used_idx(&self) -> &AtomicU16 {
        // SAFETY: word 1 of the checked used area.
        unsafe { &*self.used.as_ptr().add(1) }
    }

    /// `used.ring[i % size]`.
    pub(crate) fn used_elem(&self, i: u16) -> &UsedElem {
        let offset = 4 + 8 * self.slots.of(i);
        // SAFETY: the used area is `6 + 8 * size` bytes, 4-byte aligned, so the
        // element at `4 + 8 * slot` is in bounds and 4-byte aligned as
        // `UsedElem` needs; it is made of atomics shared with the driver.
        unsafe {
            &*self
                .used
                .as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<UsedElem>()
        }
    }

    /// `avail_event`, after the used ring.
    pub(crate) fn avail_event(&self) -> &AtomicU16 {
        // SAFETY: word `2 + 4 * size` is the last u16 of the checked used area.
        unsafe { &*self.used.as_ptr().add(2 + 4 * usize::from(self.size)) }
    }
}

/// Typed views of a packed ring's three areas (VIRTIO 1.2 §2.8), checked once at setup.
pub(crate) struct PackedAreas {
    slots: Slots,
    desc: NonNull<PackedDesc>,
    driver: NonNull<EventSuppress>,
    /// Written as one 32-bit word, so the driver never reads half an update.
    device: NonNull<AtomicU32>,
}

// SAFETY: as for `SplitAreas`.
unsafe impl Send for PackedAreas {}

impl PackedAreas {
    /// Checks sizes and alignment (§2.8.10.1 table: 16, 4, 4) of the three areas.
    pub(crate) fn new(
        mem: &mut MemCheck,
        size: u16,
        desc: u64,
        driver: u64,
        device: u64,
    ) -> Result<Self, String> {
        let d = area(mem, "descriptor ring", desc, 16 * usize::from(size), 16)?;
        let drv = area(mem, "driver event suppression area", driver, 4, 4)?;
        let dev = area(mem, "device event suppression area", device, 4, 4)?;
        Ok(PackedAreas {
            slots: Slots::new(size),
            desc: d.typed(0)?,
            driver: drv.typed(0)?,
            device: dev.typed(0)?,
        })
    }

    /// Descriptor `i`, a position below `size`.
    pub(crate) fn desc(&self, i: u16) -> &PackedDesc {
        // Positions are below `size`; the `min` only keeps a wrong one in bounds.
        let slot = usize::from(i.min(self.slots.size - 1));
        // SAFETY: the ring holds `size` descriptors, checked in `new` (which
        // fails for size 0: no descriptor fits), and `slot < size`; atomics only.
        unsafe { &*self.desc.as_ptr().add(slot) }
    }

    /// The whole descriptor ring.
    #[inline]
    pub(crate) fn descs(&self) -> &[PackedDesc] {
        // SAFETY: as in `desc`: `size` descriptors, checked in `new`.
        unsafe { core::slice::from_raw_parts(self.desc.as_ptr(), usize::from(self.slots.size)) }
    }

    /// The driver event suppression structure (read by the device).
    pub(crate) fn driver_event(&self) -> &EventSuppress {
        // SAFETY: checked in `new`: 4 bytes, 4-aligned, in DMA memory; atomics only.
        unsafe { self.driver.as_ref() }
    }

    /// The device event suppression structure (written by the device, as
    /// one word: see `packed_event::word`).
    pub(crate) fn device_event(&self) -> &AtomicU32 {
        // SAFETY: as for `driver_event`.
        unsafe { self.device.as_ref() }
    }
}
