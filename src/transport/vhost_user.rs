//! vhost-user transport (feature `vhost-user`): the driver in this process,
//! the device in a vhost-user backend process (e.g. `qemu-storage-daemon
//! --export type=vhost-user-blk`), talking over a Unix socket.
//!
//! The control plane is rust-vmm's `vhost` crate (its frontend side); this
//! module maps our [`Transport`] onto it:
//!
//! | virtio (VIRTIO 1.2 §3.1)      | vhost-user                                        |
//! | ----------------------------- | ------------------------------------------------- |
//! | device features               | GET_FEATURES (VHOST_USER_F_PROTOCOL_FEATURES hidden) |
//! | driver features, FEATURES_OK  | SET_FEATURES (+ PROTOCOL_FEATURES when offered)   |
//! | device status                 | emulated here; no status register in vhost-user  |
//! | DEVICE_NEEDS_RESET            | the socket hung up, or a request on it failed    |
//! | configuration space           | GET_CONFIG (protocol feature CONFIG)             |
//! | `num_queues` limit            | GET_QUEUE_NUM (protocol feature MQ)              |
//! | queue setup                   | SET_VRING_NUM/ADDR/BASE/KICK/CALL/ENABLE         |
//! | reset                         | SET_VRING_ENABLE 0 + GET_VRING_BASE (stops each ring), RESET_DEVICE when offered |
//! | available-buffer notification | write to the queue's kick eventfd                |
//! | used-buffer notification      | the queue's call eventfd ([`VhostUserIrq`])      |
//!
//! DMA memory is one memfd ([`VhostUserHal`]) registered with SET_MEM_TABLE
//! at guest address == process address, so descriptors carry plain pointers.
//!
//! A dead backend is noticed by [`Transport::status`] (a zero-timeout poll of
//! the socket for hang-up): it then reports DEVICE_NEEDS_RESET, and
//! [`crate::BlkDevice::check_status`] fails every queue. The queues
//! themselves never touch the socket, so the I/O path stays lock-free.

mod daemon;
mod memory;
mod watchdog;

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::string::String;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::vec::Vec;

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{
    Frontend, VhostUserFrontend, VhostUserProtocolFeatures, VhostUserVirtioFeatures,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

pub use daemon::{DaemonBackend, DaemonConfig, DaemonError, StorageDaemon};
pub use memory::VhostUserHal;

use super::{IrqWait, QueueAddresses, QueueNotifier, Transport, TransportError};
use crate::spec::{blk_config, DeviceStatus, Features, DEVICE_TYPE_BLOCK};
use watchdog::Watchdog;

/// Most queue entries a vhost-user backend takes (libvhost-user's limit;
/// vhost-user has no message to ask for it).
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// The longest one control request may take before the backend counts as
/// gone (see [`VhostUserTransport::connect_with_timeout`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Config bytes read when SECURE_ERASE is not offered: up to and including
/// `write_zeroes_may_unmap` and its padding. Every backend's config struct is
/// at least this long.
const CONFIG_BYTES_BASE: usize = 60;

/// `VHOST_USER_F_PROTOCOL_FEATURES`, a vhost-user bit in the virtio feature word.
const PROTOCOL_FEATURES_BIT: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();

/// Protocol features this frontend uses when the backend offers them.
fn wanted_protocol_features() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::RESET_DEVICE
}

/// Why connecting to a backend failed.
#[derive(Debug)]
pub enum VhostUserError {
    /// The socket could not be reached.
    Connect(io::Error),
    /// The backend does not offer VHOST_USER_F_PROTOCOL_FEATURES, so there
    /// is no way to read its configuration space.
    NoProtocolFeatures,
    /// The backend does not offer the CONFIG protocol feature (GET_CONFIG).
    NoConfig,
    /// A vhost-user request failed (or timed out); the step is named.
    Request(&'static str, String),
}

impl fmt::Display for VhostUserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VhostUserError::Connect(e) => write!(f, "cannot connect to the vhost-user socket: {e}"),
            VhostUserError::NoProtocolFeatures => write!(
                f,
                "the backend does not offer VHOST_USER_F_PROTOCOL_FEATURES; a virtio-blk \
                 backend must, to serve its configuration"
            ),
            VhostUserError::NoConfig => write!(
                f,
                "the backend does not offer the CONFIG protocol feature (GET_CONFIG)"
            ),
            VhostUserError::Request(step, e) => write!(f, "vhost-user {step}: {e}"),
        }
    }
}

impl std::error::Error for VhostUserError {}

