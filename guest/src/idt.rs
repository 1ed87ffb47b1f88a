//! The interrupt descriptor table: one assembly stub per vector, a common
//! path that saves every register (and the SSE state, which Rust code uses
//! freely) on the IST stack, and the Rust dispatcher.

use core::arch::global_asm;

use crate::cpu::{IST_EXCEPTIONS, IST_INTERRUPTS, KERNEL_CODE};

/// Vectors below this are CPU exceptions.
const FIRST_IRQ_VECTOR: usize = 32;

/// Bytes between two stubs (each is shorter; `.balign` pads).
const STUB_SPACING: u64 = 16;

// Each stub pushes a zero in place of the error code for vectors where the
// CPU pushes none, then its vector number, then joins the common path.
global_asm!(
    ".section .text",
    ".balign 16",
    ".global isr_stubs",
    "isr_stubs:",
    ".set vector, 0",
    ".rept 256",
    "    .balign 16",
    "    .if vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 || vector == 29 || vector == 30",
    "    .else",
    "    push 0",
    "    .endif",
    "    push vector",
    "    jmp isr_common",
    "    .set vector, vector + 1",
    ".endr",
    "",
    "isr_common:",
    "    push rax",
    "    push rbx",
    "    push rcx",
    "    push rdx",
    "    push rsi",
    "    push rdi",
    "    push rbp",
    "    push r8",
    "    push r9",
    "    push r10",
    "    push r11",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    mov rbp, rsp",
    "    sub rsp, 512",
    "    and rsp, -16",
    "    fxsave [rsp]",
    "    cld",
    "    mov rdi, rbp",
    "    call interrupt_dispatch",
    "    fxrstor [rsp]",
    "    mov rsp, rbp",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop r11",
    "    pop r10",
    "    pop r9",
    "    pop r8",
    "    pop rbp",
    "    pop rdi",
    "    pop rsi",
    "    pop rdx",
    "    pop rcx",
    "    pop rbx",
    "    pop rax",
    "    add rsp, 16",
    "    iretq",
);

/// What the common path saved, lowest address first.
#[repr(C)]
pub struct Frame {
    r15: u64,
    r14: u64,
    r13: u64,
    r12: u64,
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rbp: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rbx: u64,
    rax: u64,
    vector: u64,
    error: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

/// Filled once by the bootstrap CPU before any CPU loads it, then read-only.
static mut IDT: Idt = Idt([Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attributes: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; 256]);

/// Points every vector at its stub. Called once, on the bootstrap CPU,
/// before [`load`] runs anywhere.
pub fn init() {
    extern "C" {
        static isr_stubs: u8;
    }
    let base = core::ptr::addr_of!(isr_stubs) as u64;
    for vector in 0..256 {
        let stub = base + vector as u64 * STUB_SPACING;
        let ist = if vector < FIRST_IRQ_VECTOR {
            IST_EXCEPTIONS
        } else {
            IST_INTERRUPTS
        };
        let gate = Gate {
            offset_low: stub as u16,
            selector: KERNEL_CODE,
            ist,
            attributes: 0x8E, // present, ring 0, 64-bit interrupt gate (IF cleared)
            offset_mid: (stub >> 16) as u16,
            offset_high: (stub >> 32) as u32,
            reserved: 0,
        };
        // SAFETY: only the bootstrap CPU runs this, before any CPU loads
        // the table or takes an interrupt, so nothing reads it concurrently.
        unsafe { (*core::ptr::addr_of_mut!(IDT)).0[vector] = gate };
    }
}

/// Loads the IDT on the calling CPU.
pub fn load() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer {
        limit: (size_of::<Idt>() - 1) as u16,
        base: core::ptr::addr_of!(IDT) as u64,
    };
    // SAFETY: the IDT is a static, filled by `init` before any CPU loads it;
    // every gate points at a stub of the common path.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &pointer, options(readonly, nostack)) };
}

const EXCEPTION_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor overrun",
    "invalid TSS",
    "segment not present",
    "stack fault",
    "general protection",
    "page fault",
    "reserved",
    "x87 error",
    "alignment check",
    "machine check",
    "SIMD error",
    "virtualization",
    "control protection",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "reserved",
    "hypervisor injection",
    "VMM communication",
    "security",
    "reserved",
];

/// Called by the common path with interrupts off, on an IST stack.
#[no_mangle]
extern "C" fn interrupt_dispatch(frame: &mut Frame) {
    let vector = frame.vector as usize;
    if vector < FIRST_IRQ_VECTOR {
        exception(frame);
    }
    crate::irq::dispatch(vector as u8);
}

fn exception(frame: &Frame) -> ! {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effect.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack)) };
    crate::serial::print_unlocked(format_args!(
        "\nvblk-guest: CPU exception {} ({}) error={:#x} rip={:#x} rsp={:#x} cr2={:#x} \
         rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x} cs={:#x} rflags={:#x} ss={:#x}\n",
        frame.vector, EXCEPTION_NAMES[frame.vector as usize], frame.error, frame.rip, frame.rsp, cr2,
        frame.rax, frame.rbx, frame.rcx, frame.rdx, frame.rsi, frame.rdi, frame.rbp, frame.cs,
        frame.rflags, frame.ss,
    ));
    let _ = (
        frame.r8, frame.r9, frame.r10, frame.r11, frame.r12, frame.r13, frame.r14, frame.r15,
    );
    crate::exit::exit(crate::exit::Status::Broken)
}
