//! Volatile access to memory-mapped device registers, shared by the PCI and
//! MMIO transports.
//!
//! Every register access of both transports goes through [`read_reg`] and
//! [`write_reg`] in this file, mostly by way of the bounds-checked [`Regs`]
//! window; above them, only building a window from a mapping and the
//! doorbell/interrupt handles' single accesses are `unsafe`. Registers are
//! little-endian on the wire (VIRTIO 1.2 §4.1.3, §4.2.2) and are converted
//! here.
//!
//! Under `cfg(test)` each access also calls a per-thread "bus" hook, so a
//! fake device in a unit test can react to a write (or a read with side
//! effects) the way real hardware does on the bus cycle itself. Outside tests
//! the hooks are empty inline functions.

use core::mem::{align_of, size_of};
use core::ptr::NonNull;

/// A register width the transports use: 8, 16 or 32 bits, little-endian.
pub(crate) trait Reg: Copy {
    /// The value with every bit set: what a read outside the window returns,
    /// as a PCI read of an absent device would.
    const ONES: Self;
    /// Converts a little-endian wire value to native.
    fn from_le(wire: Self) -> Self;
    /// Converts a native value to little-endian wire order.
    fn to_le(self) -> Self;
    /// The value widened, for the test bus.
    fn widen(self) -> u64;
}

macro_rules! impl_reg {
    ($($t:ty),*) => {$(
        impl Reg for $t {
            const ONES: Self = <$t>::MAX;
            fn from_le(wire: Self) -> Self {
                <$t>::from_le(wire)
            }
            fn to_le(self) -> Self {
                <$t>::to_le(self)
            }
            fn widen(self) -> u64 {
                u64::from(self)
            }
        }
    )*};
}
impl_reg!(u8, u16, u32);

/// Reads one register.
///
/// # Safety
/// `reg` must be aligned and valid for a volatile read of `T`: a register
/// mapping obtained through [`crate::Hal::map_mmio`] (or its unsafe
/// equivalent), still mapped.
#[inline]
pub(crate) unsafe fn read_reg<T: Reg>(reg: NonNull<T>) -> T {
    bus::before_read(reg.as_ptr() as usize, size_of::<T>());
    // SAFETY: the caller guarantees an aligned, mapped register of type T.
    let wire = unsafe { reg.as_ptr().read_volatile() };
    bus::after_read(reg.as_ptr() as usize, size_of::<T>());
    T::from_le(wire)
}

/// Writes one register.
///
/// # Safety
/// As for [`read_reg`], for a volatile write.
#[inline]
pub(crate) unsafe fn write_reg<T: Reg>(reg: NonNull<T>, value: T) {
    // SAFETY: the caller guarantees an aligned, mapped register of type T.
    unsafe { reg.as_ptr().write_volatile(value.to_le()) };
    bus::after_write(reg.as_ptr() as usize, size_of::<T>(), value.widen());
}

/// A mapped window of device registers: `len` bytes from `base`.
///
/// Accesses are bounds- and alignment-checked against the window, so a
/// register offset computed from device-provided values can never reach
/// outside it: such a read returns all ones and such a write is dropped.
#[derive(Debug)]
pub(crate) struct Regs {
    base: NonNull<u8>,
    len: usize,
}

