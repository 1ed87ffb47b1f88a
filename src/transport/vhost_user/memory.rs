//! DMA memory for a vhost-user backend: one memfd, mapped shared into this
//! process and registered with the backend (SET_MEM_TABLE) at the same
//! address, so a device address is simply the process address.
//!
//! [`VhostUserHal`] hands out pages of that region with a first-fit allocator.
//! Allocation happens at setup (rings, request slabs, data buffers), never on
//! the I/O path, so the allocator's mutex is no per-request cost.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};
use std::vec::Vec;

use crate::hal::{Hal, PhysAddr, PAGE_SIZE};

/// One shared mapping of a memfd, unmapped when the last handle goes.
struct Region {
    base: NonNull<u8>,
    pages: usize,
    fd: OwnedFd,
    alloc: Mutex<Allocator>,
}

// SAFETY: the region is plain shared memory; `base` is never dereferenced by
// `Region` itself, and every page is handed to at most one owner at a time by
// the allocator behind its mutex.
unsafe impl Send for Region {}
// SAFETY: as above; all shared mutable state (the allocator) sits behind a mutex.
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: `base` and the length are those of the mapping made in
        // `VhostUserHal::new`; the last handle is gone, so no allocation from
        // it is alive (each DmaRegion holds a handle) and nothing else uses it.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.pages * PAGE_SIZE);
        }
    }
}

/// First-fit page allocator: free runs sorted by start page, merged on free.
struct Allocator {
    free: Vec<(usize, usize)>,
    /// Pages at and above this index were never handed out: still zero.
    untouched_from: usize,
}

impl Allocator {
    fn new(pages: usize) -> Self {
        Allocator {
            free: std::vec![(0, pages)],
            untouched_from: 0,
        }
    }

    /// Takes `pages` pages; returns the first page and how many of them may
    /// hold old data (from the first page on).
    fn take(&mut self, pages: usize) -> Option<(usize, usize)> {
        let slot = self.free.iter().position(|&(_, len)| len >= pages)?;
        let (start, len) = self.free[slot];
        if len == pages {
            self.free.remove(slot);
        } else {
            self.free[slot] = (start + pages, len - pages);
        }
        let dirty = self.untouched_from.saturating_sub(start).min(pages);
        self.untouched_from = self.untouched_from.max(start + pages);
        Some((start, dirty))
    }

    /// Gives back `pages` pages from `start`; false if they were not taken.
    fn give(&mut self, start: usize, pages: usize) -> bool {
        let at = self.free.partition_point(|&(s, _)| s < start);
        let overlaps_prev = at > 0 && {
            let (s, l) = self.free[at - 1];
            s + l > start
        };
        let overlaps_next = at < self.free.len() && start + pages > self.free[at].0;
        if overlaps_prev || overlaps_next {
            return false;
        }
        self.free.insert(at, (start, pages));
        // Merge with the following run, then with the preceding one.
        if at + 1 < self.free.len() && start + pages == self.free[at + 1].0 {
            self.free[at].1 += self.free[at + 1].1;
            self.free.remove(at + 1);
        }
        if at > 0 {
            let (s, l) = self.free[at - 1];
            if s + l == start {
                self.free[at - 1].1 += self.free[at].1;
                self.free.remove(at);
            }
        }
        true
    }

    fn free_pages(&self) -> usize {
        self.free.iter().map(|&(_, len)| len).sum()
    }
}

/// A [`Hal`] whose memory a vhost-user backend can reach: pages of one
/// memfd-backed shared mapping, device address = process address.
///
/// Clones share the region and its allocator; the mapping lives until the
/// last clone (and the last buffer allocated from it) is gone.
#[derive(Clone)]
pub struct VhostUserHal {
    region: Arc<Region>,
}

impl core::fmt::Debug for VhostUserHal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VhostUserHal")
            .field("base", &self.region.base)
            .field("bytes", &self.size())
            .finish()
    }
}

