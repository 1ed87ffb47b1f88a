//! Wire layouts and constants from the VIRTIO 1.2 specification.
//!
//! Everything here is shared with the device: the ring structures are made of
//! atomics so that both sides can hold references to the same memory while the
//! other side writes it. All multi-byte fields are little-endian on the wire
//! (VIRTIO 1.2 §2.4); accessors in the ring modules convert.

use crate::sync::atomic::{AtomicU16, AtomicU32, AtomicU64};

/// Virtio device type of a block device (VIRTIO 1.2 §5).
pub const DEVICE_TYPE_BLOCK: u32 = 2;

/// Bytes per sector: every sector number on the wire counts 512-byte units (§5.2.6).
pub const SECTOR_SIZE: u64 = 512;

/// Largest split queue size (§2.7): a power of two up to 32768.
pub const MAX_SPLIT_QUEUE_SIZE: u16 = 32768;

/// Largest packed queue size (§2.8): 15 bits of event offset.
pub const MAX_PACKED_QUEUE_SIZE: u16 = 32768;

bitflags::bitflags! {
    /// Feature bits this driver knows (VIRTIO 1.2 §6 reserved bits, §5.2.3 block bits).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Features: u64 {
        /// Maximum size of any single segment is in `size_max`.
        const BLK_SIZE_MAX = 1 << 1;
        /// Maximum number of segments in a request is in `seg_max`.
        const BLK_SEG_MAX = 1 << 2;
        /// Legacy disk geometry in config.
        const BLK_GEOMETRY = 1 << 4;
        /// Device is read-only.
        const BLK_RO = 1 << 5;
        /// Block size of disk is in `blk_size`.
        const BLK_BLK_SIZE = 1 << 6;
        /// Cache flush command support.
        const BLK_FLUSH = 1 << 9;
        /// Device exports information on optimal I/O alignment.
        const BLK_TOPOLOGY = 1 << 10;
        /// Device can toggle its cache between writeback and writethrough.
        const BLK_CONFIG_WCE = 1 << 11;
        /// Device supports more than one request queue.
        const BLK_MQ = 1 << 12;
        /// Device can support the discard command.
        const BLK_DISCARD = 1 << 13;
        /// Device can support the write zeroes command.
        const BLK_WRITE_ZEROES = 1 << 14;
        /// Device supports providing storage lifetime information.
        const BLK_LIFETIME = 1 << 15;
        /// Device supports the secure erase command.
        const BLK_SECURE_ERASE = 1 << 16;
        /// Descriptors may point to indirect tables (§2.7.5.3, §2.8.7).
        const INDIRECT_DESC = 1 << 28;
        /// `used_event`/`avail_event` (split) or descriptor event suppression (packed).
        const EVENT_IDX = 1 << 29;
        /// Compliance with VIRTIO 1.x; required.
        const VERSION_1 = 1 << 32;
        /// Device sits behind an IOMMU; the Hal hands out device addresses.
        const ACCESS_PLATFORM = 1 << 33;
        /// Packed virtqueue layout (§2.8).
        const RING_PACKED = 1 << 34;
        /// Buffers are used in the order they were made available.
        const IN_ORDER = 1 << 35;
        /// Memory accesses are ordered the way the platform orders DMA: the
        /// device is hardware, and the driver uses the platform's barriers
        /// (§6.1; a driver SHOULD accept it when offered).
        const ORDER_PLATFORM = 1 << 36;
        /// Per-queue reset (§2.6.1).
        const RING_RESET = 1 << 40;
    }
}

impl Features {
    /// The features the driver is able to use, all of them accepted when offered
    /// unless the [`crate::Config`] switches them off.
    pub const SUPPORTED: Features = Features::VERSION_1
        .union(Features::ACCESS_PLATFORM)
        .union(Features::RING_PACKED)
        .union(Features::EVENT_IDX)
        .union(Features::INDIRECT_DESC)
        .union(Features::BLK_MQ)
        .union(Features::BLK_SIZE_MAX)
        .union(Features::BLK_SEG_MAX)
        .union(Features::BLK_BLK_SIZE)
        .union(Features::BLK_FLUSH)
        .union(Features::BLK_RO)
        .union(Features::BLK_DISCARD)
        .union(Features::BLK_WRITE_ZEROES)
        .union(Features::BLK_SECURE_ERASE)
        .union(Features::BLK_TOPOLOGY)
        .union(Features::BLK_CONFIG_WCE)
        .union(Features::ORDER_PLATFORM)
        .union(Features::RING_RESET);
}