/// Counts of control-plane events, for diagnostics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlStats {
    /// GET_CONFIG requests sent.
    pub config_reads: u64,
    /// Device resets (rings stopped).
    pub resets: u64,
}

/// The eventfds of one queue.
struct QueueEvents {
    kick: Arc<EventFd>,
    call: Arc<EventFd>,
    /// The ring is set up in the backend (GET_VRING_BASE stops it).
    started: bool,
}

/// A [`Transport`] to a vhost-user-blk backend.
pub struct VhostUserTransport {
    // Declared (so dropped) before the frontend: the watchdog thread must be
    // gone before the socket it may shut down is closed.
    watchdog: Watchdog,
    frontend: Frontend,
    socket: RawFd,
    hal: VhostUserHal,
    /// Virtio features the backend offers, without the vhost-user bit.
    offered: u64,
    /// The backend offers VHOST_USER_F_PROTOCOL_FEATURES (so it must be acked,
    /// and rings start disabled until SET_VRING_ENABLE).
    protocol_bit: bool,
    protocol: VhostUserProtocolFeatures,
    driver_features: u64,
    features_accepted: bool,
    status: DeviceStatus,
    num_queues: u16,
    queues: Vec<Option<QueueEvents>>,
    config: [u8; blk_config::SIZE],
    config_generation: u32,
    config_fetched: bool,
    /// Why the backend counts as gone, once it does.
    dead: Option<String>,
    stats: ControlStats,
}

impl fmt::Debug for VhostUserTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VhostUserTransport")
            .field("offered", &format_args!("{:#x}", self.offered))
            .field("protocol", &self.protocol)
            .field("num_queues", &self.num_queues)
            .field("status", &self.status)
            .field("dead", &self.dead)
            .finish()
    }
}

impl VhostUserTransport {
    /// Connects to the backend at `path`, negotiates the vhost-user protocol
    /// features (CONFIG, MQ, REPLY_ACK, RESET_DEVICE where offered), asks for
    /// the queue count and registers `hal`'s memory with the backend.
    ///
    /// Every DMA address the driver will use must come from `hal`. Each
    /// control request may take at most [`REQUEST_TIMEOUT`].
    pub fn connect(path: impl AsRef<Path>, hal: &VhostUserHal) -> Result<Self, VhostUserError> {
        Self::connect_with_timeout(path, hal, REQUEST_TIMEOUT)
    }

    /// As [`VhostUserTransport::connect`], with a bound on each control
    /// request other than the default [`REQUEST_TIMEOUT`].
    pub fn connect_with_timeout(
        path: impl AsRef<Path>,
        hal: &VhostUserHal,
        timeout: Duration,
    ) -> Result<Self, VhostUserError> {
        let stream = UnixStream::connect(path).map_err(VhostUserError::Connect)?;
        Self::from_stream(stream, hal, timeout)
    }

    /// As [`VhostUserTransport::connect`], over a connected stream; every
    /// control request may take at most `timeout` before the backend counts
    /// as gone.
    pub fn from_stream(
        stream: UnixStream,
        hal: &VhostUserHal,
        timeout: Duration,
    ) -> Result<Self, VhostUserError> {
        let socket = stream.as_raw_fd();
        let frontend = Frontend::from_stream(stream, 1);
        let watchdog = Watchdog::start(socket, timeout).map_err(VhostUserError::Connect)?;
        let mut transport = VhostUserTransport {
            watchdog,
            frontend,
            socket,
            hal: hal.clone(),
            offered: 0,
            protocol_bit: true,
            protocol: VhostUserProtocolFeatures::empty(),
            driver_features: 0,
            features_accepted: false,
            status: DeviceStatus::empty(),
            num_queues: 0,
            queues: Vec::new(),
            config: [0; blk_config::SIZE],
            config_generation: 0,
            config_fetched: false,
            dead: None,
            stats: ControlStats::default(),
        };
        transport.handshake()?;
        Ok(transport)
    }

