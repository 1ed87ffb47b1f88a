//! vblk-guest: a freestanding x86_64 kernel that stands in for Kerla under
//! QEMU. It boots through PVH, brings up every vCPU, finds the virtio-blk
//! device (virtio-pci or virtio-mmio) — itself, or with `kext=1` through
//! the Kerla kext it loads as Kerla would (`kerla`, `kext`) — runs the
//! fio-style job given on the kernel command line with one queue per vCPU,
//! prints the bench CLI's report, and leaves QEMU with a pass/fail status.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;

mod apic;
mod arch;
mod blkdev;
mod boot;
mod bootinfo;
mod cmdline;
mod cpu;
mod drive;
mod exit;
mod hal;
mod health;
mod idt;
mod inject;
mod irq;
mod job;
mod kerla;
mod kext;
mod libc;
mod logger;
mod mm;
mod pci;
mod serial;
mod smp;
mod stall;
mod time;
mod wait;

use exit::Status;

/// Heartbeat period of each CPU's local APIC timer, in timer ticks (QEMU's
/// APIC timer counts at 1 GHz: 10 ms).
const HEARTBEAT_TICKS: u32 = 10_000_000;

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
    idt::init();
    cpu::init_this_cpu(apic::id());
    apic::mask_legacy_pic();
    apic::init_local();
    let nothing = || {};
    for vector in [irq::WAKE_VECTOR, irq::HEARTBEAT_VECTOR] {
        if irq::attach_vector(vector, alloc::boxed::Box::new(nothing)).is_err() {
            fail("the fixed vectors are taken");
        }
    }
    arch::enable_interrupts();
    let tsc_hz = time::calibrate().unwrap_or_else(|why| fail(why));
    let options = cmdline::parse(boot.cmdline).unwrap_or_else(|why| fail(&why));
    let cpus = smp::start_aps(options.cpus);
    println!(
        "vblk-guest: {cpus} CPUs, TSC {} MHz, {} MiB free",
        tsc_hz / 1_000_000,
        mm::free_bytes() >> 20
    );
    if options.probe {
        println!("vblk-guest: probe passed");
        exit::exit(Status::Passed);
    }
    smp::run_on_cpus(cpus, &|_| {
        apic::start_heartbeat(irq::HEARTBEAT_VECTOR, HEARTBEAT_TICKS)
    });
    let devices = pci::enumerate();
    for device in &devices {
        let f = device.function;
        let (class, subclass, _) = device.class;
        let caps: alloc::vec::Vec<_> = device.capabilities.iter().map(|&(id, _)| id).collect();
        println!(
            "vblk-guest: PCI {:02x}:{:02x}.{} {:04x}:{:04x} class {class:02x}{subclass:02x} caps {caps:02x?}",
            f.bus, f.device, f.function, device.vendor_id, device.device_id
        );
    }
    let summary = if options.kext {
        kext::run(&options, cpus).unwrap_or_else(|(status, why)| {
            println!("vblk-guest: error: {why}");
            exit::exit(status)
        })
    } else {
        blkdev::run(&options, &devices, cpus).unwrap_or_else(|why| fail(&why))
    };
    print!("{}", vblk_report::normal::normal(&summary, 1));
    println!(
        "{}",
        vblk_report::json::report(&summary, concat!("vblk-guest-", env!("CARGO_PKG_VERSION")))
    );
    if summary.failed() {
        println!(
            "vblk-guest: run failed: {} errors, {} verify errors",
            summary.errors, summary.verify_errors
        );
        exit::exit(Status::Failed)
    }
    exit::exit(Status::Passed)
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

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    serial::print_unlocked(format_args!("vblk-guest: panic: {info}\n"));
    exit::exit(Status::Broken)
}
