//! Driver configuration, and the device's configuration space read and checked.

use crate::error::Error;
use crate::ring::RingKind;
use crate::spec::{blk_config, Features, SECTOR_SIZE};
use crate::transport::Transport;

/// Most data segments one request may carry; bounds the on-stack chain.
pub const MAX_DATA_SEGMENTS: usize = 64;

/// How a queue learns about completions (DESIGN.md §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The owner busy-polls; used-buffer notifications are off.
    #[default]
    Poll,
    /// Used-buffer notifications on; completions drained from the interrupt
    /// handler by calling [`crate::BlkQueue::poll`] until it hands out fewer
    /// than its budget. A poll that finds the ring empty leaves the queue
    /// armed for the next completion (with EVENT_IDX it moves the event
    /// index to where it stopped), so the handler need not re-arm; a poll
    /// stopped by its budget does not, so the handler polls again.
    Interrupt,
    /// Poll while busy; after an idle spin budget re-arm and wait for the interrupt.
    Hybrid,
}

/// What the driver asks for. Every feature can be switched off here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Features the driver may accept (intersected with [`Features::SUPPORTED`]
    /// and with what the device offers).
    pub features: Features,
    /// Request queues wanted; the device's `num_queues` caps it.
    pub queues: u16,
    /// Entries per queue; `None` takes the device's maximum, capped at 256.
    pub queue_size: Option<u16>,
    /// Requests one queue keeps in flight at most, with INDIRECT_DESC
    /// negotiated; `None`: half the queue size. That many requests always
    /// fit (at worst each in its indirect table, one ring entry), and the
    /// rest of the ring lets most of them go as direct chains, which devices
    /// serve faster (no table to follow). Without INDIRECT_DESC the ring's
    /// descriptors are the limit: a one-buffer read takes three.
    pub max_requests: Option<u16>,
    /// Data segments per request, at most [`MAX_DATA_SEGMENTS`]; `seg_max` caps it.
    pub max_segments: u16,
    /// Completion mode of every queue.
    pub mode: Mode,
    /// Requests a submit lets wait unpublished: the one that makes this many
    /// hands them to the device, and [`crate::BlkQueue::commit`] publishes
    /// the rest and decides the doorbell for all of them (a device that waits
    /// for a doorbell learns of the batch at `commit`, as without this; a
    /// polling device starts earlier). `Some(0)` leaves publishing to
    /// `commit` alone; `None`: half the requests the queue holds
    /// (`max_requests`), at least 1.
    ///
    /// Why: a polling device that returns a whole batch at once and a driver
    /// that hands a whole batch back at once fall into lockstep, each idle
    /// while the other works; handing a long batch over in halves lets the
    /// device start on the first while the second is written (docs/perf.md,
    /// "Publishing a long batch in pieces").
    pub publish_batch: Option<u16>,
    /// When a queue rings its doorbell again on its own (lost-kick recovery).
    pub rekick: Rekick,
}

/// Lost-kick recovery: when requests the device was given make no progress
/// for a while, the queue rings the doorbell once more (an extra
/// notification is always allowed, VIRTIO 1.2 §2.9). A device that missed a
/// kick, or re-enabled doorbells without looking at the ring again, then
/// picks the requests up; the re-kicks are counted in
/// [`crate::QueueStats::rekicks`].
///
/// Only a device waiting for a doorbell can have lost one, so the queue
/// first reads the device's suppression state: split with EVENT_IDX, an
/// `avail_event` among the published chains still in flight; split without
/// it, `used.flags` without NO_NOTIFY; packed, an event area not DISABLEd.
/// A device that has suppressed doorbells is busy with the ring (QEMU's
/// iothread under TCG is often that slow to take requests) and is left
/// alone: counted in [`crate::QueueStats::rekicks_declined`], the wait
/// starts over.
///
/// Bounded: the wait doubles after every re-kick, and after
/// [`Rekick::MAX_PER_STALL`] re-kicks without a completion the queue stops
/// ringing, so a dead device still ends in the timeout path
/// ([`crate::BlkQueue::check_timeouts`]). Any completion starts a new count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rekick {
    /// Empty polls in a row, with published requests in flight and no
    /// completion, before the first re-kick (0: never on polls). An empty
    /// poll costs tens of nanoseconds and a round trip to a fast device a
    /// few microseconds, so the default (4096) stays clear of a device that
    /// is merely slow; one descheduled for longer on a busy host may draw a
    /// re-kick, which costs it one spurious notification.
    pub empty_polls: u32,
    /// Ticks of [`crate::BlkQueue::check_timeouts`] in which a request was in
    /// flight the whole tick and none completed, before a re-kick (0: never
    /// on ticks). For owners that sleep instead of polling (Interrupt mode).
    pub ticks: u32,
}

