//! What the split and packed rings share: the chain a request is made of,
//! the used element handed back, the faults a device can commit, and the enum
//! that lets a queue drive either layout without dynamic dispatch.

use crate::hal::{Hal, PhysAddr};
use crate::packed_ring::PackedRing;
use crate::split_ring::SplitRing;

/// Device addresses of one virtqueue's three areas (VIRTIO 1.2 §2.6): what a
/// ring hands its transport to program into the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueAddresses {
    /// Split: descriptor table. Packed: descriptor ring.
    pub desc: PhysAddr,
    /// Split: available ring. Packed: driver event suppression structure.
    pub driver: PhysAddr,
    /// Split: used ring. Packed: device event suppression structure.
    pub device: PhysAddr,
}

/// One buffer of a descriptor chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: PhysAddr,
    pub len: u32,
    pub device_writable: bool,
}

/// Where the next chain goes: its slot id (split head index, packed buffer
/// id) and the ring slots (split: descriptors) it takes there, 1 for a chain
/// of several placed in its indirect table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placement {
    pub id: u16,
    pub slots: u16,
}

/// A completed chain as the device reported it, after validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Used {
    /// Slot id: split head index or packed buffer id.
    pub id: u16,
    /// Bytes the device claims to have written.
    pub len: u32,
    /// Place of this element in the queue's sequence of used elements (0 for
    /// the first ever); compared with [`Ring::used_horizon`].
    pub seq: u64,
}

/// Ways a device can break the protocol (DESIGN.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceFault {
    /// A used id beyond the queue size.
    IdOutOfRange(u32),
    /// A used id that is not in flight (never posted, or completed twice).
    IdNotInFlight(u16),
    /// A used element for a request the device was not given yet when it
    /// wrote it: the request was unpublished, or published after the element
    /// was already visible (e.g. a stale duplicate of a reused id).
    CompletedBeforePublished(u16),
    /// The split used index moved past what is in flight.
    UsedIndexJump {
        /// Index the driver had consumed up to.
        last: u16,
        /// Index the device published.
        published: u16,
    },
    /// The status byte is not OK, IOERR or UNSUPP.
    BadStatus {
        /// Slot id.
        id: u16,
        /// The byte found.
        status: u8,
    },
    /// A packed descriptor the device should have used or left alone carries
    /// AVAIL/USED bits that fit neither, e.g. the wrong wrap counter.
    BadUsedFlags {
        /// Ring slot.
        slot: u16,
        /// The flags found.
        flags: u16,
    },
    /// The device set DEVICE_NEEDS_RESET (VIRTIO 1.2 §2.1.1).
    NeedsReset,
    /// The driver reset the device to recover it while this queue was away.
    DeviceReset,
}

impl core::fmt::Display for DeviceFault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DeviceFault::IdOutOfRange(id) => write!(f, "used id {id} is beyond the queue"),
            DeviceFault::IdNotInFlight(id) => write!(f, "used id {id} is not in flight"),
            DeviceFault::CompletedBeforePublished(id) => write!(
                f,
                "used id {id} names a request published after the device wrote it"
            ),
            DeviceFault::UsedIndexJump { last, published } => {
                write!(f, "used index jumped from {last} to {published}")
            }
            DeviceFault::BadStatus { id, status } => {
                write!(
                    f,
                    "request {id}: status byte {status:#x} is not a virtio-blk status"
                )
            }
            DeviceFault::BadUsedFlags { slot, flags } => write!(
                f,
                "packed descriptor {slot}: flags {flags:#06x} are neither available nor used in this lap"
            ),
            DeviceFault::NeedsReset => write!(f, "the device set DEVICE_NEEDS_RESET"),
            DeviceFault::DeviceReset => {
                write!(f, "the device was reset to recover it; this queue is retired")
            }
        }
    }
}

/// Which ring layout a queue uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingKind {
    /// VIRTIO 1.2 §2.7.
    Split,
    /// VIRTIO 1.2 §2.8.
    Packed,
}

/// Whether the device should send used-buffer notifications (DESIGN.md §4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UsedNotifications {
    Off,
    On,
}

/// Either ring layout; a queue matches on it per call (well predicted, no vtable).
pub(crate) enum Ring<H: Hal> {
    Split(SplitRing<H>),
    Packed(PackedRing<H>),
}

macro_rules! dispatch {
    ($self:expr, $ring:ident => $body:expr) => {
        match $self {
            Ring::Split($ring) => $body,
            Ring::Packed($ring) => $body,
        }
    };
}

impl<H: Hal> Ring<H> {
    pub(crate) fn kind(&self) -> RingKind {
        match self {
            Ring::Split(_) => RingKind::Split,
            Ring::Packed(_) => RingKind::Packed,
        }
    }

    pub(crate) fn addresses(&self) -> QueueAddresses {
        dispatch!(self, r => r.addresses())
    }

