//! Getting a queue's requests and buffers back once the device has let go of
//! them, and noticing requests the device sits on for too long.

use core::mem::ManuallyDrop;

use crate::blk::queue::{BlkQueue, Completion, Op};
use crate::error::Error;
use crate::hal::{DmaBuffer, Hal};
use crate::transport::QueueNotifier;

/// What a recovery hands back for one request of a retired queue.
#[derive(Debug)]
pub enum Recovered<H: Hal> {
    /// A request still in flight: it completes now, with
    /// [`Error::DeviceBroken`] and its buffer, which the reset device can no
    /// longer reach.
    Completed(Completion<H>),
    /// A request that already completed with [`Error::DeviceBroken`] without
    /// its buffer (the broken device could still write it then): the buffer,
    /// safe now that the device has let go of the queue.
    Buffer {
        /// The request's tag.
        tag: u64,
        /// The buffer moved in at submission.
        buffer: DmaBuffer<H>,
    },
}

/// A request in flight for longer than the bound given to
/// [`BlkQueue::check_timeouts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overdue {
    /// The request's tag.
    pub tag: u64,
    /// What it is.
    pub op: Op,
    /// Clock ticks since it was placed.
    pub ticks: u32,
}

impl<H: Hal, N: QueueNotifier> BlkQueue<H, N> {
    /// Advances the queue's request clock by one tick and reports, once
    /// each, the requests in flight for `limit` ticks or more. Returns how
    /// many it reported.
    ///
    /// The driver has no clock of its own: the owner calls this at a steady
    /// pace (say every 10 ms of polling) and picks `limit` in those ticks. A
    /// virtio request cannot be withdrawn from a live device, so an overdue
    /// request stays in flight; the owner decides whether to keep waiting or
    /// to recover the device ([`crate::BlkDevice::recover`]). The scan walks
    /// every slot, so it belongs on a timer, not on each poll.
    pub fn check_timeouts(&mut self, limit: u32, mut on_overdue: impl FnMut(Overdue)) -> usize {
        let inner = &mut *self.inner;
        inner.clock = inner.clock.wrapping_add(1);
        let now = inner.clock;
        let mut reported = 0;
        let overdue = inner
            .memory
            .slots
            .iter_mut()
            .filter(|slot| slot.in_flight && !slot.overdue_reported);
        for slot in overdue {
            let ticks = now.wrapping_sub(slot.placed_at);
            if ticks >= limit {
                slot.overdue_reported = true;
                on_overdue(Overdue {
                    tag: slot.tag,
                    op: slot.op,
                    ticks,
                });
                reported += 1;
            }
        }
        reported
    }

    /// Retires the queue once the device can no longer touch its memory (the
    /// device or this queue was reset): every request still in flight
    /// completes with [`Error::DeviceBroken`] and its buffer, every buffer kept
    /// back from an earlier failure comes back, and the ring memory is freed.
    pub(crate) fn reclaim(mut self, on_recovered: &mut impl FnMut(Recovered<H>)) {
        let inner = &mut *self.inner;
        inner.reclaimed = true;
        // SAFETY: `reclaimed` is set, so `Drop` will not take `memory` again,
        // and nothing below touches `inner.memory` after this.
        let mut memory = unsafe { ManuallyDrop::take(&mut inner.memory) };
        for slot in memory.slots.iter_mut() {
            let buffer = slot.buffer.take();
            if slot.in_flight {
                slot.in_flight = false;
                inner.stats.completed += 1;
                on_recovered(Recovered::Completed(Completion {
                    tag: slot.tag,
                    op: slot.op,
                    result: Err(Error::DeviceBroken),
                    buffer,
                }));
            } else if let Some(buffer) = buffer {
                on_recovered(Recovered::Buffer {
                    tag: slot.tag,
                    buffer,
                });
            }
        }
        drop(memory);
    }
}
