//! The device as `vhost-user-backend` sees it: one [`FastBlk`] per
//! connection, answering the control plane (features, config space, memory
//! table, ring start and stop) and turning each queue's worker thread into
//! that queue's poller.
//!
//! `vhost-user-backend` gives every queue an epoll worker thread (see
//! [`FastBlk::queues_per_thread`]) and calls [`FastBlk::handle_event`] on it
//! once a ring is started and enabled. That call does not return while the
//! ring is live: it busy-polls the ring ([`crate::poller`]). GET_VRING_BASE
//! ends it through [`FastBlk::stop_vring`], which waits until the poller has
//! handed its ring position back to the framework's copy of the queue.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackend, VringRwLock};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::config::{self, CONFIG_SPACE};
use crate::device::Shared;
use crate::poller;

/// Guest memory as the framework hands it over.
pub(crate) type AtomicMemory = GuestMemoryAtomic<GuestMemoryMmap>;

/// One queue's stop signal and the lock its poller holds while it runs.
#[repr(align(64))]
pub(crate) struct QueueControl {
    /// Bumped to tell the poller that started under an older value to stop.
    pub stop_epoch: AtomicU64,
    /// Held by the poller for as long as it runs; [`FastBlk::stop_vring`]
    /// takes it to wait for the poller to be gone.
    pub session: Mutex<()>,
    /// The ring broke the protocol: not polled again until it is restarted.
    pub broken: AtomicBool,
}

/// What one connection's pollers share.
pub(crate) struct Connection {
    pub shared: Arc<Shared>,
    /// The memory table, once SET_MEM_TABLE or ADD_MEM_REGION gave one.
    pub memory: Mutex<Option<AtomicMemory>>,
    /// Bumped (Release) whenever the memory table changes; pollers reload
    /// their snapshot when they see it move.
    pub memory_generation: AtomicU64,
    pub queues: Box<[QueueControl]>,
    /// The connection is over: pollers return, and none starts again.
    pub shutdown: AtomicBool,
    config: [u8; CONFIG_SPACE],
}

/// The backend of one vhost-user connection (cheap to clone: the framework
/// keeps a copy per worker thread).
#[derive(Clone)]
pub(crate) struct FastBlk {
    connection: Arc<Connection>,
}

impl FastBlk {
    /// A fresh backend for a new connection to the device `shared`.
    pub fn new(shared: Arc<Shared>) -> FastBlk {
        let queues = (0..shared.queues)
            .map(|_| QueueControl {
                stop_epoch: AtomicU64::new(0),
                session: Mutex::new(()),
                broken: AtomicBool::new(false),
            })
            .collect();
        let config = config::config_space(
            shared.disk.capacity(),
            u32::from(shared.max_queue_size) - 2,
            shared.queues,
        );
        FastBlk {
            connection: Arc::new(Connection {
                shared,
                memory: Mutex::new(None),
                memory_generation: AtomicU64::new(0),
                queues,
                shutdown: AtomicBool::new(false),
                config,
            }),
        }
    }

    /// Ends the connection's pollers and waits until every one has returned.
    pub fn shutdown(&self) {
        self.connection.shutdown.store(true, Ordering::SeqCst);
        for index in 0..self.connection.queues.len() {
            self.stop_queue(index);
        }
    }

    /// Tells queue `index`'s poller to stop and waits until it has.
    fn stop_queue(&self, index: usize) {
        let Some(control) = self.connection.queues.get(index) else {
            return;
        };
        control.stop_epoch.fetch_add(1, Ordering::SeqCst);
        // The poller holds the session for as long as it runs.
        drop(
            control
                .session
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        control.broken.store(false, Ordering::Relaxed);
    }
}

impl VhostUserBackend for FastBlk {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        usize::from(self.connection.shared.queues)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.connection.shared.max_queue_size)
    }

    fn features(&self) -> u64 {
        config::virtio_features()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        config::protocol_features()
    }

    /// The queues read EVENT_IDX from their own state (the framework sets
    /// it on every vring before any ring starts).
    fn set_event_idx(&self, _enabled: bool) {}

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // An empty answer tells the frontend the range was refused.
        config::config_range(&self.connection.config, offset, size).unwrap_or_default()
    }

    fn update_memory(&self, memory: AtomicMemory) -> io::Result<()> {
        *self
            .connection
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(memory);
        self.connection
            .memory_generation
            .fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// One worker thread per queue: thread `i` serves queue `i` alone, so
    /// its poller may spin without holding up another queue.
    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.connection.shared.queues)
            .map(|queue| 1u64 << queue)
            .collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC).ok()
    }

    fn reset_device(&self) {
        for index in 0..self.connection.queues.len() {
            self.stop_queue(index);
        }
    }

    /// GET_VRING_BASE: the framework has marked the ring not ready; stop
    /// its poller, which hands the ring position back before it returns.
    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        self.stop_queue(queue_index as usize);
        Ok(())
    }

    /// A kick, or the ring just became live: poll it until it is stopped.
    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        if let (0, Some(vring)) = (device_event, vrings.first()) {
            poller::run(&self.connection, thread_id, vring);
        }
        Ok(())
    }
}
