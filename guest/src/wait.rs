//! Used-buffer notifications reaching a queue's owner: the device's
//! interrupt handler marks the queue and wakes its CPU; the owner sleeps in
//! `hlt` through [`QueueWaiter`], the driver's `IrqWait`.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use virtio_blk_mq::mq::IrqWait;

use crate::cpu::{self, MAX_CPUS};
use crate::{health, smp, time};

/// How long one wait sleeps before giving up (the heartbeat timer wakes the
/// CPU to notice): a lost notification is counted, not a hang.
const WAIT_SLICE_NS: u64 = 100_000_000;

struct QueueIrq {
    pending: AtomicBool,
    owner: AtomicUsize,
    notifications: AtomicU64,
    timeouts: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const IDLE: QueueIrq = QueueIrq {
    pending: AtomicBool::new(false),
    owner: AtomicUsize::new(0),
    notifications: AtomicU64::new(0),
    timeouts: AtomicU64::new(0),
};
static QUEUES: [QueueIrq; MAX_CPUS] = [IDLE; MAX_CPUS];

/// Queue `queue` is owned by CPU `cpu`.
pub fn set_owner(queue: usize, cpu: usize) {
    QUEUES[queue].owner.store(cpu, Ordering::Relaxed);
}

/// From an interrupt handler: queue `queue` has completions.
pub fn notify(queue: usize) {
    let irq = &QUEUES[queue];
    irq.notifications.fetch_add(1, Ordering::Relaxed);
    // Release pairs with the waiter's Acquire swap: the device's used-ring
    // writes that preceded the interrupt are visible once it sees the flag.
    irq.pending.store(true, Ordering::Release);
    let owner = irq.owner.load(Ordering::Relaxed);
    if owner != cpu::index() {
        smp::wake(owner);
    }
}

/// Wakes the owner of queue `queue` from its sleep without marking a
/// notification (it looks for itself why it was woken).
pub fn wake_owner(queue: usize) {
    let owner = QUEUES[queue].owner.load(Ordering::Relaxed);
    if owner != cpu::index() {
        smp::wake(owner);
    }
}

/// From a shared line's handler (INTx, virtio-mmio): every queue may have completions.
pub fn notify_all(queues: usize) {
    for queue in 0..queues {
        notify(queue);
    }
}

/// Notifications delivered to `queue` and waits that timed out.
pub fn counts(queue: usize) -> (u64, u64) {
    let irq = &QUEUES[queue];
    (
        irq.notifications.load(Ordering::Relaxed),
        irq.timeouts.load(Ordering::Relaxed),
    )
}

/// The owner's side of queue `queue`'s notification.
pub struct QueueWaiter(pub usize);

impl IrqWait for QueueWaiter {
    fn wait(&self) {
        let irq = &QUEUES[self.0];
        let deadline = time::now_ns() + WAIT_SLICE_NS;
        smp::wait_until(|| {
            if irq.pending.swap(false, Ordering::Acquire) {
                return Some(());
            }
            // The device changed its configuration (maybe its status): the
            // owner looks (`health::Watch`) instead of sleeping on.
            if health::config_pending() {
                return Some(());
            }
            if time::now_ns() >= deadline {
                irq.timeouts.fetch_add(1, Ordering::Relaxed);
                return Some(());
            }
            None
        });
    }
}
