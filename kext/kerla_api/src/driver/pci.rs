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
            Bar::IOMapped {
                port: (bar & 0xfffc) as u16,
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

/// A PCI function found at enumeration.
#[derive(Debug)]
pub struct PciDevice {
    config: PciConfig,
    bus: u8,
    slot: u8,
    function: u8,
    capabilities: Vec<PciCapability>,
}

impl PciDevice {
    /// The kernel's side: builds a device from its parts.
    pub fn new(
        bus: u8,
        slot: u8,
        function: u8,
        config: PciConfig,
        capabilities: Vec<PciCapability>,
    ) -> PciDevice {
        PciDevice {
            config,
            bus,
            slot,
            function,
            capabilities,
        }
    }

    /// The kernel's side: reads the header and capability list of a
    /// function through the kernel's configuration hooks, as Kerla's
    /// enumeration does. `None` when nothing answers or the header is not
    /// type 0.
    pub fn read(bus: u8, slot: u8, function: u8) -> Option<PciDevice> {
        let ops = kernel_ops();
        let read32 = |offset: u8| ops.pci_config_read32(bus, slot, function, offset);
        if read32(0) & 0xffff == 0xffff {
            return None;
        }
        let mut header = [0u8; HEADER_LEN];
        for (i, dword) in header.chunks_exact_mut(4).enumerate() {
            dword.copy_from_slice(&read32((i * 4) as u8).to_le_bytes());
        }
        if header[0x0e] & 0x7f != 0 {
            return None;
        }
        let read8 = |offset: u8| (read32(offset & 0xfc) >> ((offset & 3) * 8)) as u8;
        let capabilities = read_capabilities(&header, read8);
        Some(PciDevice::new(
            bus,
            slot,
            function,
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
        let value = ops.pci_config_read32(self.bus, self.slot, self.function, 0x04);
        // Only the command half: zeroes in the status half clear nothing
        // (its error bits are write-one-to-clear).
        let command = (value & 0xffff) | (1 << 2);
        ops.pci_config_write32(self.bus, self.slot, self.function, 0x04, command);
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

/// Walks the capability list (when the status register says there is
/// one), at most [`MAX_CAPABILITIES`] entries so a looping list ends.
fn read_capabilities(header: &[u8; HEADER_LEN], read8: impl Fn(u8) -> u8) -> Vec<PciCapability> {
    let mut caps = Vec::new();
    if header[0x06] & (1 << 4) == 0 {
        return caps;
    }
    let mut at = header[0x34] & 0xfc;
    while at != 0 && caps.len() < MAX_CAPABILITIES {
        let len = read8(at.wrapping_add(2));
        let data: Vec<u8> = (0..len)
            .map_while(|i| at.checked_add(i).map(&read8))
            .collect();
        caps.push(PciCapability {
            id: read8(at),
            data,
        });
        at = read8(at.wrapping_add(1)) & 0xfc;
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
    fn the_capability_walk_is_bounded() {
        let mut h = header();
        h[0x06] = 1 << 4;
        h[0x34] = 0x40;
        // A list that points back at itself, with byte 2 = 4.
        let space = |at: u8| match at {
            0x40 => 0x09,
            0x41 => 0x40,
            0x42 => 4,
            _ => 0,
        };
        let caps = read_capabilities(&h, space);
        assert_eq!(caps.len(), MAX_CAPABILITIES);
        assert_eq!(caps[0].data, [0x09, 0x40, 4, 0]);
    }
}
