//! Just enough of ELF64 (little-endian) to assemble a root file system: a
//! program's interpreter and the shared libraries it names (`DT_NEEDED`), and
//! a section's bytes (a kernel module's `.modinfo`).

/// `PT_LOAD`: a segment mapped from the file.
const PT_LOAD: u32 = 1;
/// `PT_DYNAMIC`: the dynamic section.
const PT_DYNAMIC: u32 = 2;
/// `PT_INTERP`: the program interpreter's path.
const PT_INTERP: u32 = 3;
/// Dynamic tags.
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_RPATH: u64 = 15;
const DT_RUNPATH: u64 = 29;

/// What a dynamically linked file asks of the loader.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// `PT_INTERP` (executables only), e.g. `/lib64/ld-linux-x86-64.so.2`.
    pub interp: Option<String>,
    /// `DT_NEEDED` sonames, in file order.
    pub needed: Vec<String>,
    /// Directories of `DT_RUNPATH` (or `DT_RPATH`), in order.
    pub runpath: Vec<String>,
}

/// An ELF64 little-endian file held in memory.
pub struct Elf<'a> {
    data: &'a [u8],
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

impl<'a> Elf<'a> {
    /// `None` unless `data` starts like an ELF64 little-endian file.
    pub fn parse(data: &'a [u8]) -> Option<Elf<'a>> {
        (data.len() >= 64 && data[..4] == *b"\x7fELF" && data[4] == 2 && data[5] == 1)
            .then_some(Elf { data })
    }

    fn u16_at(&self, at: u64) -> Option<u16> {
        let at = usize::try_from(at).ok()?;
        Some(u16::from_le_bytes(
            self.data.get(at..at.checked_add(2)?)?.try_into().ok()?,
        ))
    }

    fn u32_at(&self, at: u64) -> Option<u32> {
        let at = usize::try_from(at).ok()?;
        Some(u32::from_le_bytes(
            self.data.get(at..at.checked_add(4)?)?.try_into().ok()?,
        ))
    }

    fn u64_at(&self, at: u64) -> Option<u64> {
        let at = usize::try_from(at).ok()?;
        Some(u64::from_le_bytes(
            self.data.get(at..at.checked_add(8)?)?.try_into().ok()?,
        ))
    }

    fn bytes(&self, offset: u64, len: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.data.get(start..end)
    }

    /// The NUL-terminated string at `offset`.
    fn c_str(&self, offset: u64) -> Option<String> {
        let start = usize::try_from(offset).ok()?;
        let tail = self.data.get(start..)?;
        let end = tail.iter().position(|&b| b == 0)?;
        Some(String::from_utf8_lossy(&tail[..end]).into_owned())
    }

    fn segments(&self) -> Option<Vec<Segment>> {
        let phoff = self.u64_at(0x20)?;
        let entsize = u64::from(self.u16_at(0x36)?);
        let count = u64::from(self.u16_at(0x38)?);
        (0..count)
            .map(|i| {
                let at = phoff.checked_add(i.checked_mul(entsize)?)?;
                Some(Segment {
                    kind: self.u32_at(at)?,
                    offset: self.u64_at(at + 8)?,
                    vaddr: self.u64_at(at + 16)?,
                    filesz: self.u64_at(at + 32)?,
                })
            })
            .collect()
    }

    /// The file offset of virtual address `vaddr` (through the `PT_LOAD`
    /// segment that maps it).
    fn file_offset(segments: &[Segment], vaddr: u64) -> Option<u64> {
        segments
            .iter()
            .filter(|s| s.kind == PT_LOAD)
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)
            .map(|s| vaddr - s.vaddr + s.offset)
    }

    /// The interpreter and the needed libraries; `None` if the headers are
    /// malformed. A static file gives an empty [`Dynamic`].
    pub fn dynamic(&self) -> Option<Dynamic> {
        let segments = self.segments()?;
        let mut dynamic = Dynamic::default();
        if let Some(interp) = segments.iter().find(|s| s.kind == PT_INTERP) {
            dynamic.interp = Some(self.c_str(interp.offset)?);
        }
        let Some(table) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
            return Some(dynamic);
        };
        let mut needed = Vec::new();
        let mut runpath = Vec::new();
        let mut strtab = None;
        for i in 0..table.filesz / 16 {
            let at = table.offset + i * 16;
            let (tag, value) = (self.u64_at(at)?, self.u64_at(at + 8)?);
            match tag {
                DT_NULL => break,
                DT_NEEDED => needed.push(value),
                DT_STRTAB => strtab = Some(value),
                DT_RPATH | DT_RUNPATH => runpath.push(value),
                _ => {}
            }
        }
        if !needed.is_empty() || !runpath.is_empty() {
            let strtab = Self::file_offset(&segments, strtab?)?;
            for name in needed {
                dynamic.needed.push(self.c_str(strtab.checked_add(name)?)?);
            }
            for list in runpath {
                let list = self.c_str(strtab.checked_add(list)?)?;
                dynamic
                    .runpath
                    .extend(list.split(':').filter(|d| !d.is_empty()).map(String::from));
            }
        }
        Some(dynamic)
    }

    /// The bytes of the section called `name`, if there is one.
    pub fn section(&self, name: &str) -> Option<&'a [u8]> {
        let shoff = self.u64_at(0x28)?;
        let entsize = u64::from(self.u16_at(0x3a)?);
        let count = u64::from(self.u16_at(0x3c)?);
        let names_index = u64::from(self.u16_at(0x3e)?);
        let header = |i: u64| shoff.checked_add(i.checked_mul(entsize)?);
        let names = self.u64_at(header(names_index)? + 24)?;
        (0..count).find_map(|i| {
            let at = header(i)?;
            let this = self.c_str(names.checked_add(u64::from(self.u32_at(at)?))?)?;
            (this == name).then(|| self.bytes(self.u64_at(at + 24)?, self.u64_at(at + 32)?))?
        })
    }
}