bitflags::bitflags! {
    /// Device status field (VIRTIO 1.2 §2.1).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DeviceStatus: u8 {
        /// The guest has noticed the device.
        const ACKNOWLEDGE = 1;
        /// The guest knows how to drive the device.
        const DRIVER = 2;
        /// The driver is set up and ready to drive the device.
        const DRIVER_OK = 4;
        /// The driver has acknowledged the features it understands.
        const FEATURES_OK = 8;
        /// The device hit an error it cannot recover from without a reset.
        const DEVICE_NEEDS_RESET = 64;
        /// The guest has given up on the device.
        const FAILED = 128;
    }
}

bitflags::bitflags! {
    /// Split descriptor flags (§2.7.5).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SplitDescFlags: u16 {
        /// The buffer continues in the `next` field.
        const NEXT = 1;
        /// Device write-only (otherwise device read-only).
        const WRITE = 2;
        /// The buffer holds a table of descriptors.
        const INDIRECT = 4;
    }
}

bitflags::bitflags! {
    /// Packed descriptor flags (§2.8.1, §2.8.13).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PackedDescFlags: u16 {
        /// The buffer continues in the next descriptor.
        const NEXT = 1;
        /// Device write-only (otherwise device read-only).
        const WRITE = 2;
        /// The buffer holds a table of descriptors.
        const INDIRECT = 4;
        /// Available flag: equal to the driver's wrap counter when made available.
        const AVAIL = 1 << 7;
        /// Used flag: equal to the device's wrap counter when used.
        const USED = 1 << 15;
    }
}

/// `avail.flags`: the driver does not want used-buffer notifications (§2.7.6).
pub const VIRTQ_AVAIL_F_NO_INTERRUPT: u16 = 1;
/// `used.flags`: the device does not want available-buffer notifications (§2.7.8).
pub const VIRTQ_USED_F_NO_NOTIFY: u16 = 1;

/// Packed event suppression `flags` values (§2.8.10, §2.8.14).
pub mod packed_event {
    /// Notifications enabled.
    pub const ENABLE: u16 = 0;
    /// Notifications disabled.
    pub const DISABLE: u16 = 1;
    /// Notify when the descriptor at `off_wrap` is reached (needs EVENT_IDX).
    pub const DESC: u16 = 2;
    /// Bit of `off_wrap` that carries the wrap counter.
    pub const WRAP_BIT: u16 = 1 << 15;

    /// The event suppression structure as one 32-bit word in CPU order
    /// (`off_wrap` in bits 0..16, `flags` in bits 16..32; store it with
    /// `to_le`), for a side that writes or reads both fields at once.
    pub const fn word(off_wrap: u16, flags: u16) -> u32 {
        off_wrap as u32 | (flags as u32) << 16
    }
}

/// One split-ring descriptor (§2.7.5). 16 bytes, 16-byte aligned in the table.
#[repr(C)]
#[derive(Debug, Default)]
pub struct SplitDesc {
    /// Buffer address (device address space).
    pub addr: AtomicU64,
    /// Buffer length.
    pub len: AtomicU32,
    /// [`SplitDescFlags`].
    pub flags: AtomicU16,
    /// Next descriptor when `NEXT` is set.
    pub next: AtomicU16,
}

/// One used-ring element (§2.7.8).
#[repr(C)]
#[derive(Debug, Default)]
pub struct UsedElem {
    /// Head index of the used chain.
    pub id: AtomicU32,
    /// Bytes written by the device into the chain's writable buffers.
    pub len: AtomicU32,
}

