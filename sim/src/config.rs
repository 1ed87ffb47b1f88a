//! What the simulated device looks like: [`SimConfig`] and the configuration
//! space it produces (VIRTIO 1.2 §5.2.4).

use core::ops::Range;

use virtio_blk_mq::spec::blk_config;
use virtio_blk_mq::Features;

/// What backs the simulated disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DiskKind {
    /// No storage: reads copy nothing into the driver's buffers (they keep what
    /// they held), writes are discarded. The cheapest device for benchmarks.
    #[default]
    Null,
    /// `capacity_sectors * 512` bytes of RAM, initially zero.
    Ram,
}

/// In which order the device completes the requests it has collected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CompletionOrder {
    /// Every step completes all available requests in ring order.
    #[default]
    InOrder,
    /// Every step completes a seeded random non-empty subset of the pending
    /// requests in random order and holds the rest back for a later step
    /// (ignored when `IN_ORDER` is negotiated: then a random prefix, in order).
    Shuffled {
        /// PRNG seed; the same seed and driver behaviour give the same order.
        seed: u64,
    },
}

/// A fault to inject: requests touching `sectors` fail with `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injection {
    /// Sectors (512-byte units) the fault covers.
    pub sectors: Range<u64>,
    /// Status byte to complete with, e.g. `blk_status::IOERR` or `UNSUPP`.
    pub status: u8,
}

/// Configuration of a [`SimDevice`](crate::SimDevice).
///
/// The configuration-space fields (`capacity_sectors`, `blk_size`, `seg_max`,
/// `size_max`, the range limits, `num_queues_reported`) are written to the
/// configuration space exactly as given, so a hostile device can report
/// impossible values (blk_size 0 or 3, seg_max 0, size_max below 512, a
/// capacity near `u64::MAX` with [`DiskKind::Null`]); `config_patches` reaches
/// every other byte. The device itself keeps behaving by these same values
/// (e.g. it fails requests beyond `capacity_sectors`). The hostile control
/// plane (`refuse_features_ok`, `unstable_config_generation`,
/// `needs_reset_after`) outlives device resets.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Capacity in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Null or RAM backing.
    pub disk: DiskKind,
    /// Number of request queues the device has (and reports in `num_queues`
    /// unless `num_queues_reported` says otherwise).
    pub num_queues: u16,
    /// Hostile: `num_queues` as the configuration space reports it (e.g. 0 or
    /// 65535) while the device still has `num_queues` queues; `None` reports
    /// the truth.
    pub num_queues_reported: Option<u16>,
    /// Largest queue size accepted for each queue.
    pub max_queue_size: u16,
    /// Offered feature bits. The default offers everything the driver
    /// supports except ACCESS_PLATFORM, BLK_RO and ORDER_PLATFORM (a device
    /// in software, like the sim, does not need the platform's barriers).
    pub features: Features,
    /// Features the device cannot run without: FEATURES_OK does not stick
    /// unless the driver accepts every one of them that is offered (a device
    /// MAY refuse to work without ORDER_PLATFORM or ACCESS_PLATFORM, VIRTIO
    /// 1.2 §6.1). Empty by default.
    pub required_features: Features,
    /// `blk_size`.
    pub blk_size: u32,
    /// `seg_max`: data segments per request (header and status not counted).
    pub seg_max: u32,
    /// `size_max`: bytes per segment.
    pub size_max: u32,
    /// `max_discard_sectors` (per range).
    pub max_discard_sectors: u32,
    /// `max_discard_seg`.
    pub max_discard_seg: u32,
    /// `discard_sector_alignment`.
    pub discard_sector_alignment: u32,
    /// `max_write_zeroes_sectors` (per range).
    pub max_write_zeroes_sectors: u32,
    /// `max_write_zeroes_seg`.
    pub max_write_zeroes_seg: u32,
    /// `write_zeroes_may_unmap`.
    pub write_zeroes_may_unmap: bool,
    /// `max_secure_erase_sectors` (per range).
    pub max_secure_erase_sectors: u32,
    /// `max_secure_erase_seg`.
    pub max_secure_erase_seg: u32,
    /// `secure_erase_sector_alignment`.
    pub secure_erase_sector_alignment: u32,
    /// The GET_ID answer.
    pub device_id: [u8; 20],
    /// Completion order.
    pub order: CompletionOrder,
    /// Injected faults.
    pub inject: Vec<Injection>,
    /// Hostile: `(offset, bytes)` written over the configuration space after
    /// every field above, for values no field carries (e.g. a
    /// `physical_block_exp` of 200). [`SimDevice::new`](crate::SimDevice::new)
    /// panics on a patch beyond the 72-byte space.
    pub config_patches: Vec<(usize, Vec<u8>)>,
    /// Hostile: the device clears FEATURES_OK whatever features the driver
    /// accepts (§2.2.2, §3.1.1 step 6).
    pub refuse_features_ok: bool,
    /// Hostile: the configuration generation (§2.5.1) changes on every read,
    /// as if the configuration changed all the time.
    pub unstable_config_generation: bool,
    /// Hostile: set DEVICE_NEEDS_RESET (§2.1.1) once this many requests were
    /// completed (on all queues together) since the last device reset; the
    /// next request is never completed. Counts again after every reset.
    pub needs_reset_after: Option<u64>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            capacity_sectors: 1 << 21,
            disk: DiskKind::Null,
            num_queues: 1,
            max_queue_size: 1024,
            features: Features::SUPPORTED.difference(
                Features::ACCESS_PLATFORM
                    .union(Features::BLK_RO)
                    .union(Features::ORDER_PLATFORM),
            ),
            required_features: Features::empty(),
            blk_size: 512,
            seg_max: 254,
            size_max: 0x10_0000,
            max_discard_sectors: 1 << 22,
            max_discard_seg: 16,
            discard_sector_alignment: 8,
            max_write_zeroes_sectors: 1 << 22,
            max_write_zeroes_seg: 16,
            write_zeroes_may_unmap: true,
            max_secure_erase_sectors: 1 << 22,
            max_secure_erase_seg: 16,
            secure_erase_sector_alignment: 8,
            device_id: *b"virtio-blk-sim\0\0\0\0\0\0",
            order: CompletionOrder::InOrder,
            inject: Vec::new(),
            num_queues_reported: None,
            config_patches: Vec::new(),
            refuse_features_ok: false,
            unstable_config_generation: false,
            needs_reset_after: None,
        }
    }
}

