//! Locating and mapping the virtio structures (§4.1.4): each capability's
//! BAR is checked to be an assigned memory BAR, the structure's range must lie
//! inside it and be aligned as the spec requires, and only then is it mapped
//! through [`Hal::map_mmio`].

use super::caps::{Bar, MsixCap, VirtioCap};
use super::interrupt::{msix_entry, Msix};
use super::{PciError, Structure};
use crate::hal::{Hal, PhysAddr};
use crate::transport::regs::Regs;

/// Most bytes mapped of a structure whose tail the driver never uses: a
/// device may declare a huge `length` (§4.1.4, note on forward compatibility).
pub(super) const MAP_LIMIT: u64 = 4096;

/// Maps `len` bytes at `paddr` through the Hal.
fn map<H: Hal>(hal: &H, paddr: PhysAddr, len: usize) -> Result<Regs, PciError> {
    let base = hal
        .map_mmio(paddr, len)
        .ok_or(PciError::MapFailed { paddr, len })?;
    // SAFETY: the Hal's implementation contract for `map_mmio`: the pointer
    // is valid for volatile access to `len` bytes of device registers,
    // uncached, for the rest of the program.
    Ok(unsafe { Regs::new(base, len) })
}

/// Where a structure lives: its BAR checked, its range inside the BAR.
fn locate(
    bars: &[Bar; 6],
    bar: u8,
    offset: u64,
    length: u64,
    structure: Structure,
) -> Result<PhysAddr, PciError> {
    let Some(&Bar::Memory { addr, size, .. }) = bars.get(usize::from(bar)) else {
        return Err(PciError::BadBar { structure, bar });
    };
    if addr == 0 {
        return Err(PciError::BarNotAssigned { bar });
    }
    match offset.checked_add(length) {
        Some(end) if end <= size => {}
        _ => return Err(PciError::OutsideBar { structure, bar }),
    }
    addr.checked_add(offset)
        .ok_or(PciError::OutsideBar { structure, bar })
}

/// The first capability of `kind` this driver can use (§4.1.4.1: the first
/// usable instance; caps with a reserved BAR number are ignored).
pub(super) fn choose(
    caps: &[VirtioCap],
    kind: u8,
    bars: &[Bar; 6],
    structure: Structure,
) -> Result<VirtioCap, PciError> {
    let mut first_error = None;
    for cap in caps.iter().filter(|c| c.cfg_type == kind && c.bar < 6) {
        match bars[usize::from(cap.bar)] {
            Bar::Memory { addr: 0, .. } => {
                first_error.get_or_insert(PciError::BarNotAssigned { bar: cap.bar });
            }
            Bar::Memory { .. } => return Ok(*cap),
            _ => {
                first_error.get_or_insert(PciError::BadBar {
                    structure,
                    bar: cap.bar,
                });
            }
        }
    }
    Err(first_error.unwrap_or(PciError::MissingCapability(structure)))
}

/// Locates, checks and maps one virtio structure. `needed` bytes must exist;
/// at most `limit` are mapped.
pub(super) fn map_structure<H: Hal>(
    hal: &H,
    bars: &[Bar; 6],
    cap: &VirtioCap,
    structure: Structure,
    needed: u64,
    align: u64,
    limit: u64,
) -> Result<Regs, PciError> {
    let length = u64::from(cap.length);
    if length < needed {
        return Err(PciError::TooShort(structure));
    }
    if u64::from(cap.offset) % align != 0 {
        return Err(PciError::Misaligned(structure));
    }
    let paddr = locate(bars, cap.bar, cap.offset.into(), length, structure)?;
    let regs = map(hal, paddr, length.min(limit) as usize)?;
    if (regs.addr() as u64) % align != 0 {
        return Err(PciError::Misaligned(structure));
    }
    Ok(regs)
}

pub(super) fn map_msix<H: Hal>(hal: &H, bars: &[Bar; 6], cap: MsixCap) -> Result<Msix, PciError> {
    let structure = Structure::MsixTable;
    let len = usize::from(cap.table_size) * msix_entry::SIZE;
    let paddr = locate(
        bars,
        cap.table_bar,
        cap.table_offset.into(),
        len as u64,
        structure,
    )?;
    let table = map(hal, paddr, len)?;
    if table.addr() % 8 != 0 {
        return Err(PciError::Misaligned(structure));
    }
    Ok(Msix { cap, table })
}
