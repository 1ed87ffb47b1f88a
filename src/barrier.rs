//! Barriers between the CPU and a device that is not another CPU.
//!
//! The rings order their shared-memory accesses with Rust atomics and fences
//! (DESIGN.md §3). Those order memory as other CPUs see it, which is enough
//! for a device implemented in software on a CPU (a hypervisor, a vhost-user
//! backend): VIRTIO 1.2 §6.1 lets a driver assume that when
//! VIRTIO_F_ORDER_PLATFORM is not negotiated. A device that negotiates it is
//! hardware (or a device model that wants the platform's DMA rules), and on
//! weakly ordered CPUs a DMA master outside the CPUs' shareability domain
//! needs the platform's own barriers as well. On x86 the CPU orders stores
//! to write-back memory with DMA and with uncached MMIO, so these are
//! compiler fences there.
//!
//! The doorbell is an MMIO write: on every platform it must not overtake the
//! ring writes that it announces, which is what [`before_doorbell`] orders.

use crate::sync::atomic::{fence, Ordering};
use core::sync::atomic::compiler_fence;

/// Rule 1 with a hardware device: the chain's stores reach the device
/// before the store that publishes it (the write half of a DMA barrier).
#[inline(always)]
pub(crate) fn before_publish(platform: bool) {
    if platform {
        dma_write_barrier();
    }
}

/// Rules 2 and 4: a full fence between our stores and our loads of what the
/// device wrote; with a hardware device, one that orders DMA as well.
#[inline(always)]
pub(crate) fn full(platform: bool) {
    fence(Ordering::SeqCst);
    if platform {
        full_barrier();
    }
}

/// Rule 3 with a hardware device: the used index (or flags) is read before
/// the element it covers (the read half of a DMA barrier).
#[inline(always)]
pub(crate) fn after_consume(platform: bool) {
    if platform {
        dma_read_barrier();
    }
}

/// Before the doorbell's MMIO write: every store to the ring before it is
/// visible to the device first. An I/O write barrier on weakly ordered
/// CPUs; on x86 a compiler fence (the volatile write must not be moved
/// above the ring stores by the compiler).
#[inline(always)]
pub(crate) fn before_doorbell() {
    compiler_fence(Ordering::SeqCst);
    dma_write_barrier();
}

#[inline(always)]
fn dma_write_barrier() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; it reads and writes no memory of ours.
    // Without `nomem` it is also a compiler barrier.
    unsafe {
        core::arch::asm!("dmb oshst", options(nostack, preserves_flags))
    };
    #[cfg(any(target_arch = "riscv32", target_arch = "riscv64"))]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("fence w,o", options(nostack, preserves_flags))
    };
    #[cfg(not(any(
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64"
    )))]
    compiler_fence(Ordering::SeqCst);
}

#[inline(always)]
fn dma_read_barrier() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; it reads and writes no memory of ours.
    unsafe {
        core::arch::asm!("dmb oshld", options(nostack, preserves_flags))
    };
    #[cfg(any(target_arch = "riscv32", target_arch = "riscv64"))]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("fence ir,ir", options(nostack, preserves_flags))
    };
    #[cfg(not(any(
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64"
    )))]
    compiler_fence(Ordering::SeqCst);
}

#[inline(always)]
fn full_barrier() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier instruction; it reads and writes no memory of ours.
    unsafe {
        core::arch::asm!("dsb sy", options(nostack, preserves_flags))
    };
    #[cfg(any(target_arch = "riscv32", target_arch = "riscv64"))]
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("fence iorw,iorw", options(nostack, preserves_flags))
    };
    // x86: the SeqCst fence before this is already `mfence`.
    #[cfg(not(any(
        target_arch = "aarch64",
        target_arch = "riscv32",
        target_arch = "riscv64"
    )))]
    compiler_fence(Ordering::SeqCst);
}
