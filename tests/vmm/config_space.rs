//! virtio-blk wire constants and the configuration layout, written from
//! VIRTIO 1.2 (§2.1, §5.2.3, §5.2.4, §5.2.6) without using the driver's
//! `spec.rs`: if either side has an offset or a bit wrong, the driver reads
//! a wrong `DeviceInfo` or the device sees a wrong request, and a test fails.

use vm_memory::{ByteValued, Le16, Le32, Le64};

/// Feature bits (§5.2.3 block bits, §6 reserved bits).
pub mod feature {
    /// `seg_max` is valid.
    pub const SEG_MAX: u64 = 1 << 2;
    /// `blk_size` is valid.
    pub const BLK_SIZE: u64 = 1 << 6;
    /// FLUSH command.
    pub const FLUSH: u64 = 1 << 9;
    /// `num_queues` is valid.
    pub const MQ: u64 = 1 << 12;
    /// DISCARD command.
    pub const DISCARD: u64 = 1 << 13;
    /// WRITE_ZEROES command.
    pub const WRITE_ZEROES: u64 = 1 << 14;
    /// Indirect descriptor tables (§2.7.5.3).
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// `used_event` / `avail_event` (§2.7.7, §2.7.10).
    pub const EVENT_IDX: u64 = 1 << 29;
    /// VIRTIO 1.x device.
    pub const VERSION_1: u64 = 1 << 32;
    /// Packed ring layout: `virtio-queue`'s `Queue` is split only, so never offered.
    pub const RING_PACKED: u64 = 1 << 34;
}

/// Device status bits (§2.1).
pub mod status {
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The guest gave up.
    pub const FAILED: u8 = 128;
}

/// Request types (§5.2.6).
pub mod req {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush.
    pub const FLUSH: u32 = 4;
    /// Device id.
    pub const GET_ID: u32 = 8;
    /// Discard ranges.
    pub const DISCARD: u32 = 11;
    /// Write zeroes over ranges.
    pub const WRITE_ZEROES: u32 = 13;
}

/// Status byte values (§5.2.6).
pub mod blk_status {
    /// Success.
    pub const OK: u8 = 0;
    /// Error.
    pub const IOERR: u8 = 1;
    /// Unsupported request.
    pub const UNSUPP: u8 = 2;
}

/// `avail.flags` bit: the driver wants no used-buffer notifications (§2.7.6).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Sector size of every sector number on the wire.
pub const SECTOR: u64 = 512;
/// `type, reserved, sector`: le32 + le32 + le64.
pub const HEADER_BYTES: usize = 16;
/// `sector, num_sectors, flags`: le64 + le32 + le32.
pub const RANGE_BYTES: usize = 16;
/// GET_ID answers with 20 bytes, NUL-padded.
pub const ID_BYTES: usize = 20;
/// Write-zeroes range flag asking to unmap.
pub const WRITE_ZEROES_UNMAP: u32 = 1;

/// `struct virtio_blk_config` (§5.2.4), field for field. With `repr(C)` the
/// compiler lays it out, so the offsets follow from the spec's field list and
/// its natural alignment rather than from numbers typed in by hand.
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub struct BlkConfigSpace {
    pub capacity: Le64,
    pub size_max: Le32,
    pub seg_max: Le32,
    pub geometry_cylinders: Le16,
    pub geometry_heads: u8,
    pub geometry_sectors: u8,
    pub blk_size: Le32,
    pub physical_block_exp: u8,
    pub alignment_offset: u8,
    pub min_io_size: Le16,
    pub opt_io_size: Le32,
    pub writeback: u8,
    pub unused0: u8,
    pub num_queues: Le16,
    pub max_discard_sectors: Le32,
    pub max_discard_seg: Le32,
    pub discard_sector_alignment: Le32,
    pub max_write_zeroes_sectors: Le32,
    pub max_write_zeroes_seg: Le32,
    pub write_zeroes_may_unmap: u8,
    pub unused1: [u8; 3],
    pub max_secure_erase_sectors: Le32,
    pub max_secure_erase_seg: Le32,
    pub secure_erase_sector_alignment: Le32,
}

// The spec's structure has no padding and ends at byte 72; a padded layout
// would shift every later field and this would not compile.
const _: () = assert!(std::mem::size_of::<BlkConfigSpace>() == 72);
const _: () = assert!(std::mem::offset_of!(BlkConfigSpace, num_queues) == 34);
const _: () = assert!(std::mem::offset_of!(BlkConfigSpace, max_secure_erase_sectors) == 60);

// SAFETY: `repr(C)` struct of integers, little-endian integer wrappers and a
// byte array; the assertions above show it has no padding, so every byte is
// initialised and any byte pattern is a valid value. It holds no pointers, so
// it is Send and Sync.
unsafe impl ByteValued for BlkConfigSpace {}
