//! Architecture constants (Kerla's `kerla_api::arch`).

/// Bytes in a page.
pub const PAGE_SIZE: usize = 4096;

/// Where the straight map starts: physical address `P` is at
/// `KERNEL_BASE_ADDR + P`. Crate-private: Kerla keeps it in its runtime,
/// out of kexts' reach.
pub(crate) const KERNEL_BASE_ADDR: usize = 0xffff_8000_0000_0000;

/// End of the straight map: physical memory below 4 GiB. Crate-private,
/// as in Kerla.
pub(crate) const KERNEL_STRAIGHT_MAP_PADDR_END: usize = 0x1_0000_0000;