/// One packed-ring descriptor (§2.8.13). 16 bytes.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PackedDesc {
    /// Buffer address (device address space).
    pub addr: AtomicU64,
    /// Buffer length; for a used descriptor, bytes written.
    pub len: AtomicU32,
    /// Buffer id.
    pub id: AtomicU16,
    /// [`PackedDescFlags`].
    pub flags: AtomicU16,
}

/// Packed ring event suppression structure (§2.8.14), one written by each side.
#[repr(C)]
#[derive(Debug, Default)]
pub struct EventSuppress {
    /// Descriptor ring offset (bits 0..15) and wrap counter (bit 15).
    pub off_wrap: AtomicU16,
    /// One of [`packed_event`]'s values.
    pub flags: AtomicU16,
}

/// Where the three parts of a split ring sit inside one DMA allocation.
///
/// The available and used rings start on separate 64-byte lines: the driver
/// writes one and the device the other, so sharing a line would bounce it
/// between cores on every request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitLayout {
    /// Queue size (a power of two).
    pub size: u16,
    /// Offset of the descriptor table.
    pub desc: usize,
    /// Offset of the available ring (`flags`, `idx`, `ring[size]`, `used_event`).
    pub avail: usize,
    /// Offset of the used ring (`flags`, `idx`, `ring[size]`, `avail_event`).
    pub used: usize,
    /// Total bytes.
    pub total: usize,
}

const fn align_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

impl SplitLayout {
    /// Layout of a split ring with `size` entries (§2.7.2 alignment rules, padded to lines).
    pub const fn new(size: u16) -> SplitLayout {
        let n = size as usize;
        let desc = 0;
        let avail = align_up(desc + 16 * n, 64);
        let used = align_up(avail + 6 + 2 * n, 64);
        let total = align_up(used + 6 + 8 * n, 64);
        SplitLayout {
            size,
            desc,
            avail,
            used,
            total,
        }
    }
}

/// Where the parts of a packed ring sit inside one DMA allocation (§2.8.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedLayout {
    /// Queue size (1..=32768).
    pub size: u16,
    /// Offset of the descriptor ring.
    pub desc: usize,
    /// Offset of the driver event suppression structure (written by the driver).
    pub driver_event: usize,
    /// Offset of the device event suppression structure (written by the device).
    pub device_event: usize,
    /// Total bytes.
    pub total: usize,
}

impl PackedLayout {
    /// Layout of a packed ring with `size` descriptors; each side's event
    /// structure gets its own 64-byte line.
    pub const fn new(size: u16) -> PackedLayout {
        let n = size as usize;
        let driver_event = align_up(16 * n, 64);
        let device_event = driver_event + 64;
        PackedLayout {
            size,
            desc: 0,
            driver_event,
            device_event,
            total: device_event + 64,
        }
    }
}

/// virtio-blk request types (§5.2.6).
pub mod req_type {
    /// Read.
    pub const IN: u32 = 0;
    /// Write.
    pub const OUT: u32 = 1;
    /// Flush the volatile write cache.
    pub const FLUSH: u32 = 4;
    /// Device id string (20 bytes).
    pub const GET_ID: u32 = 8;
    /// Lifetime information.
    pub const GET_LIFETIME: u32 = 10;
    /// Discard ranges.
    pub const DISCARD: u32 = 11;
    /// Write zeroes over ranges.
    pub const WRITE_ZEROES: u32 = 13;
    /// Securely erase ranges.
    pub const SECURE_ERASE: u32 = 14;
}

/// virtio-blk status byte values (§5.2.6).
pub mod blk_status {
    /// Success.
    pub const OK: u8 = 0;
    /// Device or driver error.
    pub const IOERR: u8 = 1;
    /// Request unsupported by the device.
    pub const UNSUPP: u8 = 2;
}

/// Size of a virtio-blk request header: `type: le32, reserved: le32, sector: le64`.
pub const BLK_REQ_HEADER_SIZE: usize = 16;
/// Size of the device id string returned by GET_ID.
pub const BLK_ID_BYTES: usize = 20;
/// Size of one discard / write-zeroes / secure-erase range: `sector: le64, num_sectors: le32, flags: le32`.
pub const BLK_RANGE_SIZE: usize = 16;
/// `flags` bit of a write-zeroes range asking the device to unmap.
pub const BLK_WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

