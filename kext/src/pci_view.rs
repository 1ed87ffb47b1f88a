//! `transport::pci::PciConfig` over what Kerla's kext API shows of a PCI
//! function.
//!
//! Kerla gives a kext the function's header as read at boot (vendor and
//! device ID, BARs 0..=4 decoded to their low 32 bits, the INTx line), its
//! capability list as byte blobs, and one write: `enable_bus_master`. It
//! gives no raw configuration space. The virtio-pci transport wants a
//! configuration space to walk, so [`ConfigView`] rebuilds one, 256 bytes:
//!
//! - the header: IDs, status "capability list present", the BARs as 32-bit
//!   memory (or I/O) BARs, the interrupt line, pin A when a line is routed;
//! - the capability list: only the vendor-specific (virtio) capabilities,
//!   in their order, packed from 0x40 with the next pointers rewritten. The
//!   MSI-X capability is left out: Kerla has no MSI-X, so the transport
//!   stays on INTx;
//! - BAR sizes: Kerla does not give them, so the all-ones sizing probe
//!   answers with the smallest power of two that holds every structure the
//!   virtio capabilities place in that BAR (at most [`MAX_BAR_SIZE`]). The
//!   real BAR is at least that large and aligned to its own size, hence to
//!   this one. What this loses: the transport's "structure inside its BAR"
//!   check now holds by construction up to `MAX_BAR_SIZE`, so a device
//!   lying about a structure's extent is bounded by that, not by its BAR.
//!
//! Writes change only the view: the command register is a shadow (the
//! prober calls `enable_bus_master` itself; memory decoding is on from the
//! firmware, as Kerla's own virtio drivers assume), BAR writes drive the
//! sizing probe, everything else is dropped. BAR 5 (Kerla's `bar(5)`
//! panics) reads as absent; a 64-bit BAR shows its low half only, so one
//! placed above 4 GiB cannot be reached (nor could the straight map reach it).

use core::cell::Cell;

use kerla_api::driver::pci::{Bar, PciCapability, PciDevice};
use virtio_blk_mq::transport::PciConfig;

/// Bytes of the standard configuration space.
const SPACE: usize = 256;
/// Where the rebuilt capability list starts (after the header).
const FIRST_CAP: usize = 0x40;
/// Capability ID of a vendor-specific capability (virtio's structures).
const CAP_ID_VENDOR: u8 = 0x09;
/// The largest BAR size the view reports.
pub const MAX_BAR_SIZE: u64 = 1 << 20;
/// The smallest memory BAR (PCI 3.0 §6.2.5.1).
const MIN_BAR_SIZE: u64 = 16;
/// BARs Kerla lets a kext read (`bar(5)` panics).
const READABLE_BARS: usize = 5;

/// Offsets of the header fields the view serves.
mod header {
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    pub const CAPABILITIES: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Status register: a capability list is present.
const STATUS_CAPABILITIES: u16 = 1 << 4;
/// Command register: memory space decoding on.
const COMMAND_MEMORY_SPACE: u16 = 1 << 1;

/// A configuration space rebuilt from a Kerla `PciDevice` (see the module).
#[derive(Debug)]
pub struct ConfigView {
    space: [u8; SPACE],
    /// Size of each memory BAR as the sizing probe reports it (0: absent or I/O).
    bar_sizes: [u64; 6],
    /// All ones was written to the BAR and not yet replaced.
    probing: [Cell<bool>; 6],
    command: Cell<u16>,
    /// Virtio capabilities that did not fit the 256 bytes.
    dropped: usize,
}

impl ConfigView {
    /// Rebuilds the space of `device`.
    pub fn new(device: &PciDevice) -> ConfigView {
        let config = device.config();
        let bars: [Option<Bar>; 6] =
            core::array::from_fn(|i| (i < READABLE_BARS).then(|| config.bar(i)));
        Self::build(
            config.vendor_id(),
            config.device_id(),
            &bars,
            config.interrupt_line(),
            device.capabilities(),
        )
    }

