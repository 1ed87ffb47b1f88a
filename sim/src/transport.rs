//! [`SimTransport`]: the driver's [`Transport`] onto a [`SimDevice`](crate::SimDevice).
//!
//! Follows the device-status protocol of VIRTIO 1.2 §2.1 and §3.1.1 and
//! reports driver mistakes as violations instead of failing.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use virtio_blk_mq::spec::{DEVICE_TYPE_BLOCK, MAX_PACKED_QUEUE_SIZE, MAX_SPLIT_QUEUE_SIZE};
use virtio_blk_mq::{
    DeviceStatus, Features, QueueAddresses, QueueNotifier, Transport, TransportError,
};

use crate::device::{lock, take_one, Shared};
use crate::queue::QueueState;
use crate::ring::RingSetup;

/// Control-plane access to a simulated device.
#[derive(Clone)]
pub struct SimTransport {
    pub(crate) shared: Arc<Shared>,
}

/// The doorbell of one simulated queue: counts the kick and wakes a sleeping
/// device thread.
#[derive(Clone)]
pub struct SimNotifier {
    shared: Arc<Shared>,
    queue: u16,
}

impl QueueNotifier for SimNotifier {
    fn notify(&self) {
        match self.shared.queues.get(usize::from(self.queue)) {
            Some(slot) if take_one(&slot.drop_kicks) => {
                slot.dropped_kicks.fetch_add(1, Ordering::Relaxed);
            }
            Some(slot) => {
                slot.kicks.fetch_add(1, Ordering::Relaxed);
                // SeqCst: pairs with the swap in `step_kicked`.
                slot.kicked.store(true, Ordering::SeqCst);
                self.shared.wake(self.queue);
            }
            None => self
                .shared
                .report(format!("kick on queue {} which does not exist", self.queue)),
        }
    }
}

impl SimTransport {
    /// Device reset (§2.1): status, features and every queue's state, stall
    /// and pending hostile acts go; `SimConfig`-level hostility stays.
    fn reset_device(&self) {
        let mut control = lock(&self.shared.control);
        self.shared.status.store(0, Ordering::SeqCst);
        self.shared.negotiated.store(0, Ordering::SeqCst);
        control.driver_features = 0;
        self.shared.reset_queues();
    }

    fn config_bytes<const N: usize>(&self, offset: usize) -> [u8; N] {
        let mut out = [0u8; N];
        match offset.checked_add(N).and_then(|end| self.shared.config_space.get(offset..end)) {
            Some(bytes) => out.copy_from_slice(bytes),
            None => self.shared.report(format!(
                "config read of {N} bytes at offset {offset} is beyond the {}-byte configuration space",
                self.shared.config_space.len()
            )),
        }
        out
    }
}

impl Transport for SimTransport {
    type Notifier = SimNotifier;

    fn device_type(&self) -> u32 {
        DEVICE_TYPE_BLOCK
    }

    fn device_features(&mut self) -> u64 {
        self.shared.config.features.bits()
    }

    fn set_driver_features(&mut self, features: u64) {
        let mut control = lock(&self.shared.control);
        if self.shared.status().contains(DeviceStatus::FEATURES_OK) {
            self.shared
                .report("driver features written after FEATURES_OK (§3.1.1); ignored".into());
            return;
        }
        control.driver_features = features;
    }

    fn status(&mut self) -> DeviceStatus {
        self.shared.status()
    }

    /// Writes the status. FEATURES_OK is only kept when the driver's features
    /// are a subset of the offered ones and include VERSION_1 (§2.2.2, §6.1),
    /// and never with `SimConfig::refuse_features_ok`; the driver must read it
    /// back (§3.1.1 step 6). Writing 0 resets.
    fn set_status(&mut self, status: DeviceStatus) {
        if status.is_empty() {
            self.reset_device();
            return;
        }
        let control = lock(&self.shared.control);
        let old = self.shared.status();
        // DEVICE_NEEDS_RESET belongs to the device: the driver can neither set nor clear it.
        let mut new =
            (status - DeviceStatus::DEVICE_NEEDS_RESET) | (old & DeviceStatus::DEVICE_NEEDS_RESET);
        let kept = DeviceStatus::ACKNOWLEDGE
            | DeviceStatus::DRIVER
            | DeviceStatus::FEATURES_OK
            | DeviceStatus::DRIVER_OK;
        if !(old & (kept - new)).is_empty() {
            self.shared.report(format!(
                "status {:#x} clears bits of {:#x} without a reset (§2.1.2)",
                status.bits(),
                old.bits()
            ));
        }
        if new.contains(DeviceStatus::FEATURES_OK) && !old.contains(DeviceStatus::FEATURES_OK) {
            let offered = self.shared.config.features.bits();
            let wanted = control.driver_features;
            if wanted & !offered != 0 {
                self.shared.report(format!(
                    "driver accepted features {:#x} the device did not offer (§2.2.2)",
                    wanted & !offered
                ));
                new.remove(DeviceStatus::FEATURES_OK);
            } else if wanted & Features::VERSION_1.bits() == 0
                || self.shared.config.refuse_features_ok
                || !Features::from_bits_retain(wanted)
                    .contains(self.shared.config.required_features & self.shared.config.features)
            {
                new.remove(DeviceStatus::FEATURES_OK);
            } else {
                self.shared.negotiated.store(wanted, Ordering::SeqCst);
            }
        }
        if new.contains(DeviceStatus::DRIVER_OK) && !new.contains(DeviceStatus::FEATURES_OK) {
            self.shared
                .report("DRIVER_OK set without accepted FEATURES_OK (§3.1.1)".into());
        }
        self.shared.status.store(new.bits(), Ordering::SeqCst);
        drop(control);
    }