impl Regs {
    /// A window over `len` bytes of registers at `base`.
    ///
    /// # Safety
    /// `base` must be valid for volatile reads and writes of `len` bytes of
    /// device registers (mapped uncached), and stay so for as long as this
    /// window and every pointer taken from it through [`Regs::reg`] are used.
    pub(crate) unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        Regs { base, len }
    }

    /// Length of the window in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Address of the first byte (for diagnostics and tests).
    pub(crate) fn addr(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// The register of type `T` at `offset`, when it lies inside the window
    /// and is naturally aligned. The pointer stays valid as long as the
    /// mapping does (see [`Regs::new`]).
    pub(crate) fn reg<T: Reg>(&self, offset: usize) -> Option<NonNull<T>> {
        let end = offset.checked_add(size_of::<T>())?;
        if end > self.len {
            return None;
        }
        let addr = self.addr().checked_add(offset)?;
        if addr % align_of::<T>() != 0 {
            return None;
        }
        // `offset < len`, so the result lies inside the non-null mapping.
        NonNull::new(addr as *mut T)
    }

    /// Reads the register at `offset`; all ones when it is outside the window.
    pub(crate) fn read<T: Reg>(&self, offset: usize) -> T {
        match self.reg::<T>(offset) {
            // SAFETY: `reg` checked that the register lies inside the window
            // and is aligned; `new`'s caller guarantees the window is mapped.
            Some(reg) => unsafe { read_reg(reg) },
            None => T::ONES,
        }
    }

    /// Writes the register at `offset`; dropped when it is outside the window.
    pub(crate) fn write<T: Reg>(&self, offset: usize, value: T) {
        if let Some(reg) = self.reg::<T>(offset) {
            // SAFETY: as in `read`.
            unsafe { write_reg(reg, value) }
        }
    }

    /// Writes a 64-bit field as two 32-bit halves, low first (§4.1.3, §4.2.2).
    pub(crate) fn write_u64_halves(&self, offset: usize, value: u64) {
        self.write::<u32>(offset, value as u32);
        self.write::<u32>(offset + 4, (value >> 32) as u32);
    }

    /// Reads `N` bytes at `offset` of a device configuration space: one access
    /// of the field's own width when aligned (§4.1.3.1, §4.2.2.2), byte by
    /// byte otherwise. `None` when the field is not inside the window.
    pub(crate) fn read_config<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let end = offset.checked_add(N)?;
        if end > self.len {
            return None;
        }
        let bytes = match (N, self.reg::<u32>(offset), self.reg::<u16>(offset)) {
            (4, Some(_), _) => widen_to(self.read::<u32>(offset).to_le_bytes()),
            (2, _, Some(_)) => widen_to(self.read::<u16>(offset).to_le_bytes()),
            _ => {
                let mut out = [0u8; N];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = self.read::<u8>(offset + i);
                }
                out
            }
        };
        Some(bytes)
    }
}

/// Copies `bytes` into an `N`-byte array (N equals the source length where used).
fn widen_to<const M: usize, const N: usize>(bytes: [u8; M]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = M.min(N);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// Why a device interrupted: the cause bits shared by the PCI ISR status byte
/// (VIRTIO 1.2 §4.1.4.5) and the MMIO `InterruptStatus` register (§4.2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IsrStatus {
    /// Bit 0: a used-buffer notification for one or more queues.
    pub queue: bool,
    /// Bit 1: the device configuration changed (check the status too:
    /// DEVICE_NEEDS_RESET arrives this way).
    pub config: bool,
}

impl IsrStatus {
    /// Decodes the cause bits; undefined bits are ignored (§4.2.2.2).
    pub fn from_bits(bits: u32) -> Self {
        IsrStatus {
            queue: bits & 1 != 0,
            config: bits & 2 != 0,
        }
    }

    /// The cause bits.
    pub fn bits(self) -> u32 {
        u32::from(self.queue) | u32::from(self.config) << 1
    }

    /// No cause: on a shared INTx line, the interrupt was not ours.
    pub fn is_empty(self) -> bool {
        !self.queue && !self.config
    }
}

#[cfg(not(test))]
mod bus {
    #[inline(always)]
    pub(super) fn before_read(_addr: usize, _width: usize) {}
    #[inline(always)]
    pub(super) fn after_read(_addr: usize, _width: usize) {}
    #[inline(always)]
    pub(super) fn after_write(_addr: usize, _width: usize, _value: u64) {}
}

/// The test bus: lets a fake device observe every register access of the
/// current thread.
#[cfg(test)]
pub(crate) mod bus {
    extern crate std;

