//! Read-only diagnostics of a queue (see [`crate::snapshot`]).

use crate::blk::queue::BlkQueue;
use crate::hal::Hal;
use crate::ring::Ring;
use crate::snapshot::RingSnapshot;
use crate::transport::QueueNotifier;

impl<H: Hal, N: QueueNotifier> BlkQueue<H, N> {
    /// The ring as it is now: the driver's positions and both sides' shared
    /// fields, for a stall report. Changes nothing; not for the I/O path.
    pub fn debug_snapshot(&self) -> RingSnapshot {
        match &self.inner.memory.ring {
            Ring::Split(ring) => RingSnapshot::Split(ring.snapshot()),
            Ring::Packed(ring) => RingSnapshot::Packed(ring.snapshot()),
        }
    }
}
