//! Memory: one first-fit free-list heap over the RAM above the kernel, which
//! serves both the Rust global allocator and the page allocator (DMA memory:
//! physical = virtual, identity-mapped). Neither is used on the I/O path;
//! interrupt handlers must not allocate.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};

use virtio_blk_mq::sync::SpinLock;

use crate::bootinfo::Range;

/// Page size of [`alloc_pages`].
pub const PAGE_SIZE: usize = 4096;

/// Every block is a multiple of this, and aligned to it.
const GRAIN: usize = 16;

/// A free block, kept in the block itself; the list is sorted by address.
struct FreeBlock {
    size: usize,
    next: *mut FreeBlock,
}

struct Heap {
    head: *mut FreeBlock,
    free: usize,
}

// SAFETY: the raw pointers refer to free memory that only the heap touches,
// always under the lock.
unsafe impl Send for Heap {}

static HEAP: SpinLock<Heap> = SpinLock::new(Heap {
    head: null_mut(),
    free: 0,
});

fn round_up(value: usize, to: usize) -> usize {
    value.div_ceil(to) * to
}

impl Heap {
    /// Hands `[start, start + size)` to the heap.
    ///
    /// # Safety
    /// The range is unused RAM, identity-mapped, owned by the heap from now on.
    unsafe fn add(&mut self, start: usize, size: usize) {
        let aligned = round_up(start, GRAIN);
        let size = (start + size).saturating_sub(aligned) / GRAIN * GRAIN;
        if size >= GRAIN {
            // SAFETY: the caller gives the range away.
            unsafe { self.insert(aligned, size) };
        }
    }

    /// Puts a block back in address order and merges it with its neighbours.
    ///
    /// # Safety
    /// `[start, start + size)` is free memory not in the list, GRAIN-aligned.
    unsafe fn insert(&mut self, start: usize, size: usize) {
        self.free += size;
        let mut prev: *mut FreeBlock = null_mut();
        let mut next = self.head;
        while !next.is_null() && (next as usize) < start {
            prev = next;
            // SAFETY: list nodes are valid free blocks.
            next = unsafe { (*next).next };
        }
        let block = start as *mut FreeBlock;
        // SAFETY: the block is ours to write (free memory of at least GRAIN
        // bytes); prev and next are list nodes.
        unsafe {
            block.write(FreeBlock { size, next });
            if !next.is_null() && start + size == next as usize {
                (*block).size += (*next).size;
                (*block).next = (*next).next;
            }
            if prev.is_null() {
                self.head = block;
            } else if prev as usize + (*prev).size == start {
                (*prev).size += (*block).size;
                (*prev).next = (*block).next;
            } else {
                (*prev).next = block;
            }
        }
    }

    fn alloc(&mut self, layout: Layout) -> *mut u8 {
        let size = round_up(layout.size().max(1), GRAIN);
        let align = layout.align().max(GRAIN);
        let mut prev: *mut FreeBlock = null_mut();
        let mut cur = self.head;
        while !cur.is_null() {
            let start = cur as usize;
            // SAFETY: list nodes are valid free blocks.
            let (block_size, next) = unsafe { ((*cur).size, (*cur).next) };
            let aligned = round_up(start, align);
            let end = aligned + size;
            if end <= start + block_size {
                // Unlink, then give back the pieces before and after.
                if prev.is_null() {
                    self.head = next;
                } else {
                    // SAFETY: prev is a list node.
                    unsafe { (*prev).next = next };
                }
                self.free -= block_size;
                // SAFETY: both pieces are free memory just unlinked, GRAIN-aligned.
                unsafe {
                    if aligned > start {
                        self.insert(start, aligned - start);
                    }
                    if start + block_size > end {
                        self.insert(end, start + block_size - end);
                    }
                }
                return aligned as *mut u8;
            }
            prev = cur;
            cur = next;
        }
        null_mut()
    }

    /// # Safety
    /// `ptr` came from `alloc` with the same layout and is not used again.
    unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        let size = round_up(layout.size().max(1), GRAIN);
        // SAFETY: the caller returns a block this heap handed out.
        unsafe { self.insert(ptr as usize, size) };
    }
}

/// Gives the heap every RAM range above `kernel_end` (and below 4 GiB, the
/// identity-mapped part).
///
/// # Safety
/// Called once, before any allocation; the ranges are the boot loader's RAM
/// map and nothing else uses that memory.
pub unsafe fn init(ram: &[Range], kernel_end: u64) {
    let mut heap = HEAP.lock();
    for range in ram {
        let start = range.start.max(kernel_end);
        let end = range.end.min(1 << 32);
        if end > start {
            // SAFETY: unused RAM per the caller.
            unsafe { heap.add(start as usize, (end - start) as usize) };
        }
    }
}

/// Free heap bytes.
pub fn free_bytes() -> usize {
    HEAP.lock().free
}

/// Allocates `pages` zeroed, page-aligned, physically contiguous pages;
/// returns the physical (= virtual) address.
pub fn alloc_pages(pages: usize) -> Option<u64> {
    let layout = Layout::from_size_align(pages.max(1) * PAGE_SIZE, PAGE_SIZE).ok()?;
    let ptr = NonNull::new(HEAP.lock().alloc(layout))?;
    // SAFETY: a fresh block of `layout.size()` bytes.
    unsafe { ptr.as_ptr().write_bytes(0, layout.size()) };
    Some(ptr.as_ptr() as u64)
}

/// Frees pages from [`alloc_pages`].
///
/// # Safety
/// `paddr` and `pages` are exactly one earlier `alloc_pages` call's, the
/// pages are not used afterwards (by the CPU or a device).
pub unsafe fn free_pages(paddr: u64, pages: usize) {
    let layout = Layout::from_size_align(pages.max(1) * PAGE_SIZE, PAGE_SIZE)
        .expect("the layout alloc_pages made");
    // SAFETY: per the caller.
    unsafe { HEAP.lock().dealloc(paddr as *mut u8, layout) };
}

struct KernelAllocator;

// SAFETY: blocks are carved from memory only the heap owns, never handed out
// twice (free-list discipline under the lock), and aligned as asked.
unsafe impl GlobalAlloc for KernelAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.lock().alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: GlobalAlloc's contract: ptr came from alloc with this layout.
        unsafe { HEAP.lock().dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: KernelAllocator = KernelAllocator;
