//! PCI devices as Kerla's kext API shows them (`kerla_api::driver::pci`):
//! the 64-byte configuration header read once at enumeration, 32-bit BARs,
//! and the capability list as byte blobs. Kexts get no raw configuration
//! space access; the only write is [`PciDevice::enable_bus_master`].

use alloc::vec::Vec;

use crate::address::PAddr;
use crate::kernel_ops::kernel_ops;

/// PCI vendor ID.
pub type VendorId = u16;
/// PCI device ID.
pub type DeviceId = u16;

/// Bytes of the type-0 configuration header.
pub const HEADER_LEN: usize = 64;
/// Capabilities kept per function (Kerla keeps 16 too).
pub const MAX_CAPABILITIES: usize = 16;

/// The configuration header of a function (header type 0), as read at
/// enumeration.
#[derive(Debug, Copy, Clone)]
pub struct PciConfig {
    header: [u8; HEADER_LEN],
}

/// A base address register, decoded as Kerla does: the low 32 bits only.
#[derive(Debug)]
pub enum Bar {
    /// An I/O port range.
    IOMapped {
        /// First port.
        port: u16,
    },
    /// A memory range. For a 64-bit BAR this is the low half of its address.
    MemoryMapped {
        /// Physical address (low 32 bits).
        paddr: PAddr,
    },
}

/// One capability: its ID and its bytes, header included (`data[0]` is the
/// ID, `data[1]` the next pointer). As in Kerla, the blob is as long as
/// the capability's byte 2 says, which is `cap_len` for vendor-specific
/// (virtio) capabilities and something else for most others.
#[derive(Debug)]
pub struct PciCapability {
    /// Capability ID.
    pub id: u8,
    /// The capability's bytes.
    pub data: Vec<u8>,
}

impl PciConfig {
    /// The kernel's side: a header read from configuration space.
    pub fn from_header(header: [u8; HEADER_LEN]) -> PciConfig {
        PciConfig { header }
    }

    fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.header[offset], self.header[offset + 1]])
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let b = &self.header[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// BAR `index`, 0..5. Panics for 5, as Kerla's does.
    pub fn bar(&self, index: usize) -> Bar {
        assert!(index < 5, "BAR index {index} out of range");
        let bar = self.u32_at(0x10 + 4 * index);
        if bar & 1 == 0 {
            Bar::MemoryMapped {
                paddr: PAddr::new((bar & !0xf) as usize),
            }
        } else {
            // Kerla masks the low four bits of an I/O BAR too.
            Bar::IOMapped {
                port: (bar & 0xfff0) as u16,
            }
        }
    }

    /// Vendor ID.
    pub fn vendor_id(&self) -> VendorId {
        self.u16_at(0x00)
    }

    /// Device ID.
    pub fn device_id(&self) -> DeviceId {
        self.u16_at(0x02)
    }

    /// The INTx line firmware routed.
    pub fn interrupt_line(&self) -> u8 {
        self.header[0x3c]
    }
}

/// A PCI device found at enumeration: function 0 of a slot, as Kerla
/// enumerates. No derives, as in Kerla.
pub struct PciDevice {
    config: PciConfig,
    bus: u8,
    slot: u8,
    capabilities: Vec<PciCapability>,
}

impl PciDevice {
    /// The kernel's side (Kerla builds these in its scan and exports no
    /// constructor): a device from its parts.
    pub fn new(
        bus: u8,
        slot: u8,
        config: PciConfig,
        capabilities: Vec<PciCapability>,
    ) -> PciDevice {
        PciDevice {
            config,
            bus,
            slot,
            capabilities,
        }
    }

    /// Reads function 0 of `slot` through the kernel's configuration hooks
    /// the way Kerla's scan does: `None` unless the header type byte is
    /// exactly 0 (so nothing answering, a bridge, or a multi-function
    /// device is skipped); the capability list is followed from byte 0x34
    /// whatever the status register says, each blob as long as its byte 2,
    /// and **more than [`MAX_CAPABILITIES`] capabilities panic**, as
    /// Kerla's fixed-size list does.
    pub(crate) fn read(bus: u8, slot: u8) -> Option<PciDevice> {
        let ops = kernel_ops();
        let read32 = |offset: u8| ops.pci_config_read32(bus, slot, offset);
        let read8 = |offset: u8| (read32(offset & 0xfc) >> ((offset & 3) * 8)) as u8;
        if read8(0x0e) != 0 {
            return None;
        }
        let mut header = [0u8; HEADER_LEN];
        for (i, dword) in header.chunks_exact_mut(4).enumerate() {
            dword.copy_from_slice(&read32((i * 4) as u8).to_le_bytes());
        }
        let capabilities = read_capabilities(header[0x34], read8);
        Some(PciDevice::new(
            bus,
            slot,
            PciConfig::from_header(header),
            capabilities,
        ))
    }

