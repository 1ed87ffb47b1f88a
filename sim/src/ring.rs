//! One interface over the two ring formats, so the queue logic is written once.

use virtio_blk_mq::QueueAddresses;

use crate::mem::{MemCheck, PackedAreas, SplitAreas};
use crate::packed::PackedRing;
use crate::request::{RawSeg, Segs};
use crate::split::SplitRing;

/// A chain taken from the ring.
#[derive(Debug)]
pub(crate) struct Popped {
    /// Split: head index. Packed: buffer id of the chain's last descriptor.
    pub(crate) id: u16,
    /// Ring slots the chain occupies (packed; 1 for split).
    pub(crate) skip: u16,
    /// Why the chain is malformed, if it is.
    pub(crate) fault: Option<String>,
}

/// What [`ChainRing::take_three`] found at the ring's next position.
#[derive(Debug)]
pub(crate) enum Next {
    /// Nothing available.
    Empty,
    /// The common chain, taken: exactly three buffers, each described
    /// plainly (a direct chain, or a lone indirect descriptor whose table
    /// holds them), with nothing the general walk would call a fault. Its
    /// buffers are what [`ChainRing::pop`] would have appended.
    Three {
        id: u16,
        skip: u16,
        segs: [RawSeg; 3],
    },
    /// Something else (another shape, a malformed chain, a ring fault):
    /// nothing was taken, [`ChainRing::pop`] takes it and says what it is.
    Other,
}

/// What serving chains in ring order needs of a ring layout, so that loop
/// is written once and compiled once per layout, with no `match` on the
/// layout per chain.
pub(crate) trait ChainRing {
    /// True when the driver has made a chain available that the device has
    /// not taken yet (or says so in a way `pop` will report as a fault).
    fn any_available(&mut self) -> bool;
    /// Takes the next available chain, its buffers appended to `out`; `Err`
    /// is a fault that leaves the ring unusable.
    fn pop(&mut self, mem: &mut MemCheck, out: &mut Segs) -> Result<Option<Popped>, String>;
    /// Takes the next chain if it is the common one ([`Next::Three`]), with
    /// every check [`Self::pop`] makes on it; for any other chain it takes
    /// nothing and leaves it to `pop` ([`Next::Other`]). Without `look`, a
    /// split ring that has taken every entry up to the `avail.idx` it last
    /// loaded answers [`Next::Empty`] rather than load it again: a step
    /// serves what its look showed, and the next step looks again.
    fn take_three(&mut self, mem: &mut MemCheck, look: bool) -> Next;
    /// Writes the used element of the chain `id` (`skip` slots) that had
    /// `len` bytes written; visible to the driver after `publish`.
    fn push_used(&mut self, id: u16, skip: u16, len: u32);
    /// Publishes the batch; true when a used-buffer notification is due.
    fn publish(&mut self) -> bool;
    /// See [`Ring::enable_kicks`].
    fn enable_kicks(&mut self);
    /// See [`Ring::disable_kicks`].
    fn disable_kicks(&mut self);
}

/// The device side of a split or packed ring.
pub(crate) enum Ring {
    Split(SplitRing),
    Packed(PackedRing),
}

/// Which ring format and options a queue was set up with.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingSetup {
    pub(crate) packed: bool,
    pub(crate) size: u16,
    pub(crate) addrs: QueueAddresses,
    pub(crate) event_idx: bool,
    pub(crate) indirect: bool,
}

impl RingSetup {
    /// Checks the areas and builds the ring.
    pub(crate) fn build(&self, mem: &mut MemCheck) -> Result<Ring, String> {
        let a = self.addrs;
        Ok(if self.packed {
            let areas = PackedAreas::new(mem, self.size, a.desc, a.driver, a.device)?;
            Ring::Packed(PackedRing::new(
                areas,
                self.size,
                self.event_idx,
                self.indirect,
            ))
        } else {
            let areas = SplitAreas::new(mem, self.size, a.desc, a.driver, a.device)?;
            Ring::Split(SplitRing::new(
                areas,
                self.size,
                self.event_idx,
                self.indirect,
            ))
        })
    }

    /// Re-checks the areas of `ring` (after DMA memory was freed somewhere).
    pub(crate) fn recheck(&self, mem: &mut MemCheck, ring: &mut Ring) -> Result<(), String> {
        let a = self.addrs;
        match ring {
            Ring::Split(r) => {
                r.replace_areas(SplitAreas::new(mem, self.size, a.desc, a.driver, a.device)?)
            }
            Ring::Packed(r) => r.replace_areas(PackedAreas::new(
                mem, self.size, a.desc, a.driver, a.device,
            )?),
        }
        Ok(())
    }
}

impl Ring {
    #[inline]
    pub(crate) fn pop(
        &mut self,
        mem: &mut MemCheck,
        out: &mut Segs,
    ) -> Result<Option<Popped>, String> {
        match self {
            Ring::Split(r) => r.pop(mem, out),
            Ring::Packed(r) => r.pop(mem, out),
        }
    }

    #[inline]
    pub(crate) fn push_used(&mut self, id: u16, skip: u16, len: u32) {
        match self {
            Ring::Split(r) => r.push_used(id, len),
            Ring::Packed(r) => r.push_used(id, skip, len),
        }
    }

    /// Publishes the batch; true when a used-buffer notification is due.
    pub(crate) fn publish(&mut self) -> bool {
        match self {
            Ring::Split(r) => r.publish(),
            Ring::Packed(r) => r.publish(),
        }
    }

    pub(crate) fn has_available(&self) -> bool {
        match self {
            Ring::Split(r) => r.has_available(),
            Ring::Packed(r) => r.has_available(),
        }
    }

    pub(crate) fn enable_kicks(&mut self) {
        match self {
            Ring::Split(r) => r.enable_kicks(),
            Ring::Packed(r) => r.enable_kicks(),
        }
    }

    pub(crate) fn disable_kicks(&mut self) {
        match self {
            Ring::Split(r) => r.disable_kicks(),
            Ring::Packed(r) => r.disable_kicks(),
        }
    }
}
