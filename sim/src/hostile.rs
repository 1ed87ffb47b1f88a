//! A device that lies: [`Hostile`] acts on a queue's used side, for testing
//! that a driver survives a hostile or buggy device (DESIGN.md §5).

use virtio_blk_mq::spec::PackedDescFlags;
use virtio_blk_mq::RingKind;

/// One act of misbehaviour on a queue's used side.
///
/// An act is queued with [`SimDevice::inject_hostile`] and performed by the
/// queue's next step (inline or on a device thread) after it has collected
/// the available requests and before it completes the rest honestly. Acts
/// that need "the next pending request" ([`Hostile::takes_request`]) wait
/// until one is pending, and every act queued after one waits with it; the
/// queue meanwhile serves honestly. A stalled queue performs no acts.
///
/// Some acts leave the device's own used-side bookkeeping out of step with
/// the chains the driver posted ([`Hostile::stops_queue`]): after one of them
/// the queue is stopped, i.e. it takes nothing, completes nothing and touches
/// none of the queue's memory until a device reset or a per-queue reset
/// (`Transport::reset_queue`); acts queued behind it are dropped. The
/// device's own lies are never reported as driver violations, and performed
/// acts are listed by [`SimDevice::hostile_log`].
///
/// "Honestly" below means the request is served as usual: data moved, status
/// byte written, used length = bytes written into the chain.
///
/// [`SimDevice::inject_hostile`]: crate::SimDevice::inject_hostile
/// [`SimDevice::hostile_log`]: crate::SimDevice::hostile_log
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Hostile {
    /// The next used element (split) or used descriptor (packed) names id
    /// `queue size`, one past the last valid id. Needs no pending request.
    /// Stops the queue.
    UsedIdOutOfRange,
    /// The next used element/descriptor names the lowest id below the queue
    /// size that is neither pending on the device nor among the ids it
    /// completed in its last `queue size` completions, so the driver cannot
    /// have it in flight. Waits while no such id exists. Stops the queue.
    UsedIdNotInFlight,
    /// Completes the next pending request honestly, then publishes a second
    /// used element/descriptor with the same id and length (double
    /// completion; packed: at the next used position, with correct flags).
    /// Stops the queue.
    RepeatUsedId,
    /// Completes the next pending request honestly but reports a used length
    /// of its chain's device-writable bytes + 4096.
    UsedLenTooLong,
    /// Completes the next pending request with this status byte written
    /// instead of the honest one (e.g. 7, 0x80).
    GarbageStatus(u8),
    /// Completes the next pending request (data moved) without writing its
    /// status byte at all; the used length counts only the data written.
    StatusNotWritten,
    /// Split only: publishes `used.idx` moved `queue size + 1` past the
    /// device's last published index (more than can ever be in flight),
    /// without writing the used elements it covers. Needs no pending
    /// request. Stops the queue.
    UsedIndexJump,
    /// Packed only: serves the next pending request and writes its used
    /// descriptor (honest id and length) with AVAIL and USED both equal to
    /// the inverse of the device's used wrap counter, so it looks unused to
    /// the driver. Stops the queue.
    WrongWrap,
    /// Packed only: serves the next pending request and writes its used
    /// descriptor (honest id and length) with AVAIL = !wrap, USED = wrap (an
    /// inconsistent pair) plus pseudo-random other flag bits (at least one).
    /// Stops the queue.
    GarbageUsedFlags,
    /// The next used element gets a pseudo-random id and length drawn from
    /// `seed` (split: a 32-bit id and `used.idx` + 1; packed: a 16-bit id and
    /// random flags at the next used slot). Needs no pending request. The
    /// same seed writes the same values. Stops the queue.
    RandomUsed {
        /// PRNG seed.
        seed: u64,
    },
}

impl Hostile {
    /// Whether the act exists for a queue of ring format `ring`: `UsedIndexJump`
    /// is split only, `WrongWrap` and `GarbageUsedFlags` packed only.
    pub fn applies_to(self, ring: RingKind) -> bool {
        match self {
            Hostile::UsedIndexJump => ring == RingKind::Split,
            Hostile::WrongWrap | Hostile::GarbageUsedFlags => ring == RingKind::Packed,
            _ => true,
        }
    }

    /// Whether the act leaves the queue stopped until it is reset: every act
    /// whose used element/descriptor does not match a chain the device is
    /// done with, so its used position no longer means anything. The others
    /// (`UsedLenTooLong`, `GarbageStatus`, `StatusNotWritten`) lie about one
    /// request and then keep serving honestly.
    pub fn stops_queue(self) -> bool {
        !matches!(
            self,
            Hostile::UsedLenTooLong | Hostile::GarbageStatus(_) | Hostile::StatusNotWritten
        )
    }

    /// Whether the act consumes the next pending request (and so waits for one).
    pub fn takes_request(self) -> bool {
        matches!(
            self,
            Hostile::RepeatUsedId
                | Hostile::UsedLenTooLong
                | Hostile::GarbageStatus(_)
                | Hostile::StatusNotWritten
                | Hostile::WrongWrap
                | Hostile::GarbageUsedFlags
        )
    }
}

/// Packed flag bits other than AVAIL and USED.
const OTHER_FLAG_BITS: u16 = !(PackedDescFlags::AVAIL.bits() | PackedDescFlags::USED.bits());

/// AVAIL/USED bits that mark a packed descriptor used in wrap counter `wrap`'s lap (§2.8.1).
pub(crate) fn used_bits(wrap: bool) -> u16 {
    if wrap {
        (PackedDescFlags::AVAIL | PackedDescFlags::USED).bits()
    } else {
        0
    }
}

/// `GarbageUsedFlags`: AVAIL = !wrap, USED = wrap, plus `random`'s other bits
/// (NEXT | INDIRECT when `random` has none).
pub(crate) fn garbage_flags(wrap: bool, random: u16) -> u16 {
    let pair = if wrap {
        PackedDescFlags::USED
    } else {
        PackedDescFlags::AVAIL
    };
    let mut other = random & OTHER_FLAG_BITS;
    if other == 0 {
        other = (PackedDescFlags::NEXT | PackedDescFlags::INDIRECT).bits();
    }
    pair.bits() | other
}
