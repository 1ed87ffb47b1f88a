//! Freeing queue memory only once the device can no longer touch it.
//!
//! A queue may be dropped on its own thread while the device is still live
//! (and, if it polls, still reading the ring). Such a queue parks its DMA
//! memory here; resetting the device frees everything parked. A queue dropped
//! after the reset frees its memory at once.

use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::Backoff;

use crate::blk::queue::QueueMemory;
use crate::hal::Hal;

/// Shared by a device and its queues.
pub(crate) struct Teardown<H: Hal> {
    locked: AtomicBool,
    /// Guarded by `locked`.
    state: UnsafeCell<State<H>>,
}

struct State<H: Hal> {
    quiesced: bool,
    parked: Vec<QueueMemory<H>>,
}

// SAFETY: `state` is only reached through `with_state`, which holds the
// `locked` spin lock, so at most one thread touches it at a time; its contents
// (DMA memory owners) are Send.
unsafe impl<H: Hal> Sync for Teardown<H> {}
// SAFETY: as above; all contents are Send.
unsafe impl<H: Hal> Send for Teardown<H> {}

impl<H: Hal> Teardown<H> {
    pub(crate) fn new() -> Self {
        Teardown {
            locked: AtomicBool::new(false),
            state: UnsafeCell::new(State {
                quiesced: false,
                parked: Vec::new(),
            }),
        }
    }

    /// Runs `f` under the lock. Used only at queue drop and device reset, never per I/O.
    fn with_state<R>(&self, f: impl FnOnce(&mut State<H>) -> R) -> R {
        let backoff = Backoff::new();
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            backoff.snooze();
        }
        // SAFETY: the lock taken above gives exclusive access until released below.
        let result = f(unsafe { &mut *self.state.get() });
        self.locked.store(false, Ordering::Release);
        result
    }

    /// A queue is being dropped: free its memory now if the device is reset,
    /// else park it until the reset.
    pub(crate) fn release(&self, memory: QueueMemory<H>) {
        let free_now = self.with_state(|state| {
            if state.quiesced {
                Some(memory)
            } else {
                state.parked.push(memory);
                None
            }
        });
        drop(free_now);
    }

    /// The device has been reset: nothing it held can be reached any more.
    pub(crate) fn device_reset(&self) {
        let parked = self.with_state(|state| {
            state.quiesced = true;
            core::mem::take(&mut state.parked)
        });
        drop(parked);
    }
}