impl VhostUserHal {
    /// Creates a memfd of `bytes` bytes (rounded up to whole pages) and maps it
    /// shared. The memory is committed lazily, page by page, as it is used.
    pub fn new(bytes: usize) -> io::Result<Self> {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let size = pages
            .checked_mul(PAGE_SIZE)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        // Spelt as bytes, not a C string literal, to keep to the crate's MSRV.
        const NAME: &[u8] = b"virtio-blk-mq-dma\0";
        // SAFETY: the name is a NUL-terminated string; memfd_create only reads it.
        let raw = unsafe { libc::memfd_create(NAME.as_ptr().cast(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: memfd_create returned a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let len = libc::off_t::try_from(size)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "region too large"))?;
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a new shared mapping of the whole file; the kernel picks the
        // address, so no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast::<u8>())
            .ok_or_else(|| io::Error::other("mmap returned a null mapping"))?;
        Ok(VhostUserHal {
            region: Arc::new(Region {
                base,
                pages,
                fd,
                alloc: Mutex::new(Allocator::new(pages)),
            }),
        })
    }

    /// Process (and device) address of the first byte.
    pub fn base(&self) -> u64 {
        self.region.base.as_ptr() as u64
    }

    /// Size of the region in bytes.
    pub fn size(&self) -> usize {
        self.region.pages * PAGE_SIZE
    }

    /// The memfd, to pass to the backend.
    pub fn fd(&self) -> RawFd {
        self.region.fd.as_raw_fd()
    }

    /// Pages not allocated right now.
    pub fn free_pages(&self) -> usize {
        self.allocator().free_pages()
    }

    /// Whether `addr..addr + len` lies inside the region.
    pub fn contains(&self, addr: u64, len: usize) -> bool {
        let base = self.base();
        addr >= base
            && (addr - base)
                .checked_add(len as u64)
                .is_some_and(|end| end <= self.size() as u64)
    }

    fn allocator(&self) -> std::sync::MutexGuard<'_, Allocator> {
        self.region
            .alloc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

// SAFETY: `dma_alloc` returns pages of the shared mapping that the allocator
// handed to no one else, zeroed (fresh memfd pages are zero; reused ones are
// cleared here), page-aligned (the mapping is, and allocations are whole
// pages), valid until freed (each allocation's Hal clone keeps the mapping
// alive), and reachable by the backend at the returned address because the
// whole region is registered with guest address == process address. All
// clones share one allocator.
unsafe impl Hal for VhostUserHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        if pages == 0 {
            return None;
        }
        let (first, dirty) = self.allocator().take(pages)?;
        // SAFETY: `first + pages <= self.region.pages`, so the offset stays in the mapping.
        let ptr = unsafe { self.region.base.as_ptr().add(first * PAGE_SIZE) };
        // SAFETY: the first `dirty` pages of the allocation are ours alone now
        // and lie inside the mapping; clearing them makes the whole allocation zero.
        unsafe { core::ptr::write_bytes(ptr, 0, dirty * PAGE_SIZE) };
        let vaddr = NonNull::new(ptr)?;
        Some((ptr as u64, vaddr))
    }

    unsafe fn dma_dealloc(&self, _paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        let offset = (vaddr.as_ptr() as usize).wrapping_sub(self.region.base.as_ptr() as usize);
        if offset % PAGE_SIZE != 0 || !self.contains(vaddr.as_ptr() as u64, pages * PAGE_SIZE) {
            log::error!("vhost-user hal: freeing memory it did not allocate; leaked");
            return;
        }
        if !self.allocator().give(offset / PAGE_SIZE, pages) {
            log::error!("vhost-user hal: double free of {pages} pages; ignored");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_zeroed_aligned_and_reused() {
        let hal = VhostUserHal::new(8 * PAGE_SIZE).unwrap();
        let (a, pa) = hal.dma_alloc(3).unwrap();
        assert_eq!(a % PAGE_SIZE as u64, 0);
        assert!(hal.contains(a, 3 * PAGE_SIZE));
        // SAFETY: three pages were just allocated at `pa`.
        unsafe { core::ptr::write_bytes(pa.as_ptr(), 0xab, 3 * PAGE_SIZE) };
        // SAFETY: what dma_alloc returned, freed once.
        unsafe { hal.dma_dealloc(a, pa, 3) };
        let (b, pb) = hal.dma_alloc(2).unwrap();
        assert_eq!(a, b, "first fit reuses the freed run");
        // SAFETY: two pages were just allocated at `pb`.
        let bytes = unsafe { core::slice::from_raw_parts(pb.as_ptr(), 2 * PAGE_SIZE) };
        assert!(bytes.iter().all(|&byte| byte == 0));
        assert_eq!(hal.free_pages(), 6);
    }

    #[test]
    fn free_runs_merge_and_exhaustion_is_none() {
        let hal = VhostUserHal::new(4 * PAGE_SIZE).unwrap();
        let x: Vec<_> = (0..4).map(|_| hal.dma_alloc(1).unwrap()).collect();
        assert!(hal.dma_alloc(1).is_none());
        for &(p, v) in [&x[1], &x[3], &x[2], &x[0]] {
            // SAFETY: each allocation is freed exactly once.
            unsafe { hal.dma_dealloc(p, v, 1) };
        }
        assert!(hal.dma_alloc(4).is_some(), "all four runs merged into one");
    }

    #[test]
    fn double_and_foreign_frees_are_refused() {
        let hal = VhostUserHal::new(4 * PAGE_SIZE).unwrap();
        let (p, v) = hal.dma_alloc(2).unwrap();
        // SAFETY: freed once; the second call is the misuse under test, which
        // the allocator detects without touching memory.
        unsafe {
            hal.dma_dealloc(p, v, 2);
            hal.dma_dealloc(p, v, 2);
        }
        assert_eq!(hal.free_pages(), 4);
        let mut outside = 0u8;
        // SAFETY: an address outside the region is refused before any use.
        unsafe { hal.dma_dealloc(0, NonNull::from(&mut outside), 1) };
        assert_eq!(hal.free_pages(), 4);
    }
}
