//! The queues one device set up, as the device hands them out.

use alloc::vec::Vec;

use crate::blk::queue::BlkQueue;
use crate::hal::Hal;
use crate::transport::QueueNotifier;

/// The request queues of one device, before they are handed out
/// ([`crate::BlkDevice::take_queues`], [`crate::BlkDevice::recover`]).
/// Queue `i` is meant for CPU `i`; `crate::mq` groups them when CPUs must
/// share them ([`QueueSet::into_shared`]).
pub struct QueueSet<H: Hal, N: QueueNotifier> {
    queues: Vec<BlkQueue<H, N>>,
}

impl<H: Hal, N: QueueNotifier> QueueSet<H, N> {
    pub(crate) fn new(queues: Vec<BlkQueue<H, N>>) -> Self {
        QueueSet { queues }
    }

    /// How many queues there are.
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// True when the set holds no queue (they were taken already).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Hands out all queues, in queue-index order: queue `i` for CPU `i`.
    pub fn into_queues(self) -> Vec<BlkQueue<H, N>> {
        self.queues
    }
}

impl<H: Hal, N: QueueNotifier> IntoIterator for QueueSet<H, N> {
    type Item = BlkQueue<H, N>;
    type IntoIter = alloc::vec::IntoIter<BlkQueue<H, N>>;

    fn into_iter(self) -> Self::IntoIter {
        self.queues.into_iter()
    }
}
