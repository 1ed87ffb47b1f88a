//! Freeing queue memory only once the device can no longer touch it.
//!
//! A queue may be dropped on its own thread while the device is still live
//! (and, if it polls, still reading the ring). Such a queue parks its DMA
//! memory here; resetting the device frees everything parked. A queue dropped
//! after the reset frees its memory at once.

use alloc::vec::Vec;

use crate::blk::queue::QueueMemory;
use crate::hal::Hal;
use crate::sync::SpinLock;

/// Shared by a device and its queues; locked only at queue drop and device reset.
pub(crate) struct Teardown<H: Hal> {
    state: SpinLock<State<H>>,
}

struct State<H: Hal> {
    quiesced: bool,
    parked: Vec<QueueMemory<H>>,
}

impl<H: Hal> Teardown<H> {
    pub(crate) fn new() -> Self {
        Teardown {
            state: SpinLock::new(State {
                quiesced: false,
                parked: Vec::new(),
            }),
        }
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
