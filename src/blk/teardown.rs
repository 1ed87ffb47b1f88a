//! What a device shares with the queues of one setup: whether the device has
//! failed as a whole, and the memory of queues dropped before it was reset.
//!
//! A queue may be dropped on its own thread while the device is still live
//! (and, if it polls, still reading the ring). Such a queue parks its DMA
//! memory here; resetting the device frees everything parked. A queue dropped
//! after the reset frees its memory at once.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU8, Ordering};

use crossbeam_utils::CachePadded;

use crate::blk::queue::QueueMemory;
use crate::hal::Hal;
use crate::ring::DeviceFault;
use crate::sync::SpinLock;

const HEALTHY: u8 = 0;
const NEEDS_RESET: u8 = 1;
const RESET: u8 = 2;

/// Shared by a device and its queues; locked only at queue drop and device reset.
pub(crate) struct Teardown<H: Hal> {
    /// A device-wide failure every queue must see. Every poll reads it and it
    /// is written at most twice, so the line stays shared in every cache;
    /// padded away from the lock, which is written.
    failure: CachePadded<AtomicU8>,
    state: SpinLock<State<H>>,
}

struct State<H: Hal> {
    quiesced: bool,
    parked: Vec<QueueMemory<H>>,
}

impl<H: Hal> Teardown<H> {
    pub(crate) fn new() -> Self {
        Teardown {
            failure: CachePadded::new(AtomicU8::new(HEALTHY)),
            state: SpinLock::new(State {
                quiesced: false,
                parked: Vec::new(),
            }),
        }
    }

    /// Marks the whole device failed; every queue breaks at its next poll.
    /// The first reason stays.
    pub(crate) fn fail(&self, fault: DeviceFault) {
        let code = match fault {
            DeviceFault::DeviceReset => RESET,
            _ => NEEDS_RESET,
        };
        // Relaxed: the flag orders nothing else; queues only need to see it eventually.
        let _ = self
            .failure
            .compare_exchange(HEALTHY, code, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The device-wide failure, if any.
    #[inline]
    pub(crate) fn failure(&self) -> Option<DeviceFault> {
        match self.failure.load(Ordering::Relaxed) {
            HEALTHY => None,
            RESET => Some(DeviceFault::DeviceReset),
            _ => Some(DeviceFault::NeedsReset),
        }
    }

    /// Whether the device has been reset since these queues were set up.
    pub(crate) fn quiesced(&self) -> bool {
        self.state.lock().quiesced
    }

    /// A queue is being dropped: free its memory now if the device is reset,
    /// else park it until the reset.
    pub(crate) fn release(&self, memory: QueueMemory<H>) {
        let mut state = self.state.lock();
        if state.quiesced {
            drop(state);
            drop(memory);
        } else {
            state.parked.push(memory);
        }
    }

    /// The device has been reset: nothing it held can be reached any more.
    pub(crate) fn device_reset(&self) {
        let parked = {
            let mut state = self.state.lock();
            state.quiesced = true;
            core::mem::take(&mut state.parked)
        };
        drop(parked);
    }
}
