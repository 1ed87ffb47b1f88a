//! One request queue, owned by one CPU: submit, commit, poll.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::mem::ManuallyDrop;

use crossbeam_utils::CachePadded;

use crate::blk::config::{Config, DeviceInfo, Mode, Rekick};
use crate::blk::slab::Slab;
use crate::blk::teardown::Teardown;
use crate::error::Error;
use crate::hal::{DmaBuffer, Hal, PhysAddr};
use crate::ring::{DeviceFault, Ring, RingKind, Used, UsedNotifications};
use crate::spec::{blk_status, req_type};
use crate::transport::QueueNotifier;

/// The request types (§5.2.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Read sectors into the buffer.
    Read,
    /// Write the buffer to sectors.
    Write,
    /// Flush the device's volatile write cache.
    Flush,
    /// Read the 20-byte device id string.
    GetId,
    /// Discard ranges.
    Discard,
    /// Write zeroes over ranges.
    WriteZeroes,
    /// Securely erase ranges.
    SecureErase,
}

impl Op {
    pub(super) fn wire_type(self) -> u32 {
        match self {
            Op::Read => req_type::IN,
            Op::Write => req_type::OUT,
            Op::Flush => req_type::FLUSH,
            Op::GetId => req_type::GET_ID,
            Op::Discard => req_type::DISCARD,
            Op::WriteZeroes => req_type::WRITE_ZEROES,
            Op::SecureErase => req_type::SECURE_ERASE,
        }
    }

    /// The device writes the data buffers (otherwise it reads them).
    pub(super) fn device_writes_data(self) -> bool {
        matches!(self, Op::Read | Op::GetId)
    }

    /// The request changes the disk: refused on a read-only device.
    pub(super) fn modifies_disk(self) -> bool {
        matches!(
            self,
            Op::Write | Op::Discard | Op::WriteZeroes | Op::SecureErase
        )
    }
}

/// A finished request.
#[derive(Debug)]
pub struct Completion<H: Hal> {
    /// The caller's tag, as submitted.
    pub tag: u64,
    /// What the request was.
    pub op: Op,
    /// Ok, or why it failed.
    pub result: Result<(), Error>,
    /// The buffer moved in at submission, given back. `None` for requests
    /// without one, and for requests failed because the device broke: their
    /// buffers stay with the queue until the device is reset, since a broken
    /// device may still write them.
    pub buffer: Option<DmaBuffer<H>>,
}

/// A submission refused before it reached the ring; the buffer comes back.
pub struct Rejected<H: Hal> {
    /// Why.
    pub error: Error,
    /// The caller's buffer, untouched.
    pub buffer: DmaBuffer<H>,
}

impl<H: Hal> fmt::Debug for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rejected")
            .field("error", &self.error)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl<H: Hal> fmt::Display for Rejected<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

/// One data buffer of a raw request, by device address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawSegment {
    /// Device address.
    pub addr: PhysAddr,
    /// Length in bytes.
    pub len: u32,
}

/// Counters kept by the queue's owner; no atomics, no sharing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests placed in the ring.
    pub submitted: u64,
    /// Requests completed (any result).
    pub completed: u64,
    /// Commits that published or decided a doorbell for anything.
    pub commits: u64,
    /// Hand-overs to the device: the last piece of each commit, and the
    /// pieces a long batch went out in before it
    /// ([`crate::Config::publish_batch`]).
    pub publishes: u64,
    /// Doorbells rung: commits the device asked to hear about.
    pub kicks: u64,
    /// `poll` calls that found nothing.
    pub empty_polls: u64,
    /// Times the owner slept for a used-buffer notification and was woken.
    pub interrupts: u64,
    /// Doorbells rung again because published requests made no progress
    /// (lost-kick recovery, see [`Rekick`]); not counted in `kicks`.
    pub rekicks: u64,
    /// Re-kicks not rung because the device had suppressed doorbells at the
    /// time: it was busy with the ring, not waiting for a doorbell.
    pub rekicks_declined: u64,
    /// Completions whose used length exceeded the writable bytes posted.
    /// Not fatal: the driver never uses the length (the status byte says how
    /// a request went and the caller's buffer has the size it asked for), so
    /// the lie harms nothing, and real devices have been seen to tell it.
    /// Logged once per queue.
    pub bad_lengths: u64,
}