    /// SET_OWNER, feature and protocol-feature negotiation, GET_QUEUE_NUM,
    /// SET_MEM_TABLE.
    fn handshake(&mut self) -> Result<(), VhostUserError> {
        let step = |name: &'static str| move |e: String| VhostUserError::Request(name, e);
        self.call("SET_OWNER", |f| f.set_owner())
            .map_err(step("SET_OWNER"))?;
        let all = self
            .call("GET_FEATURES", |f| f.get_features())
            .map_err(step("GET_FEATURES"))?;
        if all & PROTOCOL_FEATURES_BIT == 0 {
            return Err(VhostUserError::NoProtocolFeatures);
        }
        self.offered = all & !PROTOCOL_FEATURES_BIT;
        let offered_protocol = self
            .call("GET_PROTOCOL_FEATURES", |f| f.get_protocol_features())
            .map_err(step("GET_PROTOCOL_FEATURES"))?;
        if !offered_protocol.contains(VhostUserProtocolFeatures::CONFIG) {
            return Err(VhostUserError::NoConfig);
        }
        let protocol = offered_protocol & wanted_protocol_features();
        self.call("SET_PROTOCOL_FEATURES", |f| {
            f.set_protocol_features(protocol)
        })
        .map_err(step("SET_PROTOCOL_FEATURES"))?;
        self.protocol = protocol;
        if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            // Every request is acknowledged, so a refusal shows at its step.
            self.frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        self.num_queues = if protocol.contains(VhostUserProtocolFeatures::MQ) {
            let n = self
                .call("GET_QUEUE_NUM", |f| f.get_queue_num())
                .map_err(step("GET_QUEUE_NUM"))?;
            u16::try_from(n).unwrap_or(u16::MAX).max(1)
        } else {
            1
        };
        self.queues = (0..self.num_queues).map(|_| None).collect();
        let region = VhostUserMemoryRegionInfo {
            guest_phys_addr: self.hal.base(),
            memory_size: self.hal.size() as u64,
            userspace_addr: self.hal.base(),
            mmap_offset: 0,
            mmap_handle: self.hal.fd(),
        };
        self.call("SET_MEM_TABLE", |f| f.set_mem_table(&[region]))
            .map_err(step("SET_MEM_TABLE"))?;
        Ok(())
    }

    /// Queues the backend offers (GET_QUEUE_NUM; 1 without MQ).
    pub fn num_queues(&self) -> u16 {
        self.num_queues
    }

    /// Protocol features both sides use.
    pub fn protocol_features(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    /// The memory the backend can reach.
    pub fn hal(&self) -> &VhostUserHal {
        &self.hal
    }

    /// Why the backend counts as gone, if it does (see [`Transport::status`]).
    pub fn failure(&self) -> Option<&str> {
        self.dead.as_deref()
    }

    /// Control-plane counters.
    pub fn control_stats(&self) -> ControlStats {
        self.stats
    }

    /// A waiter on queue `queue`'s used-buffer notifications (its call
    /// eventfd), for [`crate::mq::wait_for_completions`]; `None` before the
    /// queue is set up.
    pub fn irq(&self, queue: u16) -> Option<VhostUserIrq> {
        let events = self.queues.get(usize::from(queue))?.as_ref()?;
        Some(VhostUserIrq::new(events.call.clone()))
    }

    /// Whether the backend is gone: a failed request earlier, or the socket
    /// hung up now (checked without blocking).
    pub fn backend_gone(&mut self) -> bool {
        if self.dead.is_some() {
            return true;
        }
        let mut pollfd = libc::pollfd {
            fd: self.socket,
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout; `socket` is owned by the
        // frontend, which lives as long as self.
        let ready = unsafe { libc::poll(&mut pollfd, 1, 0) };
        if ready > 0
            && pollfd.revents & (libc::POLLHUP | libc::POLLRDHUP | libc::POLLERR | libc::POLLNVAL)
                != 0
        {
            self.mark_dead("the backend closed the vhost-user socket".into());
        }
        self.dead.is_some()
    }

    /// Records that the backend is gone (the first reason sticks) and returns the reason.
    fn mark_dead(&mut self, why: String) -> String {
        if self.dead.is_none() {
            log::error!("vhost-user: {why}; the device needs a reset");
            self.dead = Some(why);
        }
        self.dead.clone().unwrap_or_default()
    }

    /// Runs a control request; a failure marks the backend gone (the socket
    /// may be out of step after it) and is returned as `DeviceGone`.
    fn request<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<R>,
    ) -> Result<R, TransportError> {
        self.call(what, f).map_err(|_| TransportError::DeviceGone)
    }

    /// Runs one control request under the watchdog; on failure records why
    /// the backend counts as gone and returns that.
    fn call<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<R>,
    ) -> Result<R, String> {
        if let Some(why) = &self.dead {
            return Err(why.clone());
        }
        let frontend = &mut self.frontend;
        let (result, timed_out) = self.watchdog.guard(|| f(frontend));
        match result {
            Ok(value) if !timed_out => Ok(value),
            Ok(_) => Err(self.mark_dead(std::format!("{what}: the backend answered too late"))),
            Err(_) if timed_out => Err(self.mark_dead(std::format!(
                "{what}: the backend did not answer within {:?}",
                self.watchdog.timeout()
            ))),
            Err(e) => Err(self.mark_dead(std::format!("{what} failed: {e}"))),
        }
    }

