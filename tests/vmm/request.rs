//! Serving one virtio-blk request (VIRTIO 1.2 §5.2.6) from a RAM disk.
//!
//! The request is read as two byte streams, the device-readable and the
//! device-writable buffers in chain order, so the device makes no assumption
//! about how the driver split the request into descriptors (§5.2.6.2 asks
//! devices not to). Every access goes through `vm-memory`'s `Bytes`.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress};

use super::config_space::{
    blk_status, feature, req, HEADER_BYTES, ID_BYTES, RANGE_BYTES, SECTOR, WRITE_ZEROES_UNMAP,
};
use super::memory::Memory;

/// One buffer of a chain.
#[derive(Clone, Copy, Debug)]
struct Buffer {
    addr: u64,
    len: u32,
}

/// A descriptor chain split into its two directions.
#[derive(Debug, Default)]
pub struct Chain {
    readable: Vec<Buffer>,
    writable: Vec<Buffer>,
    /// Descriptors in the chain (after following an indirect table).
    pub descriptors: usize,
    /// A device-readable buffer came after a device-writable one (§2.7.4.2
    /// forbids it).
    pub misordered: bool,
    /// The last descriptor `virtio-queue` yielded still had NEXT set: its
    /// iterator ends a chain quietly when `next` leaves the table or memory.
    pub truncated: bool,
}

impl Chain {
    /// Walks a chain as `virtio-queue` yields it.
    pub fn collect(descriptors: impl Iterator<Item = Descriptor>) -> Chain {
        let mut chain = Chain::default();
        for desc in descriptors {
            chain.descriptors += 1;
            chain.truncated = desc.has_next();
            let buffer = Buffer {
                addr: desc.addr().0,
                len: desc.len(),
            };
            if desc.is_write_only() {
                chain.writable.push(buffer);
            } else {
                if !chain.writable.is_empty() {
                    chain.misordered = true;
                }
                chain.readable.push(buffer);
            }
        }
        chain
    }

    fn readable_len(&self) -> usize {
        self.readable.iter().map(|b| b.len as usize).sum()
    }

    fn writable_len(&self) -> usize {
        self.writable.iter().map(|b| b.len as usize).sum()
    }
}

/// Copies `buf.len()` bytes starting `offset` bytes into the stream `buffers`.
fn gather(memory: &Memory, buffers: &[Buffer], offset: usize, buf: &mut [u8]) -> bool {
    transfer(buffers, offset, buf.len(), |addr, range| {
        memory
            .read_slice(&mut buf[range], GuestAddress(addr))
            .is_ok()
    })
}

/// Copies `data` into the stream `buffers` starting `offset` bytes in.
fn scatter(memory: &Memory, buffers: &[Buffer], offset: usize, data: &[u8]) -> bool {
    transfer(buffers, offset, data.len(), |addr, range| {
        memory.write_slice(&data[range], GuestAddress(addr)).is_ok()
    })
}

/// Splits the stream range `offset..offset + len` into per-buffer pieces and
/// hands each to `copy` as (guest address, range within the caller's slice).
fn transfer(
    buffers: &[Buffer],
    mut offset: usize,
    len: usize,
    mut copy: impl FnMut(u64, std::ops::Range<usize>) -> bool,
) -> bool {
    let mut done = 0;
    for buffer in buffers {
        if done == len {
            break;
        }
        let buffer_len = buffer.len as usize;
        if offset >= buffer_len {
            offset -= buffer_len;
            continue;
        }
        let piece = (buffer_len - offset).min(len - done);
        if !copy(buffer.addr + offset as u64, done..done + piece) {
            return false;
        }
        done += piece;
        offset = 0;
    }
    done == len
}

/// One range of DISCARD / WRITE_ZEROES as the device decoded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub sector: u64,
    pub sectors: u32,
    pub flags: u32,
}