    pub(crate) fn size(&self) -> u16 {
        dispatch!(self, r => r.size())
    }

    /// Adds the platform's DMA barriers to the ring's fences, for a device
    /// that negotiated VIRTIO_F_ORDER_PLATFORM (see `crate::barrier`).
    pub(crate) fn set_order_platform(&mut self, on: bool) {
        dispatch!(self, r => r.set_order_platform(on))
    }

    /// Where a chain of `segments` segments would go now, if it fits.
    #[inline(always)]
    pub(crate) fn reserve(&self, segments: usize) -> Option<Placement> {
        dispatch!(self, r => r.reserve(segments))
    }

    /// Writes a chain (not yet visible to the device) at `at`, which
    /// `reserve` returned for it with nothing placed in between.
    #[inline(always)]
    pub(crate) fn add_at(&mut self, at: Placement, chain: &[Segment]) {
        dispatch!(self, r => r.add_at(at, chain))
    }

    /// The slot id the next `add` of `segments` segments will use, if it fits.
    #[cfg(all(test, loom))]
    pub(crate) fn next_id(&self, segments: usize) -> Option<u16> {
        self.reserve(segments).map(|at| at.id)
    }

    /// Writes a chain that fits (not yet visible to the device) and returns
    /// its slot id.
    #[cfg(all(test, loom))]
    pub(crate) fn add(&mut self, chain: &[Segment]) -> u16 {
        let at = self.reserve(chain.len()).expect("the chain fits");
        self.add_at(at, chain);
        at.id
    }

    /// Hands everything added since the last publish to the device, leaving
    /// the doorbell to the next `commit`.
    #[inline]
    pub(crate) fn publish(&mut self) {
        dispatch!(self, r => r.publish())
    }

    /// Publishes what is left, then whether the device wants a notification
    /// about everything published since the last commit; `None` when
    /// nothing was.
    #[inline]
    pub(crate) fn commit(&mut self) -> Option<bool> {
        dispatch!(self, r => {
            r.publish();
            r.decide()
        })
    }

    /// Whether the device's suppression state says it waits for a doorbell
    /// about published chains (the only case where one can have been lost).
    pub(crate) fn device_awaits_kick(&self) -> bool {
        dispatch!(self, r => r.device_awaits_kick())
    }

    /// The next used element, validated.
    #[inline]
    pub(crate) fn pop_used(&mut self) -> Result<Option<Used>, DeviceFault> {
        dispatch!(self, r => r.pop_used())
    }

    /// Called just before a batch is published: when the device has already
    /// made used elements visible that are not consumed yet, the `seq` one
    /// past the last of them. Those elements were written before the batch
    /// existed for the device, so none may complete one of its requests.
    #[inline]
    pub(crate) fn used_horizon(&self) -> Option<u64> {
        dispatch!(self, r => r.used_horizon())
    }

    /// Whether a used element is waiting, without consuming it.
    #[inline]
    pub(crate) fn has_used(&self) -> bool {
        dispatch!(self, r => r.has_used())
    }

    pub(crate) fn set_used_notifications(&mut self, mode: UsedNotifications) {
        dispatch!(self, r => r.set_used_notifications(mode))
    }

    /// Re-arms used-buffer notifications and reports whether a used element
    /// is already waiting (DESIGN.md §3 rule 4): if so, keep polling.
    pub(crate) fn arm_and_check(&mut self) -> bool {
        dispatch!(self, r => r.arm_and_check())
    }

    /// Longest chain this ring can ever hold (indirect tables or the whole ring).
    pub(crate) fn max_chain(&self) -> usize {
        dispatch!(self, r => r.max_chain())
    }

    /// Chains posted and not yet used.
    pub(crate) fn in_flight(&self) -> u16 {
        dispatch!(self, r => r.in_flight())
    }
}

/// How a queue uses indirect descriptors (VIRTIO 1.2 §2.7.5.3, §2.8.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndirectUse {
    /// Descriptors one table holds.
    pub per_table: usize,
    /// Requests in flight at most (`None`: half the ring). Every one of them
    /// can fall back to its table, one ring slot, so this many always fit,
    /// whatever mix of direct and indirect chains the ring holds (see
    /// [`IndirectTables::slots_for`]).
    pub max_in_flight: Option<u16>,
}

/// Per-slot indirect descriptor tables (VIRTIO 1.2 §2.7.5.3, §2.8.7): slot
/// `id` always uses table `id`, so no table is ever allocated per request.
pub(crate) struct IndirectTables<H: Hal, D> {
    descs: crate::shared::SharedArray<D>,
    region: crate::hal::DmaRegion<H>,
    per_table: usize,
    max_in_flight: u16,
}

/// Ring slots (split: descriptors) a chain of `segments` takes placed
/// directly, or `None` when the free ones do not suffice.
#[inline]
pub(crate) fn direct_slots(segments: usize, free: u16) -> Option<usize> {
    (segments >= 1 && segments <= usize::from(free)).then_some(segments)
}

