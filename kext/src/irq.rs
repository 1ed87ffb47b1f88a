//! The hybrid fallback's interrupt: one `attach_irq` handler per disk
//! (INTx for virtio-pci, since Kerla has no MSI-X; the device's line for
//! virtio-mmio) acknowledges the device and marks every queue's flag; a
//! queue's owner sleeps on its flag through [`QueueWaiter`], the driver's
//! `IrqWait`.
//!
//! Kerla gives kexts no sleep primitive, so the waiter halts the CPU until
//! the next interrupt (`sti; hlt` after checking the flag with interrupts
//! off, so the wake-up cannot slip in between). The line's interrupt wakes
//! the CPU it is routed to; an owner on another CPU wakes at its next timer
//! tick and re-checks. With interrupts off on entry (a Kerla `SpinLock` is
//! held, as on the block driver's path) it cannot halt and spins on the
//! flag instead. Either way a wait ends after a bounded number of wake-ups:
//! the caller re-checks the ring, so a lost interrupt costs time, never a hang.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use virtio_blk_mq::mq::IrqWait;
use virtio_blk_mq::transport::{IsrReader, IsrStatus, MmioInterrupt};

/// Wake-ups (interrupts of any kind) one wait sleeps through before
/// returning to let the caller re-check the ring.
const SLEEPS_PER_WAIT: u32 = 4;
/// Checks of the flag per wait when the CPU cannot halt.
const SPINS_PER_WAIT: u32 = 1 << 16;

/// Where a disk's interrupt cause is read (and acknowledged).
#[derive(Clone, Copy, Debug)]
pub(crate) enum IrqSource {
    /// The ISR status byte of virtio-pci (INTx).
    Pci(IsrReader),
    /// `InterruptStatus` / `InterruptACK` of virtio-mmio.
    Mmio(MmioInterrupt),
}

impl IrqSource {
    fn acknowledge(&self) -> IsrStatus {
        match self {
            IrqSource::Pci(isr) => isr.read(),
            IrqSource::Mmio(irq) => irq.acknowledge(),
        }
    }
}

/// A queue's "notification arrived" flag, on a cache line of its own.
#[repr(align(64))]
struct Flag(AtomicBool);

/// What the handler and the waiters share; lives as long as the disk.
pub(crate) struct IrqState {
    pending: Vec<Flag>,
    interrupts: AtomicU64,
    waits_timed_out: AtomicU64,
    config_changed: AtomicBool,
}

impl IrqState {
    pub(crate) fn new(queues: usize) -> IrqState {
        IrqState {
            pending: (0..queues).map(|_| Flag(AtomicBool::new(false))).collect(),
            interrupts: AtomicU64::new(0),
            waits_timed_out: AtomicU64::new(0),
            config_changed: AtomicBool::new(false),
        }
    }

    /// The `attach_irq` handler's body: in interrupt context, so only
    /// register reads and atomics.
    pub(crate) fn handle(&self, source: &IrqSource) {
        let cause = source.acknowledge();
        if cause.queue {
            self.interrupts.fetch_add(1, Ordering::Relaxed);
            for flag in &self.pending {
                // Release pairs with the waiter's Acquire swap: what the
                // device wrote before interrupting is visible once the
                // owner sees the flag.
                flag.0.store(true, Ordering::Release);
            }
        }
        if cause.config {
            self.config_changed.store(true, Ordering::Release);
        }
    }

    /// Used-buffer interrupts handled so far.
    pub(crate) fn interrupts(&self) -> u64 {
        self.interrupts.load(Ordering::Relaxed)
    }

    /// Waits that ended with no notification.
    pub(crate) fn waits_timed_out(&self) -> u64 {
        self.waits_timed_out.load(Ordering::Relaxed)
    }

    /// Whether a configuration change was signalled since the last call.
    pub(crate) fn take_config_change(&self) -> bool {
        self.config_changed.swap(false, Ordering::Acquire)
    }
}

/// How the owner of one queue sleeps until the disk's interrupt (see the module).
#[derive(Clone, Copy)]
pub struct QueueWaiter {
    state: &'static IrqState,
    queue: usize,
}

impl QueueWaiter {
    pub(crate) fn new(state: &'static IrqState, queue: usize) -> QueueWaiter {
        QueueWaiter { state, queue }
    }
}

impl IrqWait for QueueWaiter {
    fn wait(&self) {
        let Some(Flag(flag)) = self.state.pending.get(self.queue) else {
            return;
        };
        for _ in 0..SLEEPS_PER_WAIT {
            if sleep_until_set(flag) {
                return;
            }
        }
        self.state.waits_timed_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// Takes the flag if set; otherwise sleeps until one interrupt (or spins,
/// with interrupts off) and takes it if it was set meanwhile.
fn sleep_until_set(flag: &AtomicBool) -> bool {
    if !cpu::interrupts_enabled() {
        for _ in 0..SPINS_PER_WAIT {
            if flag.swap(false, Ordering::Acquire) {
                return true;
            }
            core::hint::spin_loop();
        }
        return false;
    }
    cpu::disable_interrupts();
    if flag.swap(false, Ordering::Acquire) {
        cpu::enable_interrupts();
        return true;
    }
    cpu::enable_interrupts_and_halt();
    flag.swap(false, Ordering::Acquire)
}

#[cfg(target_arch = "x86_64")]
mod cpu {
    use core::arch::asm;

    /// RFLAGS.IF.
    pub fn interrupts_enabled() -> bool {
        let flags: u64;
        // SAFETY: reads RFLAGS through the stack; changes nothing else.
        unsafe { asm!("pushfq", "pop {}", out(reg) flags, options(preserves_flags)) };
        flags & (1 << 9) != 0
    }

    // None of these is `nomem`: each must also be a compiler barrier, so
    // the flag check the waiter makes between `cli` and `sti; hlt` can be
    // neither hoisted above the `cli` nor sunk below the `hlt` (either
    // would let an interrupt set the flag unseen and the CPU sleep anyway).

    pub fn disable_interrupts() {
        // SAFETY: ring 0 (a kext runs in the kernel); only masks interrupts
        // on this CPU, and the caller turns them back on.
        unsafe { asm!("cli", options(nostack)) };
    }

    pub fn enable_interrupts() {
        // SAFETY: ring 0; interrupts were on when the waiter was entered.
        unsafe { asm!("sti", options(nostack)) };
    }

    /// `sti; hlt`: interrupts are recognised only after the instruction
    /// following `sti`, so one arriving now wakes the `hlt` rather than
    /// being taken before it.
    pub fn enable_interrupts_and_halt() {
        // SAFETY: ring 0; interrupts were on when the waiter was entered,
        // so the CPU wakes at the next one (the timer at the latest).
        unsafe { asm!("sti", "hlt", options(nostack)) };
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod cpu {
    //! Elsewhere the waiter spins: no halting without knowing the architecture.
    pub fn interrupts_enabled() -> bool {
        false
    }
    pub fn disable_interrupts() {}
    pub fn enable_interrupts() {}
    pub fn enable_interrupts_and_halt() {}
}