impl Rekick {
    /// Re-kicks without a completion in between, at most.
    pub const MAX_PER_STALL: u32 = 8;

    /// No re-kicks at all.
    pub const NEVER: Rekick = Rekick {
        empty_polls: 0,
        ticks: 0,
    };
}

impl Default for Rekick {
    fn default() -> Self {
        Rekick {
            empty_polls: 4096,
            ticks: 2,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            features: Features::SUPPORTED,
            queues: 1,
            queue_size: None,
            max_requests: None,
            max_segments: 32,
            mode: Mode::Poll,
            publish_batch: None,
            rekick: Rekick::default(),
        }
    }
}

impl Config {
    /// This config with `features` switched off.
    pub fn without(mut self, features: Features) -> Self {
        self.features.remove(features);
        self
    }
}

/// Limits of a range command (discard, write zeroes, secure erase), §5.2.4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeLimits {
    /// Most sectors in one range.
    pub max_sectors: u32,
    /// Most ranges in one request.
    pub max_ranges: u32,
    /// Ranges must start at a multiple of this many sectors.
    pub sector_alignment: u32,
}

/// What was negotiated and read from the device, fixed for the device's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Features both sides accepted.
    pub features: Features,
    /// Ring layout of every queue.
    pub ring: RingKind,
    /// Disk size in 512-byte sectors.
    pub capacity_sectors: u64,
    /// Logical block size; offsets and lengths must be multiples of it.
    pub block_size: u32,
    /// Writes are refused.
    pub read_only: bool,
    /// Data segments one request may carry.
    pub max_segments: u16,
    /// Largest single segment in bytes.
    pub max_segment_size: u32,
    /// Request queues the device offers (`num_queues`, 1 without MQ).
    pub device_queues: u16,
    /// FLUSH is available.
    pub flush: bool,
    /// The write cache is in writeback mode (CONFIG_WCE), or assumed so with FLUSH.
    pub writeback: bool,
    /// DISCARD limits, when negotiated.
    pub discard: Option<RangeLimits>,
    /// WRITE_ZEROES limits, when negotiated.
    pub write_zeroes: Option<RangeLimits>,
    /// The device may unmap on write zeroes.
    pub write_zeroes_may_unmap: bool,
    /// SECURE_ERASE limits, when negotiated.
    pub secure_erase: Option<RangeLimits>,
    /// Physical block size (from TOPOLOGY), else the logical one.
    pub physical_block_size: u32,
}

/// How often a changing config generation is retried before giving up.
const CONFIG_READ_ATTEMPTS: usize = 16;

/// Raw config values, read under one generation.
struct RawConfig {
    capacity: u64,
    size_max: u32,
    seg_max: u32,
    blk_size: u32,
    physical_block_exp: u8,
    writeback: u8,
    num_queues: u16,
    discard: [u32; 3],
    write_zeroes: [u32; 2],
    write_zeroes_may_unmap: u8,
    secure_erase: [u32; 3],
}

fn read_raw<T: Transport>(transport: &mut T) -> RawConfig {
    let u32_at = |t: &mut T, offset| t.read_config_u32(offset);
    let low = u64::from(transport.read_config_u32(blk_config::CAPACITY));
    let high = u64::from(transport.read_config_u32(blk_config::CAPACITY + 4));
    RawConfig {
        capacity: high << 32 | low,
        size_max: u32_at(transport, blk_config::SIZE_MAX),
        seg_max: u32_at(transport, blk_config::SEG_MAX),
        blk_size: u32_at(transport, blk_config::BLK_SIZE),
        physical_block_exp: transport.read_config_u8(blk_config::PHYSICAL_BLOCK_EXP),
        writeback: transport.read_config_u8(blk_config::WRITEBACK),
        num_queues: transport.read_config_u16(blk_config::NUM_QUEUES),
        discard: [
            u32_at(transport, blk_config::MAX_DISCARD_SECTORS),
            u32_at(transport, blk_config::MAX_DISCARD_SEG),
            u32_at(transport, blk_config::DISCARD_SECTOR_ALIGNMENT),
        ],
        write_zeroes: [
            u32_at(transport, blk_config::MAX_WRITE_ZEROES_SECTORS),
            u32_at(transport, blk_config::MAX_WRITE_ZEROES_SEG),
        ],
        write_zeroes_may_unmap: transport.read_config_u8(blk_config::WRITE_ZEROES_MAY_UNMAP),
        secure_erase: [
            u32_at(transport, blk_config::MAX_SECURE_ERASE_SECTORS),
            u32_at(transport, blk_config::MAX_SECURE_ERASE_SEG),
            u32_at(transport, blk_config::SECURE_ERASE_SECTOR_ALIGNMENT),
        ],
    }
}

