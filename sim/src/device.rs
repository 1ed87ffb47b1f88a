//! [`SimDevice`]: the shared state behind the transport, the inline stepping
//! API and the device threads.

use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use virtio_blk_mq::spec::blk_config;
use virtio_blk_mq::{DeviceStatus, Features, RingKind};

use crate::config::SimConfig;
use crate::disk::Disk;
use crate::hostile::Hostile;
use crate::lock::StateLock;
use crate::queue::{Kicks, QueueState, Round, StepArgs, StepOutcome};
use crate::threads::{SimThreads, ThreadMode};
use crate::transport::SimTransport;

/// Locks `m`, ignoring poisoning (a panicking test thread must not hide state).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters of one queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Available-buffer notifications (doorbell writes) received.
    pub kicks: u64,
    /// Used-buffer notifications sent.
    pub used_notifications: u64,
    /// Requests completed.
    pub completed: u64,
    /// Doorbell writes lost on the way ([`SimDevice::drop_next_kick`]).
    pub dropped_kicks: u64,
    /// Used-buffer notifications lost on the way ([`SimDevice::drop_next_interrupt`]).
    pub dropped_interrupts: u64,
}

/// A sleeping device thread's wake-up state, guarded by its mutex.
#[derive(Default)]
pub(crate) struct Wake {
    /// A kick arrived since the thread last looked.
    pub(crate) woken: bool,
    /// The thread waits on the condvar: a kick must notify it.
    pub(crate) sleeping: bool,
}

/// A used-buffer notification handler.
pub(crate) type Callback = Arc<dyn Fn() + Send + Sync>;

/// Per-queue shared state.
pub(crate) struct QueueSlot {
    /// Device-side ring state; `None` while the queue is not enabled.
    pub(crate) state: StateLock<Option<QueueState>>,
    pub(crate) kicks: AtomicU64,
    pub(crate) used_notifications: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) callback: Mutex<Option<Callback>>,
    /// Set by a kick, cleared by the sleeping device thread that sees it.
    pub(crate) wake: Mutex<Wake>,
    pub(crate) wake_cv: Condvar,
    /// Takes requests but completes none ([`SimDevice::stall`]); cleared by resets.
    pub(crate) stalled: AtomicBool,
    /// Reset by `reset_queue` since it was last set up: it may be set up
    /// again after DRIVER_OK (§2.6.1).
    pub(crate) was_reset: AtomicBool,
    /// A kick arrived since the last [`SimDevice::step_kicked`].
    pub(crate) kicked: AtomicBool,
    /// Kicks / interrupts still to lose, and how many were lost.
    pub(crate) drop_kicks: AtomicU32,
    pub(crate) dropped_kicks: AtomicU64,
    pub(crate) drop_interrupts: AtomicU32,
    pub(crate) dropped_interrupts: AtomicU64,
}

/// Takes one from `pending` if it is not 0; true when it did.
pub(crate) fn take_one(pending: &AtomicU32) -> bool {
    // Relaxed: a counter of faults to inject; it orders no other memory.
    pending
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

impl QueueSlot {
    fn new() -> QueueSlot {
        QueueSlot {
            state: StateLock::new(None),
            kicks: AtomicU64::new(0),
            used_notifications: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            callback: Mutex::new(None),
            wake: Mutex::new(Wake::default()),
            wake_cv: Condvar::new(),
            stalled: AtomicBool::new(false),
            was_reset: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
            drop_kicks: AtomicU32::new(0),
            dropped_kicks: AtomicU64::new(0),
            drop_interrupts: AtomicU32::new(0),
            dropped_interrupts: AtomicU64::new(0),
        }
    }
}

/// Control-plane state written through the transport.
#[derive(Default)]
pub(crate) struct Control {
    pub(crate) driver_features: u64,
}

/// Most violations kept; later ones are counted in the log only.
const MAX_VIOLATIONS: usize = 1024;

/// Everything a device and its transports and threads share.
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) config_space: [u8; blk_config::SIZE],
    pub(crate) disk: Disk,
    /// Device status (§2.1); written under `control`.
    pub(crate) status: AtomicU8,
    /// Negotiated features, valid once FEATURES_OK was accepted.
    pub(crate) negotiated: AtomicU64,
    pub(crate) control: Mutex<Control>,
    pub(crate) queues: Vec<QueueSlot>,
    /// Device threads running (inline stepping has none).
    pub(crate) device_threads: AtomicUsize,
    violations: Mutex<Vec<String>>,
    /// Configuration generation handed out by an unstable device.
    pub(crate) generation: AtomicU32,
    /// Completions left before DEVICE_NEEDS_RESET (`needs_reset_after`).
    budget: AtomicU64,
    hostile_log: Mutex<Vec<(u16, Hostile)>>,
}