    /// The configuration header.
    pub fn config(&self) -> &PciConfig {
        &self.config
    }

    /// Sets Bus Master Enable in the command register, so the function
    /// may DMA.
    pub fn enable_bus_master(&self) {
        let ops = kernel_ops();
        let value = ops.pci_config_read32(self.bus, self.slot, 0x04);
        // Only the command half: zeroes in the status half clear nothing
        // (its error bits are write-one-to-clear). Kerla writes the dword
        // back whole; QEMU's status bits read 0 or clear harmlessly.
        let command = (value & 0xffff) | (1 << 2);
        ops.pci_config_write32(self.bus, self.slot, 0x04, command);
    }

    /// Bus number.
    pub fn bus(&self) -> u8 {
        self.bus
    }

    /// Slot (device) number.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The capability list, in list order.
    pub fn capabilities(&self) -> &[PciCapability] {
        &self.capabilities
    }
}

/// Every device Kerla's scan finds: function 0 of slots 0..=30 on buses
/// 0..=255 (slot 31 is never looked at), in that order.
pub(crate) fn enumerate() -> Vec<PciDevice> {
    (0..=255u8)
        .flat_map(|bus| (0..31u8).map(move |slot| (bus, slot)))
        .filter_map(|(bus, slot)| PciDevice::read(bus, slot))
        .collect()
}

/// Follows the capability list from `first` until a next pointer of 0.
/// Panics past [`MAX_CAPABILITIES`] entries, as Kerla does (so a looping
/// list panics rather than spins).
fn read_capabilities(first: u8, read8: impl Fn(u8) -> u8) -> Vec<PciCapability> {
    let mut caps = Vec::new();
    let mut at = first;
    while at != 0 {
        assert!(
            caps.len() < MAX_CAPABILITIES,
            "pci: more than {MAX_CAPABILITIES} capabilities (Kerla's list is full)"
        );
        let len = read8(at.wrapping_add(2));
        let data: Vec<u8> = (0..len).map(|i| read8(at.wrapping_add(i))).collect();
        caps.push(PciCapability {
            id: read8(at),
            data,
        });
        at = read8(at.wrapping_add(1));
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..2].copy_from_slice(&0x1af4u16.to_le_bytes());
        h[2..4].copy_from_slice(&0x1042u16.to_le_bytes());
        h[0x10..0x14].copy_from_slice(&0xc041u32.to_le_bytes()); // I/O
        h[0x20..0x24].copy_from_slice(&0xfe00_000cu32.to_le_bytes()); // 64-bit memory
        h[0x3c] = 11;
        h
    }

    #[test]
    fn header_fields_decode_as_kerla_does() {
        let config = PciConfig::from_header(header());
        assert_eq!(config.vendor_id(), 0x1af4);
        assert_eq!(config.device_id(), 0x1042);
        assert_eq!(config.interrupt_line(), 11);
        assert!(matches!(config.bar(0), Bar::IOMapped { port: 0xc040 }));
        match config.bar(4) {
            Bar::MemoryMapped { paddr } => assert_eq!(paddr.value(), 0xfe00_0000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    #[should_panic]
    fn bar_five_is_out_of_reach() {
        let _ = PciConfig::from_header(header()).bar(5);
    }

    #[test]
    #[should_panic(expected = "more than 16 capabilities")]
    fn a_looping_capability_list_panics_as_in_kerla() {
        // A list that points back at itself, with byte 2 = 4.
        let space = |at: u8| match at {
            0x40 => 0x09,
            0x41 => 0x40,
            0x42 => 4,
            _ => 0,
        };
        let _ = read_capabilities(0x40, space);
    }

    #[test]
    fn capability_blobs_are_as_long_as_their_byte_2() {
        let space = |at: u8| match at {
            0x40 => 0x11,
            0x41 => 0x50,
            0x42 => 3,
            0x50 => 0x09,
            0x51 => 0,
            0x52 => 5,
            _ => 0xaa,
        };
        let caps = read_capabilities(0x40, space);
        assert_eq!(caps.len(), 2);
        assert_eq!(caps[0].data, [0x11, 0x50, 3]);
        assert_eq!((caps[1].id, caps[1].data.len()), (0x09, 5));
    }
}