/// The disk behind the device, and what it was asked to do.
pub struct RamDisk {
    pub data: Vec<u8>,
    pub id: [u8; ID_BYTES],
    /// Features the driver accepted.
    pub features: u64,
    pub seg_max: u32,
    pub max_range_sectors: u32,
    pub flushes: u64,
    pub discards: Vec<Range>,
    pub write_zeroes: Vec<Range>,
    /// Driver mistakes seen in requests.
    pub violations: Vec<String>,
}

impl RamDisk {
    fn capacity_sectors(&self) -> u64 {
        self.data.len() as u64 / SECTOR
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// Serves `chain`; returns the bytes written into its writable buffers
    /// (the used length, §2.7.8), status byte included.
    pub fn serve(&mut self, memory: &Memory, chain: &Chain) -> u32 {
        if chain.misordered {
            self.violation("a device-readable buffer follows a device-writable one".into());
        }
        if chain.truncated {
            self.violation("chain ends on a descriptor whose NEXT leads nowhere".into());
        }
        let writable = chain.writable_len();
        if writable == 0 {
            // No status byte: nothing can be reported, not even an error.
            self.violation("request without a writable status byte".into());
            return 0;
        }
        let data_in = writable - 1;
        let mut header = [0u8; HEADER_BYTES];
        let (status, written) = if !gather(memory, &chain.readable, 0, &mut header) {
            self.violation("request without a readable 16-byte header".into());
            (blk_status::IOERR, 0)
        } else {
            let kind = u32::from_le_bytes(header[0..4].try_into().unwrap());
            let reserved = u32::from_le_bytes(header[4..8].try_into().unwrap());
            let sector = u64::from_le_bytes(header[8..16].try_into().unwrap());
            if reserved != 0 {
                self.violation(format!("request header reserved field is {reserved:#x}"));
            }
            let data_out = chain.readable_len() - HEADER_BYTES;
            // Header and status take a descriptor each with our driver; the
            // rest are data segments, which seg_max bounds.
            let segments = chain.descriptors.saturating_sub(2) as u64;
            if self.features & feature::SEG_MAX != 0 && segments > u64::from(self.seg_max) {
                self.violation(format!(
                    "{segments} data segments exceed seg_max {}",
                    self.seg_max
                ));
            }
            self.execute(memory, chain, kind, sector, data_out, data_in)
        };
        if !scatter(memory, &chain.writable, data_in, &[status]) {
            self.violation("status byte is outside guest memory".into());
        }
        written as u32 + 1
    }

    /// Runs one request; returns the status and the data bytes written.
    fn execute(
        &mut self,
        memory: &Memory,
        chain: &Chain,
        kind: u32,
        sector: u64,
        data_out: usize,
        data_in: usize,
    ) -> (u8, usize) {
        if kind != req::IN && kind != req::OUT && sector != 0 {
            // §5.2.6: the sector field is unused, and zero, for other types.
            self.violation(format!("request type {kind} carries sector {sector}"));
        }
        match kind {
            req::IN => match self.span(sector, data_in, data_out) {
                Some(span) => {
                    let ok = scatter(memory, &chain.writable, 0, &self.data[span]);
                    self.status_of(ok, "read into memory outside guest RAM", data_in)
                }
                None => (blk_status::IOERR, 0),
            },
            req::OUT => match self.span(sector, data_out, data_in) {
                Some(span) => {
                    let mut staged = vec![0u8; span.len()];
                    let ok = gather(memory, &chain.readable, HEADER_BYTES, &mut staged);
                    if ok {
                        self.data[span].copy_from_slice(&staged);
                    }
                    self.status_of(ok, "write from memory outside guest RAM", 0)
                }
                None => (blk_status::IOERR, 0),
            },
            req::FLUSH if self.features & feature::FLUSH != 0 => {
                if data_in != 0 || data_out != 0 {
                    self.violation("FLUSH carries data".into());
                }
                self.flushes += 1;
                (blk_status::OK, 0)
            }
            req::GET_ID => {
                if data_out != 0 {
                    self.violation("GET_ID carries readable data".into());
                }
                // §5.2.6: the id is at most 20 bytes; a shorter buffer gets a prefix.
                let n = data_in.min(ID_BYTES);
                let ok = scatter(memory, &chain.writable, 0, &self.id[..n]);
                self.status_of(ok, "GET_ID buffer outside guest RAM", n)
            }
            req::DISCARD if self.features & feature::DISCARD != 0 => {
                self.ranges(memory, chain, kind, data_out, data_in)
            }
            req::WRITE_ZEROES if self.features & feature::WRITE_ZEROES != 0 => {
                self.ranges(memory, chain, kind, data_out, data_in)
            }
            _ => (blk_status::UNSUPP, 0),
        }
    }

    fn status_of(&mut self, ok: bool, what: &str, written: usize) -> (u8, usize) {
        if ok {
            (blk_status::OK, written)
        } else {
            self.violation(what.into());
            (blk_status::IOERR, 0)
        }
    }

    /// The disk bytes a transfer of `len` bytes at `sector` covers, if the
    /// request is well formed (§5.2.6.1: whole sectors, inside the disk, data
    /// in one direction only).
    fn span(
        &mut self,
        sector: u64,
        len: usize,
        other_direction: usize,
    ) -> Option<std::ops::Range<usize>> {
        if other_direction != 0 {
            self.violation(format!(
                "data transfer also carries {other_direction} bytes the other way"
            ));
            return None;
        }
        if len == 0 || (len as u64) % SECTOR != 0 {
            self.violation(format!(
                "data length {len} is not a positive multiple of 512"
            ));
            return None;
        }
        let end = sector.checked_add(len as u64 / SECTOR)?;
        if end > self.capacity_sectors() {
            self.violation(format!("transfer {sector}..{end} is beyond the disk"));
            return None;
        }
        let start = (sector * SECTOR) as usize;
        Some(start..start + len)
    }

    /// DISCARD and WRITE_ZEROES: an array of 16-byte ranges in the readable data.
    fn ranges(
        &mut self,
        memory: &Memory,
        chain: &Chain,
        kind: u32,
        data_out: usize,
        data_in: usize,
    ) -> (u8, usize) {
        if data_in != 0 || data_out == 0 || data_out % RANGE_BYTES != 0 {
            self.violation(format!(
                "range command with {data_out} readable and {data_in} writable data bytes"
            ));
            return (blk_status::IOERR, 0);
        }
        let mut raw = vec![0u8; data_out];
        if !gather(memory, &chain.readable, HEADER_BYTES, &mut raw) {
            self.violation("ranges outside guest RAM".into());
            return (blk_status::IOERR, 0);
        }
        for entry in raw.chunks_exact(RANGE_BYTES) {
            let range = Range {
                sector: u64::from_le_bytes(entry[0..8].try_into().unwrap()),
                sectors: u32::from_le_bytes(entry[8..12].try_into().unwrap()),
                flags: u32::from_le_bytes(entry[12..16].try_into().unwrap()),
            };
            let end = range.sector.checked_add(u64::from(range.sectors));
            if !matches!(end, Some(end) if end <= self.capacity_sectors())
                || range.sectors > self.max_range_sectors
            {
                self.violation(format!("range {range:?} is beyond the disk or the limit"));
                return (blk_status::IOERR, 0);
            }
            let allowed_flags = if kind == req::WRITE_ZEROES {
                WRITE_ZEROES_UNMAP
            } else {
                0
            };
            if range.flags & !allowed_flags != 0 {
                // §5.2.6.2: reserved flag bits, and unmap on discard, are errors.
                return (blk_status::UNSUPP, 0);
            }
            if kind == req::WRITE_ZEROES {
                let start = (range.sector * SECTOR) as usize;
                let len = range.sectors as usize * SECTOR as usize;
                self.data[start..start + len].fill(0);
                self.write_zeroes.push(range);
            } else {
                self.discards.push(range);
            }
        }
        (blk_status::OK, 0)
    }
}