impl Shared {
    /// Records a driver protocol violation.
    pub(crate) fn report(&self, msg: String) {
        log::warn!("virtio-blk-sim: driver violation: {msg}");
        let mut v = lock(&self.violations);
        if v.len() < MAX_VIOLATIONS {
            v.push(msg);
        }
    }

    pub(crate) fn status(&self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.status.load(Ordering::SeqCst))
    }

    /// Sets DEVICE_NEEDS_RESET (§2.1.1): the device stops processing until reset.
    pub(crate) fn set_needs_reset(&self) {
        self.status
            .fetch_or(DeviceStatus::DEVICE_NEEDS_RESET.bits(), Ordering::SeqCst);
    }

    /// Forgets every queue's device state, stall and pending hostile acts,
    /// and restarts the `needs_reset_after` count (device reset, §2.1.1).
    /// The caller holds `control`.
    pub(crate) fn reset_queues(&self) {
        for slot in &self.queues {
            *slot.state.lock() = None;
            slot.stalled.store(false, Ordering::SeqCst);
            slot.was_reset.store(false, Ordering::SeqCst);
        }
        self.budget.store(
            self.config.needs_reset_after.unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    /// Steps queue `queue` once; see [`SimDevice::step`].
    #[inline(always)]
    pub(crate) fn step_queue(&self, queue: u16, kicks: Kicks, drain: bool) -> StepOutcome {
        let Some(slot) = self.queues.get(usize::from(queue)) else {
            return StepOutcome::default();
        };
        let status = self.status();
        // §2.1.2 / §3.1: no buffers are used before DRIVER_OK, none after a fault.
        if !status.contains(DeviceStatus::DRIVER_OK)
            || status.intersects(DeviceStatus::DEVICE_NEEDS_RESET | DeviceStatus::FAILED)
        {
            return StepOutcome::default();
        }
        let mut guard = slot.state.lock();
        let Some(state) = guard.as_mut() else {
            return StepOutcome::default();
        };
        // `in_order_ready` covers the stall and the completion budget too.
        if state.in_order_ready() {
            let done = match state.idle_round(kicks) {
                Round::Idle => return StepOutcome::default(),
                Round::Work => state.step_in_order(self, queue, kicks),
                Round::Stale => state.step_in_order_after_free(self, queue, kicks),
            };
            drop(guard);
            // No budget to spend (that takes the general path), and a ring
            // fault already set DEVICE_NEEDS_RESET.
            self.after_step(slot, done.completed, done.notify);
            return StepOutcome {
                completed: done.completed,
                notify: done.notify,
                ..StepOutcome::default()
            };
        }
        let stalled = slot.stalled.load(Ordering::SeqCst);
        let mut report = |m: String| self.report(format!("queue {queue}: {m}"));
        let outcome = self.step_general(state, queue, kicks, drain, stalled, &mut report);
        drop(guard);
        let spent =
            self.config.needs_reset_after.is_some() && self.budget.load(Ordering::Relaxed) == 0;
        if outcome.broke || spent {
            self.set_needs_reset();
        }
        self.after_step(slot, outcome.completed, outcome.notify);
        outcome
    }

    /// What every step does after releasing the queue: counts the
    /// completions and sends the notification if one is due (or loses it).
    #[inline(always)]
    fn after_step(&self, slot: &QueueSlot, completed: u32, notify: bool) {
        if completed > 0 {
            slot.completed
                .fetch_add(u64::from(completed), Ordering::Relaxed);
        }
        if notify && take_one(&slot.drop_interrupts) {
            slot.dropped_interrupts.fetch_add(1, Ordering::Relaxed);
        } else if notify {
            slot.used_notifications.fetch_add(1, Ordering::Relaxed);
            // Called outside the queue lock, so a handler may step the device.
            let callback = lock(&slot.callback).clone();
            if let Some(f) = callback {
                f();
            }
        }
    }

    /// [`Self::step_queue`]'s step when it cannot take the in-order path:
    /// a stall, a completion budget, hostile acts, held-back requests.
    #[inline(never)]
    fn step_general(
        &self,
        state: &mut QueueState,
        queue: u16,
        kicks: Kicks,
        drain: bool,
        stalled: bool,
        report: &mut dyn FnMut(String),
    ) -> StepOutcome {
        let mut performed = |act: Hostile| {
            log::info!("virtio-blk-sim: queue {queue}: hostile act {act:?} performed");
            lock(&self.hostile_log).push((queue, act));
        };
        let budget = self.config.needs_reset_after.map(|_| &self.budget);
        let args = StepArgs {
            kicks,
            drain,
            stalled,
            budget,
            performed: &mut performed,
        };
        state.step(&state.ctx(&self.config, &self.disk), args, report)
    }

    /// After kicks were re-enabled: full fence, then re-check the ring
    /// (DESIGN.md §3 rule 4 from the device's side). True when buffers raced in.
    pub(crate) fn recheck_available(&self, queue: u16) -> bool {
        fence(Ordering::SeqCst);
        self.queues
            .get(usize::from(queue))
            .and_then(|slot| slot.state.lock().as_ref().map(QueueState::has_available))
            .unwrap_or(false)
    }

    /// Wakes a device thread sleeping on `queue`. A kick costs a doorbell
    /// write on real hardware, not a system call: with no device thread, or
    /// none asleep, it stays cheap (a thread that has not slept yet steps
    /// the ring before it sleeps, so it cannot miss what the kick announced).
    pub(crate) fn wake(&self, queue: u16) {
        if self.device_threads.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Some(slot) = self.queues.get(usize::from(queue)) {
            let mut wake = lock(&slot.wake);
            wake.woken = true;
            let sleeping = wake.sleeping;
            drop(wake);
            if sleeping {
                slot.wake_cv.notify_all();
            }
        }
    }
}

/// A simulated virtio-blk device. Cloning is cheap and shares the device.
#[derive(Clone)]
pub struct SimDevice {
    pub(crate) shared: Arc<Shared>,
}

impl SimDevice {
    /// Creates a device; nothing runs until the driver sets it up through
    /// [`SimDevice::transport`] and then [`SimDevice::step`] or
    /// [`SimDevice::spawn`] drives it.
    ///
    /// # Panics
    /// If `config` cannot be built: a [`DiskKind::Ram`](crate::DiskKind::Ram)
    /// disk whose `capacity_sectors * 512` bytes overflow or cannot be
    /// allocated (huge capacities need [`DiskKind::Null`](crate::DiskKind::Null)),
    /// or a `config_patches` entry beyond the configuration space. These are
    /// mistakes of the test that builds the device; nothing a driver does can
    /// make the device panic.
    pub fn new(config: SimConfig) -> SimDevice {
        let config_space = config
            .config_space()
            .unwrap_or_else(|e| panic!("virtio-blk-sim: {e}"));
        let disk = Disk::new(config.disk, config.capacity_sectors)
            .unwrap_or_else(|e| panic!("virtio-blk-sim: {e}"));
        let queues = (0..config.num_queues).map(|_| QueueSlot::new()).collect();
        SimDevice {
            shared: Arc::new(Shared {
                config_space,
                disk,
                budget: AtomicU64::new(config.needs_reset_after.unwrap_or(u64::MAX)),
                config,
                status: AtomicU8::new(0),
                negotiated: AtomicU64::new(0),
                control: Mutex::new(Control::default()),
                queues,
                device_threads: AtomicUsize::new(0),
                violations: Mutex::new(Vec::new()),
                generation: AtomicU32::new(0),
                hostile_log: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A transport for the driver (any number may exist; they share the device).
    pub fn transport(&self) -> SimTransport {
        SimTransport {
            shared: self.shared.clone(),
        }
    }

    /// Serves queue `queue` inline: takes every available request, completes
    /// them (in-order mode: all, in ring order; shuffled: a random non-empty
    /// subset of all pending ones, in random order), re-enables kicks (§2.7.10:
    /// `avail_event` = next index with EVENT_IDX, else `used.flags` = 0;
    /// §2.8.10: DESC at the next position with EVENT_IDX, else ENABLE) and sends
    /// a used-buffer notification if the driver asked for one. Returns how many
    /// requests it completed. Does nothing before DRIVER_OK or after
    /// DEVICE_NEEDS_RESET. Queued [`Hostile`] acts are performed after the
    /// requests are taken and before the honest completions; a stalled queue
    /// ([`SimDevice::stall`]) only takes requests.
    pub fn step(&self, queue: u16) -> usize {
        self.shared
            .step_queue(queue, Kicks::Enable, false)
            .completed as usize
    }

    /// Serves queue `queue` once as a polling device thread
    /// ([`ThreadMode::Poll`](crate::ThreadMode::Poll)) does on each round:
    /// like [`SimDevice::step`], but it leaves kicks disabled. Returns how
    /// many requests it completed. Lets a benchmark count the instructions
    /// of the threaded device's work on one thread.
    pub fn poll_step(&self, queue: u16) -> usize {
        self.shared
            .step_queue(queue, Kicks::Disable, false)
            .completed as usize
    }

    /// Steps queue `queue` like [`SimDevice::step`] only if a kick arrived
    /// since the last call (and forgets it): a device that sleeps between
    /// kicks, stepped inline. Returns how many requests it completed.
    pub fn step_kicked(&self, queue: u16) -> usize {
        let kicked = self
            .shared
            .queues
            .get(usize::from(queue))
            .is_some_and(|slot| slot.kicked.swap(false, Ordering::SeqCst));
        if kicked {
            self.step(queue)
        } else {
            0
        }
    }

    /// Loses the next doorbell write on `queue`: the driver rings, the device
    /// never hears it (not counted in `kicks`, not seen by
    /// [`SimDevice::step_kicked`], no sleeping device thread woken). Each
    /// call loses one more.
    pub fn drop_next_kick(&self, queue: u16) {
        if let Some(slot) = self.shared.queues.get(usize::from(queue)) {
            slot.drop_kicks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Loses the next used-buffer notification on `queue`: the device decides
    /// to send it, the driver's callback is never called (not counted in
    /// `used_notifications`). Each call loses one more.
    pub fn drop_next_interrupt(&self, queue: u16) {
        if let Some(slot) = self.shared.queues.get(usize::from(queue)) {
            slot.drop_interrupts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Like [`SimDevice::step`], but completes every pending request, including held-back ones.
    pub fn drain(&self, queue: u16) -> usize {
        self.shared.step_queue(queue, Kicks::Enable, true).completed as usize
    }

    /// Counters of queue `queue` (zeros for a queue the device does not have).
    /// They count across resets.
    pub fn stats(&self, queue: u16) -> QueueStats {
        self.shared
            .queues
            .get(usize::from(queue))
            .map(|q| QueueStats {
                kicks: q.kicks.load(Ordering::Relaxed),
                used_notifications: q.used_notifications.load(Ordering::Relaxed),
                completed: q.completed.load(Ordering::Relaxed),
                dropped_kicks: q.dropped_kicks.load(Ordering::Relaxed),
                dropped_interrupts: q.dropped_interrupts.load(Ordering::Relaxed),
            })
            .unwrap_or_default()
    }

    /// Driver protocol violations seen so far (at most 1024 are kept).
    pub fn violations(&self) -> Vec<String> {
        lock(&self.shared.violations).clone()
    }

    /// Copies disk contents from `sector` into `buf` (zeros for a null disk).
    ///
    /// # Panics
    /// If the range lies beyond the capacity of a RAM disk.
    pub fn read_disk(&self, sector: u64, buf: &mut [u8]) {
        self.shared.disk.read(sector, buf)
    }

    /// Copies `buf` to the disk at `sector` (dropped for a null disk).
    ///
    /// # Panics
    /// If the range lies beyond the capacity of a RAM disk.
    pub fn write_disk(&self, sector: u64, buf: &[u8]) {
        self.shared.disk.write(sector, buf)
    }

    /// The features accepted with FEATURES_OK (empty before that).
    pub fn negotiated_features(&self) -> Features {
        Features::from_bits_retain(self.shared.negotiated.load(Ordering::SeqCst))
    }

    /// Calls `f` for each used-buffer notification ("interrupt") on `queue`.
    pub fn set_used_notify_callback(&self, queue: u16, f: Box<dyn Fn() + Send + Sync>) {
        if let Some(slot) = self.shared.queues.get(usize::from(queue)) {
            *lock(&slot.callback) = Some(Arc::from(f));
        }
    }

    /// Sets DEVICE_NEEDS_RESET, as a device that hit an internal error would
    /// (§2.1.1); the device processes nothing more until it is reset.
    pub fn set_needs_reset(&self) {
        self.shared.set_needs_reset()
    }

    /// Queues hostile act `act` on queue `queue`; the queue's next step
    /// performs it (see [`Hostile`] for when, and what becomes of the queue).
    /// `Err` says why it was refused: the device has no such queue, the queue
    /// is not enabled, or the act does not exist for the queue's ring format.
    /// Acts still queued are forgotten by a device or queue reset.
    pub fn inject_hostile(&self, queue: u16, act: Hostile) -> Result<(), String> {
        let slot = self
            .shared
            .queues
            .get(usize::from(queue))
            .ok_or_else(|| format!("the device has no queue {queue}"))?;
        {
            let mut guard = slot.state.lock();
            let state = guard.as_mut().ok_or_else(|| {
                format!("queue {queue} is not enabled; set it up before injecting {act:?}")
            })?;
            let ring = state.ring_kind();
            if !act.applies_to(ring) {
                let name = match ring {
                    RingKind::Split => "split",
                    RingKind::Packed => "packed",
                };
                return Err(format!(
                    "{act:?} does not apply to queue {queue}: it uses a {name} ring"
                ));
            }
            state.push_act(act);
        }
        // A sleeping device thread performs it now.
        self.shared.wake(queue);
        Ok(())
    }

    /// Hostile acts performed so far as `(queue, act)`, in order (kept across resets).
    pub fn hostile_log(&self) -> Vec<(u16, Hostile)> {
        lock(&self.shared.hostile_log).clone()
    }

    /// Stalls queue `queue` (`true`) or lets it run again (`false`). A stalled
    /// queue takes available requests but completes none, on inline steps and
    /// device threads alike, and performs no hostile acts; un-stalling
    /// completes the held requests at the next step. A device reset or a
    /// per-queue reset clears the stall. No effect on a queue the device does
    /// not have.
    pub fn stall(&self, queue: u16, stalled: bool) {
        if let Some(slot) = self.shared.queues.get(usize::from(queue)) {
            {
                // Under the queue's lock, so the state's copy (which the
                // step tests with the rest of `general`) never disagrees
                // with the flag at a step.
                let mut state = slot.state.lock();
                slot.stalled.store(stalled, Ordering::SeqCst);
                if let Some(state) = state.as_mut() {
                    state.set_stalled(stalled);
                }
            }
            if !stalled {
                self.shared.wake(queue);
            }
        }
    }

    /// Starts one device thread per queue enabled now; see [`ThreadMode`].
    pub fn spawn(&self, mode: ThreadMode) -> SimThreads {
        SimThreads::start(self.shared.clone(), mode, None)
    }

    /// Like [`SimDevice::spawn`], with queue `q`'s thread pinned to CPU
    /// `(first_cpu + q) % CPUs`: benchmarks keep the device threads off the
    /// CPUs their driver threads spin on, instead of leaving the scheduler to
    /// stack a busy-polling driver and its device on one CPU.
    pub fn spawn_pinned(&self, mode: ThreadMode, first_cpu: usize) -> SimThreads {
        SimThreads::start(self.shared.clone(), mode, Some(first_cpu))
    }
}
