//! The PCI side of discovery: configuration-header offsets, the capability
//! list walk (VIRTIO 1.2 §4.1.4, PCI Local Bus 3.0 §6.7) and BAR decoding
//! and sizing (PCI 3.0 §6.2.5.1).
//!
//! Everything here reads a configuration space the device controls, so every
//! value is checked: the walk is bounded, capabilities must fit the 256-byte
//! space, and a BAR of reserved type is reported, never guessed at.

use arrayvec::ArrayVec;

use super::{PciConfig, PciError};

/// Offsets in the PCI configuration header (type 0).
pub(crate) mod header {
    /// Vendor ID (16 bits).
    pub const VENDOR_ID: u16 = 0x00;
    /// Device ID (16 bits).
    pub const DEVICE_ID: u16 = 0x02;
    /// Command register (16 bits).
    pub const COMMAND: u16 = 0x04;
    /// Status register (16 bits).
    pub const STATUS: u16 = 0x06;
    /// Base address register 0 (32 bits); BAR n is at `BAR0 + 4 * n`.
    pub const BAR0: u16 = 0x10;
    /// Capabilities pointer (8 bits).
    pub const CAPABILITIES: u16 = 0x34;
    /// Interrupt line (8 bits): the INTx routing firmware wrote.
    pub const INTERRUPT_LINE: u16 = 0x3c;
    /// Interrupt pin (8 bits): 0 none, 1..=4 INTA#..INTD#.
    pub const INTERRUPT_PIN: u16 = 0x3d;
}

/// Bits of the command register.
pub(crate) mod command {
    /// Respond to I/O space accesses.
    pub const IO_SPACE: u16 = 1 << 0;
    /// Respond to memory space accesses.
    pub const MEMORY_SPACE: u16 = 1 << 1;
    /// May master the bus (DMA, MSI-X writes).
    pub const BUS_MASTER: u16 = 1 << 2;
    /// INTx emulation disabled.
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Status register bit: a capability list is present.
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Capability ID of a vendor-specific capability (the virtio structures).
pub(crate) const CAP_ID_VENDOR: u8 = 0x09;
/// Capability ID of MSI-X.
pub(crate) const CAP_ID_MSIX: u8 = 0x11;
/// Capabilities live after the 64-byte header.
const FIRST_CAP: u8 = 0x40;
/// Most capabilities that fit the 256-byte space (4-byte aligned, after the
/// header); a walk longer than this is a loop.
const MAX_CAPS: usize = (256 - FIRST_CAP as usize) / 4;

/// `cfg_type` values of the virtio structure capabilities (§4.1.4).
pub(crate) mod cfg_type {
    /// Common configuration.
    pub const COMMON: u8 = 1;
    /// Notifications.
    pub const NOTIFY: u8 = 2;
    /// ISR status.
    pub const ISR: u8 = 3;
    /// Device-specific configuration.
    pub const DEVICE: u8 = 4;
}

/// Length of `struct virtio_pci_cap`.
const VIRTIO_CAP_LEN: u8 = 16;
/// Length of `struct virtio_pci_notify_cap`.
const VIRTIO_NOTIFY_CAP_LEN: u8 = 20;

/// One virtio structure capability (`struct virtio_pci_cap`, §4.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct VirtioCap {
    /// Where the capability sits in configuration space.
    pub at: u8,
    /// Which structure ([`cfg_type`]).
    pub cfg_type: u8,
    /// BAR index (0..=5 valid; others are reserved and ignored).
    pub bar: u8,
    /// Offset of the structure in the BAR.
    pub offset: u32,
    /// Length of the structure.
    pub length: u32,
    /// `notify_off_multiplier` (notify capabilities only, else 0).
    pub notify_multiplier: u32,
}

/// The MSI-X capability (PCI 3.0 §6.8.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct MsixCap {
    /// Where the capability sits in configuration space.
    pub at: u8,
    /// Table entries (Table Size field + 1, so 1..=2048).
    pub table_size: u16,
    /// BAR holding the table (BIR).
    pub table_bar: u8,
    /// Offset of the table in that BAR (8-byte aligned by encoding).
    pub table_offset: u32,
}

/// Offset of MSI-X Message Control inside the capability.
pub(crate) const MSIX_CONTROL: u16 = 2;
/// Message Control: MSI-X enable.
pub(crate) const MSIX_ENABLE: u16 = 1 << 15;
/// Message Control: function mask.
pub(crate) const MSIX_FUNCTION_MASK: u16 = 1 << 14;

/// What the capability walk found.
#[derive(Clone, Debug, Default)]
pub(crate) struct CapList {
    /// Virtio structure capabilities, in list order (the device's preference).
    pub virtio: ArrayVec<VirtioCap, MAX_CAPS>,
    /// The first MSI-X capability.
    pub msix: Option<MsixCap>,
}

