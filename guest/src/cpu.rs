//! Per-CPU state: each CPU's GDT, TSS (whose IST stacks every interrupt
//! runs on), and its index, reached through the GS base.
//!
//! Every interrupt switches to an IST stack because the kernel is built for
//! a hosted target whose code assumes a 128-byte red zone below `rsp`: an
//! interrupt pushed onto the interrupted stack would overwrite it.

use alloc::boxed::Box;
use core::arch::asm;
use core::sync::atomic::{AtomicUsize, Ordering};

use crate::arch;

/// Most CPUs the kernel drives.
pub const MAX_CPUS: usize = 16;

/// Bytes of each IST stack.
const IST_STACK_SIZE: usize = 32 * 1024;

/// IST slot (1-based) for interrupts.
pub const IST_INTERRUPTS: u8 = 1;
/// IST slot for CPU exceptions, so a fault inside an interrupt handler still
/// has a clean stack to report on.
pub const IST_EXCEPTIONS: u8 = 2;

/// Selectors of the per-CPU GDT.
pub const KERNEL_CODE: u16 = 0x08;
const KERNEL_DATA: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;

/// The 64-bit task-state segment (Intel SDM vol. 3 §8.7).
#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

/// One CPU's descriptor tables and identity. Leaked at bring-up: CPUs never go away.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Points to itself, so `gs:[0]` yields the structure.
    this: *const PerCpu,
    /// Dense index: 0 is the bootstrap CPU, then APs in the order they came up.
    pub index: usize,
    /// Local APIC id.
    pub apic_id: u32,
    gdt: [u64; 5],
    tss: Tss,
}

/// CPUs set up so far.
static ONLINE: AtomicUsize = AtomicUsize::new(0);

/// CPUs that have run [`init_this_cpu`].
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

fn stack_top() -> u64 {
    let stack = Box::leak(alloc::vec![0u8; IST_STACK_SIZE].into_boxed_slice());
    // The ABI wants 16-byte alignment at a call; the CPU aligns the IST to 16.
    (stack.as_ptr() as u64 + IST_STACK_SIZE as u64) & !0xF
}

/// Gives the calling CPU its GDT, TSS with IST stacks and GS base; loads
/// the shared IDT. Returns the CPU's index.
pub fn init_this_cpu(apic_id: u32) -> usize {
    let index = ONLINE.fetch_add(1, Ordering::AcqRel);
    assert!(index < MAX_CPUS, "more than {MAX_CPUS} CPUs");
    let mut ist = [0u64; 7];
    ist[usize::from(IST_INTERRUPTS) - 1] = stack_top();
    ist[usize::from(IST_EXCEPTIONS) - 1] = stack_top();
    let cpu = Box::leak(Box::new(PerCpu {
        this: core::ptr::null(),
        index,
        apic_id,
        gdt: [0; 5],
        tss: Tss {
            reserved0: 0,
            rsp: [0; 3],
            reserved1: 0,
            ist,
            reserved2: 0,
            reserved3: 0,
            iomap_base: size_of::<Tss>() as u16,
        },
    }));
    cpu.this = cpu;
    let tss = core::ptr::addr_of!(cpu.tss) as u64;
    let limit = (size_of::<Tss>() - 1) as u64;
    cpu.gdt = [
        0,
        0x0020_9A00_0000_0000, // 64-bit code, ring 0
        0x0000_9200_0000_0000, // data
        // Available 64-bit TSS (type 9), present; base split over two entries.
        limit | (tss & 0xFF_FFFF) << 16 | 0x89 << 40 | (tss >> 24 & 0xFF) << 56,
        tss >> 32,
    ];
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let gdt = Pointer {
        limit: (size_of::<[u64; 5]>() - 1) as u16,
        base: cpu.gdt.as_ptr() as u64,
    };
    // SAFETY: the GDT is leaked (lives forever) and holds the same code and
    // data descriptors the boot GDT had, so reloading CS/SS keeps this code
    // running; the TSS descriptor points at this CPU's leaked TSS; the GS
    // base is this CPU's leaked PerCpu.
    unsafe {
        asm!(
            "lgdt [{gdt}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {data:x}",
            "ltr {tss:x}",
            gdt = in(reg) &gdt,
            code = in(reg) u64::from(KERNEL_CODE),
            data = in(reg) KERNEL_DATA,
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
        const IA32_GS_BASE: u32 = 0xC000_0101;
        arch::wrmsr(IA32_GS_BASE, cpu as *const PerCpu as u64);
    }
    crate::idt::load();
    index
}

/// The calling CPU's state.
pub fn this_cpu() -> &'static PerCpu {
    let this: *const PerCpu;
    // SAFETY: GS base points at this CPU's leaked PerCpu (init_this_cpu runs
    // before anything asks), whose first field points to itself.
    unsafe {
        asm!("mov {}, gs:[0]", out(reg) this, options(nostack, readonly, preserves_flags));
        &*this
    }
}

/// The calling CPU's index (0 = bootstrap CPU).
pub fn index() -> usize {
    this_cpu().index
}
