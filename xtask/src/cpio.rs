//! The initramfs format: a "newc" cpio archive (the kernel's
//! `Documentation/driver-api/early-userspace/buffer-format.rst`), uncompressed
//! so the guest spends no boot time decompressing it under TCG.

use std::io::{self, Write};

/// `S_IFDIR`, `S_IFREG`, `S_IFLNK`, `S_IFCHR`.
const DIR: u32 = 0o040_000;
const REGULAR: u32 = 0o100_000;
const SYMLINK: u32 = 0o120_000;
const CHAR_DEVICE: u32 = 0o020_000;

/// Writes archive entries in order; [`Archive::finish`] writes the trailer.
pub struct Archive<W: Write> {
    out: W,
    written: u64,
    inode: u32,
}

impl<W: Write> Archive<W> {
    /// An empty archive writing to `out`.
    pub fn new(out: W) -> Archive<W> {
        Archive {
            out,
            written: 0,
            inode: 0,
        }
    }

    fn pad(&mut self) -> io::Result<()> {
        let pad = (4 - self.written % 4) % 4;
        self.out.write_all(&[0; 3][..pad as usize])?;
        self.written += pad;
        Ok(())
    }

    /// One entry: a 110-byte header of 13 eight-digit hex fields, the name
    /// with its NUL, padding to 4 bytes, the data, padding to 4 bytes.
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) -> io::Result<()> {
        let name = name.trim_start_matches('/');
        self.inode += 1;
        let size = u32::try_from(data.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file over 4 GiB"))?;
        let fields = [
            self.inode,
            mode,
            0, // uid
            0, // gid
            if mode & DIR != 0 { 2 } else { 1 },
            0, // mtime: fixed, so the same inputs give the same bytes
            size,
            0,
            0, // device of the file: none
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0, // check: unused in newc
        ];
        let mut header = String::from("070701");
        for field in fields {
            header.push_str(&format!("{field:08x}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += header.len() as u64 + name.len() as u64 + 1;
        self.pad()?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    /// A directory (parents first: the kernel does not create them).
    pub fn dir(&mut self, name: &str) -> io::Result<()> {
        self.entry(name, DIR | 0o755, (0, 0), &[])
    }

    /// A regular file with permission bits `perm`.
    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        self.entry(name, REGULAR | (perm & 0o7777), (0, 0), data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> io::Result<()> {
        self.entry(name, SYMLINK | 0o777, (0, 0), target.as_bytes())
    }

    /// A character device node.
    pub fn char_device(&mut self, name: &str, major: u32, minor: u32) -> io::Result<()> {
        self.entry(name, CHAR_DEVICE | 0o600, (major, minor), &[])
    }

    /// Writes the trailer and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the entries back: (name, mode, data).
    fn entries(archive: &[u8]) -> Vec<(String, u32, Vec<u8>)> {
        let mut at = 0;
        let mut out = Vec::new();
        let field = |at: usize, i: usize| {
            let text = std::str::from_utf8(&archive[at + 6 + i * 8..at + 14 + i * 8]).unwrap();
            u32::from_str_radix(text, 16).unwrap() as usize
        };
        loop {
            assert_eq!(&archive[at..at + 6], b"070701");
            let mode = field(at, 1) as u32;
            let size = field(at, 6);
            let name_len = field(at, 11);
            let name = std::str::from_utf8(&archive[at + 110..at + 110 + name_len - 1])
                .unwrap()
                .to_string();
            assert_eq!(archive[at + 110 + name_len - 1], 0);
            let data_at = (at + 110 + name_len).next_multiple_of(4);
            let data = archive[data_at..data_at + size].to_vec();
            at = (data_at + size).next_multiple_of(4);
            if name == "TRAILER!!!" {
                assert_eq!(at, archive.len());
                return out;
            }
            out.push((name, mode, data));
        }
    }

    #[test]
    fn entries_read_back_with_their_modes_and_padding() {
        let mut archive = Archive::new(Vec::new());
        archive.dir("/bin").unwrap();
        archive
            .file("/bin/busybox", 0o755, b"\x7fELF12345")
            .unwrap();
        archive.symlink("/bin/sh", "busybox").unwrap();
        archive.char_device("/dev/console", 5, 1).unwrap();
        archive.file("/init", 0o755, b"").unwrap();
        let bytes = archive.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = entries(&bytes);
        let names: Vec<_> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            names,
            ["bin", "bin/busybox", "bin/sh", "dev/console", "init"]
        );
        assert_eq!(entries[0].1, DIR | 0o755);
        assert_eq!(entries[1].2, b"\x7fELF12345");
        assert_eq!(entries[2].1, SYMLINK | 0o777);
        assert_eq!(entries[2].2, b"busybox");
        assert_eq!(entries[3].1, CHAR_DEVICE | 0o600);
    }
}
