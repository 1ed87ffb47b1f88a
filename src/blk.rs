//! The virtio-blk device: feature negotiation, configuration, queue setup
//! (VIRTIO 1.2 §3.1.1, §5.2.5).

mod config;
mod diagnose;
mod queue;
mod queue_set;
mod recovery;
mod slab;
mod submit;
mod teardown;

use alloc::sync::Arc;
use alloc::vec::Vec;

pub use config::{Config, DeviceInfo, Mode, RangeLimits, Rekick, MAX_DATA_SEGMENTS};
pub use queue::{BlkQueue, Completion, Op, QueueStats, RawSegment, Rejected};
pub use queue_set::QueueSet;
pub use recovery::{Overdue, Recovered};

use crate::error::Error;
use crate::hal::Hal;
use crate::packed_ring::PackedRing;
use crate::ring::{IndirectUse, Ring, RingKind};
use crate::spec::{DeviceStatus, Features, DEVICE_TYPE_BLOCK};
use crate::split_ring::SplitRing;
use crate::transport::Transport;
use teardown::Teardown;

/// Why [`BlkDevice::recover_queue`] did not give a fresh queue back.
pub struct NotRecovered<H: Hal, N: crate::transport::QueueNotifier> {
    /// Why.
    pub error: Error,
    /// The queue, when it was not reset (hand it to [`BlkDevice::recover`]).
    pub queue: Option<BlkQueue<H, N>>,
}

impl<H: Hal, N: crate::transport::QueueNotifier> core::fmt::Debug for NotRecovered<H, N> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NotRecovered")
            .field("error", &self.error)
            .field("queue", &self.queue)
            .finish()
    }
}

/// Queue size used when the config does not name one (the device's maximum
/// may be far larger than any useful queue depth).
const DEFAULT_QUEUE_SIZE: u16 = 256;

/// A negotiated, running virtio-blk device. Keeps the control plane; the
/// request queues are handed out to their owners.
///
/// Dropping the device resets it. Queue memory is freed only once the device
/// is reset, whichever of the two is dropped first.
pub struct BlkDevice<H: Hal, T: Transport> {
    hal: H,
    transport: T,
    config: Config,
    info: DeviceInfo,
    queues: Vec<BlkQueue<H, T::Notifier>>,
    /// Shared with the queues of the current setup; replaced by a recovery.
    teardown: Arc<Teardown<H>>,
}

impl<H: Hal, T: Transport> BlkDevice<H, T> {
    /// Resets the device, negotiates features, reads the configuration and
    /// sets up `min(config.queues, num_queues)` request queues.
    pub fn new(hal: H, mut transport: T, config: Config) -> Result<Self, Error> {
        let device_type = transport.device_type();
        if device_type != DEVICE_TYPE_BLOCK {
            return Err(Error::WrongDeviceType(device_type));
        }
        transport.reset();
        let teardown = Arc::new(Teardown::new());
        match Self::initialise(&hal, &mut transport, &config, &teardown) {
            Ok((info, queues)) => Ok(BlkDevice {
                hal,
                transport,
                config,
                info,
                queues,
                teardown,
            }),
            Err(error) => {
                Self::give_up(&mut transport, &teardown);
                Err(error)
            }
        }
    }

    /// Marks the device FAILED and resets it, before the partly built queues
    /// free their memory.
    fn give_up(transport: &mut T, teardown: &Teardown<H>) {
        let status = transport.status();
        transport.set_status(status | DeviceStatus::FAILED);
        transport.reset();
        teardown.device_reset();
    }

