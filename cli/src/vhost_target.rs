//! `--target vhost-user:PATH` / `--target vhost-user --spawn-daemon`: our
//! driver against a vhost-user-blk backend (qemu-storage-daemon), one pinned
//! thread per queue, the same job engine as `--target sim`.
//!
//! While the queues run, this thread checks the device status every
//! [`WATCH_EVERY`]: a backend that dies fails every queue (their requests
//! complete with an error) instead of leaving the job waiting.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use virtio_blk_mq::mq::{available_cpus, run_pinned};
use virtio_blk_mq::transport::vhost_user::{
    DaemonBackend, DaemonConfig, StorageDaemon, VhostUserHal, VhostUserIrq, VhostUserTransport,
};
use virtio_blk_mq::{BlkDevice, PAGE_SIZE};

use crate::args::{Args, Disk};
use crate::job;
use crate::progress::Progress;
use crate::sim_target::{RunResult, SetupError};

/// How often the device status is checked during a run.
const WATCH_EVERY: Duration = Duration::from_millis(20);

/// The backend a run talks to: an existing socket, or a daemon it started.
pub struct Backend {
    socket: PathBuf,
    daemon: Option<StorageDaemon>,
}

impl Backend {
    /// Starts the daemon for `--spawn-daemon` (`queues` queues on null-co
    /// of `--size` bytes or on `--disk file:PATH`, under blkdebug with
    /// `--blkdebug-error`), or names the socket of `--target vhost-user:PATH`.
    pub fn open(args: &Args, queues: u16) -> Result<Backend, SetupError> {
        match &args.target {
            crate::args::Target::VhostUser(path) => Ok(Backend {
                socket: path.clone(),
                daemon: None,
            }),
            _ => {
                let backend = match args.disk() {
                    Disk::File(path) => {
                        if !path.is_file() {
                            return Err(SetupError::Backend(format!(
                                "--disk file:{}: no such file (create it first, e.g. \
                                 truncate -s 64M {})",
                                path.display(),
                                path.display()
                            )));
                        }
                        DaemonBackend::File { path }
                    }
                    _ => DaemonBackend::Null {
                        size: args.size,
                        latency_ns: 0,
                    },
                };
                let daemon = StorageDaemon::spawn(&DaemonConfig {
                    backend,
                    num_queues: queues,
                    writable: true,
                    blkdebug: (!args.blkdebug_error.is_empty())
                        .then(|| vblk_report::blkdebug::inject_error_options(&args.blkdebug_error)),
                })
                .map_err(|e| SetupError::Backend(e.to_string()))?;
                Ok(Backend {
                    socket: daemon.socket().to_path_buf(),
                    daemon: Some(daemon),
                })
            }
        }
    }

    /// The export's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What the export is, for the user.
    pub fn describe(&self, args: &Args) -> String {
        match (&self.daemon, args.disk()) {
            (None, _) => self.socket.display().to_string(),
            (Some(_), Disk::File(path)) => {
                format!("qemu-storage-daemon raw file {} (spawned)", path.display())
            }
            (Some(_), _) => format!("qemu-storage-daemon null-co size={} (spawned)", args.size),
        }
    }

    /// The daemon's last words, when this run started one.
    pub fn daemon_log(&self) -> Option<String> {
        self.daemon.as_ref().map(StorageDaemon::log_text)
    }
}

/// DMA memory a run needs: every queue's ring, slab and buffers, with room to spare.
pub fn memory_bytes(queues: u16, iodepth: u16, block_size: u64) -> usize {
    let buffer = (block_size as usize).div_ceil(PAGE_SIZE) * PAGE_SIZE;
    usize::from(queues) * (usize::from(iodepth) * buffer + (2 << 20)) + (4 << 20)
}

/// Runs the job with our driver against `backend`.
pub fn run(args: &Args, backend: &Backend) -> Result<RunResult, SetupError> {
    let hal = VhostUserHal::new(memory_bytes(args.queues, args.iodepth, args.bs))
        .map_err(|e| SetupError::Backend(format!("cannot create DMA memory: {e}")))?;
    let transport = VhostUserTransport::connect(backend.socket(), &hal)
        .map_err(|e| SetupError::Backend(e.to_string()))?;
    let config = args.driver_config();
    let mut device = BlkDevice::new(hal.clone(), transport, config).map_err(SetupError::Driver)?;
    let ring = device.info().ring;
    let capacity = device.info().capacity_sectors * 512;
    let queues = device.take_queues().into_queues();
    if queues.len() != usize::from(args.queues) {
        return Err(SetupError::Queues {
            wanted: args.queues,
            got: queues.len(),
        });
    }
    let irqs: Vec<VhostUserIrq> = (0..args.queues)
        .map(|q| device.transport_mut().irq(q).expect("queue is set up"))
        .collect();
    let blocks_per_queue = capacity / args.bs / u64::from(args.queues);
    if blocks_per_queue == 0 {
        return Err(SetupError::Backend(format!(
            "the export holds {capacity} bytes: less than one {}-byte block per queue",
            args.bs
        )));
    }
    let spec = args.job_spec(blocks_per_queue);
    // The daemon's thread needs a CPU too.
    let yield_when_idle = usize::from(args.queues) + 1 > available_cpus();
    let counters: Arc<[AtomicU64]> = (0..args.queues).map(|_| AtomicU64::new(0)).collect();
    let progress = Progress::start(args, counters.clone());
    let show = progress.is_some();
    let finished_flag = AtomicBool::new(false);
    let finished = std::thread::scope(|scope| {
        let workers = scope.spawn(|| {
            let result = run_pinned(queues, |i, queue| {
                let counter = show.then(|| &counters[i]);
                job::run(i, queue, &hal, &spec, yield_when_idle, &irqs[i], counter)
            });
            finished_flag.store(true, Ordering::Release);
            result
        });
        while !finished_flag.load(Ordering::Acquire) {
            if device.check_status().is_err() {
                // Every queue is failed now; the jobs drain and stop.
                break;
            }
            std::thread::sleep(WATCH_EVERY);
        }
        workers
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    });
    if let Some(progress) = progress {
        progress.finish();
    }
    let failure = device
        .transport_mut()
        .failure()
        .map(|why| format!("the vhost-user backend failed: {why}"));
    let irq_timeouts = irqs.iter().map(VhostUserIrq::timeouts).sum();
    let queues = finished
        .into_iter()
        .map(|(queue, result)| (queue.stats(), result))
        .collect();
    drop(device);
    Ok(RunResult {
        queues,
        used_notifications: 0,
        irq_timeouts,
        violations: Vec::new(),
        ring,
        failure,
    })
}
