//! The console: COM1 (16550 UART at 0x3F8), which QEMU's `-serial stdio`
//! connects to the runner's standard output.

use core::fmt::{self, Write};

use virtio_blk_mq::sync::SpinLock;

use crate::arch::{inb, outb};

const COM1: u16 = 0x3F8;

/// Serialises whole lines between CPUs.
static LOCK: SpinLock<()> = SpinLock::new(());

/// Sets 115200 baud, 8N1, FIFOs on, UART interrupts off.
pub fn init() {
    // SAFETY: these are the 16550's own registers at COM1; QEMU's pc and
    // microvm machines both have one there.
    unsafe {
        outb(COM1 + 1, 0x00); // no UART interrupts: we poll
        outb(COM1 + 3, 0x80); // divisor latch on
        outb(COM1, 0x01); // divisor 1: 115200 baud
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03); // 8 bits, no parity, one stop bit
        outb(COM1 + 2, 0xC7); // FIFOs on and cleared
        outb(COM1 + 4, 0x03); // DTR, RTS
    }
}

fn put(byte: u8) {
    // SAFETY: COM1's line status and data registers; waiting for the
    // transmitter to empty before each byte.
    unsafe {
        while inb(COM1 + 5) & 0x20 == 0 {
            core::hint::spin_loop();
        }
        outb(COM1, byte);
    }
}

struct Port;

impl Write for Port {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for byte in s.bytes() {
            if byte == b'\n' {
                put(b'\r');
            }
            put(byte);
        }
        Ok(())
    }
}

/// Prints under the console lock. Interrupt handlers must not print (they
/// could spin on a lock their own CPU holds); see [`print_unlocked`].
pub fn print(args: fmt::Arguments<'_>) {
    let _guard = LOCK.lock();
    let _ = Port.write_fmt(args);
}

/// Prints without the lock: for panics and faults, which must get their
/// message out even when the lock is held by the code that failed.
pub fn print_unlocked(args: fmt::Arguments<'_>) {
    let _ = Port.write_fmt(args);
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::print(format_args!("{}\n", format_args!($($arg)*))) };
}