/// A kernel module's `depends=` list (module names), from `.modinfo`.
pub fn module_depends(module: &[u8]) -> Result<Vec<String>, String> {
    let elf = Elf::parse(module).ok_or("not an ELF64 file")?;
    let modinfo = elf.section(".modinfo").ok_or("no .modinfo section")?;
    let mut depends = Vec::new();
    for list in modinfo
        .split(|&b| b == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
    {
        let list = String::from_utf8_lossy(list);
        depends.extend(list.split(',').filter(|n| !n.is_empty()).map(String::from));
    }
    Ok(depends)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal executable: one PT_LOAD over the whole file, PT_INTERP and
    /// PT_DYNAMIC with two DT_NEEDED entries.
    fn executable() -> Vec<u8> {
        let mut file = vec![0u8; 0x200];
        file[..6].copy_from_slice(b"\x7fELF\x02\x01");
        file[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        file[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        file[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        let mut ph = |i: usize, kind: u32, offset: u64, vaddr: u64, size: u64| {
            let at = 64 + i * 56;
            file[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            file[at + 8..at + 16].copy_from_slice(&offset.to_le_bytes());
            file[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            file[at + 32..at + 40].copy_from_slice(&size.to_le_bytes());
        };
        ph(0, PT_LOAD, 0, 0x40_0000, 0x200);
        ph(1, PT_INTERP, 0x100, 0x40_0100, 8);
        ph(2, PT_DYNAMIC, 0x140, 0x40_0140, 64);
        file[0x100..0x108].copy_from_slice(b"/ld.so\0\0");
        // Strings at 0x180 (vaddr 0x400180).
        file[0x180..0x18f].copy_from_slice(b"\0liba.so.1\0libb");
        file[0x18f..0x194].copy_from_slice(b".so\0\0");
        let dynamic: [(u64, u64); 4] = [
            (DT_NEEDED, 1),
            (DT_STRTAB, 0x40_0180),
            (DT_NEEDED, 11),
            (DT_NULL, 0),
        ];
        for (i, (tag, value)) in dynamic.iter().enumerate() {
            let at = 0x140 + i * 16;
            file[at..at + 8].copy_from_slice(&tag.to_le_bytes());
            file[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
        }
        file
    }

    #[test]
    fn needed_libraries_and_the_interpreter_are_read() {
        let file = executable();
        let dynamic = Elf::parse(&file).unwrap().dynamic().unwrap();
        assert_eq!(dynamic.interp.as_deref(), Some("/ld.so"));
        assert_eq!(dynamic.needed, ["liba.so.1", "libb.so"]);
    }

    #[test]
    fn truncated_or_foreign_files_are_refused_not_panicked_on() {
        let file = executable();
        for len in [0, 10, 64, 100, 0x150, 0x185] {
            if let Some(elf) = Elf::parse(&file[..len]) {
                let _ = elf.dynamic();
                let _ = elf.section(".modinfo");
            }
        }
        assert!(Elf::parse(b"#!/bin/sh\n").is_none());
    }

    /// A relocatable file like a kernel module: section headers only, a
    /// `.shstrtab` and a `.modinfo`.
    fn module(modinfo: &[u8]) -> Vec<u8> {
        let names = b"\0.shstrtab\0.modinfo\0";
        let mut file = vec![0u8; 64];
        file[..6].copy_from_slice(b"\x7fELF\x02\x01");
        let names_at = file.len() as u64;
        file.extend_from_slice(names);
        let modinfo_at = file.len() as u64;
        file.extend_from_slice(modinfo);
        let shoff = file.len().next_multiple_of(8) as u64;
        file.resize(shoff as usize, 0);
        file[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        file[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        file[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        file[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        for (name, offset, size) in [
            (0u32, 0u64, 0u64),
            (1, names_at, names.len() as u64),
            (11, modinfo_at, modinfo.len() as u64),
        ] {
            let mut header = [0u8; 64];
            header[..4].copy_from_slice(&name.to_le_bytes());
            header[24..32].copy_from_slice(&offset.to_le_bytes());
            header[32..40].copy_from_slice(&size.to_le_bytes());
            file.extend_from_slice(&header);
        }
        file
    }

    #[test]
    fn a_module_s_depends_come_from_modinfo() {
        let file = module(b"license=GPL\0depends=virtio,virtio_ring\0name=virtio_blk\0");
        assert_eq!(module_depends(&file).unwrap(), ["virtio", "virtio_ring"]);
        let none = module(b"depends=\0name=virtio_ring\0");
        assert!(module_depends(&none).unwrap().is_empty());
        assert!(module_depends(b"not elf").is_err());
    }

    #[test]
    fn the_host_s_own_xtask_binary_parses() {
        // A real file from the toolchain: this test binary itself.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let elf = Elf::parse(&me).expect("an ELF64 file");
        let dynamic = elf.dynamic().expect("valid headers");
        assert!(
            dynamic.needed.iter().any(|n| n.starts_with("libc.so")),
            "{dynamic:?}"
        );
        assert!(elf.section(".text").is_some());
    }
}
