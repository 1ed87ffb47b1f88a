//! Application processors: started one by one with INIT-SIPI-SIPI through a
//! real-mode trampoline copied below 1 MiB, then parked until the bootstrap
//! CPU hands them work with [`run_on_cpus`].

use core::arch::global_asm;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};

use crate::cpu::{self, MAX_CPUS};
use crate::{apic, arch, irq, mm, time};

/// Physical page the trampoline runs from (the SIPI vector is its page number).
const TRAMPOLINE: usize = 0x8000;
/// Stack of each application processor.
const AP_STACK_PAGES: usize = 16;

// AT&T syntax: the trampoline's addresses are differences of labels, which
// the Intel-syntax parser refuses in operands.
global_asm!(
    ".section .rodata",
    ".global ap_trampoline",
    ".global ap_trampoline_end",
    ".code16",
    "ap_trampoline:",
    "    cli",
    "    cld",
    "    xorw %ax, %ax",
    "    movw %ax, %ds",
    "    lgdtl ({base} + ap_gdt_pointer - ap_trampoline)",
    "    movl %cr0, %eax",
    "    orl $1, %eax",
    "    movl %eax, %cr0",
    "    ljmpl $0x08, ${base} + ap_protected - ap_trampoline",
    ".code32",
    "ap_protected:",
    "    movw $0x10, %ax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %ss",
    "    movl %cr4, %eax",
    "    orl $0x620, %eax",
    "    movl %eax, %cr4",
    "    movl ({base} + ap_cr3 - ap_trampoline), %eax",
    "    movl %eax, %cr3",
    "    movl $0xC0000080, %ecx",
    "    rdmsr",
    "    orl $0x100, %eax",
    "    wrmsr",
    "    movl %cr0, %eax",
    "    andl $0xFFFFFFF3, %eax",
    "    orl $0x80000003, %eax",
    "    movl %eax, %cr0",
    "    ljmpl $0x18, ${base} + ap_long - ap_trampoline",
    ".code64",
    "ap_long:",
    "    movw $0x10, %ax",
    "    movw %ax, %ds",
    "    movw %ax, %es",
    "    movw %ax, %ss",
    "    xorl %eax, %eax",
    "    movw %ax, %fs",
    "    movw %ax, %gs",
    "    fninit",
    "    movq ({base} + ap_stack - ap_trampoline), %rsp",
    "    movq ({base} + ap_entry - ap_trampoline), %rax",
    "    call *%rax",
    "    ud2",
    ".balign 8",
    "ap_gdt:",
    "    .quad 0",
    "    .quad 0x00CF9A000000FFFF", // 0x08: 32-bit code
    "    .quad 0x00CF92000000FFFF", // 0x10: data
    "    .quad 0x00209A0000000000", // 0x18: 64-bit code
    "ap_gdt_end:",
    "ap_gdt_pointer:",
    "    .word ap_gdt_end - ap_gdt - 1",
    "    .long {base} + ap_gdt - ap_trampoline",
    ".balign 8",
    ".global ap_cr3",
    "ap_cr3: .quad 0",
    "ap_stack: .quad 0",
    "ap_entry: .quad 0",
    "ap_trampoline_end:",
    ".code64",
    base = const TRAMPOLINE,
    options(att_syntax),
);

extern "C" {
    static ap_trampoline: u8;
    static ap_trampoline_end: u8;
    static ap_cr3: u8;
}

/// Offset of a trampoline data field, from the trampoline's start.
fn field_offset(field: *const u8) -> usize {
    field as usize - core::ptr::addr_of!(ap_trampoline) as usize
}

/// Set by each AP once it runs Rust code; the BSP waits for it.
static STARTED: AtomicU32 = AtomicU32::new(0);

