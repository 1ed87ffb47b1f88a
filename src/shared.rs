//! Typed views of memory shared with the device.
//!
//! The ring structures in [`crate::spec`] are made of atomics, so a shared
//! reference to them is sound while the device writes the same memory: every
//! access names its ordering at the call site. This module is the only place
//! where raw DMA memory becomes such a reference.

#[cfg(not(all(test, loom)))]
use core::marker::PhantomData;
#[cfg(not(all(test, loom)))]
use core::ptr::NonNull;

use crate::hal::{DmaRegion, Hal};

/// An array of `T` inside a [`DmaRegion`] owned by the same struct.
#[cfg(not(all(test, loom)))]
pub(crate) struct SharedArray<T> {
    ptr: NonNull<T>,
    len: usize,
    _marker: PhantomData<T>,
}

/// Under loom the "shared memory" is an array of loom atomics of its own,
/// which the model's device thread reaches through [`SharedArray::share`]:
/// loom atomics cannot be laid over raw memory.
#[cfg(all(test, loom))]
pub(crate) struct SharedArray<T> {
    cells: alloc::sync::Arc<[T]>,
}

// SAFETY: the array points into DMA memory that its owner holds exclusively
// (the owner is Send and moves the region together with this view); `T` is an
// atomic type, so accesses from whichever thread owns the ring are sound.
#[cfg(not(all(test, loom)))]
unsafe impl<T: Sync> Send for SharedArray<T> {}

#[cfg(not(all(test, loom)))]
impl<T> SharedArray<T> {
    /// A view of `len` values of `T` starting `offset` bytes into `region`.
    ///
    /// # Safety
    /// `T` must be a `repr(C)` struct of atomics (or an atomic) for which the
    /// all-zero pattern is valid; `offset` must be aligned for `T`; the view must
    /// not outlive `region` (its owner keeps both and drops the view first or
    /// together).
    pub(crate) unsafe fn new<H: Hal>(region: &DmaRegion<H>, offset: usize, len: usize) -> Self {
        let bytes = offset + len * core::mem::size_of::<T>();
        assert!(bytes <= region.len(), "shared array beyond its region");
        assert_eq!(
            offset % core::mem::align_of::<T>(),
            0,
            "misaligned shared array"
        );
        // SAFETY: `offset` is inside the region (checked above), so the pointer is
        // in bounds of one allocation and, the region's base being non-null,
        // non-null too.
        let ptr =
            unsafe { NonNull::new_unchecked(region.vaddr().as_ptr().add(offset)) }.cast::<T>();
        SharedArray {
            ptr,
            len,
            _marker: PhantomData,
        }
    }

    /// The whole array.
    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        // SAFETY: `new` checked bounds and alignment; the memory is zero-initialised
        // DMA memory that lives as long as the owner of `self`, and `T` consists of
        // atomics, so shared references coexist with the device's writes.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// Element `index`; panics only on a driver bug (indices are computed by the
    /// driver, never taken from the device unchecked).
    #[inline]
    pub(crate) fn get(&self, index: usize) -> &T {
        &self.as_slice()[index]
    }
}

#[cfg(all(test, loom))]
impl<T: Default> SharedArray<T> {
    /// `len` fresh zero values; the region's memory is not used.
    ///
    /// # Safety
    /// None needed; `unsafe` only to match the real constructor.
    pub(crate) unsafe fn new<H: Hal>(region: &DmaRegion<H>, offset: usize, len: usize) -> Self {
        let bytes = offset + len * core::mem::size_of::<T>();
        assert!(bytes <= region.len(), "shared array beyond its region");
        SharedArray {
            cells: (0..len).map(|_| T::default()).collect(),
        }
    }
}

#[cfg(all(test, loom))]
impl<T> SharedArray<T> {
    pub(crate) fn as_slice(&self) -> &[T] {
        &self.cells
    }

    pub(crate) fn get(&self, index: usize) -> &T {
        &self.cells[index]
    }

    /// The cells, for the model's device thread.
    pub(crate) fn share(&self) -> alloc::sync::Arc<[T]> {
        self.cells.clone()
    }
}