    fn fetch_config(&mut self) {
        let len = if self.offered & Features::BLK_SECURE_ERASE.bits() != 0 {
            blk_config::SIZE
        } else {
            CONFIG_BYTES_BASE
        };
        self.stats.config_reads += 1;
        let request = [0u8; blk_config::SIZE];
        let reply = self.request("GET_CONFIG", |frontend| {
            frontend.get_config(
                0,
                len as u32,
                VhostUserConfigFlags::empty(),
                &request[..len],
            )
        });
        let Ok((_, bytes)) = reply else {
            return;
        };
        let mut fresh = [0u8; blk_config::SIZE];
        let n = bytes.len().min(len);
        fresh[..n].copy_from_slice(&bytes[..n]);
        if !self.config_fetched || fresh != self.config {
            self.config = fresh;
            self.config_generation = self.config_generation.wrapping_add(1);
        }
        self.config_fetched = true;
    }

    fn config_bytes<const N: usize>(&mut self, offset: usize) -> [u8; N] {
        if !self.config_fetched {
            self.fetch_config();
        }
        let mut out = [0u8; N];
        if let Some(bytes) = self.config.get(offset..offset + N) {
            out.copy_from_slice(bytes);
        }
        out
    }

    /// Stops every started ring: the backend no longer reads or writes its
    /// memory once GET_VRING_BASE has answered.
    fn stop_rings(&mut self) {
        for index in 0..self.queues.len() {
            let started = self.queues[index].as_ref().is_some_and(|q| q.started);
            if !started || self.dead.is_some() {
                continue;
            }
            if self.protocol_bit {
                let _ = self.request("SET_VRING_ENABLE", |f| f.set_vring_enable(index, false));
            }
            let _ = self.request("GET_VRING_BASE", |f| f.get_vring_base(index));
        }
        if self
            .protocol
            .contains(VhostUserProtocolFeatures::RESET_DEVICE)
        {
            let _ = self.request("RESET_DEVICE", |f| f.reset_device());
        }
    }

    fn features_for_backend(&self) -> u64 {
        let mut features = self.driver_features;
        if self.protocol_bit {
            features |= PROTOCOL_FEATURES_BIT;
        }
        features
    }
}

impl Transport for VhostUserTransport {
    type Notifier = VhostUserNotifier;