    #[allow(clippy::type_complexity)]
    fn initialise(
        hal: &H,
        transport: &mut T,
        config: &Config,
        teardown: &Arc<Teardown<H>>,
    ) -> Result<(DeviceInfo, Vec<BlkQueue<H, T::Notifier>>), Error> {
        let mut status = DeviceStatus::ACKNOWLEDGE;
        transport.set_status(status);
        status |= DeviceStatus::DRIVER;
        transport.set_status(status);

        let offered = Features::from_bits_retain(transport.device_features());
        if !offered.contains(Features::VERSION_1) {
            return Err(Error::LegacyDevice);
        }
        let accepted = offered & Features::SUPPORTED & (config.features | Features::VERSION_1);
        transport.set_driver_features(accepted.bits());
        status |= DeviceStatus::FEATURES_OK;
        transport.set_status(status);
        if !transport.status().contains(DeviceStatus::FEATURES_OK) {
            return Err(Error::FeaturesRejected);
        }

        let info = config::read_device_info(transport, accepted, config)?;
        let wanted = config.queues.clamp(1, info.device_queues);
        let mut queues = Vec::with_capacity(usize::from(wanted));
        for index in 0..wanted {
            let Some(queue) = Self::setup_queue(hal, transport, &info, config, index, teardown)?
            else {
                break;
            };
            queues.push(queue);
        }
        if queues.is_empty() {
            return Err(Error::NoQueues);
        }
        status |= DeviceStatus::DRIVER_OK;
        transport.set_status(status);
        if transport
            .status()
            .contains(DeviceStatus::DEVICE_NEEDS_RESET)
        {
            return Err(Error::DeviceNeedsReset);
        }
        Ok((info, queues))
    }

    /// Sets up queue `index`; `None` when the device has no such queue.
    fn setup_queue(
        hal: &H,
        transport: &mut T,
        info: &DeviceInfo,
        config: &Config,
        index: u16,
        teardown: &Arc<Teardown<H>>,
    ) -> Result<Option<BlkQueue<H, T::Notifier>>, Error> {
        let max = transport.max_queue_size(index);
        if max == 0 {
            return Ok(None);
        }
        let size = match config.queue_size {
            Some(size) if size == 0 || size > max => return Err(Error::BadQueueSize(size)),
            Some(size) => size,
            None => max.min(DEFAULT_QUEUE_SIZE),
        };
        let indirect = info
            .features
            .contains(Features::INDIRECT_DESC)
            .then_some(IndirectUse {
                per_table: usize::from(info.max_segments) + 2,
                max_in_flight: config.max_requests,
            });
        let event_idx = info.features.contains(Features::EVENT_IDX);
        let mut ring = match info.ring {
            RingKind::Packed => Ring::Packed(PackedRing::new(hal, size, event_idx, indirect)?),
            // Split rings need a power of two; take the largest one that fits.
            RingKind::Split => {
                let size = if config.queue_size.is_some() {
                    size
                } else {
                    1 << (15 - size.leading_zeros().min(15))
                };
                Ring::Split(SplitRing::new(hal, size, event_idx, indirect)?)
            }
        };
        ring.set_order_platform(info.features.contains(Features::ORDER_PLATFORM));
        transport.setup_queue(index, ring.size(), ring.addresses())?;
        let notifier = transport.notifier(index);
        BlkQueue::new(hal, index, ring, notifier, *info, config, teardown.clone()).map(Some)
    }

    /// What was negotiated and read from the device.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Takes the request queues, one per owner (see [`QueueSet`]).
    pub fn take_queues(&mut self) -> QueueSet<H, T::Notifier> {
        QueueSet::new(core::mem::take(&mut self.queues))
    }

    /// The device status as it reads now (e.g. to spot DEVICE_NEEDS_RESET).
    pub fn status(&mut self) -> DeviceStatus {
        self.transport.status()
    }

    /// Checks the device status (control plane: call it from the
    /// configuration-change interrupt, or now and then from one CPU). On
    /// DEVICE_NEEDS_RESET (VIRTIO 1.2 §2.1.1) every queue of the device is
    /// failed: each owner's next poll completes its requests in flight with
    /// [`Error::DeviceBroken`], and submissions fail at once. Then
    /// [`BlkDevice::recover`] brings the device back.
    pub fn check_status(&mut self) -> Result<(), Error> {
        if self
            .transport
            .status()
            .contains(DeviceStatus::DEVICE_NEEDS_RESET)
        {
            if self.teardown.failure().is_none() {
                log::error!("virtio-blk: device set DEVICE_NEEDS_RESET; its queues are failed");
            }
            self.teardown.fail(crate::ring::DeviceFault::NeedsReset);
            return Err(Error::DeviceNeedsReset);
        }
        Ok(())
    }

