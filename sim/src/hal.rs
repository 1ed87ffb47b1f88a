//! [`SimHal`]: DMA memory from the process heap, where a device address is
//! simply the virtual address.
//!
//! Every live allocation is recorded, so the device can check that an address
//! the driver hands it really lies in DMA memory (an IOMMU stand-in, see
//! [`crate::mem`]) instead of dereferencing whatever a buggy driver wrote.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use virtio_blk_mq::{Hal, PhysAddr, PAGE_SIZE};

/// Pages currently allocated through any `SimHal`.
static LIVE_PAGES: AtomicUsize = AtomicUsize::new(0);
/// Bumped on every free, so cached address checks know to look again.
static FREE_EPOCH: AtomicU64 = AtomicU64::new(0);
/// Live allocations: start address -> length in bytes.
static REGISTRY: Mutex<BTreeMap<usize, usize>> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, BTreeMap<usize, usize>> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// DMA memory for the simulated device: page-aligned, zeroed heap memory whose
/// device address equals its virtual address.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimHal;

impl SimHal {
    /// Pages currently allocated through any `SimHal` in this process (for leak
    /// tests; the count is global, so tests running in parallel share it).
    pub fn live_pages() -> usize {
        LIVE_PAGES.load(Ordering::SeqCst)
    }
}

// SAFETY: `dma_alloc` returns fresh, zeroed, page-aligned heap memory of
// `pages * PAGE_SIZE` bytes that nothing else references; in the simulation the
// device reaches it at its virtual address, which is what we return as the
// device address. All clones share the one global allocator and registry.
unsafe impl Hal for SimHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        if pages == 0 {
            return None;
        }
        let size = pages.checked_mul(PAGE_SIZE)?;
        let layout = Layout::from_size_align(size, PAGE_SIZE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let vaddr = NonNull::new(unsafe { alloc_zeroed(layout) })?;
        registry().insert(vaddr.as_ptr() as usize, size);
        LIVE_PAGES.fetch_add(pages, Ordering::SeqCst);
        Some((vaddr.as_ptr() as usize as PhysAddr, vaddr))
    }

    unsafe fn dma_dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        let start = vaddr.as_ptr() as usize;
        let size = pages.wrapping_mul(PAGE_SIZE);
        let mut map = registry();
        if paddr != start as PhysAddr || map.get(&start) != Some(&size) {
            log::error!(
                "SimHal::dma_dealloc({paddr:#x}, {start:#x}, {pages} pages) does not match a live \
                 allocation; leaking instead of freeing"
            );
            return;
        }
        map.remove(&start);
        // Publish the free before the memory goes away (see `mem::MemCheck`).
        FREE_EPOCH.fetch_add(1, Ordering::SeqCst);
        LIVE_PAGES.fetch_sub(pages, Ordering::SeqCst);
        drop(map);
        if let Ok(layout) = Layout::from_size_align(size, PAGE_SIZE) {
            // SAFETY: the registry held exactly this start and size, recorded by
            // `dma_alloc` with this layout, and we just removed it, so it is freed once.
            unsafe { dealloc(vaddr.as_ptr(), layout) };
        }
    }
}

/// The current free epoch: changes whenever any allocation is freed.
pub(crate) fn free_epoch() -> u64 {
    FREE_EPOCH.load(Ordering::SeqCst)
}

/// The live allocation `(start, len)` that contains `[addr, addr + len)`, if any.
pub(crate) fn find_allocation(addr: usize, len: usize) -> Option<(usize, usize)> {
    let end = addr.checked_add(len)?;
    let map = registry();
    let (&start, &size) = map.range(..=addr).next_back()?;
    (end <= start + size).then_some((start, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hal_allocates_zeroed_page_aligned_memory_and_counts_pages() {
        let hal = SimHal;
        let (paddr, vaddr) = hal.dma_alloc(3).expect("allocation");
        assert_eq!(paddr as usize, vaddr.as_ptr() as usize);
        assert_eq!(paddr as usize % PAGE_SIZE, 0);
        assert_eq!(
            find_allocation(paddr as usize + 100, 8000),
            Some((paddr as usize, 3 * PAGE_SIZE))
        );
        assert_eq!(find_allocation(paddr as usize + 3 * PAGE_SIZE - 1, 2), None);
        // SAFETY: exactly what dma_alloc returned.
        unsafe { hal.dma_dealloc(paddr, vaddr, 3) };
        assert_eq!(find_allocation(paddr as usize, 1), None);
    }

    #[test]
    fn hal_dealloc_of_unknown_memory_is_refused_not_fatal() {
        let hal = SimHal;
        let (paddr, vaddr) = hal.dma_alloc(1).expect("allocation");
        // SAFETY: the wrong page count is detected and nothing is freed.
        unsafe { hal.dma_dealloc(paddr, vaddr, 2) };
        assert!(find_allocation(paddr as usize, 1).is_some());
        // SAFETY: exactly what dma_alloc returned.
        unsafe { hal.dma_dealloc(paddr, vaddr, 1) };
    }
}
