//! The driver's `Hal` over the kernel's page allocator: DMA memory is
//! ordinary RAM, and physical = virtual (identity mapping), so a device
//! address is the pointer itself.

use core::ptr::NonNull;

use virtio_blk_mq::{Hal, PhysAddr};

use crate::mm;

/// Device registers the boot page tables reach: the first 4 GiB.
const IDENTITY_LIMIT: u64 = 1 << 32;

/// The kernel's DMA services.
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestHal;

// SAFETY: alloc_pages returns zeroed, page-aligned RAM owned by the caller
// until freed, identity-mapped (so the device reaches it at the same
// address); one global allocator serves every clone. map_mmio returns
// addresses inside the identity map, which is permanent. The boot tables
// map it write-back, which QEMU's emulated devices do not mind: TCG does not
// model caches.
unsafe impl Hal for GuestHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        let paddr = mm::alloc_pages(pages)?;
        Some((paddr, NonNull::new(paddr as *mut u8)?))
    }

    unsafe fn dma_dealloc(&self, paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) {
        // SAFETY: the driver returns what dma_alloc handed out, once, after
        // the device let go of it.
        unsafe { mm::free_pages(paddr, pages) }
    }

    fn map_mmio(&self, paddr: PhysAddr, len: usize) -> Option<NonNull<u8>> {
        if paddr.checked_add(len as u64)? > IDENTITY_LIMIT {
            crate::println!("vblk-guest: registers at {paddr:#x} lie above the 4 GiB identity map");
            return None;
        }
        NonNull::new(paddr as *mut u8)
    }
}
