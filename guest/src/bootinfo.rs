//! What the boot loader tells the kernel: PVH's `hvm_start_info` (command
//! line, memory map), read once at boot and kept as plain values.

use core::ffi::CStr;

const START_INFO_MAGIC: u32 = 0x336e_c578;
/// Memory map entry type of usable RAM.
const MEMMAP_RAM: u32 = 1;
/// At most this many RAM ranges are kept.
const MAX_RANGES: usize = 16;

/// A range of physical memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// The boot loader's facts.
pub struct BootInfo {
    /// The kernel command line.
    pub cmdline: &'static str,
    ram: [Range; MAX_RANGES],
    ram_ranges: usize,
}

#[repr(C)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

#[repr(C)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

impl BootInfo {
    /// Reads the start info at `paddr`.
    ///
    /// # Safety
    /// `paddr` is what the PVH loader passed in `%ebx`, identity-mapped, and
    /// the memory it points to (start info, command line, memory map) is
    /// never written again.
    pub unsafe fn read(paddr: u64) -> Result<BootInfo, &'static str> {
        // SAFETY: the caller vouches for the address; the loader placed the
        // structure there, 8-byte aligned.
        let info = unsafe { &*(paddr as *const StartInfo) };
        if info.magic != START_INFO_MAGIC {
            return Err("no PVH start info (bad magic): was the kernel booted through PVH?");
        }
        let cmdline = if info.cmdline_paddr == 0 {
            ""
        } else {
            // SAFETY: the loader's NUL-terminated command line, never written again.
            let raw = unsafe { CStr::from_ptr(info.cmdline_paddr as *const core::ffi::c_char) };
            raw.to_str().unwrap_or("")
        };
        let mut boot = BootInfo {
            cmdline,
            ram: [Range::default(); MAX_RANGES],
            ram_ranges: 0,
        };
        if info.version < 1 || info.memmap_paddr == 0 {
            return Err("the PVH start info has no memory map (version 0)");
        }
        for i in 0..info.memmap_entries as usize {
            // SAFETY: the loader's table of `memmap_entries` entries.
            let entry = unsafe { &*(info.memmap_paddr as *const MemmapEntry).add(i) };
            if entry.kind == MEMMAP_RAM && boot.ram_ranges < MAX_RANGES {
                boot.ram[boot.ram_ranges] = Range {
                    start: entry.addr,
                    end: entry.addr.saturating_add(entry.size),
                };
                boot.ram_ranges += 1;
            }
        }
        Ok(boot)
    }

    /// Usable RAM ranges.
    pub fn ram(&self) -> &[Range] {
        &self.ram[..self.ram_ranges]
    }
}
