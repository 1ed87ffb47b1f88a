//! Time from the TSC, calibrated against PIT channel 2 (QEMU's PIT runs in
//! real time under TCG as under KVM). Nanoseconds since calibration.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::arch::{inb, outb, rdtsc};

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// Calibration interval: 50 ms of PIT ticks (fits the 16-bit counter).
const CALIBRATION_TICKS: u64 = PIT_HZ / 20;

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick, in 32.32 fixed point.
static NS_PER_TICK_FP: AtomicU64 = AtomicU64::new(0);
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC rate. Fails when the PIT does not count (no PIT).
pub fn calibrate() -> Result<u64, &'static str> {
    // SAFETY: port 0x61 (gate and output of PIT channel 2, speaker off) and
    // the PIT's command and channel 2 data ports.
    let ticks = unsafe {
        let control = inb(0x61) & !0x03;
        outb(0x61, control); // gate low: channel 2 holds
        outb(0x43, 0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        outb(0x42, CALIBRATION_TICKS as u8);
        outb(0x42, (CALIBRATION_TICKS >> 8) as u8);
        outb(0x61, control | 0x01); // gate high: count down from here
        let start = rdtsc();
        // OUT2 (bit 5) rises when the count reaches zero.
        loop {
            if inb(0x61) & 0x20 != 0 {
                break rdtsc() - start;
            }
            if rdtsc() - start > 1 << 36 {
                return Err("PIT channel 2 never counted down: cannot calibrate the TSC");
            }
        }
    };
    let hz = ticks * PIT_HZ / CALIBRATION_TICKS;
    if hz < 1_000_000 {
        return Err("the TSC runs implausibly slowly");
    }
    TSC_HZ.store(hz, Ordering::Relaxed);
    NS_PER_TICK_FP.store((1_000_000_000u128 << 32).div_euclid(u128::from(hz)) as u64, Ordering::Relaxed);
    EPOCH.store(rdtsc(), Ordering::Relaxed);
    Ok(hz)
}

/// TSC ticks per second.
pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
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
