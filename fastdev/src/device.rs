//! The device a process serves: its disk, its settings, its counters, and
//! the thread that accepts one vhost-user connection after another.
//!
//! Each connection gets a fresh backend and a fresh `VhostUserDaemon`
//! (its own worker threads); the disk outlives them, so a RAM disk keeps
//! its data from one frontend to the next. When a frontend hangs up, its
//! pollers are stopped and joined before the next connection is accepted.

use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::backend::FastBlk;
use crate::config::SECTOR;
use crate::disk::{Disk, DiskKind};

/// Largest ring a driver may set up (VIRTIO 1.2 §2.7: 32768).
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Most queues: the framework maps queues to worker threads with a u64 mask.
pub const MAX_QUEUES: u16 = 64;

/// What an idle poller does between looks at its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Idle {
    /// Spin: the lowest latency, a whole CPU per queue.
    Spin,
    /// Yield the CPU every few dozen empty polls.
    Yield,
    /// Spin while the pollers and their drivers (one busy thread each) fit
    /// on the CPUs, yield when they do not.
    Auto,
}

/// How to build the device.
#[derive(Clone, Debug)]
pub struct FastConfig {
    /// Disk size in bytes (a multiple of 512).
    pub size: u64,
    /// Request queues offered (1 to [`MAX_QUEUES`]); each has its own poller.
    pub queues: u16,
    /// What backs the disk.
    pub disk: DiskKind,
    /// Idle policy of the pollers.
    pub idle: Idle,
    /// Pin queue `i`'s poller to CPU `(i + 1) % CPUs`: beside a driver that
    /// pins its queue `i` to CPU `i` (as vblk-bench does), no poller then
    /// shares a CPU with its own driver, which matters on a busy machine:
    /// two spinners on one CPU hand over only when the scheduler preempts.
    pub pin_pollers: bool,
}

impl Default for FastConfig {
    fn default() -> FastConfig {
        FastConfig {
            size: 1 << 30,
            queues: 1,
            disk: DiskKind::Null,
            idle: Idle::Auto,
            pin_pollers: false,
        }
    }
}

/// One queue's totals, summed over every poller that served it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueCounters {
    /// Requests served.
    pub requests: u64,
    /// Passes over the ring that found at least one request.
    pub passes: u64,
    /// Used-buffer notifications sent (call eventfd writes).
    pub notifications: u64,
    /// Looks at the ring that found nothing.
    pub empty_polls: u64,
}

/// [`QueueCounters`] shared between a queue's pollers and the device owner.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct AtomicCounters {
    requests: AtomicU64,
    passes: AtomicU64,
    notifications: AtomicU64,
    empty_polls: AtomicU64,
}

impl AtomicCounters {
    /// Adds a finished poller's counts.
    pub fn add(&self, c: &QueueCounters) {
        self.requests.fetch_add(c.requests, Ordering::Relaxed);
        self.passes.fetch_add(c.passes, Ordering::Relaxed);
        self.notifications
            .fetch_add(c.notifications, Ordering::Relaxed);
        self.empty_polls.fetch_add(c.empty_polls, Ordering::Relaxed);
    }

    fn get(&self) -> QueueCounters {
        QueueCounters {
            requests: self.requests.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            notifications: self.notifications.load(Ordering::Relaxed),
            empty_polls: self.empty_polls.load(Ordering::Relaxed),
        }
    }
}

/// What every connection of a device shares.
pub(crate) struct Shared {
    pub disk: Disk,
    pub queues: u16,
    pub max_queue_size: u16,
    pub idle: Idle,
    pub pin_pollers: bool,
    /// CPUs this process may run on.
    pub cpus: usize,
    pub counters: Box<[AtomicCounters]>,
}

