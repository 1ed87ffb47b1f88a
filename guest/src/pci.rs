//! PCI: configuration space through the port I/O mechanism (0xCF8/0xCFC),
//! and the list of functions found on every bus. This is the device list the
//! kext API's driver probers will walk; the virtio transport reads a
//! function's space through [`PciFunction`] (its `PciConfig`).

use alloc::vec::Vec;

use virtio_blk_mq::sync::SpinLock;
use virtio_blk_mq::transport::PciConfig;

use crate::arch::{inb, inl, inw, outb, outl, outw};

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// The address/data port pair is one shared register window: one access at a time.
static CONFIG_LOCK: SpinLock<()> = SpinLock::new(());

/// One PCI function: bus, device, function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// Bus number.
    pub bus: u8,
    /// Device (slot) number, 0..32.
    pub device: u8,
    /// Function number, 0..8.
    pub function: u8,
}

impl PciFunction {
    /// Selects `offset` (dword-aligned) and runs `access` on the data port
    /// plus the byte offset within the dword, under the lock.
    fn with_port<T>(&self, offset: u16, access: impl FnOnce(u16) -> T) -> T {
        let address = 1 << 31
            | u32::from(self.bus) << 16
            | u32::from(self.device) << 11
            | u32::from(self.function) << 8
            | u32::from(offset & 0xFC);
        let _guard = CONFIG_LOCK.lock();
        // SAFETY: CONFIG_ADDRESS selects a configuration dword; no memory is touched.
        unsafe { outl(CONFIG_ADDRESS, address) };
        access(CONFIG_DATA + (offset & 3))
    }
}

impl PciConfig for PciFunction {
    fn read_u8(&self, offset: u16) -> u8 {
        // SAFETY: a byte read of the selected configuration dword.
        self.with_port(offset, |port| unsafe { inb(port) })
    }

    fn read_u16(&self, offset: u16) -> u16 {
        // SAFETY: a 16-bit read of the selected configuration dword.
        self.with_port(offset, |port| unsafe { inw(port) })
    }

    fn read_u32(&self, offset: u16) -> u32 {
        // SAFETY: a 32-bit read of the selected configuration dword.
        self.with_port(offset, |port| unsafe { inl(port) })
    }

    fn write_u8(&self, offset: u16, value: u8) {
        // SAFETY: a byte write to the selected configuration dword; the
        // transport decides what it writes.
        self.with_port(offset, |port| unsafe { outb(port, value) })
    }

    fn write_u16(&self, offset: u16, value: u16) {
        // SAFETY: as write_u8, 16 bits wide (no read-modify-write of neighbours).
        self.with_port(offset, |port| unsafe { outw(port, value) })
    }

    fn write_u32(&self, offset: u16, value: u32) {
        // SAFETY: as write_u8, 32 bits wide.
        self.with_port(offset, |port| unsafe { outl(port, value) })
    }
}

/// A function found by [`enumerate`].
#[derive(Clone, Debug)]
pub struct PciDevice {
    /// Where it is.
    pub function: PciFunction,
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Class, subclass, programming interface.
    pub class: (u8, u8, u8),
    /// Capability list: (id, offset), in list order.
    pub capabilities: Vec<(u8, u8)>,
}

/// Most capabilities a 256-byte space can hold; a longer walk is a loop.
const MAX_CAPABILITIES: usize = 48;

fn capabilities(function: &PciFunction) -> Vec<(u8, u8)> {
    let mut list = Vec::new();
    if function.read_u16(0x06) & (1 << 4) == 0 {
        return list;
    }
    let mut at = function.read_u8(0x34) & 0xFC;
    while at >= 0x40 && list.len() < MAX_CAPABILITIES {
        list.push((function.read_u8(u16::from(at)), at));
        at = function.read_u8(u16::from(at) + 1) & 0xFC;
    }
    list
}

/// Every function on every bus (brute force: 256 buses × 32 devices, which
/// also finds functions behind bridges without walking them).
pub fn enumerate() -> Vec<PciDevice> {
    let mut found = Vec::new();
    for bus in 0..=255u8 {
        for device in 0..32u8 {
            for function in 0..8u8 {
                let f = PciFunction {
                    bus,
                    device,
                    function,
                };
                let vendor_id = f.read_u16(0x00);
                if vendor_id == 0xFFFF {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let class = f.read_u32(0x08);
                found.push(PciDevice {
                    function: f,
                    vendor_id,
                    device_id: f.read_u16(0x02),
                    class: ((class >> 24) as u8, (class >> 16) as u8, (class >> 8) as u8),
                    capabilities: capabilities(&f),
                });
                // Only multi-function devices have functions 1..8.
                if function == 0 && f.read_u8(0x0E) & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    found
}

/// Capability id of MSI-X (PCI 3.0 §6.8.2).
const CAP_MSIX: u8 = 0x11;

/// A function's MSI-X Pending Bit Array (PCI 3.0 §6.8.2.7): bit `n` is set
/// while table entry `n` has an interrupt pending (held back by a mask).
#[derive(Clone, Copy, Debug)]
pub struct Pba {
    addr: u64,
}

impl Pba {
    /// The first 64 pending bits.
    pub fn read(&self) -> u64 {
        // SAFETY: `addr` lies in a memory BAR of the function, below 4 GiB
        // (identity-mapped, checked in `msix_pba`), 8-byte aligned (the
        // offset's low 3 bits are the BIR); reading the PBA has no side effects.
        unsafe { core::ptr::read_volatile(self.addr as *const u64) }
    }
}

/// Where `device`'s MSI-X pending bits are, if it has MSI-X and firmware
/// placed the BAR below 4 GiB.
pub fn msix_pba(device: &PciDevice) -> Option<Pba> {
    let &(_, at) = device.capabilities.iter().find(|(id, _)| *id == CAP_MSIX)?;
    let f = device.function;
    let pba = f.read_u32(u16::from(at) + 8);
    let bir = (pba & 7) as u16;
    if bir > 5 {
        return None;
    }
    let bar = 0x10 + 4 * bir;
    let low = f.read_u32(bar);
    if low & 1 != 0 {
        return None;
    }
    let mut base = u64::from(low & !0xF);
    if (low >> 1) & 3 == 2 && bir < 5 {
        base |= u64::from(f.read_u32(bar + 4)) << 32;
    }
    let addr = base + u64::from(pba & !7);
    (base != 0 && addr + 8 <= 1 << 32).then_some(Pba { addr })
}