/// Byte offsets of the virtio-blk configuration fields (§5.2.4).
pub mod blk_config {
    /// `capacity: le64`, in 512-byte sectors.
    pub const CAPACITY: usize = 0;
    /// `size_max: le32`.
    pub const SIZE_MAX: usize = 8;
    /// `seg_max: le32`.
    pub const SEG_MAX: usize = 12;
    /// `blk_size: le32`.
    pub const BLK_SIZE: usize = 20;
    /// `topology.physical_block_exp: u8`.
    pub const PHYSICAL_BLOCK_EXP: usize = 24;
    /// `topology.alignment_offset: u8`.
    pub const ALIGNMENT_OFFSET: usize = 25;
    /// `topology.min_io_size: le16`.
    pub const MIN_IO_SIZE: usize = 26;
    /// `topology.opt_io_size: le32`.
    pub const OPT_IO_SIZE: usize = 28;
    /// `writeback: u8`.
    pub const WRITEBACK: usize = 32;
    /// `num_queues: le16`.
    pub const NUM_QUEUES: usize = 34;
    /// `max_discard_sectors: le32`.
    pub const MAX_DISCARD_SECTORS: usize = 36;
    /// `max_discard_seg: le32`.
    pub const MAX_DISCARD_SEG: usize = 40;
    /// `discard_sector_alignment: le32`.
    pub const DISCARD_SECTOR_ALIGNMENT: usize = 44;
    /// `max_write_zeroes_sectors: le32`.
    pub const MAX_WRITE_ZEROES_SECTORS: usize = 48;
    /// `max_write_zeroes_seg: le32`.
    pub const MAX_WRITE_ZEROES_SEG: usize = 52;
    /// `write_zeroes_may_unmap: u8`.
    pub const WRITE_ZEROES_MAY_UNMAP: usize = 56;
    /// `max_secure_erase_sectors: le32`.
    pub const MAX_SECURE_ERASE_SECTORS: usize = 60;
    /// `max_secure_erase_seg: le32`.
    pub const MAX_SECURE_ERASE_SEG: usize = 64;
    /// `secure_erase_sector_alignment: le32`.
    pub const SECURE_ERASE_SECTOR_ALIGNMENT: usize = 68;
    /// Size of the configuration structure.
    pub const SIZE: usize = 72;
}

/// The EVENT_IDX notification test (§2.7.7.2, §2.7.10): true when `event`
/// lies in the half-open window `[old, new)` of indices just published,
/// computed so that it holds across the 16-bit wrap.
#[inline]
pub const fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn need_event_wraps_across_u16() {
        // The case the issue names: the batch 65529..3 wraps and passes 65530.
        assert!(need_event(65530, 3, 65529));
        assert!(need_event(2, 3, 65529));
        assert!(!need_event(3, 3, 65529));
        assert!(!need_event(65528, 3, 65529));
        assert!(need_event(65529, 3, 65529));
    }

    #[test]
    fn need_event_plain_window() {
        assert!(need_event(10, 11, 10));
        assert!(!need_event(11, 11, 10));
        assert!(!need_event(9, 11, 10));
        assert!(!need_event(10, 10, 10));
    }

    #[test]
    fn ring_structs_have_wire_sizes() {
        assert_eq!(core::mem::size_of::<SplitDesc>(), 16);
        assert_eq!(core::mem::size_of::<PackedDesc>(), 16);
        assert_eq!(core::mem::size_of::<UsedElem>(), 8);
        assert_eq!(core::mem::size_of::<EventSuppress>(), 4);
    }

    #[test]
    fn split_layout_keeps_driver_and_device_parts_on_separate_lines() {
        let l = SplitLayout::new(256);
        assert_eq!(l.desc, 0);
        assert_eq!(l.avail, 4096);
        assert_eq!(l.used % 64, 0);
        assert!(l.used >= l.avail + 6 + 512);
        assert!(l.total >= l.used + 6 + 8 * 256);
        let one = SplitLayout::new(1);
        assert!(one.used >= one.avail + 8);
    }
}