impl SimConfig {
    /// The little-endian configuration structure `virtio_blk_config` (§5.2.4),
    /// with `config_patches` applied; `Err` names a patch beyond it.
    pub(crate) fn config_space(&self) -> Result<[u8; blk_config::SIZE], String> {
        let mut c = [0u8; blk_config::SIZE];
        let mut put =
            |offset: usize, bytes: &[u8]| c[offset..offset + bytes.len()].copy_from_slice(bytes);
        put(blk_config::CAPACITY, &self.capacity_sectors.to_le_bytes());
        put(blk_config::SIZE_MAX, &self.size_max.to_le_bytes());
        put(blk_config::SEG_MAX, &self.seg_max.to_le_bytes());
        put(blk_config::BLK_SIZE, &self.blk_size.to_le_bytes());
        put(blk_config::MIN_IO_SIZE, &1u16.to_le_bytes());
        put(blk_config::OPT_IO_SIZE, &0u32.to_le_bytes());
        put(
            blk_config::WRITEBACK,
            &[u8::from(self.features.contains(Features::BLK_FLUSH))],
        );
        put(
            blk_config::NUM_QUEUES,
            &self
                .num_queues_reported
                .unwrap_or(self.num_queues)
                .to_le_bytes(),
        );
        put(
            blk_config::MAX_DISCARD_SECTORS,
            &self.max_discard_sectors.to_le_bytes(),
        );
        put(
            blk_config::MAX_DISCARD_SEG,
            &self.max_discard_seg.to_le_bytes(),
        );
        put(
            blk_config::DISCARD_SECTOR_ALIGNMENT,
            &self.discard_sector_alignment.to_le_bytes(),
        );
        put(
            blk_config::MAX_WRITE_ZEROES_SECTORS,
            &self.max_write_zeroes_sectors.to_le_bytes(),
        );
        put(
            blk_config::MAX_WRITE_ZEROES_SEG,
            &self.max_write_zeroes_seg.to_le_bytes(),
        );
        put(
            blk_config::WRITE_ZEROES_MAY_UNMAP,
            &[u8::from(self.write_zeroes_may_unmap)],
        );
        put(
            blk_config::MAX_SECURE_ERASE_SECTORS,
            &self.max_secure_erase_sectors.to_le_bytes(),
        );
        put(
            blk_config::MAX_SECURE_ERASE_SEG,
            &self.max_secure_erase_seg.to_le_bytes(),
        );
        put(
            blk_config::SECURE_ERASE_SECTOR_ALIGNMENT,
            &self.secure_erase_sector_alignment.to_le_bytes(),
        );
        for (offset, bytes) in &self.config_patches {
            let target = offset
                .checked_add(bytes.len())
                .and_then(|end| c.get_mut(*offset..end))
                .ok_or_else(|| {
                    format!(
                        "config patch of {} bytes at offset {offset} is beyond the {}-byte configuration space",
                        bytes.len(),
                        blk_config::SIZE
                    )
                })?;
            target.copy_from_slice(bytes);
        }
        Ok(c)
    }

    /// The injected status for a request touching `[sector, sector + count)`, if any.
    pub(crate) fn injected(&self, sector: u64, count: u64) -> Option<u8> {
        let end = sector.saturating_add(count.max(1));
        self.inject
            .iter()
            .find(|i| i.sectors.start < end && sector < i.sectors.end)
            .map(|i| i.status)
    }
}
