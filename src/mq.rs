//! The queue set and the polling engine: one queue per CPU, each owned by one
//! thread, busy-polled by default; an explicit shared path behind a lock when
//! there are fewer queues than CPUs; the hybrid poll-then-sleep fallback.

use alloc::vec::Vec;

use crate::blk::{BlkQueue, Mode};
use crate::hal::Hal;
use crate::sync::{SpinLock, SpinLockGuard};
use crate::transport::QueueNotifier;

/// The request queues of one device, before they are handed out.
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

    /// For fewer queues than CPUs: wraps every queue in a lock so CPU `c`
    /// can use queue `c % len` ([`queue_for_cpu`]). This is the explicit
    /// slower path; with a queue per CPU, use [`QueueSet::into_queues`].
    pub fn into_shared(self) -> Vec<SharedQueue<H, N>> {
        self.queues.into_iter().map(SharedQueue::new).collect()
    }
}

impl<H: Hal, N: QueueNotifier> IntoIterator for QueueSet<H, N> {
    type Item = BlkQueue<H, N>;
    type IntoIter = alloc::vec::IntoIter<BlkQueue<H, N>>;

    fn into_iter(self) -> Self::IntoIter {
        self.queues.into_iter()
    }
}

/// Which of `queues` shared queues CPU `cpu` uses.
pub fn queue_for_cpu(cpu: usize, queues: usize) -> usize {
    cpu % queues.max(1)
}

/// A queue several CPUs use, one at a time (`Sync`).
pub struct SharedQueue<H: Hal, N: QueueNotifier> {
    queue: SpinLock<BlkQueue<H, N>>,
}

impl<H: Hal, N: QueueNotifier> SharedQueue<H, N> {
    /// Wraps `queue`.
    pub fn new(queue: BlkQueue<H, N>) -> Self {
        SharedQueue {
            queue: SpinLock::new(queue),
        }
    }

    /// Exclusive use of the queue until the guard is dropped. Hold it across
    /// a whole batch (submit, commit, poll), not per request.
    pub fn lock(&self) -> SpinLockGuard<'_, BlkQueue<H, N>> {
        self.queue.lock()
    }

    /// The queue back, for an owner that no longer shares it.
    pub fn into_inner(self) -> BlkQueue<H, N> {
        self.queue.into_inner()
    }
}

/// How a queue's owner sleeps until its used-buffer notification arrives.
///
/// # Contract for implementors
/// `wait` returns once a notification arrived after the previous `wait`
/// returned (a notification that came before `wait` was called must make it
/// return at once, or the wake-up is lost). Returning early is allowed: the
/// caller re-checks the ring.
pub trait IrqWait {
    /// Blocks until the queue's notification arrives (or returns spuriously).
    fn wait(&self);
}

/// Waits until `queue` has a completion to poll, the way its [`Mode`] says:
///
/// - `Poll`: spins up to `spin_budget` times.
/// - `Interrupt`: arms, re-checks (rule 4), sleeps in `waiter`.
/// - `Hybrid`: spins up to `spin_budget` times; then arms, re-checks, sleeps,
///   and disarms again once woken, so a busy queue stays interrupt-free.
///
/// Requests placed but not yet committed are published first
/// ([`BlkQueue::commit`]): the device cannot complete what it cannot see, so
/// waiting for them without publishing would never end.
///
/// Returns whether a completion is pending. Returns at once when nothing is
/// in flight or the queue is broken, so it never waits for what cannot come.
pub fn wait_for_completions<H, N, W>(
    queue: &mut BlkQueue<H, N>,
    spin_budget: u32,
    waiter: &W,
) -> bool
where
    H: Hal,
    N: QueueNotifier,
    W: IrqWait + ?Sized,
{
    if queue.in_flight() == 0 || queue.fault().is_some() {
        return queue.completions_pending();
    }
    queue.commit();
    if queue.mode() != Mode::Interrupt {
        for _ in 0..spin_budget {
            if queue.completions_pending() {
                return true;
            }
            core::hint::spin_loop();
        }
        if queue.mode() == Mode::Poll {
            return queue.completions_pending();
        }
    }
    // Rule 4: arm, fence, re-check; only sleep when nothing raced in.
    if !queue.arm_notifications() {
        waiter.wait();
        queue.note_interrupt();
    }
    if queue.mode() == Mode::Hybrid {
        queue.disarm_notifications();
    }
    queue.completions_pending()
}