/// Watches a queue for published requests that make no progress (see [`Rekick`]).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stall {
    /// `stats.completed` when the poll path last looked: a change is progress.
    pub(super) poll_mark: u64,
    /// Empty polls since the last progress or re-kick.
    pub(super) idle_polls: u64,
    /// `stats.completed` at the previous tick.
    pub(super) tick_mark: u64,
    /// Ticks without progress since the last progress or re-kick.
    pub(super) idle_ticks: u32,
    /// Re-kicks since the last progress.
    pub(super) rekicks: u32,
}

/// Per-slot driver state: who asked, what they handed over, what the device may write.
pub(super) struct Slot<H: Hal> {
    pub(super) tag: u64,
    pub(super) op: Op,
    /// Writable bytes posted (data the device writes plus the status byte).
    pub(super) writable: u32,
    pub(super) buffer: Option<DmaBuffer<H>>,
    pub(super) in_flight: bool,
    /// The publish that hands (or handed) the request over, counted in
    /// `QueueStats::publishes`: a completion the device sends before it is
    /// for a request it never saw.
    pub(super) batch: u64,
    /// The queue clock when the request was placed (see `check_timeouts`).
    pub(super) placed_at: u32,
    /// Reported overdue already, so each request is reported once.
    pub(super) overdue_reported: bool,
    /// Used elements with a `seq` below this were visible before the request
    /// was published, so none of them can be its completion (0: none were).
    pub(super) horizon: u64,
}

impl<H: Hal> Slot<H> {
    /// Takes the request out of flight, failed because the device broke or
    /// was reset; `buffer` is its buffer when the device can no longer reach it.
    pub(super) fn fail(&mut self, buffer: Option<DmaBuffer<H>>) -> Completion<H> {
        self.in_flight = false;
        Completion {
            tag: self.tag,
            op: self.op,
            result: Err(Error::DeviceBroken),
            buffer,
        }
    }
}

/// The DMA memory a queue owns, released through [`Teardown`].
pub(crate) struct QueueMemory<H: Hal> {
    pub(super) ring: Ring<H>,
    pub(super) slab: Slab<H>,
    pub(super) slots: Vec<Slot<H>>,
}

pub(super) struct Inner<H: Hal, N: QueueNotifier> {
    pub(super) memory: ManuallyDrop<QueueMemory<H>>,
    pub(super) notifier: N,
    pub(super) info: DeviceInfo,
    pub(super) index: u16,
    pub(super) mode: Mode,
    pub(super) fault: Option<DeviceFault>,
    /// Slot ids placed since the last publish (capacity: the ring size, so
    /// pushing never allocates).
    pub(super) unpublished: Vec<u16>,
    /// [`crate::Config::publish_batch`], or `usize::MAX` for never.
    pub(super) publish_batch: usize,
    pub(super) stats: QueueStats,
    pub(super) teardown: Arc<Teardown<H>>,
    /// Ticks of the request clock (see `check_timeouts`).
    pub(super) clock: u32,
    /// The memory was handed back after a reset; the drop must not release it again.
    pub(super) reclaimed: bool,
    /// Longest chain the ring can ever take (fixed at setup).
    pub(super) max_chain: usize,
    pub(super) rekick: Rekick,
    pub(super) stall: Stall,
}

/// One virtio-blk request queue. `Send`, not `Sync`: exactly one CPU owns it.
///
/// Requests are placed with the submit methods (invisible to the device),
/// published with [`BlkQueue::commit`], and collected with [`BlkQueue::poll`].
///
/// A queue moves to the CPU that will own it:
/// ```
/// fn moves_to_its_owner<T: Send>() {}
/// moves_to_its_owner::<virtio_blk_mq::BlkQueue<virtio_blk_sim::SimHal, virtio_blk_sim::SimNotifier>>();
/// ```
/// but cannot be shared between CPUs without a lock
/// ([`crate::mq::SharedQueue`] is that lock):
/// ```compile_fail
/// fn shared_between_cpus<T: Sync>() {}
/// shared_between_cpus::<virtio_blk_mq::BlkQueue<virtio_blk_sim::SimHal, virtio_blk_sim::SimNotifier>>();
/// ```
pub struct BlkQueue<H: Hal, N: QueueNotifier> {
    // Padded so no two queues, and nothing else, share the owner's hot lines.
    pub(super) inner: CachePadded<Inner<H, N>>,
    _not_sync: core::marker::PhantomData<core::cell::Cell<()>>,
}