/// Reads the whole config under one generation (§2.5.1), retrying a bounded
/// number of times so a device that never settles cannot hang us.
fn read_consistent<T: Transport>(transport: &mut T) -> Result<RawConfig, Error> {
    for _ in 0..CONFIG_READ_ATTEMPTS {
        let before = transport.config_generation();
        let raw = read_raw(transport);
        if transport.config_generation() == before {
            return Ok(raw);
        }
    }
    Err(Error::ConfigUnstable)
}

/// A range limit as the driver uses it: 0 sectors means "no stated limit",
/// 0 ranges means one, 0 alignment means none.
fn range_limits(max_sectors: u32, max_ranges: u32, alignment: u32) -> RangeLimits {
    RangeLimits {
        max_sectors: if max_sectors == 0 {
            u32::MAX
        } else {
            max_sectors
        },
        max_ranges: max_ranges.max(1),
        sector_alignment: alignment.max(1),
    }
}

/// Reads and validates the configuration (§5.2.4) under `features`.
pub(crate) fn read_device_info<T: Transport>(
    transport: &mut T,
    features: Features,
    config: &Config,
) -> Result<DeviceInfo, Error> {
    let raw = read_consistent(transport)?;
    if raw.capacity.checked_mul(SECTOR_SIZE).is_none() {
        return Err(Error::BadConfig("capacity"));
    }
    let block_size = if features.contains(Features::BLK_BLK_SIZE) {
        let size = raw.blk_size;
        if !size.is_power_of_two() || !(512..=65536).contains(&size) {
            return Err(Error::BadConfig("blk_size"));
        }
        size
    } else {
        512
    };
    let mut max_segments = config.max_segments.clamp(1, MAX_DATA_SEGMENTS as u16);
    if features.contains(Features::BLK_SEG_MAX) {
        if raw.seg_max == 0 {
            return Err(Error::BadConfig("seg_max"));
        }
        max_segments = max_segments.min(raw.seg_max.min(u32::from(u16::MAX)) as u16);
    }
    // QEMU's vhost-user-blk export offers SIZE_MAX and leaves the field 0;
    // like Linux, read 0 as "no limit". Anything else below a sector could
    // never carry a request.
    let max_segment_size = match (features.contains(Features::BLK_SIZE_MAX), raw.size_max) {
        (false, _) | (true, 0) => u32::MAX,
        (true, 1..=511) => return Err(Error::BadConfig("size_max")),
        (true, size) => size,
    };
    let device_queues = if features.contains(Features::BLK_MQ) {
        if raw.num_queues == 0 {
            return Err(Error::BadConfig("num_queues"));
        }
        raw.num_queues
    } else {
        1
    };
    let physical_block_size = if features.contains(Features::BLK_TOPOLOGY) {
        match 1u32.checked_shl(u32::from(raw.physical_block_exp)) {
            Some(blocks) if blocks <= 1 << 16 => block_size.saturating_mul(blocks),
            _ => return Err(Error::BadConfig("physical_block_exp")),
        }
    } else {
        block_size
    };
    let ring = if features.contains(Features::RING_PACKED) {
        RingKind::Packed
    } else {
        RingKind::Split
    };
    let flush = features.contains(Features::BLK_FLUSH);
    let [d_sectors, d_ranges, d_align] = raw.discard;
    let [wz_sectors, wz_ranges] = raw.write_zeroes;
    let [se_sectors, se_ranges, se_align] = raw.secure_erase;
    Ok(DeviceInfo {
        features,
        ring,
        capacity_sectors: raw.capacity,
        block_size,
        read_only: features.contains(Features::BLK_RO),
        max_segments,
        max_segment_size,
        device_queues,
        flush,
        writeback: if features.contains(Features::BLK_CONFIG_WCE) {
            raw.writeback != 0
        } else {
            flush
        },
        discard: features
            .contains(Features::BLK_DISCARD)
            .then(|| range_limits(d_sectors, d_ranges, d_align)),
        write_zeroes: features
            .contains(Features::BLK_WRITE_ZEROES)
            .then(|| range_limits(wz_sectors, wz_ranges, 1)),
        write_zeroes_may_unmap: raw.write_zeroes_may_unmap != 0,
        secure_erase: features
            .contains(Features::BLK_SECURE_ERASE)
            .then(|| range_limits(se_sectors, se_ranges, se_align)),
        physical_block_size,
    })
}