    /// Builds the space from its parts (`bars[i]` is `None` where Kerla
    /// cannot read the BAR).
    fn build(
        vendor: u16,
        device: u16,
        bars: &[Option<Bar>; 6],
        line: u8,
        caps: &[PciCapability],
    ) -> ConfigView {
        let mut space = [0u8; SPACE];
        space[0..2].copy_from_slice(&vendor.to_le_bytes());
        space[2..4].copy_from_slice(&device.to_le_bytes());
        space[header::HEADER_TYPE] = 0;
        space[header::INTERRUPT_LINE] = line;
        space[header::INTERRUPT_PIN] = u8::from(line != 0 && line != 0xff);

        let virtio: alloc::vec::Vec<&PciCapability> =
            caps.iter().filter(|c| c.id == CAP_ID_VENDOR).collect();
        let mut bar_sizes = [0u64; 6];
        for (i, bar) in bars.iter().enumerate() {
            let reg = header::BAR0 + 4 * i;
            let value = match bar {
                Some(Bar::MemoryMapped { paddr }) if !paddr.is_null() => {
                    bar_sizes[i] = needed_size(&virtio, i as u8);
                    // A 32-bit, non-prefetchable memory BAR: type bits 0.
                    (paddr.value() as u32) & !0xf
                }
                Some(Bar::IOMapped { port }) => u32::from(*port) | 1,
                _ => 0,
            };
            space[reg..reg + 4].copy_from_slice(&value.to_le_bytes());
        }

        let mut at = FIRST_CAP;
        let mut previous_next: Option<usize> = None;
        let mut dropped = 0;
        for cap in &virtio {
            // The blob is as long as its byte 2 said when Kerla read it; a
            // byte 2 claiming more than the blob holds is cut to the blob,
            // so the transport never reads past it into the next one.
            let len = cap.data.len().max(4);
            let room = len.next_multiple_of(4);
            if at + room > SPACE {
                dropped += 1;
                continue;
            }
            space[at..at + cap.data.len()].copy_from_slice(&cap.data);
            space[at] = cap.id;
            space[at + 1] = 0;
            let cap_len = cap.data.get(2).copied().unwrap_or(0);
            space[at + 2] = cap_len.min(cap.data.len() as u8);
            match previous_next {
                Some(next) => space[next] = at as u8,
                None => space[header::CAPABILITIES] = at as u8,
            }
            previous_next = Some(at + 1);
            at += room;
        }
        if previous_next.is_some() {
            let status = STATUS_CAPABILITIES.to_le_bytes();
            space[header::STATUS..header::STATUS + 2].copy_from_slice(&status);
        }
        if dropped > 0 {
            kerla_api::warn!(
                "virtio-blk-mq kext: {dropped} virtio capabilities did not fit the rebuilt configuration space"
            );
        }
        ConfigView {
            space,
            bar_sizes,
            probing: Default::default(),
            command: Cell::new(COMMAND_MEMORY_SPACE),
            dropped,
        }
    }

    /// Virtio capabilities that did not fit and were left out.
    pub fn dropped_capabilities(&self) -> usize {
        self.dropped
    }

    /// The dword at `offset` (4-aligned) as the transport sees it now.
    fn dword(&self, offset: usize) -> u32 {
        if offset + 4 > SPACE {
            return u32::MAX;
        }
        let stored = u32::from_le_bytes([
            self.space[offset],
            self.space[offset + 1],
            self.space[offset + 2],
            self.space[offset + 3],
        ]);
        if offset == header::COMMAND {
            return stored & 0xffff_0000 | u32::from(self.command.get());
        }
        match bar_index(offset) {
            Some(i) if self.probing[i].get() => {
                // The size mask (§6.2.5.1): ones above the size, type bits kept.
                let size = self.bar_sizes[i];
                if size == 0 {
                    // I/O or absent: an I/O BAR keeps its type bit, absent reads 0.
                    stored & 1
                } else {
                    (!(size - 1) as u32) & !0xf | (stored & 0xf)
                }
            }
            _ => stored,
        }
    }

    fn write(&self, offset: usize, bytes: &[u8]) {
        let start = offset & !3;
        if start == header::COMMAND {
            // The command half of the dword; the status half is read-only
            // here (its error bits are write-one-to-clear on hardware).
            let mut command = self.command.get().to_le_bytes();
            for (i, b) in bytes.iter().enumerate() {
                if let Some(byte) = command.get_mut(offset - start + i) {
                    *byte = *b;
                }
            }
            self.command.set(u16::from_le_bytes(command));
            return;
        }
        if let (Some(i), 4) = (bar_index(start), bytes.len()) {
            // All ones starts the sizing probe; anything else ends it. The
            // view cannot move a BAR, so the value itself is not kept.
            self.probing[i].set(bytes == [0xff; 4]);
        }
    }
}

/// Which BAR register `offset` is.
fn bar_index(offset: usize) -> Option<usize> {
    let i = offset.checked_sub(header::BAR0)? / 4;
    (i < 6 && offset % 4 == 0).then_some(i)
}

/// The smallest power-of-two size (between [`MIN_BAR_SIZE`] and
/// [`MAX_BAR_SIZE`]) holding every structure the virtio capabilities place
/// in BAR `bar`: `offset` at bytes 8..12, `length` at 12..16.
fn needed_size(virtio: &[&PciCapability], bar: u8) -> u64 {
    let end = virtio
        .iter()
        .filter(|cap| cap.data.len() >= 16 && cap.data[4] == bar)
        .map(|cap| {
            let word = |at: usize| {
                u64::from(u32::from_le_bytes([
                    cap.data[at],
                    cap.data[at + 1],
                    cap.data[at + 2],
                    cap.data[at + 3],
                ]))
            };
            word(8) + word(12)
        })
        .max()
        .unwrap_or(0);
    end.max(MIN_BAR_SIZE)
        .checked_next_power_of_two()
        .unwrap_or(MAX_BAR_SIZE)
        .min(MAX_BAR_SIZE)
}

impl PciConfig for ConfigView {
    fn read_u8(&self, offset: u16) -> u8 {
        let offset = usize::from(offset);
        (self.dword(offset & !3) >> ((offset & 3) * 8)) as u8
    }

    fn read_u16(&self, offset: u16) -> u16 {
        let offset = usize::from(offset);
        (self.dword(offset & !3) >> ((offset & 2) * 8)) as u16
    }

    fn read_u32(&self, offset: u16) -> u32 {
        self.dword(usize::from(offset) & !3)
    }

    fn write_u8(&self, offset: u16, value: u8) {
        self.write(usize::from(offset), &[value]);
    }

    fn write_u16(&self, offset: u16, value: u16) {
        self.write(usize::from(offset), &value.to_le_bytes());
    }

    fn write_u32(&self, offset: u16, value: u32) {
        self.write(usize::from(offset), &value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