/// Walks the capability list: bounded by [`MAX_CAPS`], so a looping list is
/// reported instead of followed forever.
pub(crate) fn walk<C: PciConfig + ?Sized>(config: &C) -> Result<CapList, PciError> {
    if config.read_u16(header::STATUS) & STATUS_CAPABILITIES == 0 {
        return Err(PciError::NoCapabilities);
    }
    let mut list = CapList::default();
    // The bottom two bits of every pointer are reserved (PCI 3.0 §6.7).
    let mut at = config.read_u8(header::CAPABILITIES) & 0xfc;
    let mut seen = 0;
    while at != 0 {
        if at < FIRST_CAP {
            return Err(PciError::BadCapability { at });
        }
        seen += 1;
        if seen > MAX_CAPS {
            return Err(PciError::CapabilityLoop);
        }
        let base = u16::from(at);
        let id = config.read_u8(base);
        let next = config.read_u8(base + 1) & 0xfc;
        match id {
            CAP_ID_VENDOR => {
                let cap = read_virtio_cap(config, at)?;
                // Cannot fail: `seen` <= MAX_CAPS bounds the pushes.
                let _ = list.virtio.try_push(cap);
            }
            CAP_ID_MSIX if list.msix.is_none() => {
                if usize::from(at) + 12 > 256 {
                    return Err(PciError::BadCapability { at });
                }
                let control = config.read_u16(base + MSIX_CONTROL);
                let table = config.read_u32(base + 4);
                list.msix = Some(MsixCap {
                    at,
                    table_size: (control & 0x7ff) + 1,
                    table_bar: (table & 7) as u8,
                    table_offset: table & !7,
                });
            }
            _ => {}
        }
        at = next;
    }
    Ok(list)
}

fn read_virtio_cap<C: PciConfig + ?Sized>(config: &C, at: u8) -> Result<VirtioCap, PciError> {
    let base = u16::from(at);
    let cap_len = config.read_u8(base + 2);
    let cfg_type = config.read_u8(base + 3);
    let needed = if cfg_type == cfg_type::NOTIFY {
        VIRTIO_NOTIFY_CAP_LEN
    } else {
        VIRTIO_CAP_LEN
    };
    // cap_len may exceed the structure (§4.1.4.1), never undercut it or run
    // past the end of configuration space.
    if cap_len < needed || usize::from(at) + usize::from(cap_len) > 256 {
        return Err(PciError::BadCapability { at });
    }
    Ok(VirtioCap {
        at,
        cfg_type,
        bar: config.read_u8(base + 4),
        offset: config.read_u32(base + 8),
        length: config.read_u32(base + 12),
        notify_multiplier: if cfg_type == cfg_type::NOTIFY {
            config.read_u32(base + 16)
        } else {
            0
        },
    })
}

/// One base address register, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Bar {
    /// Not implemented (sizes to zero).
    Absent,
    /// An I/O space BAR; this driver only uses memory BARs.
    Io,
    /// A memory BAR.
    Memory {
        /// Bus address firmware (or the kernel) assigned; 0 = unassigned.
        addr: u64,
        /// Size from the all-ones probe.
        size: u64,
        /// A 64-bit BAR (it also occupies the next slot).
        wide: bool,
    },
    /// The upper half of the 64-bit BAR before it.
    Upper,
    /// A reserved memory type, or a 64-bit BAR in the last slot.
    Reserved,
}

fn bar_reg(index: usize) -> u16 {
    header::BAR0 + 4 * index as u16
}

/// Writes all ones to a BAR, reads the size mask, restores the original.
fn probe<C: PciConfig + ?Sized>(config: &C, reg: u16, original: u32) -> u32 {
    config.write_u32(reg, u32::MAX);
    let mask = config.read_u32(reg);
    config.write_u32(reg, original);
    mask
}

/// Decodes and sizes all six BARs (PCI 3.0 §6.2.5.1). Memory and I/O
/// decoding are switched off while the all-ones pattern sits in a BAR, so the
/// device never answers at a bogus address, and the command register is
/// restored afterwards.
pub(crate) fn read_bars<C: PciConfig + ?Sized>(config: &C) -> [Bar; 6] {
    let command = config.read_u16(header::COMMAND);
    config.write_u16(
        header::COMMAND,
        command & !(command::MEMORY_SPACE | command::IO_SPACE),
    );
    let mut bars = [Bar::Absent; 6];
    let mut index = 0;
    while index < 6 {
        let reg = bar_reg(index);
        let low = config.read_u32(reg);
        if low & 1 != 0 {
            bars[index] = Bar::Io;
            index += 1;
            continue;
        }
        match (low >> 1) & 3 {
            0 => {
                let mask = probe(config, reg, low) & !0xf;
                bars[index] = if mask == 0 {
                    Bar::Absent
                } else {
                    Bar::Memory {
                        addr: u64::from(low & !0xf),
                        size: u64::from((!mask).wrapping_add(1)),
                        wide: false,
                    }
                };
                index += 1;
            }
            2 if index < 5 => {
                let high_reg = bar_reg(index + 1);
                let high = config.read_u32(high_reg);
                let mask_low = probe(config, reg, low) & !0xf;
                let mask_high = probe(config, high_reg, high);
                let mask = u64::from(mask_high) << 32 | u64::from(mask_low);
                bars[index] = if mask == 0 {
                    Bar::Absent
                } else {
                    Bar::Memory {
                        addr: u64::from(high) << 32 | u64::from(low & !0xf),
                        size: (!mask).wrapping_add(1),
                        wide: true,
                    }
                };
                bars[index + 1] = Bar::Upper;
                index += 2;
            }
            _ => {
                bars[index] = Bar::Reserved;
                index += 1;
            }
        }
    }
    config.write_u16(header::COMMAND, command);
    bars
}