    use core::cell::RefCell;
    use std::rc::Rc;

    /// A fake device on the bus. Addresses are absolute.
    pub(crate) trait FakeBus {
        /// Before the driver reads `width` bytes at `addr`.
        fn before_read(&self, _addr: usize, _width: usize) {}
        /// After the driver read `width` bytes at `addr` (read side effects).
        fn after_read(&self, _addr: usize, _width: usize) {}
        /// After the driver wrote `value` (`width` bytes) at `addr`.
        fn after_write(&self, _addr: usize, _width: usize, _value: u64) {}
    }

    std::thread_local! {
        static BUS: RefCell<Option<Rc<dyn FakeBus>>> = const { RefCell::new(None) };
    }

    /// Detaches the fake device when dropped.
    pub(crate) struct Attached(());

    impl Drop for Attached {
        fn drop(&mut self) {
            BUS.with(|bus| bus.borrow_mut().take());
        }
    }

    /// Puts `device` on this thread's bus until the guard is dropped.
    pub(crate) fn attach(device: Rc<dyn FakeBus>) -> Attached {
        BUS.with(|bus| *bus.borrow_mut() = Some(device));
        Attached(())
    }

    fn current() -> Option<Rc<dyn FakeBus>> {
        BUS.with(|bus| bus.borrow().clone())
    }

    pub(super) fn before_read(addr: usize, width: usize) {
        if let Some(device) = current() {
            device.before_read(addr, width);
        }
    }

    pub(super) fn after_read(addr: usize, width: usize) {
        if let Some(device) = current() {
            device.after_read(addr, width);
        }
    }

    pub(super) fn after_write(addr: usize, width: usize, value: u64) {
        if let Some(device) = current() {
            device.after_write(addr, width, value);
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::vec;

    fn window(words: &mut [u32]) -> Regs {
        let base = NonNull::new(words.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the slice outlives the window in each test and is plain memory.
        unsafe { Regs::new(base, words.len() * 4) }
    }

    #[test]
    fn accesses_outside_the_window_read_ones_and_drop_writes() {
        let mut words = vec![0x0403_0201u32.to_le(), 0];
        let regs = window(&mut words);
        assert_eq!(regs.read::<u32>(0), 0x0403_0201);
        assert_eq!(regs.read::<u16>(2), 0x0403);
        assert_eq!(regs.read::<u32>(8), u32::MAX);
        assert_eq!(regs.read::<u32>(6), u32::MAX, "misaligned");
        assert_eq!(regs.read::<u32>(usize::MAX - 1), u32::MAX, "overflow");
        regs.write::<u32>(8, 7);
        regs.write::<u16>(5, 7);
        regs.write::<u32>(4, 0xdead_beef);
        assert_eq!(regs.read::<u32>(4), 0xdead_beef);
        assert_eq!(words[1], 0xdead_beefu32.to_le());
    }

    #[test]
    fn config_reads_compose_unaligned_fields_from_bytes() {
        let mut words = vec![0x4433_2211u32.to_le(), 0x8877_6655u32.to_le()];
        let regs = window(&mut words);
        assert_eq!(regs.read_config::<4>(1), Some([0x22, 0x33, 0x44, 0x55]));
        assert_eq!(regs.read_config::<2>(4), Some([0x55, 0x66]));
        assert_eq!(regs.read_config::<4>(6), None);
        assert_eq!(regs.read_config::<1>(7), Some([0x88]));
    }

    #[test]
    fn isr_bits_round_trip_and_ignore_undefined_bits() {
        let s = IsrStatus::from_bits(0xfd);
        assert_eq!(
            s,
            IsrStatus {
                queue: true,
                config: false
            }
        );
        assert_eq!(IsrStatus::from_bits(2).bits(), 2);
        assert!(IsrStatus::from_bits(4).is_empty());
    }
}
