//! A clock for the in-kernel job: the TSC, calibrated once against the PIT.
//!
//! Kerla's kext API has no clock, and Kerla's own one counts timer ticks,
//! which stand still while interrupts are off (all kernel code). The TSC
//! runs regardless; its rate is measured by timing PIT channel 2 counting
//! down a known interval, gated through port 0x61 (channel 0 is Kerla's
//! timer and is left alone). x86-64 only.

/// PIT input clock, Hz.
const PIT_HZ: u64 = 1_193_182;
/// The calibration interval: 50 ms of PIT ticks (fits the 16-bit counter).
const CALIBRATION_TICKS: u64 = PIT_HZ / 20;
/// TSC ticks after which a PIT that never finishes counts as absent.
const GIVE_UP_TSC_TICKS: u64 = 1 << 36;

/// Nanoseconds from the TSC.
#[derive(Clone, Copy, Debug)]
pub struct TscClock {
    /// Nanoseconds per TSC tick, 32.32 fixed point.
    ns_per_tick: u64,
    /// The TSC at calibration.
    epoch: u64,
    /// The measured rate.
    hz: u64,
}

impl TscClock {
    /// Measures the TSC's rate (about 50 ms). Fails when the PIT does not
    /// count or the rate is implausible.
    pub fn calibrate() -> Result<TscClock, &'static str> {
        let ticks = cpu::tsc_ticks_over_pit(CALIBRATION_TICKS as u16, GIVE_UP_TSC_TICKS)?;
        let hz = ticks * PIT_HZ / CALIBRATION_TICKS;
        if hz < 1_000_000 {
            return Err("the TSC runs implausibly slowly");
        }
        Ok(TscClock {
            ns_per_tick: ((1_000_000_000u128 << 32) / u128::from(hz)) as u64,
            epoch: cpu::rdtsc(),
            hz,
        })
    }

    /// Nanoseconds since calibration.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        let ticks = cpu::rdtsc().wrapping_sub(self.epoch);
        ((u128::from(ticks) * u128::from(self.ns_per_tick)) >> 32) as u64
    }

    /// The TSC's rate, Hz.
    pub fn hz(&self) -> u64 {
        self.hz
    }
}

#[cfg(target_arch = "x86_64")]
mod cpu {
    use core::arch::asm;

    /// Port 0x61: bit 0 gates PIT channel 2, bit 1 drives the speaker,
    /// bit 5 reads channel 2's output.
    const GATE_PORT: u16 = 0x61;

    pub fn rdtsc() -> u64 {
        let (low, high): (u32, u32);
        // SAFETY: reads the time-stamp counter; no memory, no side effect.
        unsafe { asm!("rdtsc", out("eax") low, out("edx") high, options(nomem, nostack)) };
        (u64::from(high) << 32) | u64::from(low)
    }

    fn outb(port: u16, value: u8) {
        // SAFETY: ring 0; only the PIT's channel 2 ports and its gate are
        // written, which no other kernel code of Kerla uses.
        unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) };
    }

    fn inb(port: u16) -> u8 {
        let value: u8;
        // SAFETY: ring 0; reading the gate port has no side effect.
        unsafe { asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack)) };
        value
    }

    /// TSC ticks while PIT channel 2 counts `pit_ticks` down (mode 0: its
    /// output rises at terminal count).
    pub fn tsc_ticks_over_pit(pit_ticks: u16, give_up: u64) -> Result<u64, &'static str> {
        // Gate on, speaker off.
        outb(GATE_PORT, (inb(GATE_PORT) & !0x02) | 0x01);
        // Channel 2, low then high byte, mode 0, binary.
        outb(0x43, 0b1011_0000);
        let [low, high] = pit_ticks.to_le_bytes();
        outb(0x42, low);
        outb(0x42, high);
        let start = rdtsc();
        while inb(GATE_PORT) & 0x20 == 0 {
            if rdtsc().wrapping_sub(start) > give_up {
                return Err("PIT channel 2 never finished counting: no PIT to calibrate against");
            }
            core::hint::spin_loop();
        }
        Ok(rdtsc().wrapping_sub(start))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod cpu {
    pub fn rdtsc() -> u64 {
        0
    }

    pub fn tsc_ticks_over_pit(_pit_ticks: u16, _give_up: u64) -> Result<u64, &'static str> {
        Err("the in-kernel job's clock needs x86-64")
    }
}
