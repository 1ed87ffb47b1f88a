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
use vm_memory::Bytes;

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
pub fn serve(mem: &Memory, mut chain: DescriptorChain<&Memory>, disk: &Disk) -> u32 {
    let Some(header) = chain.next() else {
        return 0;
    };
    if header.is_write_only() || header.len() < HEADER_BYTES {
        return 0;
    }
    let Ok(bytes) = mem.read_obj::<[u8; 16]>(header.addr()) else {
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
    let status_addr = status.addr().0 + u64::from(status.len() - 1);
    if mem
        .write_obj(code, vm_memory::GuestAddress(status_addr))
        .is_err()
    {
        return 0;
    }
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
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
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
}
