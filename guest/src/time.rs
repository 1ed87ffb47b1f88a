//! Time from the TSC, calibrated against the PIT's channel 0 counter (QEMU's
//! PIT runs in real time under TCG as under KVM). Channel 0 is read back by
//! latching rather than through channel 2's gate on port 0x61, because the
//! microvm machine has a PIT but not port 0x61. Nanoseconds since calibration.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{inb, outb, rdtsc};

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration interval: 50 ms of PIT ticks (fits the 16-bit counter).
const CALIBRATION_TICKS: u64 = PIT_HZ / 20;

/// Nanoseconds per TSC tick, in 32.32 fixed point.
static NS_PER_TICK_FP: AtomicU64 = AtomicU64::new(0);
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Reads channel 0's current count (latched, so both bytes belong together).
fn pit_count() -> u16 {
    // SAFETY: the PIT's command port (latch channel 0) and channel 0's data port.
    unsafe {
        outb(0x43, 0x00);
        let low = inb(0x40);
        let high = inb(0x40);
        u16::from_le_bytes([low, high])
    }
}

/// Measures the TSC rate. Fails when the PIT does not count (no PIT).
pub fn calibrate() -> Result<u64, &'static str> {
    // SAFETY: the PIT's command port and channel 0's data port. Channel 0's
    // IRQ line is masked at both interrupt controllers, so counting raises nothing.
    unsafe {
        outb(0x43, 0b0011_0100); // channel 0, lobyte/hibyte, mode 2, binary
        outb(0x40, 0); // reload value 0 = 65536
        outb(0x40, 0);
    }
    let mut previous = pit_count();
    let mut elapsed = 0u64;
    let start = rdtsc();
    while elapsed < CALIBRATION_TICKS {
        let now = pit_count();
        // Counting down, wrapping at 65536: the 16-bit difference is the
        // ticks since the last read (reads are far closer than 55 ms apart).
        elapsed += u64::from(previous.wrapping_sub(now));
        previous = now;
        if rdtsc() - start > 1 << 36 {
            return Err("the PIT never counted: cannot calibrate the TSC");
        }
    }
    let ticks = rdtsc() - start;
    let hz = ticks * PIT_HZ / elapsed;
    if hz < 1_000_000 {
        return Err("the TSC runs implausibly slowly");
    }
    NS_PER_TICK_FP.store(
        (1_000_000_000u128 << 32).div_euclid(u128::from(hz)) as u64,
        Ordering::Relaxed,
    );
    EPOCH.store(rdtsc(), Ordering::Relaxed);
    Ok(hz)
}

/// Converts TSC ticks to nanoseconds.
#[inline]
pub fn ticks_to_ns(ticks: u64) -> u64 {
    ((u128::from(ticks) * u128::from(NS_PER_TICK_FP.load(Ordering::Relaxed))) >> 32) as u64
}

/// Nanoseconds since calibration.
#[inline]
pub fn now_ns() -> u64 {
    ticks_to_ns(rdtsc().wrapping_sub(EPOCH.load(Ordering::Relaxed)))
}

/// Busy-waits `us` microseconds.
pub fn delay_us(us: u64) {
    let end = now_ns() + us * 1000;
    while now_ns() < end {
        core::hint::spin_loop();
    }
}
