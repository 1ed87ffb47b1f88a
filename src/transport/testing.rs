//! Fixtures for the transport unit tests: page-aligned heap memory standing
//! in for device registers, and a Hal that maps made-up physical addresses
//! onto it (and hands out DMA memory whose device address is its pointer).

extern crate std;

use core::ptr::NonNull;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::{Arc, Mutex};
use std::vec::Vec;

use crate::hal::{Hal, PhysAddr, PAGE_SIZE};

fn layout(len: usize) -> Layout {
    Layout::from_size_align(len.max(1), PAGE_SIZE).expect("page layout")
}

/// Zeroed, page-aligned heap memory playing a register block. The fake
/// device reads and writes it through raw pointers; no reference to it is
/// ever formed, so the driver's volatile accesses alias nothing.
pub(crate) struct Block {
    ptr: NonNull<u8>,
    len: usize,
}

impl Block {
    pub(crate) fn new(len: usize) -> Self {
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout(len)) }).expect("test memory");
        Block { ptr, len }
    }

    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
    }

    pub(crate) fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// True when `addr` lies in `[start, start + len)` of this block.
    pub(crate) fn offset_of(&self, addr: usize, start: usize, len: usize) -> Option<usize> {
        let from = self.addr() + start;
        (from..from + len).contains(&addr).then(|| addr - from)
    }

    pub(crate) fn bytes<const N: usize>(&self, offset: usize) -> [u8; N] {
        assert!(offset + N <= self.len, "fake register read out of bounds");
        let mut out = [0u8; N];
        // SAFETY: in bounds (asserted); plain memory owned by self.
        unsafe {
            core::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(offset), out.as_mut_ptr(), N)
        };
        out
    }

    pub(crate) fn set_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.len,
            "fake register write out of bounds"
        );
        // SAFETY: in bounds (asserted); plain memory owned by self.
        unsafe {
            core::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            )
        };
    }

    pub(crate) fn u8(&self, offset: usize) -> u8 {
        self.bytes::<1>(offset)[0]
    }

    pub(crate) fn u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes(self.bytes(offset))
    }

    pub(crate) fn u32(&self, offset: usize) -> u32 {
        u32::from_le_bytes(self.bytes(offset))
    }

    pub(crate) fn set_u8(&self, offset: usize, value: u8) {
        self.set_bytes(offset, &[value]);
    }

    pub(crate) fn set_u16(&self, offset: usize, value: u16) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    pub(crate) fn set_u32(&self, offset: usize, value: u32) {
        self.set_bytes(offset, &value.to_le_bytes());
    }

    pub(crate) fn set_u64(&self, offset: usize, value: u64) {
        self.set_bytes(offset, &value.to_le_bytes());
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr.as_ptr(), layout(self.len)) }
    }
}

#[derive(Default)]
struct HalState {
    /// (physical address, length, virtual address) of each fake register block.
    windows: Vec<(PhysAddr, usize, usize)>,
    /// Every `map_mmio` call: (physical address, length).
    maps: Vec<(PhysAddr, usize)>,
    refuse_maps: bool,
}

/// A Hal for transport tests: DMA memory from the heap (device address =
/// pointer), register "physical addresses" translated onto [`Block`]s.
#[derive(Clone, Default)]
pub(crate) struct BusHal {
    state: Arc<Mutex<HalState>>,
}

impl BusHal {
    /// Makes `block` appear at physical address `paddr`.
    pub(crate) fn place(&self, paddr: PhysAddr, block: &Block) {
        let mut state = self.state.lock().unwrap();
        state.windows.push((paddr, block.len(), block.addr()));
    }

    /// The `map_mmio` calls made so far.
    pub(crate) fn maps(&self) -> Vec<(PhysAddr, usize)> {
        self.state.lock().unwrap().maps.clone()
    }

    /// Makes every later `map_mmio` fail.
    pub(crate) fn refuse_maps(&self) {
        self.state.lock().unwrap().refuse_maps = true;
    }
}

// SAFETY: DMA memory comes zeroed and page-aligned from the global allocator
// and is owned until dma_dealloc; the test "device" is this process, which
// reaches it at its own address. Register mappings point into `Block`s the
// tests keep alive for longer than every transport built on them.
unsafe impl Hal for BusHal {
    fn dma_alloc(&self, pages: usize) -> Option<(PhysAddr, NonNull<u8>)> {
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout(pages * PAGE_SIZE)) })?;
        Some((ptr.as_ptr() as PhysAddr, ptr))
    }

    unsafe fn dma_dealloc(&self, _paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) {
        // SAFETY: the caller passes back what dma_alloc returned for `pages`.
        unsafe { dealloc(vaddr.as_ptr(), layout(pages * PAGE_SIZE)) }
    }

    fn map_mmio(&self, paddr: PhysAddr, len: usize) -> Option<NonNull<u8>> {
        let mut state = self.state.lock().unwrap();
        state.maps.push((paddr, len));
        if state.refuse_maps {
            return None;
        }
        let end = paddr.checked_add(len as u64)?;
        let &(start, size, vaddr) = state
            .windows
            .iter()
            .find(|(start, size, _)| paddr >= *start && end <= start + *size as u64)?;
        let _ = size;
        NonNull::new((vaddr + (paddr - start) as usize) as *mut u8)
    }
}
