//! Starting and stopping a `qemu-storage-daemon` vhost-user-blk export, for
//! tests and benchmarks that need a real backend without a VM.
//!
//! The daemon is a child process; [`StorageDaemon`] stops it by its pid
//! (SIGKILL, then wait) when dropped, also while a test unwinds from a panic.
//!
//! With [`DaemonConfig::blkdebug`] the export sits on QEMU's `blkdebug`
//! filter over the backend, which fails chosen requests with an errno (EIO
//! by default): QEMU's own fault injection, reported to the driver as
//! VIRTIO_BLK_S_IOERR.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::string::String;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The program started when `QEMU_STORAGE_DAEMON` does not name another.
pub const DEFAULT_PROGRAM: &str = "qemu-storage-daemon";

/// How long the daemon may take to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the export serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonBackend {
    /// QEMU's null-co driver: reads return zeroes, writes are dropped.
    Null {
        /// Disk size in bytes.
        size: u64,
        /// Added completion latency in nanoseconds (null-co's `latency-ns`; 0 for none).
        latency_ns: u64,
    },
    /// A raw image file.
    File {
        /// The file (it must exist).
        path: PathBuf,
    },
}

/// How to start the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConfig {
    /// What backs the disk.
    pub backend: DaemonBackend,
    /// `num-queues` of the export.
    pub num_queues: u16,
    /// The export accepts writes.
    pub writable: bool,
    /// `Some(rules)`: put a `blkdebug` node between the backend and the
    /// export, with `rules` as its options (`inject-error.0.event=none,
    /// inject-error.0.iotype=read,inject-error.0.sector=2048,...`; the
    /// daemon names the node and its image). `None`: export the backend as is.
    pub blkdebug: Option<String>,
}

/// Why the daemon could not be started.
#[derive(Debug)]
pub enum DaemonError {
    /// The program is not installed.
    NotInstalled(String),
    /// Starting the process or preparing its directory failed.
    Spawn(io::Error),
    /// The daemon exited, or did not create its socket in time; its log is attached.
    NotReady(String),
}

impl fmt::Display for DaemonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonError::NotInstalled(program) => write!(
                f,
                "`{program}` was not found: install QEMU's storage daemon (Debian/Ubuntu: \
                 apt-get install qemu-utils), or point QEMU_STORAGE_DAEMON at it"
            ),
            DaemonError::Spawn(e) => write!(f, "cannot start qemu-storage-daemon: {e}"),
            DaemonError::NotReady(log) => {
                write!(f, "qemu-storage-daemon did not come up: {log}")
            }
        }
    }
}

impl std::error::Error for DaemonError {}