/// Per-CPU mailbox: a pointer to the job reference the BSP posted.
#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: AtomicPtr<Job<'static>> = AtomicPtr::new(core::ptr::null_mut());
static MAILBOX: [AtomicPtr<Job<'static>>; MAX_CPUS] = [EMPTY; MAX_CPUS];
static DONE: AtomicUsize = AtomicUsize::new(0);
/// APIC ids by CPU index, for wake-ups.
#[allow(clippy::declare_interior_mutable_const)]
const NO_ID: AtomicU32 = AtomicU32::new(u32::MAX);
static APIC_IDS: [AtomicU32; MAX_CPUS] = [NO_ID; MAX_CPUS];

type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// Starts the APs with APIC ids `1..cpus` (QEMU numbers them densely from
/// the BSP's 0). Returns how many CPUs run, the BSP included.
pub fn start_aps(cpus: usize) -> usize {
    APIC_IDS[0].store(apic::id(), Ordering::Relaxed);
    let len = field_offset(core::ptr::addr_of!(ap_trampoline_end));
    // SAFETY: the trampoline page (0x8000) is conventional memory below the
    // kernel that the heap never hands out (mm starts above the kernel); the
    // source is the trampoline's bytes in .rodata.
    unsafe {
        core::ptr::copy_nonoverlapping(
            core::ptr::addr_of!(ap_trampoline),
            TRAMPOLINE as *mut u8,
            len,
        );
        let cr3 = TRAMPOLINE + field_offset(core::ptr::addr_of!(ap_cr3));
        (cr3 as *mut u64).write_volatile(crate::boot::page_table_root());
        ((cr3 + 16) as *mut u64).write_volatile(ap_main as extern "C" fn() -> ! as usize as u64);
    }
    for apic_id in 1..cpus.min(MAX_CPUS) as u32 {
        let Some(stack) = mm::alloc_pages(AP_STACK_PAGES) else {
            crate::println!("vblk-guest: no memory for CPU {apic_id}'s stack");
            break;
        };
        let before = STARTED.load(Ordering::Acquire);
        // SAFETY: the stack slot of the trampoline copied above; no AP is
        // running the trampoline now (each one we started checked in).
        unsafe {
            let slot = TRAMPOLINE + field_offset(core::ptr::addr_of!(ap_cr3)) + 8;
            (slot as *mut u64).write_volatile(stack + (AP_STACK_PAGES * mm::PAGE_SIZE) as u64);
        }
        apic::send_init(apic_id);
        time::delay_us(10_000);
        apic::send_startup(apic_id, (TRAMPOLINE >> 12) as u8);
        time::delay_us(200);
        if STARTED.load(Ordering::Acquire) == before {
            apic::send_startup(apic_id, (TRAMPOLINE >> 12) as u8);
        }
        // TCG may take a while to schedule a new vCPU thread.
        let deadline = time::now_ns() + 2_000_000_000;
        while STARTED.load(Ordering::Acquire) == before && time::now_ns() < deadline {
            core::hint::spin_loop();
        }
        if STARTED.load(Ordering::Acquire) == before {
            crate::println!("vblk-guest: CPU with APIC id {apic_id} did not start");
            break;
        }
    }
    cpu::online()
}

/// An AP's first Rust code, on its own stack.
extern "C" fn ap_main() -> ! {
    let apic_id = apic::id();
    let index = cpu::init_this_cpu(apic_id);
    apic::init_local();
    APIC_IDS[index].store(apic_id, Ordering::Relaxed);
    STARTED.fetch_add(1, Ordering::AcqRel);
    park(index)
}

/// Waits for work, runs it, reports it done; forever.
fn park(index: usize) -> ! {
    loop {
        let job = wait_until(|| {
            let job = MAILBOX[index].swap(core::ptr::null_mut(), Ordering::AcqRel);
            (!job.is_null()).then_some(job)
        });
        // SAFETY: the BSP posted a pointer to a job reference that stays
        // valid until DONE counts this CPU (run_on_cpus waits for that).
        unsafe { (*job)(index) };
        DONE.fetch_add(1, Ordering::AcqRel);
        apic::send_ipi(APIC_IDS[0].load(Ordering::Relaxed), irq::WAKE_VECTOR);
    }
}

/// Halts until `ready` returns something, checking it with interrupts off
/// so a wake-up between the check and the `hlt` is not lost.
pub fn wait_until<T>(mut ready: impl FnMut() -> Option<T>) -> T {
    loop {
        arch::disable_interrupts();
        if let Some(value) = ready() {
            arch::enable_interrupts();
            return value;
        }
        arch::enable_interrupts_and_halt();
    }
}

/// Wakes CPU `index` from `hlt`.
pub fn wake(index: usize) {
    let id = APIC_IDS[index].load(Ordering::Relaxed);
    if id != u32::MAX {
        apic::send_ipi(id, irq::WAKE_VECTOR);
    }
}

/// The APIC id of CPU `index`.
pub fn apic_id(index: usize) -> u32 {
    APIC_IDS[index].load(Ordering::Relaxed)
}

/// Runs `job(i)` on CPUs `0..cpus` at once (the caller, CPU 0, runs `job(0)`)
/// and returns when all have finished. Like a scoped thread spawn: `job`
/// may borrow from the caller.
pub fn run_on_cpus(cpus: usize, job: &(dyn Fn(usize) + Sync)) {
    assert!(
        cpus <= cpu::online(),
        "only {} CPUs are online",
        cpu::online()
    );
    DONE.store(0, Ordering::Release);
    // SAFETY: only the lifetime changes; the reference stays valid because
    // this function waits below until every AP has finished with it.
    let job: Job<'static> = unsafe { core::mem::transmute::<Job<'_>, Job<'static>>(job) };
    for (index, mailbox) in MAILBOX.iter().enumerate().take(cpus).skip(1) {
        mailbox.store(
            &job as *const Job<'static> as *mut Job<'static>,
            Ordering::Release,
        );
        wake(index);
    }
    job(0);
    wait_until(|| (DONE.load(Ordering::Acquire) >= cpus - 1).then_some(()));
}
