//! One virtio-blk request: its descriptor chain read, served against the
//! disk, its status written (VIRTIO 1.2 §5.2.6).
//!
//! The chain is walked once, without collecting it: the first descriptor is
//! the 16-byte header, every descriptor between it and the last is data, the
//! last one ends with the status byte. Everything the driver wrote is
//! checked before use (directions, lengths, the sector range); a chain too
//! broken to carry a status (no header, no writable last descriptor) is
//! returned with used length 0 and nothing written.

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, VolatileMemory, VolatileSlice};

use crate::config::SECTOR;
use crate::disk::Disk;
use crate::memory::Memory;

/// Bytes of the request header: type (le32), reserved (le32), sector (le64).
const HEADER_BYTES: u32 = 16;

/// The device ID GET_ID returns (up to 20 bytes, no NUL when it fills them).
pub const DEVICE_ID: &[u8] = b"vblk-fastdev";

/// What a request's header asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
    GetId,
    Unsupported,
}

impl Kind {
    fn from_type(request_type: u32) -> Kind {
        match request_type {
            VIRTIO_BLK_T_IN => Kind::Read,
            VIRTIO_BLK_T_OUT => Kind::Write,
            VIRTIO_BLK_T_FLUSH => Kind::Flush,
            VIRTIO_BLK_T_GET_ID => Kind::GetId,
            _ => Kind::Unsupported,
        }
    }
}

/// Serves the request in `chain` (whose memory is `mem`); returns the used
/// length: the bytes the device wrote into the driver's writable buffers,
/// status byte included.
pub fn serve(mem: &Memory, chain: DescriptorChain<&Memory>, disk: &Disk) -> u32 {
    serve_descriptors(mem, chain, disk)
}

/// Serves the split-ring chain whose head is `head` in the descriptor table
/// `table` (the driver's table as one validated slice of `size` entries).
#[inline(never)]
pub fn serve_split(
    mem: &Memory,
    table: VolatileSlice<'_>,
    size: u16,
    head: u16,
    disk: &Disk,
) -> u32 {
    serve_descriptors(mem, SplitChain::new(mem, table, size, head), disk)
}

/// The descriptors of one split-ring chain, read from validated slices of
/// the driver's tables (VIRTIO 1.2 §2.7.5, §2.7.5.3), as virtio-queue's
/// `DescriptorChain` reads them, without its per-descriptor trip through
/// vm-memory's generic access path.
///
/// Bounded: it yields at most as many descriptors as the table it reads
/// holds (the queue size, then an indirect table's entry count), follows one
/// indirect table at most (no nesting, §2.7.5.3.1), and stops at an index
/// outside its table. A loop in the `next` pointers therefore ends once the
/// budget is spent, like virtio-queue's `ttl`.
pub struct SplitChain<'a> {
    mem: &'a Memory,
    table: VolatileSlice<'a>,
    /// Entries in `table`.
    entries: u32,
    /// Index of the next descriptor to read; `None` once the chain ended.
    next: Option<u32>,
    /// Descriptors it may still yield.
    budget: u32,
    indirect: bool,
}

impl<'a> SplitChain<'a> {
    /// The chain from `head` in `table` (`size` descriptors of 16 bytes).
    pub fn new(mem: &'a Memory, table: VolatileSlice<'a>, size: u16, head: u16) -> SplitChain<'a> {
        // A table shorter than `size` entries only shrinks the walk.
        let entries = u32::from(size).min((table.len() / 16) as u32);
        SplitChain {
            mem,
            table,
            entries,
            next: Some(u32::from(head)),
            budget: entries,
            indirect: false,
        }
    }

    /// Descriptor `index` of the current table, if inside it.
    fn read(&self, index: u32) -> Option<Descriptor> {
        if index >= self.entries {
            return None;
        }
        // `index < entries <= table.len() / 16`: the 16 bytes are inside the
        // slice; `get_ref` checks that again and `load` is one volatile read
        // (unaligned-safe: vm-memory reads through a packed wrapper).
        self.table
            .get_ref::<Descriptor>(index as usize * 16)
            .ok()
            .map(|d| d.load())
    }
}