impl<H: Hal, N: QueueNotifier> BlkQueue<H, N> {
    pub(crate) fn new(
        hal: &H,
        index: u16,
        mut ring: Ring<H>,
        notifier: N,
        info: DeviceInfo,
        config: &Config,
        teardown: Arc<Teardown<H>>,
    ) -> Result<Self, Error> {
        let mode = config.mode;
        let size = ring.size();
        let max_chain = ring.max_chain();
        // The requests the queue holds, as `Config::max_requests` says.
        let capacity = config.max_requests.unwrap_or(size / 2).min(size);
        let slab = Slab::new(hal, size)?;
        let slots = (0..size)
            .map(|_| Slot {
                tag: 0,
                op: Op::Flush,
                writable: 0,
                buffer: None,
                in_flight: false,
                batch: 0,
                placed_at: 0,
                overdue_reported: false,
                horizon: 0,
            })
            .collect();
        // Hybrid polls while busy and arms only before it sleeps.
        ring.set_used_notifications(match mode {
            Mode::Poll | Mode::Hybrid => UsedNotifications::Off,
            Mode::Interrupt => UsedNotifications::On,
        });
        Ok(BlkQueue {
            inner: CachePadded::new(Inner {
                memory: ManuallyDrop::new(QueueMemory { ring, slab, slots }),
                notifier,
                info,
                index,
                mode,
                fault: None,
                unpublished: Vec::with_capacity(usize::from(size)),
                publish_batch: match config.publish_batch {
                    Some(0) => usize::MAX,
                    Some(batch) => usize::from(batch),
                    None => usize::from(capacity / 2).max(1),
                },
                stats: QueueStats::default(),
                teardown,
                clock: 0,
                reclaimed: false,
                max_chain,
                rekick: config.rekick,
                stall: Stall::default(),
            }),
            _not_sync: core::marker::PhantomData,
        })
    }

    /// Queue index on the device.
    pub fn index(&self) -> u16 {
        self.inner.index
    }

    /// What the device offers, as negotiated.
    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    /// Ring layout of this queue.
    pub fn ring_kind(&self) -> RingKind {
        self.inner.memory.ring.kind()
    }

    /// Entries in the ring.
    pub fn size(&self) -> u16 {
        self.inner.memory.ring.size()
    }

    /// Completion mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Requests submitted and not yet completed. A broken queue has completed
    /// them all (with [`Error::DeviceBroken`]), so it reports 0.
    pub fn in_flight(&self) -> u16 {
        if self.inner.fault.is_some() {
            return 0;
        }
        self.inner.memory.ring.in_flight()
    }

    /// Counters.
    pub fn stats(&self) -> QueueStats {
        self.inner.stats
    }

    /// The protocol violation that disabled this queue, if any.
    pub fn fault(&self) -> Option<DeviceFault> {
        self.inner.fault
    }

    /// Publishes everything submitted since the last commit, ringing the
    /// doorbell only if the device asked for it. Returns whether it rang.
    #[inline]
    pub fn commit(&mut self) -> bool {
        self.note_publish();
        let inner = &mut *self.inner;
        let Some(wanted) = inner.memory.ring.commit() else {
            return false;
        };
        inner.stats.commits += 1;
        if !wanted {
            return false;
        }
        inner.stats.kicks += 1;
        inner.notifier.notify();
        true
    }

    /// Hands every request placed since the last publish to the device,
    /// leaving the doorbell to `commit` (see [`crate::Config::publish_batch`]).
    #[inline(always)]
    pub(super) fn publish(&mut self) {
        if self.note_publish() {
            self.inner.memory.ring.publish();
        }
    }

