//! From QEMU's PVH entry to Rust: the ELF note that names the entry, the
//! 32-bit entry stub (page tables mapping the first 4 GiB twice: identity,
//! and at 0xffff_8000_0000_0000 for the kext API's straight map; PAE, long
//! mode, SSE), and the boot stack.
//!
//! PVH (the x86/HVM direct boot ABI) enters at a 32-bit physical address in
//! protected mode with paging off, `%ebx` holding the physical address of the
//! `hvm_start_info` structure ([`crate::bootinfo`]).

use core::arch::global_asm;

/// Bytes of the bootstrap CPU's stack.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

global_asm!(
    // XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen". QEMU reads a pointer-sized
    // value from a 64-bit ELF's note, so the entry is a quad; the note is
    // 4-aligned because QEMU pads the name by the segment's alignment.
    ".section .note.pvh, \"a\"",
    ".balign 4",
    ".long 4",
    ".long 8",
    ".long 18",
    ".asciz \"Xen\"",
    ".balign 4",
    ".quad pvh_start32",
    ".balign 4",
    "",
    ".section .text.boot, \"ax\"",
    ".code32",
    ".global pvh_start32",
    "pvh_start32:",
    "    cli",
    "    cld",
    "    mov esi, ebx",
    // 2048 page-directory entries of 2 MiB pages map 0..4 GiB one to one
    // (present, writable, large page).
    "    mov edi, offset boot_pd",
    "    xor ecx, ecx",
    "2:",
    "    mov eax, ecx",
    "    shl eax, 21",
    "    or eax, 0x83",
    "    mov [edi + ecx * 8], eax",
    "    mov edx, ecx",
    "    shr edx, 11",
    "    mov [edi + ecx * 8 + 4], edx",
    "    inc ecx",
    "    cmp ecx, 2048",
    "    jb 2b",
    // Four PDPT entries, one per page directory; two PML4 entries: the
    // identity map, and the same 4 GiB at 0xffff_8000_0000_0000 (entry
    // 256), the straight map Kerla's kext API (`PAddr::as_vaddr`) uses.
    "    mov edi, offset boot_pdpt",
    "    mov eax, offset boot_pd",
    "    or eax, 3",
    "    xor ecx, ecx",
    "3:",
    "    mov [edi + ecx * 8], eax",
    "    mov dword ptr [edi + ecx * 8 + 4], 0",
    "    add eax, 4096",
    "    inc ecx",
    "    cmp ecx, 4",
    "    jb 3b",
    "    mov eax, offset boot_pdpt",
    "    or eax, 3",
    "    mov [boot_pml4], eax",
    "    mov [boot_pml4 + 256 * 8], eax",
    // CR4: PAE, OSFXSR, OSXMMEXCPT (the prebuilt core uses SSE).
    "    mov eax, cr4",
    "    or eax, 0x620",
    "    mov cr4, eax",
    "    mov eax, offset boot_pml4",
    "    mov cr3, eax",
    // EFER.LME
    "    mov ecx, 0xC0000080",
    "    rdmsr",
    "    or eax, 0x100",
    "    wrmsr",
    // CR0: paging, protection, monitor coprocessor; no FPU emulation, no
    // task-switched trap.
    "    mov eax, cr0",
    "    and eax, 0xFFFFFFF3",
    "    or eax, 0x80000003",
    "    mov cr0, eax",
    "    lgdt [boot_gdt_pointer]",
    // Far return into the 64-bit code segment.
    "    push 0x08",
    "    mov eax, offset long_mode_entry",
    "    push eax",
    "    retf",
    "",
    ".code64",
    "long_mode_entry:",
    "    mov ax, 0x10",
    "    mov ds, ax",
    "    mov es, ax",
    "    mov ss, ax",
    "    xor eax, eax",
    "    mov fs, ax",
    "    mov gs, ax",
    "    fninit",
    "    lea rsp, [rip + boot_stack + {stack_size}]",
    "    mov edi, esi",
    "    call kernel_main",
    "    ud2",
    "",
    ".section .rodata",
    ".balign 16",
    ".global boot_gdt",
    "boot_gdt:",
    "    .quad 0",
    "    .quad 0x00209A0000000000", // 0x08: 64-bit code, ring 0
    "    .quad 0x0000920000000000", // 0x10: data
    "boot_gdt_end:",
    ".balign 4",
    "boot_gdt_pointer:",
    "    .word boot_gdt_end - boot_gdt - 1",
    "    .long boot_gdt",
    "",
    ".section .bss",
    ".balign 4096",
    ".global boot_pml4",
    "boot_pml4: .skip 4096",
    "boot_pdpt: .skip 4096",
    "boot_pd: .skip 4096 * 4",
    ".balign 16",
    "boot_stack: .skip {stack_size}",
    ".code64",
    stack_size = const BOOT_STACK_SIZE,
);

extern "C" {
    /// The top-level page table the boot stub built (APs load it too).
    pub static boot_pml4: [u64; 512];
}

/// Physical address of the PML4 every CPU runs on.
pub fn page_table_root() -> u64 {
    core::ptr::addr_of!(boot_pml4) as u64
}