    /// vhost-user has no device-type message; the caller connects to a
    /// vhost-user-blk export.
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_BLOCK
    }

    /// The backend's features, as offered. (QEMU's vhost-user-blk export
    /// offers SIZE_MAX with `size_max` 0; the driver reads that as "no
    /// limit", as Linux does.)
    fn device_features(&mut self) -> u64 {
        self.offered
    }

    fn set_driver_features(&mut self, features: u64) {
        self.driver_features = features;
        self.features_accepted = false;
        if features & !self.offered != 0 {
            log::warn!("vhost-user: driver accepted features the backend never offered");
            return;
        }
        let backend_features = self.features_for_backend();
        self.features_accepted = self
            .request("SET_FEATURES", |f| f.set_features(backend_features))
            .is_ok();
    }

    fn status(&mut self) -> DeviceStatus {
        if self.backend_gone() {
            self.status | DeviceStatus::DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    fn set_status(&mut self, status: DeviceStatus) {
        if status.is_empty() {
            self.reset();
            return;
        }
        let mut status = status;
        // FEATURES_OK sticks only if SET_FEATURES went through (§3.1.1 step 6).
        if status.contains(DeviceStatus::FEATURES_OK) && !self.features_accepted {
            status.remove(DeviceStatus::FEATURES_OK);
        }
        self.status = status;
    }

    fn reset(&mut self) {
        self.stop_rings();
        self.stats.resets += 1;
        // The eventfds go with the rings; a new setup makes new ones, so a
        // kick or call of the old setup cannot leak into the new one.
        for queue in &mut self.queues {
            *queue = None;
        }
        self.status = DeviceStatus::empty();
        self.driver_features = 0;
        self.features_accepted = false;
        self.config_fetched = false;
    }

    /// Refetches the whole configuration (one GET_CONFIG) and returns a
    /// counter that moves whenever its content changed: reads between two
    /// calls are served from the snapshot the first call took.
    fn config_generation(&mut self) -> u32 {
        self.fetch_config();
        self.config_generation
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
        if queue < self.num_queues {
            MAX_QUEUE_SIZE
        } else {
            0
        }
    }

    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddresses,
    ) -> Result<(), TransportError> {
        let index = usize::from(queue);
        if queue >= self.num_queues {
            return Err(TransportError::NoSuchQueue(queue));
        }
        if size == 0 || size > MAX_QUEUE_SIZE {
            return Err(TransportError::BadQueueSize(size));
        }
        if self.queues[index].as_ref().is_some_and(|q| q.started) {
            return Err(TransportError::QueueInUse(queue));
        }
        let new_eventfd = || {
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map(Arc::new)
                .map_err(|e| {
                    log::error!("vhost-user: cannot create an eventfd: {e}");
                    TransportError::DeviceGone
                })
        };
        let events = QueueEvents {
            kick: new_eventfd()?,
            call: new_eventfd()?,
            started: false,
        };
        let packed = self.driver_features & Features::RING_PACKED.bits() != 0;
        // A fresh packed ring starts at index 0 with wrap counter 1 (bit 15).
        let base: u16 = if packed { 1 << 15 } else { 0 };
        let ring = VringConfigData {
            queue_max_size: MAX_QUEUE_SIZE,
            queue_size: size,
            flags: 0,
            desc_table_addr: addrs.desc,
            used_ring_addr: addrs.device,
            avail_ring_addr: addrs.driver,
            log_addr: None,
        };
        let (kick, call) = (events.kick.clone(), events.call.clone());
        self.request("SET_VRING_NUM", |f| f.set_vring_num(index, size))?;
        self.request("SET_VRING_ADDR", |f| f.set_vring_addr(index, &ring))?;
        self.request("SET_VRING_BASE", |f| f.set_vring_base(index, base))?;
        self.request("SET_VRING_CALL", |f| f.set_vring_call(index, &call))?;
        self.request("SET_VRING_KICK", |f| f.set_vring_kick(index, &kick))?;
        self.queues[index] = Some(QueueEvents {
            started: true,
            ..events
        });
        if self.protocol_bit {
            self.request("SET_VRING_ENABLE", |f| f.set_vring_enable(index, true))?;
        }
        Ok(())
    }

    fn notifier(&mut self, queue: u16) -> VhostUserNotifier {
        let kick = self
            .queues
            .get(usize::from(queue))
            .and_then(|q| q.as_ref())
            .map(|q| q.kick.clone());
        VhostUserNotifier { kick }
    }
}

/// The doorbell of one queue: writes its kick eventfd (one `write` syscall,
/// no lock, no allocation).
pub struct VhostUserNotifier {
    kick: Option<Arc<EventFd>>,
}

impl QueueNotifier for VhostUserNotifier {
    #[inline]
    fn notify(&self) {
        if let Some(kick) = &self.kick {
            // Fails only if the counter would overflow (it cannot: the backend
            // drains it) or the descriptor is gone; the request then shows up
            // in `check_timeouts`, never as a hang here.
            let _ = kick.write(1);
        }
    }
}

/// How long one [`VhostUserIrq::wait`] sleeps at most before returning
/// anyway (the caller re-checks the ring): a bound, so a lost notification
/// or a dead backend costs a slice, never a hang.
const IRQ_WAIT_SLICE: Duration = Duration::from_millis(100);

/// Used-buffer notifications of one queue: waits on its call eventfd.
#[derive(Clone)]
pub struct VhostUserIrq {
    call: Arc<EventFd>,
    slice: Duration,
    timeouts: Arc<AtomicU64>,
}

impl VhostUserIrq {
    fn new(call: Arc<EventFd>) -> Self {
        VhostUserIrq {
            call,
            slice: IRQ_WAIT_SLICE,
            timeouts: Arc::new(AtomicU64::new(0)),
        }
    }

    /// This waiter, giving up after `slice` per wait.
    pub fn with_slice(mut self, slice: Duration) -> Self {
        self.slice = slice;
        self
    }

    /// Waits that ended by timing out, with no notification.
    pub fn timeouts(&self) -> u64 {
        self.timeouts.load(Ordering::Relaxed)
    }
}

impl IrqWait for VhostUserIrq {
    /// Sleeps until the backend signals the call eventfd (a signal that came
    /// earlier is still counted in it, so it is never lost), then clears it.
    fn wait(&self) {
        let mut pollfd = libc::pollfd {
            fd: self.call.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = i32::try_from(self.slice.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd for an eventfd this waiter keeps open.
        let ready = unsafe { libc::poll(&mut pollfd, 1, timeout) };
        if ready == 0 {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        // Non-blocking read: clears the counter, or EAGAIN if nothing came.
        let _ = self.call.read();
    }
}