    /// Resets the device and sets it up again, after DEVICE_NEEDS_RESET or a
    /// broken queue.
    ///
    /// `queues` are the queues their owners hand back (any subset of those
    /// this device handed out, in any state). Queues not handed back are
    /// retired: their owners' next poll fails what they have in flight with
    /// [`Error::DeviceBroken`], and their memory is freed when they are
    /// dropped. For each returned queue, after the reset, every request still
    /// in flight completes through `on_recovered` with its buffer, and every
    /// buffer kept back from an earlier failure is handed back.
    ///
    /// Returns the new queues, negotiated and configured afresh.
    pub fn recover(
        &mut self,
        queues: impl IntoIterator<Item = BlkQueue<H, T::Notifier>>,
        mut on_recovered: impl FnMut(Recovered<H>),
    ) -> Result<QueueSet<H, T::Notifier>, Error> {
        self.teardown.fail(crate::ring::DeviceFault::DeviceReset);
        self.transport.reset();
        // From here the device reaches none of the old queues' memory.
        self.teardown.device_reset();
        for queue in core::mem::take(&mut self.queues).into_iter().chain(queues) {
            if queue.teardown_quiesced() {
                queue.reclaim(&mut on_recovered);
            } else {
                log::warn!("virtio-blk: recover was handed a queue of another device; dropped");
            }
        }
        self.teardown = Arc::new(Teardown::new());
        match Self::initialise(&self.hal, &mut self.transport, &self.config, &self.teardown) {
            Ok((info, queues)) => {
                self.info = info;
                Ok(QueueSet::new(queues))
            }
            Err(error) => {
                Self::give_up(&mut self.transport, &self.teardown);
                Err(error)
            }
        }
    }

    /// Resets one broken queue alone and sets it up again (VIRTIO_F_RING_RESET,
    /// VIRTIO 1.2 §2.6.1), leaving the other queues running. Requests still
    /// in flight complete through `on_recovered` with
    /// [`Error::DeviceBroken`], but without their buffers: unlike
    /// [`BlkDevice::recover`], the buffers (and those kept back when the
    /// queue broke) and the old queue's memory stay parked until the next
    /// full device reset, which frees them. A device may finish requests it
    /// had already taken after a queue reset (QEMU's virtio-blk has no
    /// queue-reset handler), so only a device reset proves it let go.
    ///
    /// Refused with [`Error::NotSupported`] without RING_RESET and with
    /// [`Error::DeviceBroken`] once the whole device has failed; the queue
    /// then comes back in the error, untouched, for [`BlkDevice::recover`]. It
    /// also comes back if the transport could not reset it (the device may
    /// still use it: only a full recovery frees it). If the queue was reset
    /// but a new one could not be set up, its requests have come back through
    /// `on_recovered` and the error carries no queue.
    // The error carries the queue back, as large as the queue the Ok side carries.
    #[allow(clippy::result_large_err)]
    pub fn recover_queue(
        &mut self,
        queue: BlkQueue<H, T::Notifier>,
        mut on_recovered: impl FnMut(Recovered<H>),
    ) -> Result<BlkQueue<H, T::Notifier>, NotRecovered<H, T::Notifier>> {
        let refuse = |error, queue| {
            Err(NotRecovered {
                error,
                queue: Some(queue),
            })
        };
        if !self.info.features.contains(Features::RING_RESET) {
            return refuse(Error::NotSupported("per-queue reset (RING_RESET)"), queue);
        }
        if !queue.belongs_to(&self.teardown) || self.teardown.failure().is_some() {
            return refuse(Error::DeviceBroken, queue);
        }
        let index = queue.index();
        if let Err(error) = self.transport.reset_queue(index) {
            return refuse(error.into(), queue);
        }
        // §2.6.1 says the device has let go of the queue; buffers and memory
        // wait for a device reset all the same (see above).
        queue.retire_after_queue_reset(&mut on_recovered);
        let not_set_up = |error| NotRecovered { error, queue: None };
        Self::setup_queue(
            &self.hal,
            &mut self.transport,
            &self.info,
            &self.config,
            index,
            &self.teardown,
        )
        .map_err(not_set_up)?
        .ok_or(not_set_up(Error::NoQueues))
    }

    /// The transport, for control-plane work the driver does not wrap.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }
}

impl<H: Hal, T: Transport> Drop for BlkDevice<H, T> {
    fn drop(&mut self) {
        self.transport.reset();
        self.teardown.device_reset();
    }
}