/// A running `qemu-storage-daemon` with one vhost-user-blk export, in a
/// private temporary directory. Dropping it kills the process by pid, waits
/// for it and removes the directory.
#[derive(Debug)]
pub struct StorageDaemon {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

/// A value for QEMU's `key=value,...` options: a literal comma is doubled.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// The program to run: `$QEMU_STORAGE_DAEMON`, else [`DEFAULT_PROGRAM`].
pub fn program() -> String {
    std::env::var("QEMU_STORAGE_DAEMON").unwrap_or_else(|_| DEFAULT_PROGRAM.into())
}

fn find_program(program: &str) -> Option<PathBuf> {
    let candidate = Path::new(program);
    if candidate.components().count() > 1 {
        return candidate.is_file().then(|| candidate.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether a Unix socket bound at `path` is listening: `/proc/net/unix`
/// marks listening sockets with `__SO_ACCEPTCON` (0x10000) in its Flags
/// column. Where that file cannot be read, the socket file's existence is
/// the best sign there is.
fn is_listening(path: &Path) -> bool {
    const SO_ACCEPTCON: u32 = 0x1_0000;
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return path.exists();
    };
    let wanted = path.to_string_lossy();
    table.lines().skip(1).any(|line| {
        let fields: std::vec::Vec<&str> = line.split_whitespace().collect();
        // Num RefCount Protocol Flags Type St Inode Path
        fields.len() >= 8
            && fields[7] == wanted
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & SO_ACCEPTCON != 0)
    })
}

impl StorageDaemon {
    /// Starts the daemon and waits (bounded) until its socket accepts.
    pub fn spawn(config: &DaemonConfig) -> Result<Self, DaemonError> {
        let program = program();
        let binary = find_program(&program).ok_or(DaemonError::NotInstalled(program))?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(std::format!(
            "vblk-qsd-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(DaemonError::Spawn)?;
        let socket = dir.join("vhost.sock");
        let log = dir.join("daemon.log");
        // The export serves node n0: the backend, or blkdebug over it.
        let backend_node = if config.blkdebug.is_some() {
            "img"
        } else {
            "n0"
        };
        let mut blockdevs = std::vec![match &config.backend {
            DaemonBackend::Null { size, latency_ns } => std::format!(
                "driver=null-co,node-name={backend_node},size={size},read-zeroes=on,\
                 latency-ns={latency_ns}"
            ),
            DaemonBackend::File { path } => std::format!(
                "driver=file,node-name={backend_node},filename={},cache.direct=off",
                escape(&path.to_string_lossy())
            ),
        }];
        if let Some(rules) = &config.blkdebug {
            blockdevs.push(std::format!(
                "driver=blkdebug,node-name=n0,image={backend_node},{rules}"
            ));
        }
        let export = std::format!(
            "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path={},\
             num-queues={},writable={}",
            socket.display(),
            config.num_queues.max(1),
            if config.writable { "on" } else { "off" }
        );
        let log_file = File::create(&log).map_err(DaemonError::Spawn)?;
        let log_err = log_file.try_clone().map_err(DaemonError::Spawn)?;
        let mut command = Command::new(binary);
        for blockdev in &blockdevs {
            command.args(["--blockdev", blockdev]);
        }
        let child = command
            .args(["--export", &export])
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .spawn()
            .map_err(DaemonError::Spawn)?;
        let mut daemon = StorageDaemon {
            child: Some(child),
            dir,
            socket,
            log,
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<(), DaemonError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(DaemonError::NotReady(std::format!(
                        "it exited ({status}): {}",
                        self.log_text()
                    )));
                }
            }
            // The file appears at bind(), before listen(): a connect in
            // between is refused. Wait until the kernel lists it as listening.
            if is_listening(&self.socket) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DaemonError::NotReady(std::format!(
                    "no socket after {START_TIMEOUT:?}: {}",
                    self.log_text()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The export's Unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The daemon's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the daemon printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log)
            .map(|text| text.trim().into())
            .unwrap_or_default()
    }

    /// Kills the daemon at once with SIGKILL (by pid) and reaps it, as a
    /// crash would end it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL to this child's pid only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for StorageDaemon {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::is_listening;
    use std::os::unix::net::UnixListener;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(std::format!("vblk-listen-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("s.sock")
    }

    #[test]
    fn a_bound_socket_is_not_ready_until_it_listens() {
        let path = scratch("bound");
        // SAFETY: plain socket calls on a descriptor this test owns; the
        // address is a zeroed sockaddr_un with a path shorter than sun_path.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        assert!(fd >= 0);
        // SAFETY: sockaddr_un is plain data; all zeros is a valid value.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (slot, byte) in addr.sun_path.iter_mut().zip(path.to_str().unwrap().bytes()) {
            *slot = byte as libc::c_char;
        }
        let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_un of `len` bytes.
        let bound = unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_un).cast(), len) };
        assert_eq!(bound, 0);
        assert!(path.exists());
        assert!(
            !is_listening(&path),
            "bound only: a connect would be refused"
        );
        // SAFETY: `fd` is the bound socket above.
        assert_eq!(unsafe { libc::listen(fd, 1) }, 0);
        assert!(is_listening(&path));
        // SAFETY: closes the descriptor this test opened, once.
        unsafe { libc::close(fd) };
    }

    #[test]
    fn a_listener_is_ready_and_a_missing_path_is_not() {
        let path = scratch("listener");
        assert!(!is_listening(&path));
        let _listener = UnixListener::bind(&path).unwrap();
        assert!(is_listening(&path));
    }
}
