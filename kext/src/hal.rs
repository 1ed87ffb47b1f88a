//! The driver's `Hal` over Kerla's page allocator and straight map.
//!
//! - DMA memory: `kerla_api::mm::alloc_pages`. Its physical address is the
//!   device address (no IOMMU), and the CPU reaches it through the straight
//!   map (`PAddr::as_mut_ptr`, physical + 0xffff_8000_0000_0000).
//! - Freeing: Kerla gives kexts no `free_pages`, so freed DMA memory goes
//!   to a pool of this kext and is reused (zeroed) by later allocations of
//!   the same size. Devices live as long as the kernel, so the pool only
//!   holds what a failed device setup or dropped buffers left.
//! - Registers: `map_mmio` returns the straight-map address, which covers
//!   physical memory below 4 GiB; registers above are refused. Kerla maps
//!   that range write-back; on x86 the firmware's MTRRs make the PCI hole
//!   uncacheable regardless, and QEMU's devices do not care.

use alloc::vec::Vec;
use core::ptr::NonNull;

use kerla_api::address::PAddr;
use kerla_api::arch::PAGE_SIZE;
use kerla_api::mm::{alloc_pages, AllocPageFlags};
use kerla_api::sync::SpinLock;
use virtio_blk_mq::{Hal, PhysAddr};

/// End of Kerla's straight map (its runtime's `KERNEL_STRAIGHT_MAP_PADDR_END`,
/// which `kerla_api` does not re-export): physical memory below 4 GiB.
const STRAIGHT_MAP_END: u64 = 1 << 32;

/// DMA memory given back, by (physical address, pages). Used at setup and
/// teardown only, never on the I/O path.
static POOL: SpinLock<Vec<(u64, usize)>> = SpinLock::new(Vec::new());

/// Whether `[paddr, paddr + len)` lies inside the straight map.
pub(crate) fn in_straight_map(paddr: u64, len: usize) -> bool {
    paddr
        .checked_add(len as u64)
        .is_some_and(|end| end <= STRAIGHT_MAP_END)
}

/// The kext's DMA and register services.
#[derive(Clone, Copy, Debug, Default)]
pub struct KextHal;

// SAFETY: dma_alloc hands out pages from Kerla's allocator (contiguous,
// page-aligned, owned by us until given back) or from the pool (pages the
// driver gave back, so no longer used by anyone), zeroed either way, and
// reachable by the device at their physical address; every clone shares
// the one allocator and pool. map_mmio returns straight-map addresses,
// which stay mapped for the kernel's life.
unsafe impl Hal for KextHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        let pages = pages.max(1);
        let reused = {
            let mut pool = POOL.lock();
            let found = pool.iter().position(|&(_, n)| n == pages);
            found.map(|at| pool.swap_remove(at).0)
        };
        if let Some(paddr) = reused {
            let ptr = NonNull::new(PAddr::new(paddr as usize).as_mut_ptr::<u8>())?;
            // SAFETY: pool pages belong to nobody (the driver gave them back
            // once the device let go) and lie in the straight map.
            unsafe { ptr.as_ptr().write_bytes(0, pages * PAGE_SIZE) };
            return Some((paddr, ptr));
        }
        let paddr = alloc_pages(pages, AllocPageFlags::KERNEL).ok()?;
        if !in_straight_map(paddr.value() as u64, pages * PAGE_SIZE) {
            kerla_api::warn!("virtio-blk-mq kext: pages at {paddr} are outside the straight map");
            return None;
        }
        Some((paddr.value() as u64, NonNull::new(paddr.as_mut_ptr())?))
    }

    unsafe fn dma_dealloc(&self, paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) {
        POOL.lock().push((paddr, pages.max(1)));
    }

    fn map_mmio(&self, paddr: PhysAddr, len: usize) -> Option<NonNull<u8>> {
        if !in_straight_map(paddr, len) {
            kerla_api::warn!(
                "virtio-blk-mq kext: registers at {paddr:#x} lie above the straight map (4 GiB)"
            );
            return None;
        }
        NonNull::new(PAddr::new(paddr as usize).as_mut_ptr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_above_4_gib_are_refused() {
        assert!(in_straight_map(0xfe00_0000, 0x4000));
        assert!(!in_straight_map(0xffff_f000, 0x2000));
        assert!(!in_straight_map(u64::MAX, 1));
        assert!(KextHal.map_mmio(0x1_0000_0000, 0x1000).is_none());
    }
}
