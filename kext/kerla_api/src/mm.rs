//! Page allocation (Kerla's `kerla_api::mm`).
//!
//! As in Kerla, there is no `free_pages` for kexts: pages a kext allocates
//! are its own for good.

use bitflags::bitflags;

use crate::address::PAddr;
use crate::arch::PAGE_SIZE;
use crate::kernel_ops::kernel_ops;

bitflags! {
    /// How pages are wanted.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct AllocPageFlags: u32 {
        /// Pages for the kernel.
        const KERNEL = 1 << 0;
        /// Pages for user space.
        const USER = 1 << 1;
        /// The pages need not be zeroed.
        const DIRTY_OK = 1 << 2;
    }
}

/// The page allocator had no run of pages that large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageAllocError;

/// Allocates `num_pages` physically contiguous pages, page-aligned; zeroed
/// unless `flags` has [`AllocPageFlags::DIRTY_OK`]. The physical address is
/// also the device (DMA) address; the CPU reaches the pages through the
/// straight map ([`PAddr::as_mut_ptr`]).
pub fn alloc_pages(num_pages: usize, flags: AllocPageFlags) -> Result<PAddr, PageAllocError> {
    let paddr = kernel_ops()
        .alloc_pages(num_pages.max(1))
        .ok_or(PageAllocError)?;
    if !flags.contains(AllocPageFlags::DIRTY_OK) {
        // SAFETY: the kernel just handed out these pages (nobody else uses
        // them) and they lie in the straight map, as its hook promises.
        unsafe {
            paddr
                .as_mut_ptr::<u8>()
                .write_bytes(0, num_pages.max(1) * PAGE_SIZE)
        };
    }
    Ok(paddr)
}