impl<H: Hal, D: Sync + Default> IndirectTables<H, D> {
    /// `tables` tables of `use_.per_table` descriptors each; `D` is the
    /// 16-byte descriptor of the ring's own layout.
    pub(crate) fn new(hal: &H, tables: u16, use_: IndirectUse) -> Option<Self> {
        let per_table = use_.per_table;
        let region = crate::hal::DmaRegion::new(hal, usize::from(tables) * per_table * 16)?;
        debug_assert_eq!(core::mem::size_of::<D>(), 16);
        // SAFETY: D is SplitDesc or PackedDesc (repr(C) atomics, zero is valid);
        // offset 0 of a page-aligned region is aligned; `descs` is declared first,
        // so it is dropped before `region`.
        let descs =
            unsafe { crate::shared::SharedArray::new(&region, 0, usize::from(tables) * per_table) };
        Some(IndirectTables {
            descs,
            region,
            per_table,
            max_in_flight: use_.max_in_flight.unwrap_or(tables / 2).clamp(1, tables),
        })
    }

    /// Ring slots a chain of `segments` takes now, given `free` free slots and
    /// `in_flight` chains, or `None` when it cannot be placed yet.
    ///
    /// Direct while that still leaves one free slot for every request that
    /// may follow (up to `max_in_flight`); the chain's table otherwise. Direct
    /// chains spare both sides a table to write and to follow: against QEMU's
    /// storage daemon they gave about a fifth more IOPS at depth 32 and 128.
    /// The reserve keeps `max_in_flight` requests placeable: it holds at every
    /// placement, and completions only add free slots.
    #[inline]
    pub(crate) fn slots_for(&self, segments: usize, free: u16, in_flight: u16) -> Option<usize> {
        if in_flight >= self.max_in_flight {
            return None;
        }
        // Direct if that leaves a slot for each of the requests that may
        // still follow (`max_in_flight - in_flight - 1`), compared with both
        // sides moved so nothing can underflow; it implies `segments <= free`.
        let free = usize::from(free);
        if segments >= 1
            && free + usize::from(in_flight) + 1 >= segments + usize::from(self.max_in_flight)
        {
            Some(segments)
        } else if segments > 1 && segments <= self.per_table && free >= 1 {
            Some(1)
        } else {
            // Longer than a table: only direct, if it fits at all.
            direct_slots(segments, free as u16)
        }
    }

    /// Most descriptors one table holds.
    pub(crate) fn per_table(&self) -> usize {
        self.per_table
    }

    /// The first `len` entries of slot `id`'s table, and the table's device
    /// address: both from one offset, worked out once per chain.
    ///
    /// Panics if `len` exceeds a table (a driver bug: placement checks it).
    #[inline(always)]
    pub(crate) fn entries(&self, id: u16, len: usize) -> (&[D], PhysAddr) {
        assert!(
            len <= self.per_table,
            "chain longer than its indirect table"
        );
        let start = usize::from(id) * self.per_table;
        let entries = &self.descs.as_slice()[start..start + len];
        (entries, self.region.paddr() + (start * 16) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::test_hal::TestHal;

    /// The rule as first written: direct if that leaves the reserve, else
    /// the table if the chain fits one, else direct if it fits at all.
    fn slots_for_model(
        per_table: usize,
        max_in_flight: u16,
        segments: usize,
        free: u16,
        in_flight: u16,
    ) -> Option<usize> {
        if in_flight >= max_in_flight {
            return None;
        }
        let free = usize::from(free);
        let reserve = usize::from(max_in_flight - in_flight - 1);
        if segments >= 1 && segments <= free && free - segments >= reserve {
            Some(segments)
        } else if segments > 1 && segments <= per_table && free >= 1 {
            Some(1)
        } else {
            (segments >= 1 && segments <= free).then_some(segments)
        }
    }

    #[test]
    fn slots_for_matches_the_rule_as_first_written() {
        for per_table in [1, 2, 3, 5] {
            for max_in_flight in 1..=8u16 {
                let use_ = IndirectUse {
                    per_table,
                    max_in_flight: Some(max_in_flight),
                };
                let tables: IndirectTables<TestHal, crate::spec::SplitDesc> =
                    IndirectTables::new(&TestHal, 8, use_).expect("DMA memory");
                for segments in 0..=7 {
                    for free in 0..=8u16 {
                        for in_flight in 0..=8u16 {
                            assert_eq!(
                                tables.slots_for(segments, free, in_flight),
                                slots_for_model(
                                    per_table,
                                    max_in_flight,
                                    segments,
                                    free,
                                    in_flight
                                ),
                                "per_table {per_table} max {max_in_flight} segments {segments} \
                                 free {free} in_flight {in_flight}"
                            );
                        }
                    }
                }
            }
        }
    }
}