impl Iterator for SplitChain<'_> {
    type Item = Descriptor;

    fn next(&mut self) -> Option<Descriptor> {
        let index = self.next.take()?;
        if self.budget == 0 {
            return None;
        }
        let mut descriptor = self.read(index)?;
        if descriptor.refers_to_indirect_table() {
            // One indirect table, whole entries, at most 2^16 of them
            // (virtio-queue's limit), inside one region of guest memory.
            let len = descriptor.len();
            if self.indirect || len == 0 || len % 16 != 0 || len / 16 > u32::from(u16::MAX) + 1 {
                return None;
            }
            self.table = self.mem.slice(descriptor.addr(), len as usize)?;
            self.entries = len / 16;
            self.budget = self.entries;
            self.indirect = true;
            descriptor = self.read(0)?;
            if descriptor.refers_to_indirect_table() {
                return None;
            }
        }
        self.budget -= 1;
        if descriptor.has_next() {
            self.next = Some(u32::from(descriptor.next()));
        }
        Some(descriptor)
    }
}

/// Serves the request whose descriptors `chain` yields.
fn serve_descriptors(
    mem: &Memory,
    mut chain: impl Iterator<Item = Descriptor>,
    disk: &Disk,
) -> u32 {
    let Some(header) = chain.next() else {
        return 0;
    };
    if header.is_write_only() || header.len() < HEADER_BYTES {
        return 0;
    }
    let Some(bytes) = mem
        .slice(header.addr(), HEADER_BYTES as usize)
        .and_then(|slice| {
            slice
                .get_ref::<[u8; 16]>(0)
                .ok()
                .map(|header| header.load())
        })
    else {
        return 0;
    };
    let kind = Kind::from_type(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
    let sector = u64::from_le_bytes([
        bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
    ]);
    let mut request = Request {
        kind,
        offset: sector.checked_mul(SECTOR),
        written: 0,
        ok: kind != Kind::Unsupported,
    };
    // The last descriptor is the status one: hold each back until the next shows up.
    let mut last: Option<Descriptor> = None;
    for descriptor in chain {
        if let Some(data) = last.replace(descriptor) {
            request.data(mem, disk, data);
        }
    }
    let Some(status) = last else {
        return 0;
    };
    if !status.is_write_only() || status.len() == 0 {
        return 0;
    }
    // A status descriptor longer than one byte carries data before it.
    if status.len() > 1 {
        let data = Descriptor::new(status.addr().0, status.len() - 1, status.flags(), 0);
        request.data(mem, disk, data);
    }
    let code = match (kind, request.ok) {
        (Kind::Unsupported, _) => VIRTIO_BLK_S_UNSUPP,
        (_, true) => VIRTIO_BLK_S_OK,
        (_, false) => VIRTIO_BLK_S_IOERR,
    } as u8;
    let Some(status_addr) = status.addr().checked_add(u64::from(status.len() - 1)) else {
        return 0;
    };
    let Some(status_byte) = mem.slice(status_addr, 1) else {
        return 0;
    };
    let Ok(status_byte) = status_byte.get_ref::<u8>(0) else {
        return 0;
    };
    status_byte.store(code);
    request.written.saturating_add(1)
}

/// A request being served.
struct Request {
    kind: Kind,
    /// Where the next data byte goes on the disk; `None` once past u64.
    offset: Option<u64>,
    /// Bytes written into the driver's buffers so far.
    written: u32,
    /// No error so far.
    ok: bool,
}

impl Request {
    /// Serves one data descriptor.
    fn data(&mut self, mem: &Memory, disk: &Disk, data: Descriptor) {
        if !self.ok {
            return;
        }
        let len = data.len();
        let device_writes = matches!(self.kind, Kind::Read | Kind::GetId);
        if data.is_write_only() != device_writes {
            self.ok = false;
            return;
        }
        let Some(buffer) = mem.slice(data.addr(), len as usize) else {
            self.ok = false;
            return;
        };
        let Some(offset) = self.offset else {
            self.ok = false;
            return;
        };
        self.ok = match self.kind {
            Kind::Read => disk.read_into(offset, buffer).is_ok(),
            Kind::Write => disk.write_from(offset, buffer).is_ok(),
            Kind::GetId => {
                let n = DEVICE_ID.len().min(VIRTIO_BLK_ID_BYTES as usize);
                let id = &DEVICE_ID[..n];
                let copied = buffer.len().min(id.len());
                buffer.copy_from(&id[..copied]);
                self.written = self.written.saturating_add(copied as u32);
                // GET_ID fills one buffer; nothing follows it on the disk.
                return;
            }
            // FLUSH carries no data (§5.2.6.1); UNSUPP never gets here.
            Kind::Flush | Kind::Unsupported => false,
        };
        if self.kind == Kind::Read && self.ok {
            self.written = self.written.saturating_add(len);
        }
        self.offset = offset.checked_add(u64::from(len));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::DiskKind;
    use std::sync::Arc;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes;
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    const HEADER: u64 = 0x10_0000;
    const DATA: u64 = 0x20_0000;
    const STATUS: u64 = 0x30_0000;

    fn memory() -> Memory {
        Memory::new(Arc::new(
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap(),
        ))
    }

    fn descriptor(addr: u64, len: u32, flags: u32) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags as u16, 0))
    }

    /// The driver side: a header at HEADER asking for `request_type` at
    /// `sector`, then `descriptors` (data, status); the device serves it.
    fn run(
        mem: &Memory,
        disk: &Disk,
        request_type: u32,
        sector: u64,
        descriptors: &[RawDescriptor],
    ) -> u32 {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&request_type.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_obj(header, GuestAddress(HEADER)).unwrap();
        mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        let mut all = vec![descriptor(HEADER, 16, 0)];
        all.extend_from_slice(descriptors);
        let queue = MockSplitQueue::new(mem, 16);
        let chain = queue.build_desc_chain(&all).unwrap();
        serve(mem, chain, disk)
    }

    /// A request with one data buffer of `len` bytes (device-writable
    /// unless it is a write) and a one-byte status.
    fn simple(mem: &Memory, disk: &Disk, request_type: u32, sector: u64, len: u32) -> u32 {
        let data_flags = if request_type == VIRTIO_BLK_T_OUT {
            0
        } else {
            VRING_DESC_F_WRITE
        };
        let mut descriptors = Vec::new();
        if len > 0 {
            descriptors.push(descriptor(DATA, len, data_flags));
        }
        descriptors.push(descriptor(STATUS, 1, VRING_DESC_F_WRITE));
        run(mem, disk, request_type, sector, &descriptors)
    }

    fn status(mem: &Memory) -> u32 {
        u32::from(mem.read_obj::<u8>(GuestAddress(STATUS)).unwrap())
    }

    #[test]
    fn a_write_then_a_read_of_the_same_sectors_returns_the_data() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Ram, 1 << 20).unwrap());
        mem.write_slice(&[0x5a; 4096], GuestAddress(DATA)).unwrap();
        assert_eq!(simple(&mem, &disk, VIRTIO_BLK_T_OUT, 16, 4096), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
        mem.write_slice(&[0; 4096], GuestAddress(DATA)).unwrap();
        assert_eq!(simple(&mem, &disk, VIRTIO_BLK_T_IN, 16, 4096), 4097);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
        let mut back = [0u8; 4096];
        mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
        assert_eq!(back, [0x5a; 4096]);
    }

    #[test]
    fn a_read_past_the_end_fails_with_ioerr() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Null, 1 << 20).unwrap());
        // 1 MiB = 2048 sectors: sectors 2045..2053 leave the disk.
        assert_eq!(simple(&mem, &disk, VIRTIO_BLK_T_IN, 2045, 4096), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
        assert_eq!(simple(&mem, &disk, VIRTIO_BLK_T_IN, u64::MAX / 2, 4096), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
        assert_eq!(simple(&mem, &disk, VIRTIO_BLK_T_IN, 2040, 4096), 4097);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    }

    #[test]
    fn flush_succeeds_get_id_names_the_device_and_unknown_types_are_unsupp() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Null, 1 << 20).unwrap());
        assert_eq!(simple(&mem, &disk, VIRTIO_BLK_T_FLUSH, 0, 0), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
        assert_eq!(
            simple(&mem, &disk, VIRTIO_BLK_T_GET_ID, 0, 20),
            DEVICE_ID.len() as u32 + 1
        );
        let mut id = [0u8; 20];
        mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert!(id.starts_with(DEVICE_ID));
        assert_eq!(simple(&mem, &disk, 99, 0, 0), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_UNSUPP);
    }

    #[test]
    fn data_in_the_wrong_direction_fails_with_ioerr() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Null, 1 << 20).unwrap());
        // A read whose buffer the device may not write.
        let descriptors = [
            descriptor(DATA, 512, 0),
            descriptor(STATUS, 1, VRING_DESC_F_WRITE),
        ];
        assert_eq!(run(&mem, &disk, VIRTIO_BLK_T_IN, 0, &descriptors), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
        // A flush carries no data.
        assert_eq!(simple(&mem, &disk, VIRTIO_BLK_T_FLUSH, 0, 512), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn a_chain_without_a_writable_status_is_returned_with_nothing_written() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Null, 1 << 20).unwrap());
        assert_eq!(
            run(&mem, &disk, VIRTIO_BLK_T_IN, 0, &[descriptor(STATUS, 1, 0)]),
            0
        );
        assert_eq!(status(&mem), 0xee);
        assert_eq!(run(&mem, &disk, VIRTIO_BLK_T_IN, 0, &[]), 0);
    }

    #[test]
    fn a_long_status_descriptor_carries_data_before_the_status_byte() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Ram, 1 << 20).unwrap());
        mem.write_slice(&[3; 512], GuestAddress(DATA)).unwrap();
        assert_eq!(simple(&mem, &disk, VIRTIO_BLK_T_OUT, 0, 512), 1);
        // 512 data bytes and the status in one 513-byte buffer.
        let descriptors = [descriptor(STATUS - 512, 513, VRING_DESC_F_WRITE)];
        assert_eq!(run(&mem, &disk, VIRTIO_BLK_T_IN, 0, &descriptors), 513);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
        let mut back = [0u8; 512];
        mem.read_slice(&mut back, GuestAddress(STATUS - 512))
            .unwrap();
        assert_eq!(back, [3; 512]);
    }

    const TABLE: u64 = 0x38_0000;
    const INDIRECT: u64 = 0x39_0000;

    /// Writes `descriptors` as a table at `at`.
    fn table(mem: &Memory, at: u64, descriptors: &[Descriptor]) {
        for (i, d) in descriptors.iter().enumerate() {
            mem.write_obj(*d, GuestAddress(at + 16 * i as u64)).unwrap();
        }
    }

    fn desc(addr: u64, len: u32, flags: u32, next: u16) -> Descriptor {
        Descriptor::new(addr, len, flags as u16, next)
    }

    /// A read header at HEADER for `sector`.
    fn read_header(mem: &Memory, sector: u64) {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&VIRTIO_BLK_T_IN.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        mem.write_obj(header, GuestAddress(HEADER)).unwrap();
        mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
    }

    /// Serves the chain at `head` of the `size`-entry table at TABLE.
    fn split(mem: &Memory, disk: &Disk, size: u16, head: u16) -> u32 {
        let slice = mem
            .slice(GuestAddress(TABLE), 16 * usize::from(size))
            .unwrap();
        serve_split(mem, slice, size, head, disk)
    }

    fn walk(mem: &Memory, size: u16, head: u16) -> Vec<Descriptor> {
        let slice = mem
            .slice(GuestAddress(TABLE), 16 * usize::from(size))
            .unwrap();
        SplitChain::new(mem, slice, size, head).collect()
    }

    const NEXT: u32 = VRING_DESC_F_NEXT;
    const W: u32 = VRING_DESC_F_WRITE;
    const IND: u32 = VRING_DESC_F_INDIRECT;

    #[test]
    fn a_split_chain_is_served_like_virtio_queues_chain() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Ram, 1 << 20).unwrap());
        mem.write_slice(&[9; 4096], GuestAddress(DATA)).unwrap();
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&VIRTIO_BLK_T_OUT.to_le_bytes());
        mem.write_obj(header, GuestAddress(HEADER)).unwrap();
        // Out of order in the table: 2 -> 0 -> 3.
        table(
            &mem,
            TABLE,
            &[
                desc(DATA, 4096, NEXT, 3),
                desc(0, 0, 0, 0),
                desc(HEADER, 16, NEXT, 0),
                desc(STATUS, 1, W, 0),
            ],
        );
        assert_eq!(split(&mem, &disk, 4, 2), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
        mem.write_slice(&[0; 4096], GuestAddress(DATA)).unwrap();
        read_header(&mem, 0);
        table(&mem, TABLE, &[desc(DATA, 4096, NEXT | W, 3)]);
        assert_eq!(split(&mem, &disk, 4, 2), 4097);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
        let mut back = [0u8; 4096];
        mem.read_slice(&mut back, GuestAddress(DATA)).unwrap();
        assert_eq!(back, [9; 4096]);
    }

    #[test]
    fn a_loop_in_the_next_pointers_ends_within_the_queue_size() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Null, 1 << 20).unwrap());
        read_header(&mem, 0);
        table(
            &mem,
            TABLE,
            &[
                desc(HEADER, 16, NEXT, 1),
                desc(DATA, 512, NEXT | W, 2),
                desc(DATA, 512, NEXT | W, 1),
                desc(0, 0, 0, 0),
            ],
        );
        assert_eq!(walk(&mem, 4, 0).len(), 4);
        // A self loop on the head too.
        table(&mem, TABLE, &[desc(HEADER, 16, NEXT, 0)]);
        assert_eq!(walk(&mem, 4, 0).len(), 4);
        // Served as a chain that ends where the budget does: the last
        // descriptor read is not a writable status, nothing is written.
        assert_eq!(split(&mem, &disk, 4, 0), 0);
        assert_eq!(status(&mem), 0xee);
    }

    #[test]
    fn an_index_outside_the_table_ends_the_chain() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Null, 1 << 20).unwrap());
        read_header(&mem, 0);
        table(
            &mem,
            TABLE,
            &[desc(HEADER, 16, NEXT, 1), desc(STATUS, 1, W | NEXT, 4)],
        );
        assert_eq!(walk(&mem, 4, 0).len(), 2);
        assert!(walk(&mem, 4, 4).is_empty());
        assert!(walk(&mem, 4, u16::MAX).is_empty());
        // The table holds 4 entries even if the slice is longer.
        let slice = mem.slice(GuestAddress(TABLE), 16 * 8).unwrap();
        assert_eq!(SplitChain::new(&mem, slice, 4, 4).count(), 0);
        assert_eq!(split(&mem, &disk, 4, 0), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
    }

    #[test]
    fn buffers_outside_guest_memory_are_refused_without_a_panic() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Null, 1 << 20).unwrap());
        read_header(&mem, 0);
        // Data past the end of memory: IOERR.
        table(
            &mem,
            TABLE,
            &[
                desc(HEADER, 16, NEXT, 1),
                desc(0x3f_ff00, 4096, NEXT | W, 2),
                desc(STATUS, 1, W, 0),
            ],
        );
        assert_eq!(split(&mem, &disk, 4, 0), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
        // A header outside memory: nothing written.
        mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        table(&mem, TABLE, &[desc(u64::MAX - 4, 16, NEXT, 2)]);
        assert_eq!(split(&mem, &disk, 4, 0), 0);
        assert_eq!(status(&mem), 0xee);
        // A status byte whose address overflows, or is outside memory.
        for addr in [u64::MAX, 0x40_0000] {
            table(
                &mem,
                TABLE,
                &[desc(HEADER, 16, NEXT, 1), desc(addr, 2, W, 0)],
            );
            assert_eq!(split(&mem, &disk, 4, 0), 0);
        }
        // A read whose data the device may not write, through the split walk.
        table(
            &mem,
            TABLE,
            &[
                desc(HEADER, 16, NEXT, 1),
                desc(DATA, 512, NEXT, 2),
                desc(STATUS, 1, W, 0),
            ],
        );
        assert_eq!(split(&mem, &disk, 4, 0), 1);
        assert_eq!(status(&mem), VIRTIO_BLK_S_IOERR);
        // A device-writable header is no request.
        table(&mem, TABLE, &[desc(HEADER, 16, NEXT | W, 2)]);
        assert_eq!(split(&mem, &disk, 4, 0), 0);
    }

    #[test]
    fn an_indirect_table_is_followed_once_and_checked() {
        let (mem, disk) = (memory(), Disk::new(DiskKind::Null, 1 << 20).unwrap());
        read_header(&mem, 0);
        table(
            &mem,
            INDIRECT,
            &[
                desc(HEADER, 16, NEXT, 1),
                desc(DATA, 4096, NEXT | W, 2),
                desc(STATUS, 1, W, 0),
            ],
        );
        table(&mem, TABLE, &[desc(INDIRECT, 48, IND, 0)]);
        assert_eq!(split(&mem, &disk, 4, 0), 4097);
        assert_eq!(status(&mem), VIRTIO_BLK_S_OK);
        // A loop inside the indirect table ends within its entries.
        table(
            &mem,
            INDIRECT,
            &[desc(HEADER, 16, NEXT, 1), desc(DATA, 16, NEXT | W, 0)],
        );
        table(&mem, TABLE, &[desc(INDIRECT, 32, IND, 0)]);
        assert_eq!(walk(&mem, 4, 0).len(), 2);
        // Nested indirect, a partial entry, an empty or out-of-memory table.
        table(&mem, INDIRECT, &[desc(INDIRECT, 16, IND, 0)]);
        table(&mem, TABLE, &[desc(INDIRECT, 16, IND, 0)]);
        assert!(walk(&mem, 4, 0).is_empty());
        for (addr, len) in [
            (INDIRECT, 40),
            (INDIRECT, 0),
            (0x3f_fff0, 32),
            (u64::MAX - 8, 16),
        ] {
            table(&mem, TABLE, &[desc(addr, len, IND, 0)]);
            assert!(walk(&mem, 4, 0).is_empty(), "{addr:#x} {len}");
            assert_eq!(split(&mem, &disk, 4, 0), 0);
        }
    }
}