#[cfg(feature = "std")]
pub use self::std_support::{available_cpus, pin_current_thread, run_pinned, IrqEvent};

#[cfg(feature = "std")]
mod std_support {
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;
    use std::vec::Vec;

    use super::IrqWait;
    use crate::blk::BlkQueue;
    use crate::hal::Hal;
    use crate::transport::QueueNotifier;

    /// How long one `wait` sleeps before returning anyway; a bound, so that a
    /// lost notification shows up as a counted timeout instead of a hang.
    const WAIT_SLICE: Duration = Duration::from_millis(100);

    /// A used-buffer notification as a std event: the device side (an IRQ
    /// handler, the sim's callback) calls [`IrqEvent::signal`].
    #[derive(Debug)]
    pub struct IrqEvent {
        pending: Mutex<bool>,
        wake: Condvar,
        slice: Duration,
        timeouts: Mutex<u64>,
    }

    impl Default for IrqEvent {
        fn default() -> Self {
            Self::with_slice(WAIT_SLICE)
        }
    }

    impl IrqEvent {
        /// A new event, not signalled.
        pub fn new() -> Self {
            Self::default()
        }

        /// A new event whose waits give up after `slice` (and count a timeout).
        pub fn with_slice(slice: Duration) -> Self {
            IrqEvent {
                pending: Mutex::new(false),
                wake: Condvar::new(),
                slice,
                timeouts: Mutex::new(0),
            }
        }

        /// Records a notification and wakes the waiter.
        pub fn signal(&self) {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            *pending = true;
            self.wake.notify_one();
        }

        /// Waits that ended by timing out, with no notification.
        pub fn timeouts(&self) -> u64 {
            *self.timeouts.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    impl IrqWait for IrqEvent {
        fn wait(&self) {
            let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            let (mut pending, result) = self
                .wake
                .wait_timeout_while(pending, self.slice, |pending| !*pending)
                .unwrap_or_else(|e| e.into_inner());
            *pending = false;
            if result.timed_out() {
                *self.timeouts.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            }
        }
    }

    /// CPUs this process may run on.
    pub fn available_cpus() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Pins the calling thread to `cpu` (modulo the CPUs available); false if
    /// the system refused.
    pub fn pin_current_thread(cpu: usize) -> bool {
        let cpu = cpu % available_cpus();
        // SAFETY: cpu_set_t is plain data for which all-zero is the empty set;
        // CPU_SET writes inside it (cpu < CPU_SETSIZE for any machine we run
        // on), and sched_setaffinity only reads the set we pass with its size.
        unsafe {
            let mut set: libc::cpu_set_t = core::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, core::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
    }

    /// Runs `job(i, queue)` for every queue on a thread of its own pinned to
    /// CPU `i`, and returns each queue with its job's result, in order.
    pub fn run_pinned<H, N, R, F>(queues: Vec<BlkQueue<H, N>>, job: F) -> Vec<(BlkQueue<H, N>, R)>
    where
        H: Hal,
        N: QueueNotifier,
        R: Send,
        F: Fn(usize, &mut BlkQueue<H, N>) -> R + Sync,
    {
        let job = &job;
        std::thread::scope(|scope| {
            let threads: Vec<_> = queues
                .into_iter()
                .enumerate()
                .map(|(cpu, mut queue)| {
                    scope.spawn(move || {
                        pin_current_thread(cpu);
                        let result = job(cpu, &mut queue);
                        (queue, result)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }
}
