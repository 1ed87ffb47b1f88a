//! The few x86_64 instructions the kernel needs, each behind a safe or
//! documented-unsafe function.

use core::arch::asm;

/// Writes a byte to an I/O port.
///
/// # Safety
/// Port writes reach devices directly; the caller must know what the port does.
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Port reads may have side effects on devices.
pub unsafe fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe {
        asm!("in al, dx", out("al") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Writes a 16-bit value to an I/O port.
///
/// # Safety
/// As [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a 16-bit value from an I/O port.
///
/// # Safety
/// As [`inb`].
pub unsafe fn inw(port: u16) -> u16 {
    let value: u16;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe {
        asm!("in ax, dx", out("ax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Writes a 32-bit value to an I/O port.
///
/// # Safety
/// As [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller vouches for the port; `out` touches no memory.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// Reads a 32-bit value from an I/O port.
///
/// # Safety
/// As [`inb`].
pub unsafe fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: the caller vouches for the port; `in` touches no memory.
    unsafe {
        asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    value
}

/// Writes a model-specific register.
///
/// # Safety
/// Changes CPU behaviour; the caller must know what the MSR does.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller vouches for the MSR and the value.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

/// The time-stamp counter.
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the counter (CR4.TSD is clear: we never set it).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Interrupts on.
///
/// The instructions that change RFLAGS.IF are compiler barriers here (no
/// `nomem`): an interrupt handler may write any memory once they let it in,
/// so no load may be hoisted above `sti` or sunk below `cli`. With `nomem`
/// the compiler may, for instance, read a wake-up flag once before a
/// `cli; ...; sti; hlt` loop and spin on the stale value (a lost wakeup).
#[inline]
pub fn enable_interrupts() {
    // SAFETY: every vector has a handler (idt.rs) before anything turns
    // interrupts on. Not `nomem`: handlers run from here on (see above).
    unsafe { asm!("sti", options(nostack)) }
}

/// Whether interrupts are on (RFLAGS.IF).
#[inline]
pub fn interrupts_enabled() -> bool {
    let flags: u64;
    // SAFETY: reads RFLAGS through the stack; changes nothing else.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Interrupts off.
#[inline]
pub fn disable_interrupts() {
    // SAFETY: masking interrupts cannot break memory safety. Not `nomem`:
    // what the caller reads next must be read after handlers are shut out.
    unsafe { asm!("cli", options(nostack)) }
}

/// Turns interrupts on and halts until one arrives, with no window between
/// the two: `sti` takes effect only after the next instruction, so an
/// interrupt already pending wakes the `hlt` instead of being taken before it.
/// Returns with interrupts on.
#[inline]
pub fn enable_interrupts_and_halt() {
    // SAFETY: as `enable_interrupts`; hlt just waits. Not `nomem`: the
    // handler that wakes us writes memory the caller reads afterwards.
    unsafe { asm!("sti", "hlt", options(nostack)) }
}

/// Halts with interrupts off, forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli; hlt stops this CPU; nothing is left to run on it.
        unsafe { asm!("cli", "hlt", options(nostack)) }
    }
}