    fn reset(&mut self) {
        self.reset_device();
    }

    /// 0 for ever (the configuration never changes), or with
    /// `SimConfig::unstable_config_generation` a new value on every read.
    fn config_generation(&mut self) -> u32 {
        if self.shared.config.unstable_config_generation {
            // Relaxed: a counter; it orders nothing else.
            return self
                .shared
                .generation
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_add(1);
        }
        0
    }

    fn read_config_u8(&mut self, offset: usize) -> u8 {
        self.config_bytes::<1>(offset)[0]
    }

    fn read_config_u16(&mut self, offset: usize) -> u16 {
        u16::from_le_bytes(self.config_bytes(offset))
    }

    fn read_config_u32(&mut self, offset: usize) -> u32 {
        u32::from_le_bytes(self.config_bytes(offset))
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        if queue < self.shared.config.num_queues {
            self.shared.config.max_queue_size
        } else {
            0
        }
    }

    /// Checks the size (split: a power of two, §2.7; packed: 1..=32768, §2.8)
    /// and the areas (in DMA memory, aligned), then enables the queue in the
    /// format of the negotiated RING_PACKED bit. Bad areas are a violation that
    /// leaves the queue disabled and sets DEVICE_NEEDS_RESET.
    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddresses,
    ) -> Result<(), TransportError> {
        let _control = lock(&self.shared.control);
        let slot = self
            .shared
            .queues
            .get(usize::from(queue))
            .ok_or(TransportError::NoSuchQueue(queue))?;
        let status = self.shared.status();
        // §2.6.1.2: a queue reset with `reset_queue` may be set up again while the device runs.
        let requeue = status.contains(DeviceStatus::DRIVER_OK)
            && slot.was_reset.load(Ordering::SeqCst)
            && status.contains(DeviceStatus::FEATURES_OK);
        if !requeue
            && (!status.contains(DeviceStatus::FEATURES_OK)
                || status.contains(DeviceStatus::DRIVER_OK))
        {
            self.shared.report(format!(
                "queue {queue} set up in status {:#x}; queues are set up after FEATURES_OK and before DRIVER_OK (§3.1.1)",
                status.bits()
            ));
        }
        let features = Features::from_bits_retain(self.shared.negotiated.load(Ordering::SeqCst));
        let packed = features.contains(Features::RING_PACKED);
        let max = self.shared.config.max_queue_size.min(if packed {
            MAX_PACKED_QUEUE_SIZE
        } else {
            MAX_SPLIT_QUEUE_SIZE
        });
        if size == 0 || size > max || (!packed && !size.is_power_of_two()) {
            self.shared.report(format!(
                "queue {queue}: size {size} is not accepted ({} ring, max {max})",
                if packed {
                    "packed"
                } else {
                    "split, power of two"
                }
            ));
            return Err(TransportError::BadQueueSize(size));
        }
        let mut state = slot.state.lock();
        if state.is_some() {
            return Err(TransportError::QueueInUse(queue));
        }
        let setup = RingSetup {
            packed,
            size,
            addrs,
            event_idx: features.contains(Features::EVENT_IDX),
            indirect: features.contains(Features::INDIRECT_DESC),
        };
        match QueueState::new(setup, features, &self.shared.config) {
            Ok(mut q) => {
                // A stall set before the queue was enabled holds it too;
                // `stall` writes the flag under this lock.
                q.set_stalled(slot.stalled.load(Ordering::SeqCst));
                *state = Some(q);
                slot.was_reset.store(false, Ordering::SeqCst);
            }
            Err(e) => {
                self.shared.report(format!("queue {queue}: {e}"));
                self.shared.set_needs_reset();
            }
        }
        Ok(())
    }

    fn notifier(&mut self, queue: u16) -> SimNotifier {
        SimNotifier {
            shared: self.shared.clone(),
            queue,
        }
    }

    /// Per-queue reset (VIRTIO_F_RING_RESET, §2.6.1): forgets the queue's
    /// device state (pending requests are dropped, never completed, and the
    /// device touches none of the queue's memory again), its stall and its
    /// pending hostile acts, and lets `setup_queue` enable it again, also
    /// after DRIVER_OK. Returns after any step in progress on the queue has
    /// finished. Without negotiated RING_RESET it is a driver violation and
    /// fails with `Unsupported`. Resetting a queue that is not enabled is
    /// allowed too (it may then be set up after DRIVER_OK as well).
    fn reset_queue(&mut self, queue: u16) -> Result<(), TransportError> {
        let _control = lock(&self.shared.control);
        let slot = self
            .shared
            .queues
            .get(usize::from(queue))
            .ok_or(TransportError::NoSuchQueue(queue))?;
        let negotiated = Features::from_bits_retain(self.shared.negotiated.load(Ordering::SeqCst));
        if !negotiated.contains(Features::RING_RESET) {
            self.shared.report(format!(
                "queue {queue} reset without negotiated VIRTIO_F_RING_RESET (§2.6.1)"
            ));
            return Err(TransportError::Unsupported);
        }
        // Taking the state lock waits for a step in progress; no later step
        // finds the queue's memory.
        *slot.state.lock() = None;
        slot.stalled.store(false, Ordering::SeqCst);
        slot.was_reset.store(true, Ordering::SeqCst);
        Ok(())
    }
}
