//! What a kernel provides to the driver: DMA memory and its device addresses.

use core::fmt;
use core::ptr::NonNull;

/// A device-visible (bus / guest-physical) address.
pub type PhysAddr = u64;

/// Size of the unit the Hal allocates in.
pub const PAGE_SIZE: usize = 4096;

/// Memory services a kernel provides.
///
/// # Implementation safety
/// `dma_alloc` must return memory that is zeroed, aligned to [`PAGE_SIZE`],
/// valid for reads and writes for `pages * PAGE_SIZE` bytes until it is passed
/// to `dma_dealloc`, not aliased by any Rust reference, and reachable by the
/// device at the returned [`PhysAddr`]. Clones of one Hal must share one
/// allocator: memory allocated through one clone may be freed through another.
///
/// A pointer returned by `map_mmio` must be valid for volatile reads and
/// writes of the `len` bytes asked for, reach the device's registers at
/// `paddr` through an uncached (device-memory) mapping, and stay mapped for
/// the rest of the program: the transports never unmap, and the doorbells and
/// interrupt handles they hand out keep using the mapping.
pub unsafe trait Hal: Clone + Send + 'static {
    /// Allocates `pages` contiguous zeroed pages of DMA memory; `None` when out of memory.
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)>;

    /// Frees memory returned by [`Hal::dma_alloc`].
    ///
    /// # Safety
    /// `paddr`, `vaddr` and `pages` must be exactly what one earlier
    /// `dma_alloc` call returned and was asked for, the memory must not be freed
    /// twice, and the device must no longer access it.
    unsafe fn dma_dealloc(&self, paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize);

    /// Maps `len` bytes of device registers at physical address `paddr` (a
    /// PCI BAR region, a virtio-mmio window) into the kernel's address space,
    /// uncached, and returns the virtual address of `paddr` itself; `None`
    /// when it cannot. `paddr` need not be page aligned: map the pages around
    /// it and return a pointer into them. An identity-mapped kernel returns
    /// `paddr` as a pointer (after making sure the range is mapped uncached).
    ///
    /// Used once per register region when a transport is built
    /// ([`crate::transport::pci::PciTransport::new`],
    /// [`crate::transport::mmio::MmioTransport::new`]), never on the I/O path.
    /// The default maps nothing, for a Hal that only provides DMA memory (the
    /// simulator's).
    ///
    /// # Implementation safety
    /// See the trait: the mapping must be valid, uncached, and permanent.
    fn map_mmio(&self, paddr: PhysAddr, len: usize) -> Option<NonNull<u8>> {
        let _ = (paddr, len);
        None
    }
}

/// One DMA allocation, freed when dropped.
pub(crate) struct DmaRegion<H: Hal> {
    hal: H,
    paddr: PhysAddr,
    vaddr: NonNull<u8>,
    pages: usize,
}

// SAFETY: the region is plain memory owned exclusively by this value; the Hal is Send.
unsafe impl<H: Hal> Send for DmaRegion<H> {}

impl<H: Hal> DmaRegion<H> {
    /// Allocates at least `bytes` bytes (at least one page).
    pub(crate) fn new(hal: &H, bytes: usize) -> Option<Self> {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1);
        let (paddr, vaddr) = hal.dma_alloc(pages)?;
        Some(DmaRegion {
            hal: hal.clone(),
            paddr,
            vaddr,
            pages,
        })
    }

    pub(crate) fn paddr(&self) -> PhysAddr {
        self.paddr
    }

    pub(crate) fn vaddr(&self) -> NonNull<u8> {
        self.vaddr
    }

    pub(crate) fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }
}

impl<H: Hal> Drop for DmaRegion<H> {
    fn drop(&mut self) {
        // SAFETY: the three values come from the dma_alloc call in `new`, and the
        // owner of this region (a ring or slab) drops it only after the device
        // has been reset or the region was never handed to it.
        unsafe { self.hal.dma_dealloc(self.paddr, self.vaddr, self.pages) }
    }
}

/// An owned data buffer in DMA memory.
///
/// Submitting a request moves the buffer into the queue; the completion gives
/// it back. While the device may write it, no one else can reach it.
pub struct DmaBuffer<H: Hal> {
    region: DmaRegion<H>,
    len: usize,
}

impl<H: Hal> DmaBuffer<H> {
    /// Allocates a zeroed buffer of `len` bytes; `None` when the Hal is out of memory.
    pub fn new(hal: &H, len: usize) -> Option<Self> {
        Some(DmaBuffer {
            region: DmaRegion::new(hal, len)?,
            len,
        })
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Device address of the first byte.
    pub fn paddr(&self) -> PhysAddr {
        self.region.paddr()
    }

    /// The contents.
    ///
    /// Only a buffer the caller owns can be read: one never submitted, or
    /// handed back by a completion or a recovery. The driver hands a buffer
    /// back only once the device is done with it by the protocol (its
    /// request completed) or cannot reach it any more (the device was
    /// reset); a request failed because the device broke keeps its buffer
    /// until that reset. A device that completes a request and goes on
    /// writing its buffer breaks the protocol in a way no driver can see
    /// (README, SECURITY: confine such a device with an IOMMU or bounce
    /// buffers).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the region holds at least `len` initialised (zeroed) bytes and
        // is owned by self. A buffer in flight is owned by the queue, not by a
        // caller, and comes back only when the device is done with it or was
        // reset (see above), so no device write races this borrow unless the
        // device breaks the protocol undetectably, which the threat model
        // leaves to an IOMMU.
        unsafe { core::slice::from_raw_parts(self.region.vaddr().as_ptr(), self.len) }
    }

    /// The contents, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.region.vaddr().as_ptr(), self.len) }
    }
}

impl<H: Hal> fmt::Debug for DmaBuffer<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("paddr", &format_args!("{:#x}", self.paddr()))
            .field("len", &self.len)
            .finish()
    }
}

/// A Hal over the host allocator for unit tests: device address = pointer.
#[cfg(test)]
pub(crate) mod test_hal {
    extern crate std;

    use super::{Hal, PhysAddr, PAGE_SIZE};
    use core::ptr::NonNull;
    use std::alloc::{alloc_zeroed, dealloc, Layout};

    #[derive(Clone, Copy, Default)]
    pub(crate) struct TestHal;

    fn layout(pages: usize) -> Layout {
        Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("page layout")
    }

    // SAFETY: memory comes zeroed and page-aligned from the global allocator,
    // is exclusively owned until dma_dealloc, and the test "device" is this
    // process, which reaches it at its own address.
    unsafe impl Hal for TestHal {
        fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
            // SAFETY: the layout has a non-zero size.
            let ptr = NonNull::new(unsafe { alloc_zeroed(layout(pages)) })?;
            Some((ptr.as_ptr() as PhysAddr, ptr))
        }

        unsafe fn dma_dealloc(&self, _paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
            // SAFETY: the caller passes back what dma_alloc returned for `pages`.
            unsafe { dealloc(vaddr.as_ptr(), layout(pages)) }
        }
    }
}