    /// The queue's side of a publish (the ring's is the caller's): false
    /// when nothing waits to be published.
    #[inline(always)]
    fn note_publish(&mut self) -> bool {
        let inner = &mut *self.inner;
        if inner.unpublished.is_empty() {
            return false;
        }
        let memory = &mut *inner.memory;
        // Before publishing: used elements already visible were written
        // before the device could see these requests.
        if let Some(horizon) = memory.ring.used_horizon() {
            for &id in &inner.unpublished {
                memory.slots[usize::from(id)].horizon = horizon;
            }
        }
        inner.unpublished.clear();
        inner.stats.publishes += 1;
        true
    }

    /// Asks the device for a used-buffer notification at the next completion
    /// (Interrupt and Hybrid modes, after draining). Returns true when a
    /// completion is already waiting: poll again instead of sleeping.
    pub fn arm_notifications(&mut self) -> bool {
        self.inner.memory.ring.arm_and_check()
    }

    /// Turns used-buffer notifications off again (Hybrid, after waking).
    pub fn disarm_notifications(&mut self) {
        self.inner
            .memory
            .ring
            .set_used_notifications(UsedNotifications::Off);
    }

    /// Whether a completion is waiting, without taking it.
    #[inline]
    pub fn completions_pending(&self) -> bool {
        if self.inner.fault.is_some() {
            return false;
        }
        // A device-wide failure is something for poll() to report.
        self.inner.teardown.failure().is_some() || self.inner.memory.ring.has_used()
    }

    /// Whether the device this queue came from has been reset since.
    pub(crate) fn teardown_quiesced(&self) -> bool {
        self.inner.teardown.quiesced()
    }

    /// Whether this queue belongs to the setup that shares `teardown`.
    pub(crate) fn belongs_to(&self, teardown: &Arc<Teardown<H>>) -> bool {
        Arc::ptr_eq(&self.inner.teardown, teardown)
    }

    /// Counts a wake-up by a used-buffer notification (see [`crate::mq::wait_for_completions`]).
    pub(crate) fn note_interrupt(&mut self) {
        self.inner.stats.interrupts += 1;
    }

    /// Hands up to `budget` completions to `on_complete`; returns how many.
    ///
    /// If the device breaks the protocol, the queue is disabled: every request
    /// in flight completes with [`Error::DeviceBroken`] in this call, and later
    /// submissions fail at once.
    #[inline]
    pub fn poll(&mut self, budget: usize, mut on_complete: impl FnMut(Completion<H>)) -> usize {
        let mut done = 0;
        if self.inner.fault.is_none() {
            if let Some(fault) = self.inner.teardown.failure() {
                done += self.break_queue(fault, &mut on_complete);
            }
        }
        // A broken queue (before this call, or by the device-wide failure
        // just above) takes nothing more from the ring.
        while done < budget && self.inner.fault.is_none() {
            let fault = match self.inner.memory.ring.pop_used() {
                Ok(None) => break,
                Ok(Some(used)) => match self.finish(used) {
                    Ok(completion) => {
                        on_complete(completion);
                        done += 1;
                        continue;
                    }
                    Err(fault) => fault,
                },
                Err(fault) => fault,
            };
            done += self.break_queue(fault, &mut on_complete);
            break;
        }
        self.inner.stats.completed += done as u64;
        if done == 0 {
            self.idle_poll();
        }
        done
    }

    /// Counts an empty poll; after [`Rekick::empty_polls`] of them in a row
    /// with published requests in flight (doubling after each re-kick),
    /// rings the doorbell again.
    #[inline]
    fn idle_poll(&mut self) {
        let inner = &mut *self.inner;
        inner.stats.empty_polls += 1;
        let threshold = u64::from(inner.rekick.empty_polls);
        let stall = &mut inner.stall;
        if threshold == 0 {
            return;
        }
        if stall.poll_mark != inner.stats.completed {
            stall.poll_mark = inner.stats.completed;
            stall.idle_polls = 0;
            stall.rekicks = 0;
        }
        // Only requests the device was given can be waiting for a kick.
        if usize::from(inner.memory.ring.in_flight()) <= inner.unpublished.len() {
            stall.idle_polls = 0;
            return;
        }
        stall.idle_polls += 1;
        if stall.idle_polls >= threshold << stall.rekicks {
            self.rekick("empty polls");
        }
    }

