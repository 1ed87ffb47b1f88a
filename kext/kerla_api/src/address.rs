//! Physical and kernel-virtual addresses (Kerla's `kerla_api::address`).
//!
//! Physical memory below 4 GiB is mapped at `0xffff_8000_0000_0000 +
//! paddr` (the straight map, or direct map): that is how the kernel reaches
//! a page it allocated, and device registers below 4 GiB.

use core::fmt;

use crate::arch::{KERNEL_BASE_ADDR, KERNEL_STRAIGHT_MAP_PADDR_END};

/// A physical address: what a device (DMA) or the page allocator sees.
#[derive(Debug, Copy, Clone, Eq, PartialEq, Ord, PartialOrd, Hash)]
#[repr(transparent)]
pub struct PAddr(usize);

impl PAddr {
    /// The address `addr`.
    pub const fn new(addr: usize) -> PAddr {
        PAddr(addr)
    }

    /// True for address 0.
    pub const fn is_null(self) -> bool {
        self.0 == 0
    }

    /// Where the straight map shows this address. Only meaningful below
    /// 4 GiB (checked in debug builds).
    pub const fn as_vaddr(self) -> VAddr {
        debug_assert!(self.0 < KERNEL_STRAIGHT_MAP_PADDR_END);
        VAddr::new(self.0 + KERNEL_BASE_ADDR)
    }

    /// [`PAddr::as_vaddr`] as a pointer.
    pub const fn as_ptr<T>(self) -> *const T {
        debug_assert!(self.0 < KERNEL_STRAIGHT_MAP_PADDR_END);
        (self.0 + KERNEL_BASE_ADDR) as *const T
    }

    /// [`PAddr::as_vaddr`] as a mutable pointer.
    pub const fn as_mut_ptr<T>(self) -> *mut T {
        debug_assert!(self.0 < KERNEL_STRAIGHT_MAP_PADDR_END);
        (self.0 + KERNEL_BASE_ADDR) as *mut T
    }

    /// `offset` bytes further.
    #[must_use]
    pub const fn add(self, offset: usize) -> PAddr {
        PAddr(self.0 + offset)
    }

    /// The address as a number.
    pub const fn value(self) -> usize {
        self.0
    }
}

impl fmt::Display for PAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A kernel virtual address inside the straight map.
#[derive(Debug, Copy, Clone, Eq, PartialEq, Ord, PartialOrd, Hash)]
#[repr(transparent)]
pub struct VAddr(usize);

impl VAddr {
    /// The address `addr` (inside the straight map, checked in debug builds).
    pub const fn new(addr: usize) -> VAddr {
        debug_assert!(addr >= KERNEL_BASE_ADDR);
        VAddr(addr)
    }

    /// The physical address the straight map shows here.
    pub const fn as_paddr(self) -> PAddr {
        debug_assert!(self.0 >= KERNEL_BASE_ADDR);
        PAddr::new(self.0 - KERNEL_BASE_ADDR)
    }

    /// Whether `addr` lies inside the straight map.
    pub const fn is_accessible_from_kernel(addr: usize) -> bool {
        addr >= KERNEL_BASE_ADDR && addr < KERNEL_BASE_ADDR + KERNEL_STRAIGHT_MAP_PADDR_END
    }

    /// The address as a pointer.
    pub const fn as_ptr<T>(self) -> *const T {
        self.0 as *const T
    }

    /// The address as a mutable pointer.
    pub const fn as_mut_ptr<T>(self) -> *mut T {
        self.0 as *mut T
    }

    /// `offset` bytes further.
    #[must_use]
    pub const fn add(self, offset: usize) -> VAddr {
        VAddr::new(self.0 + offset)
    }

    /// The address as a number.
    pub const fn value(self) -> usize {
        self.0
    }
}

impl fmt::Display for VAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_straight_map_is_an_offset() {
        let paddr = PAddr::new(0x1234_5000);
        assert_eq!(paddr.as_vaddr().value(), 0xffff_8000_1234_5000);
        assert_eq!(paddr.as_vaddr().as_paddr(), paddr);
        assert_eq!(paddr.add(0x10).value(), 0x1234_5010);
        assert!(VAddr::is_accessible_from_kernel(paddr.as_vaddr().value()));
        assert!(!VAddr::is_accessible_from_kernel(0x1000));
    }
}
