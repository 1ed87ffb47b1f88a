//! Getting a queue's requests and buffers back once the device has let go of
//! them, and noticing requests the device sits on for too long.

use core::mem::ManuallyDrop;

use crate::blk::queue::{BlkQueue, Completion, Op};
use crate::hal::{DmaBuffer, Hal};
use crate::transport::QueueNotifier;

/// What a recovery hands back for one request of a retired queue.
#[derive(Debug)]
pub enum Recovered<H: Hal> {
    /// A request still in flight: it completes now, with
    /// [`crate::Error::DeviceBroken`] and its buffer, which the reset device can no
    /// longer reach.
    Completed(Completion<H>),
    /// A request that already completed with [`crate::Error::DeviceBroken`] without
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
    ///
    /// It also drives the tick half of lost-kick recovery
    /// ([`crate::Rekick::ticks`]): after that many ticks in which a published
    /// request was in flight throughout and none completed, it rings the
    /// doorbell once more.
    pub fn check_timeouts(&mut self, limit: u32, mut on_overdue: impl FnMut(Overdue)) -> usize {
        let inner = &mut *self.inner;
        inner.clock = inner.clock.wrapping_add(1);
        let now = inner.clock;
        let publishes = inner.stats.publishes;
        let mut reported = 0;
        // Age of the oldest request the device was given.
        let mut oldest_published = 0;
        let in_flight = inner.memory.slots.iter_mut().filter(|slot| slot.in_flight);
        for slot in in_flight {
            let ticks = now.wrapping_sub(slot.placed_at);
            if slot.batch <= publishes {
                oldest_published = oldest_published.max(ticks);
            }
            if !slot.overdue_reported && ticks >= limit {
                slot.overdue_reported = true;
                on_overdue(Overdue {
                    tag: slot.tag,
                    op: slot.op,
                    ticks,
                });
                reported += 1;
            }
        }
        let completed = inner.stats.completed;
        let stall = &mut inner.stall;
        let progressed = stall.tick_mark != completed;
        stall.tick_mark = completed;
        if progressed {
            stall.idle_ticks = 0;
            stall.rekicks = 0;
        } else if inner.rekick.ticks != 0 && oldest_published >= 2 {
            // In flight for a whole tick (placed before the previous one).
            stall.idle_ticks += 1;
            if u64::from(stall.idle_ticks) >= u64::from(inner.rekick.ticks) << stall.rekicks {
                self.rekick("ticks");
            }
        }
        reported
    }

    /// Retires the queue after a per-queue reset (VIRTIO_F_RING_RESET), which
    /// the driver does not take as proof that the device has let go: every
    /// request still in flight completes with [`crate::Error::DeviceBroken`]
    /// without its buffer, and the queue's memory, with every buffer it
    /// holds, stays parked until the next full device reset frees it. A
    /// device may still have requests in its backend that complete into
    /// that memory after the queue reset (QEMU's virtio-blk, for one, has no
    /// handler for it), while a full reset is the one every device must
    /// honour.
    pub(crate) fn retire_after_queue_reset(mut self, on_recovered: &mut impl FnMut(Recovered<H>)) {
        let inner = &mut *self.inner;
        for slot in inner.memory.slots.iter_mut().filter(|slot| slot.in_flight) {
            inner.stats.completed += 1;
            on_recovered(Recovered::Completed(slot.fail(None)));
        }
        // Dropping the queue parks its memory (the device is not reset).
    }

    /// Retires the queue once the device can no longer touch its memory (the
    /// device was reset): every request still in flight
    /// completes with [`crate::Error::DeviceBroken`] and its buffer, every buffer kept
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
                inner.stats.completed += 1;
                on_recovered(Recovered::Completed(slot.fail(buffer)));
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