    /// Rings the doorbell once more for requests that make no progress,
    /// within [`Rekick::MAX_PER_STALL`].
    #[cold]
    pub(super) fn rekick(&mut self, after: &str) {
        let inner = &mut *self.inner;
        let stall = &mut inner.stall;
        stall.idle_polls = 0;
        stall.idle_ticks = 0;
        if stall.rekicks >= Rekick::MAX_PER_STALL || inner.fault.is_some() {
            return;
        }
        // A device that suppressed doorbells is busy, not waiting: ringing
        // would be noise (QEMU under TCG is often that slow to take requests).
        if !inner.memory.ring.device_awaits_kick() {
            inner.stats.rekicks_declined += 1;
            return;
        }
        stall.rekicks += 1;
        inner.stats.rekicks += 1;
        if stall.rekicks == 1 {
            log::warn!(
                "virtio-blk queue {}: {} requests in flight made no progress over many {after}; ringing the doorbell again",
                inner.index,
                inner.memory.ring.in_flight()
            );
        }
        inner.notifier.notify();
    }

    /// Turns a validated used element into a completion.
    #[inline]
    fn finish(&mut self, used: Used) -> Result<Completion<H>, DeviceFault> {
        let inner = &mut *self.inner;
        let memory = &mut *inner.memory;
        let slot = &mut memory.slots[usize::from(used.id)];
        if !slot.in_flight {
            return Err(DeviceFault::IdNotInFlight(used.id));
        }
        if slot.batch > inner.stats.publishes || used.seq < slot.horizon {
            return Err(DeviceFault::CompletedBeforePublished(used.id));
        }
        if used.len > slot.writable {
            inner.stats.bad_lengths += 1;
            if inner.stats.bad_lengths == 1 {
                log::warn!(
                    "virtio-blk queue {}: request {}: used length {} exceeds the {} writable bytes posted; ignored (counted in bad_lengths)",
                    inner.index,
                    used.id,
                    used.len,
                    slot.writable
                );
            }
        }
        let result = match memory.slab.status(used.id) {
            blk_status::OK => Ok(()),
            blk_status::IOERR => Err(Error::IoError),
            blk_status::UNSUPP => Err(Error::Unsupported),
            status => {
                return Err(DeviceFault::BadStatus {
                    id: used.id,
                    status,
                })
            }
        };
        slot.in_flight = false;
        Ok(Completion {
            tag: slot.tag,
            op: slot.op,
            result,
            buffer: slot.buffer.take(),
        })
    }

    /// Fences the queue off after `fault`: logs once, fails every request in
    /// flight (including one the ring already released but whose completion
    /// was bad) with `DeviceBroken`, and keeps their buffers until the device
    /// is reset.
    #[cold]
    fn break_queue(
        &mut self,
        fault: DeviceFault,
        on_complete: &mut impl FnMut(Completion<H>),
    ) -> usize {
        let inner = &mut *self.inner;
        log::error!("virtio-blk queue {}: {fault}; queue disabled", inner.index);
        inner.fault = Some(fault);
        let mut failed = 0;
        for slot in inner.memory.slots.iter_mut().filter(|slot| slot.in_flight) {
            on_complete(slot.fail(None));
            failed += 1;
        }
        failed
    }
}

impl<H: Hal, N: QueueNotifier> fmt::Debug for BlkQueue<H, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlkQueue")
            .field("index", &self.index())
            .field("ring", &self.ring_kind())
            .field("size", &self.size())
            .field("in_flight", &self.in_flight())
            .field("fault", &self.fault())
            .finish()
    }
}

impl<H: Hal, N: QueueNotifier> Drop for BlkQueue<H, N> {
    fn drop(&mut self) {
        if self.inner.reclaimed {
            return;
        }
        // SAFETY: `memory` is taken at most once: here, or in `reclaim`, which
        // sets `reclaimed` so this branch is not reached; it is never used again.
        let memory = unsafe { ManuallyDrop::take(&mut self.inner.memory) };
        self.inner.teardown.release(memory);
    }
}
