//! A read-only picture of one queue's ring, for diagnosing a stall: the
//! driver's private positions beside what both sides have written in shared
//! memory. [`crate::BlkQueue::debug_snapshot`] takes one.
//!
//! Unlike everything else in the driver, a snapshot reads back the driver's
//! own shared fields (DESIGN.md §3 rule 5 forbids that for decisions): the
//! point is to see what the device sees. Nothing here feeds back into the
//! ring; a device may change any shared value between two reads.

/// One queue's ring, either layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingSnapshot {
    /// VIRTIO 1.2 §2.7.
    Split(SplitSnapshot),
    /// VIRTIO 1.2 §2.8.
    Packed(PackedSnapshot),
}

/// A split ring (VIRTIO 1.2 §2.7): indices are free-running `u16`s.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitSnapshot {
    /// Entries in the ring.
    pub size: u16,
    /// Chains placed and not yet used (including unpublished ones).
    pub in_flight: u16,
    /// The driver's next `avail.idx` (private shadow).
    pub avail_idx: u16,
    /// The `avail.idx` last published (private shadow).
    pub published_idx: u16,
    /// Used elements consumed so far (private shadow, `last_used_idx`).
    pub last_used: u16,
    /// `avail.flags` in shared memory (written by the driver).
    pub avail_flags: u16,
    /// `avail.idx` in shared memory (written by the driver).
    pub shared_avail_idx: u16,
    /// `used_event` in shared memory (written by the driver).
    pub used_event: u16,
    /// `used.flags` (written by the device).
    pub used_flags: u16,
    /// `used.idx` (written by the device).
    pub used_idx: u16,
    /// `avail_event` (written by the device; meaningful with EVENT_IDX).
    pub avail_event: u16,
    /// EVENT_IDX was negotiated.
    pub event_idx: bool,
}

/// A packed ring (VIRTIO 1.2 §2.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedSnapshot {
    /// Entries in the ring.
    pub size: u16,
    /// Chains placed and not yet used (including unpublished ones).
    pub in_flight: u16,
    /// Where the next chain goes, and the driver's wrap counter there.
    pub next_avail: u16,
    /// Driver ring wrap counter at `next_avail`.
    pub avail_wrap: bool,
    /// Where the device writes its next used descriptor.
    pub next_used: u16,
    /// Wrap counter the driver expects at `next_used`.
    pub used_wrap: bool,
    /// Driver event suppression structure (written by the driver): flags.
    pub driver_event_flags: u16,
    /// Driver event suppression structure: `off_wrap`.
    pub driver_event_off_wrap: u16,
    /// Device event suppression structure (written by the device): flags.
    pub device_event_flags: u16,
    /// Device event suppression structure: `off_wrap`.
    pub device_event_off_wrap: u16,
    /// Flags of the descriptor at `next_used`.
    pub flags_at_next_used: u16,
    /// Buffer id of the descriptor at `next_used`.
    pub id_at_next_used: u16,
    /// EVENT_IDX was negotiated.
    pub event_idx: bool,
}

impl core::fmt::Display for RingSnapshot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingSnapshot::Split(s) => write!(
                f,
                "split size {} in_flight {} event_idx {}; driver: avail_idx {} published {} \
                 last_used {}; shared (driver): avail.flags {:#x} avail.idx {} used_event {}; \
                 shared (device): used.flags {:#x} used.idx {} avail_event {}",
                s.size,
                s.in_flight,
                s.event_idx,
                s.avail_idx,
                s.published_idx,
                s.last_used,
                s.avail_flags,
                s.shared_avail_idx,
                s.used_event,
                s.used_flags,
                s.used_idx,
                s.avail_event
            ),
            RingSnapshot::Packed(p) => write!(
                f,
                "packed size {} in_flight {} event_idx {}; driver: next_avail {} wrap {} \
                 next_used {} wrap {}; driver event: flags {:#x} off_wrap {:#06x}; \
                 device event: flags {:#x} off_wrap {:#06x}; at next_used: flags {:#06x} id {}",
                p.size,
                p.in_flight,
                p.event_idx,
                p.next_avail,
                u8::from(p.avail_wrap),
                p.next_used,
                u8::from(p.used_wrap),
                p.driver_event_flags,
                p.driver_event_off_wrap,
                p.device_event_flags,
                p.device_event_off_wrap,
                p.flags_at_next_used,
                p.id_at_next_used
            ),
        }
    }
}
