//! Helpers for the tests against a real vhost-user-blk backend:
//! qemu-storage-daemon started per test, stopped by pid (kill + wait) when
//! the guard drops, also while a failing test unwinds.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use virtio_blk_mq::transport::vhost_user::{
    DaemonBackend, DaemonConfig, StorageDaemon, VhostUserHal, VhostUserTransport,
};
use virtio_blk_mq::{BlkDevice, BlkQueue, Completion, Config, DmaBuffer};

pub type Device = BlkDevice<VhostUserHal, VhostUserTransport>;
pub type Queue = BlkQueue<VhostUserHal, virtio_blk_mq::transport::vhost_user::VhostUserNotifier>;

/// DMA memory each test registers with its daemon.
pub const MEMORY_BYTES: usize = 16 << 20;

/// Longest any wait for completions may take before the test fails.
pub const COMPLETION_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts qemu-storage-daemon. Fails the test (never skips it) when the
/// daemon is not installed: scripts/test.sh installs it.
pub fn daemon(backend: DaemonBackend, num_queues: u16) -> StorageDaemon {
    daemon_with(DaemonConfig {
        backend,
        num_queues,
        writable: true,
        blkdebug: None,
    })
}

/// Starts qemu-storage-daemon as `config` says (failing as [`daemon`] does).
pub fn daemon_with(config: DaemonConfig) -> StorageDaemon {
    StorageDaemon::spawn(&config).unwrap_or_else(|e| panic!("{e}"))
}

/// A null-co export of `size` bytes.
pub fn null_daemon(size: u64, num_queues: u16) -> StorageDaemon {
    daemon(
        DaemonBackend::Null {
            size,
            latency_ns: 0,
        },
        num_queues,
    )
}

/// A temporary raw image file, removed when dropped.
pub struct TempImage {
    pub path: PathBuf,
}

impl TempImage {
    pub fn new(size: u64) -> TempImage {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vblk-image-{}-{n}.raw", std::process::id()));
        let file = std::fs::File::create(&path).expect("create the image file");
        file.set_len(size).expect("size the image file");
        TempImage { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read the image file")
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connects to the daemon and sets the device up.
pub fn connect(daemon: &StorageDaemon, config: Config) -> (VhostUserHal, Device) {
    connect_with_timeout(daemon, config, Duration::from_secs(5))
}

/// As [`connect`], with `timeout` on each control request.
pub fn connect_with_timeout(
    daemon: &StorageDaemon,
    config: Config,
    timeout: Duration,
) -> (VhostUserHal, Device) {
    let hal = VhostUserHal::new(MEMORY_BYTES).expect("memfd DMA memory");
    let transport = VhostUserTransport::connect_with_timeout(daemon.socket(), &hal, timeout)
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let device = BlkDevice::new(hal.clone(), transport, config).expect("device set up");
    (hal, device)
}

pub fn buffer(hal: &VhostUserHal, len: usize) -> DmaBuffer<VhostUserHal> {
    DmaBuffer::new(hal, len).expect("dma memory")
}

/// Polls until nothing is in flight, failing the test after [`COMPLETION_TIMEOUT`].
pub fn complete_all(queue: &mut Queue) -> Vec<Completion<VhostUserHal>> {
    let mut done = Vec::new();
    let deadline = Instant::now() + COMPLETION_TIMEOUT;
    while queue.in_flight() > 0 {
        if queue.poll(usize::MAX, |c| done.push(c)) == 0 {
            assert!(Instant::now() < deadline, "requests never completed");
            std::hint::spin_loop();
        }
    }
    done
}

/// Submits one request with `submit`, commits, waits, returns its completion.
pub fn one(
    queue: &mut Queue,
    submit: impl FnOnce(&mut Queue) -> Result<(), virtio_blk_mq::Error>,
) -> Completion<VhostUserHal> {
    submit(queue).expect("submitted");
    queue.commit();
    let mut done = complete_all(queue);
    assert_eq!(done.len(), 1);
    done.remove(0)
}

/// Fills each 512-byte sector with its number, a generation and a position.
pub fn stamp(data: &mut [u8], first_sector: u64, generation: u32) {
    for (i, block) in data.chunks_mut(512).enumerate() {
        let sector = first_sector + i as u64;
        for (j, word) in block.chunks_mut(16).enumerate() {
            word[..8].copy_from_slice(&sector.to_le_bytes());
            word[8..12].copy_from_slice(&generation.to_le_bytes());
            word[12..].copy_from_slice(&(j as u32).to_le_bytes());
        }
    }
}

pub fn stamped(len: usize, first_sector: u64, generation: u32) -> Vec<u8> {
    let mut data = vec![0; len];
    stamp(&mut data, first_sector, generation);
    data
}

/// Sends `signal` (e.g. "STOP", "CONT") to the daemon by its pid.
pub fn signal(daemon: &StorageDaemon, signal: &str) {
    let pid = daemon.pid().expect("the daemon runs").to_string();
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed");
}
