//! The device's only window on driver memory: checked byte copies and typed
//! views of the ring areas. All of the crate's ring `unsafe` lives here; the
//! ring and request logic above it is safe Rust.
//!
//! Addresses come from the driver and are never trusted: every range is checked
//! against the live [`SimHal`](crate::SimHal) allocations before it is touched
//! (an IOMMU stand-in). Checks are cached per queue and the cache is dropped
//! whenever any allocation is freed. A driver that frees memory while the
//! device may still use it breaks the `Hal` contract; the check catches that
//! between steps, but cannot close the race inside one.

use core::mem::{align_of, size_of};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU16, AtomicU32};

use virtio_blk_mq::spec::{EventSuppress, PackedDesc, SplitDesc, UsedElem};
use virtio_blk_mq::PAGE_SIZE;

use crate::hal;

/// Slots of the per-queue allocation cache (direct-mapped by page number).
const CACHE_SLOTS: usize = 256;

/// Cached "is this in DMA memory" checks for one queue.
pub(crate) struct MemCheck {
    epoch: u64,
    /// `(start, len)` of a live allocation, indexed by the page of an address inside it.
    cache: Vec<(usize, usize)>,
}

impl MemCheck {
    pub(crate) fn new() -> MemCheck {
        MemCheck {
            epoch: hal::free_epoch(),
            cache: vec![(0, 0); CACHE_SLOTS],
        }
    }

    /// True when some allocation was freed since the last check.
    pub(crate) fn stale(&self) -> bool {
        hal::free_epoch() != self.epoch
    }

    /// Checks that `[addr, addr + len)` lies inside one live DMA allocation.
    pub(crate) fn range(&mut self, addr: u64, len: u64) -> Result<GuestRange, String> {
        let fault = || format!("buffer {addr:#x}+{len:#x} is not inside DMA memory from SimHal");
        if len == 0 {
            return Ok(GuestRange { start: 0, len: 0 });
        }
        let start = usize::try_from(addr).map_err(|_| fault())?;
        let len = usize::try_from(len).map_err(|_| fault())?;
        let end = start.checked_add(len).ok_or_else(fault)?;
        let epoch = hal::free_epoch();
        if epoch != self.epoch {
            self.epoch = epoch;
            self.cache.fill((0, 0));
        }
        let slot = (start / PAGE_SIZE) % CACHE_SLOTS;
        let (s, l) = self.cache[slot];
        if start >= s && end <= s + l {
            return Ok(GuestRange { start, len });
        }
        self.cache[slot] = hal::find_allocation(start, len).ok_or_else(fault)?;
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

/// Typed views of a split ring's three areas (VIRTIO 1.2 §2.7), checked once at setup.
pub(crate) struct SplitAreas {
    size: u16,
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
            desc: d.typed(0)?,
            avail: a.typed(0)?,
            used: u.typed(0)?,
        })
    }

    /// Descriptor `i % size`.
    pub(crate) fn desc(&self, i: u16) -> &SplitDesc {
        // SAFETY: the table holds `size` descriptors, checked in `new` to lie in
        // a live DMA allocation with 16-byte alignment; `SplitDesc` is made of
        // atomics, valid for any bit pattern and shared with the driver.
        unsafe { &*self.desc.as_ptr().add(usize::from(i % self.size)) }
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
        self.avail_word(2 + usize::from(i % self.size))
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
        let offset = 4 + 8 * usize::from(i % self.size);
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
    size: u16,
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
            size,
            desc: d.typed(0)?,
            driver: drv.typed(0)?,
            device: dev.typed(0)?,
        })
    }

    /// Descriptor `i % size`.
    pub(crate) fn desc(&self, i: u16) -> &PackedDesc {
        // SAFETY: the ring holds `size` descriptors, checked in `new`; atomics only.
        unsafe { &*self.desc.as_ptr().add(usize::from(i % self.size)) }
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
