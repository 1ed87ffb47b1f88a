//! Leaving QEMU with a status: the `isa-debug-exit` device at port 0xF4
//! (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`) ends QEMU with exit
//! code `(value << 1) | 1`.

use crate::arch;

const DEBUG_EXIT_PORT: u16 = 0xF4;

/// How the run ended. QEMU's exit code is `(self as u32) << 1 | 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Status {
    /// The job ran and every check passed (QEMU exits with 1).
    Passed = 0,
    /// The job ran and failed: errors or wrong data (QEMU exits with 3).
    Failed = 1,
    /// The kernel could not run the job: bad options, no device, a panic or
    /// a CPU exception (QEMU exits with 5).
    Broken = 2,
}

/// Ends the virtual machine.
pub fn exit(status: Status) -> ! {
    // SAFETY: writing the debug-exit port makes QEMU exit; on a machine
    // without the device the write goes nowhere and we halt below.
    unsafe { arch::outl(DEBUG_EXIT_PORT, status as u32) };
    arch::halt_forever()
}
