//! Device threads: one per enabled queue, polling or sleeping until kicked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_blk_mq::mq::pin_current_thread;

use crate::device::{lock, Shared};
use crate::queue::Kicks;

/// How a device thread waits for work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadMode {
    /// Busy-polls the ring and tells the driver not to kick (split: `used.flags`
    /// NO_NOTIFY, or with EVENT_IDX an `avail_event` kept just behind the
    /// device; packed: device event flags DISABLE).
    Poll,
    /// Sleeps until kicked. Before sleeping it re-enables kicks, fences and
    /// re-checks the ring, so no kick is lost (DESIGN.md §3 rule 4).
    Sleep,
}

/// Running device threads; [`SimThreads::stop`] or dropping stops and joins them.
pub struct SimThreads {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    handles: Vec<JoinHandle<()>>,
}

impl SimThreads {
    pub(crate) fn start(
        shared: Arc<Shared>,
        mode: ThreadMode,
        first_cpu: Option<usize>,
    ) -> SimThreads {
        let stop = Arc::new(AtomicBool::new(false));
        // Counted before any thread runs, so no kick is skipped as "inline".
        let enabled = (0..shared.queues.len())
            .filter(|&q| shared.queues[q].state.lock().is_some())
            .count();
        shared.device_threads.fetch_add(enabled, Ordering::AcqRel);
        let handles: Vec<JoinHandle<()>> = (0..shared.queues.len() as u16)
            .filter(|&q| shared.queues[usize::from(q)].state.lock().is_some())
            .filter_map(|q| {
                let (shared, stop) = (shared.clone(), stop.clone());
                std::thread::Builder::new()
                    .name(format!("virtio-blk-sim-q{q}"))
                    .spawn(move || {
                        if let Some(first) = first_cpu {
                            pin_current_thread(first + usize::from(q));
                        }
                        match mode {
                            ThreadMode::Poll => poll_loop(&shared, &stop, q),
                            ThreadMode::Sleep => sleep_loop(&shared, &stop, q),
                        }
                    })
                    .map_err(|e| log::error!("virtio-blk-sim: cannot start a device thread: {e}"))
                    .ok()
            })
            .collect();
        shared
            .device_threads
            .fetch_sub(enabled - handles.len(), Ordering::AcqRel);
        SimThreads {
            shared,
            stop,
            handles,
        }
    }

    /// Number of device threads running.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// True when no queue was enabled at spawn time.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Stops and joins the threads.
    pub fn stop(self) {
        drop(self)
    }
}

impl Drop for SimThreads {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for q in 0..self.shared.queues.len() {
            self.shared.wake(q as u16);
        }
        let joined = self.handles.len();
        for h in self.handles.drain(..) {
            if h.join().is_err() {
                log::error!("virtio-blk-sim: a device thread panicked");
            }
        }
        self.shared
            .device_threads
            .fetch_sub(joined, Ordering::AcqRel);
    }
}

fn poll_loop(shared: &Shared, stop: &AtomicBool, queue: u16) {
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let out = shared.step_queue(queue, Kicks::Disable, false);
        if out.completed > 0 || out.pending > 0 {
            idle = 0;
            continue;
        }
        idle = idle.wrapping_add(1);
        if idle & 63 == 0 {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

fn sleep_loop(shared: &Shared, stop: &AtomicBool, queue: u16) {
    let Some(slot) = shared.queues.get(usize::from(queue)) else {
        return;
    };
    while !stop.load(Ordering::SeqCst) {
        // The step leaves kicks enabled.
        let out = shared.step_queue(queue, Kicks::Enable, false);
        if out.completed > 0 || out.pending > 0 {
            continue;
        }
        // Kicks are enabled; fence and re-check so a buffer published before
        // the driver could see that is not left waiting for a kick.
        if shared.recheck_available(queue) {
            continue;
        }
        let mut wake = lock(&slot.wake);
        while !wake.woken && !stop.load(Ordering::SeqCst) {
            wake.sleeping = true;
            wake = slot
                .wake_cv
                .wait(wake)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        wake.sleeping = false;
        wake.woken = false;
    }
}