/// Why the device could not start.
#[derive(Debug)]
pub enum StartError {
    /// A setting is out of range.
    Config(String),
    /// The disk could not be mapped, or the socket not created.
    Io(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(why) => write!(f, "vblk-fastdev: {why}"),
            StartError::Io(e) => write!(f, "vblk-fastdev: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> StartError {
        StartError::Io(e)
    }
}

/// The connection being served, so that stopping the device can cut it.
#[derive(Default)]
struct Current {
    stop: bool,
    connection: Option<ShutdownHandle>,
}

/// A running device: a thread serving vhost-user connections on a Unix
/// socket, one at a time, until dropped.
pub struct FastDevice {
    socket: PathBuf,
    /// The private directory holding the socket, when [`FastDevice::spawn`] made it.
    directory: Option<PathBuf>,
    shared: Arc<Shared>,
    current: Arc<Mutex<Current>>,
    thread: Option<JoinHandle<()>>,
}

impl FastDevice {
    /// Starts the device on a socket in a fresh private temporary directory.
    pub fn spawn(config: &FastConfig) -> Result<FastDevice, StartError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let directory = std::env::temp_dir().join(format!(
            "vblk-fastdev-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        DirBuilder::new().mode(0o700).create(&directory)?;
        let mut device =
            FastDevice::serve_at(config, &directory.join("vblk.sock")).inspect_err(|_| {
                let _ = std::fs::remove_dir(&directory);
            })?;
        device.directory = Some(directory);
        Ok(device)
    }

    /// Starts the device listening on `socket` (an existing file there is replaced).
    pub fn serve_at(config: &FastConfig, socket: &Path) -> Result<FastDevice, StartError> {
        let shared = Arc::new(shared(config)?);
        let listener = Listener::new(socket, true).map_err(|e| {
            StartError::Io(io::Error::other(format!(
                "cannot listen on {}: {e}",
                socket.display()
            )))
        })?;
        let current = Arc::new(Mutex::new(Current::default()));
        let thread = {
            let (shared, current) = (shared.clone(), current.clone());
            std::thread::Builder::new()
                .name("vblk-fastdev".into())
                .spawn(move || serve(listener, &shared, &current))?
        };
        Ok(FastDevice {
            socket: socket.to_path_buf(),
            directory: None,
            shared,
            current,
            thread: Some(thread),
        })
    }

    /// The socket a frontend connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Disk size in bytes.
    pub fn capacity(&self) -> u64 {
        self.shared.disk.capacity()
    }

    /// What backs the disk.
    pub fn disk_kind(&self) -> DiskKind {
        self.shared.disk.kind()
    }

    /// Each queue's totals so far (a poller adds its counts when it stops:
    /// at GET_VRING_BASE, a reset, or the end of its connection).
    pub fn counters(&self) -> Vec<QueueCounters> {
        self.shared
            .counters
            .iter()
            .map(AtomicCounters::get)
            .collect()
    }

    /// Blocks until the serving thread ends (it ends only when the device
    /// is dropped, or when the listening socket fails).
    pub fn wait(mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FastDevice {
    fn drop(&mut self) {
        {
            let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
            current.stop = true;
            if let Some(connection) = current.connection.take() {
                connection.shutdown();
            }
        }
        // Wake the accept with a connection of our own.
        drop(UnixStream::connect(&self.socket));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
        if let Some(directory) = &self.directory {
            let _ = std::fs::remove_dir(directory);
        }
    }
}

fn shared(config: &FastConfig) -> Result<Shared, StartError> {
    if config.size == 0 || !config.size.is_multiple_of(SECTOR) {
        return Err(StartError::Config(format!(
            "the disk size ({} bytes) must be a positive multiple of 512",
            config.size
        )));
    }
    if config.queues == 0 || config.queues > MAX_QUEUES {
        return Err(StartError::Config(format!(
            "{} queues: from 1 to {MAX_QUEUES}",
            config.queues
        )));
    }
    Ok(Shared {
        disk: Disk::new(config.disk, config.size)?,
        queues: config.queues,
        max_queue_size: MAX_QUEUE_SIZE,
        idle: config.idle,
        pin_pollers: config.pin_pollers,
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        counters: (0..config.queues)
            .map(|_| AtomicCounters::default())
            .collect(),
    })
}

/// Accepts and serves one connection after another until told to stop.
fn serve(mut listener: Listener, shared: &Arc<Shared>, current: &Mutex<Current>) {
    loop {
        let backend = FastBlk::new(shared.clone());
        let memory = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let mut daemon = match VhostUserDaemon::new("vblk-fastdev".into(), backend.clone(), memory)
        {
            Ok(daemon) => daemon,
            Err(e) => {
                log::error!("vblk-fastdev: cannot set up a connection: {e}");
                return;
            }
        };
        if let Err(e) = daemon.start(&mut listener) {
            log::error!("vblk-fastdev: accepting a connection: {e}");
            return;
        }
        {
            let mut current = current.lock().unwrap_or_else(PoisonError::into_inner);
            current.connection = daemon.shutdown_handle();
            if current.stop {
                daemon.request_shutdown();
            }
        }
        if let Err(e) = daemon.wait() {
            log::info!("vblk-fastdev: the connection ended: {e}");
        }
        // The pollers first: the worker threads they run on are joined when
        // the daemon goes.
        backend.shutdown();
        drop(daemon);
        let mut current = current.lock().unwrap_or_else(PoisonError::into_inner);
        current.connection = None;
        if current.stop {
            return;
        }
    }
}
