//! `--target sim`: the in-process simulated device, on its own threads, and
//! one pinned driver thread per queue.

use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use virtio_blk_mq::mq::{available_cpus, run_pinned, IrqEvent};
use virtio_blk_mq::spec::blk_status;
use virtio_blk_mq::{BlkDevice, Features, QueueStats, RingKind};
use virtio_blk_sim::{DiskKind, Injection, SimConfig, SimDevice, SimHal, ThreadMode};

use crate::args::{self, Args};
use crate::job::{self, QueueResult};
use crate::progress::Progress;

/// Why the run could not start.
#[derive(Debug)]
pub enum SetupError {
    /// The driver refused the device.
    Driver(virtio_blk_mq::Error),
    /// The device gave fewer queues than asked for.
    Queues { wanted: u16, got: usize },
    /// The negotiated ring is not the one asked for.
    Ring(RingKind),
    /// The vhost-user backend could not be started or reached.
    Backend(String),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Driver(e) => write!(f, "device setup failed: {e}"),
            SetupError::Queues { wanted, got } => {
                write!(f, "asked for {wanted} queues, the device set up {got}")
            }
            SetupError::Ring(ring) => write!(f, "the device negotiated a {ring:?} ring instead"),
            SetupError::Backend(why) => write!(f, "{why}"),
        }
    }
}

/// Everything a run measured.
pub struct RunResult {
    /// Per queue: the driver's counters and the job's results.
    pub queues: Vec<(QueueStats, QueueResult)>,
    /// Used-buffer notifications the device sent, all queues.
    pub used_notifications: u64,
    /// Waits for a notification that ended by timing out.
    pub irq_timeouts: u64,
    /// Driver protocol violations the device saw.
    pub violations: Vec<String>,
    /// The ring layout the device negotiated.
    pub ring: RingKind,
    /// Why the device failed during the run, if it did.
    pub failure: Option<String>,
}

/// Sets up the simulated device and runs the job on every queue.
pub fn run(args: &Args) -> Result<RunResult, SetupError> {
    let mut sim_config = SimConfig {
        num_queues: args.queues,
        disk: match args.disk() {
            args::Disk::Ram => DiskKind::Ram,
            // args.check refuses file disks for the sim.
            args::Disk::Null | args::Disk::File(_) => DiskKind::Null,
        },
        capacity_sectors: args.size / 512,
        inject: args
            .inject_ioerr
            .iter()
            .map(|sectors| Injection {
                sectors: sectors.clone(),
                status: blk_status::IOERR,
            })
            .collect(),
        ..SimConfig::default()
    };
    let ring = match args.ring {
        args::Ring::Split => {
            sim_config.features.remove(Features::RING_PACKED);
            RingKind::Split
        }
        args::Ring::Packed => RingKind::Packed,
    };
    let sim = SimDevice::new(sim_config);
    let config = args.driver_config();
    let mut device = BlkDevice::new(SimHal, sim.transport(), config).map_err(SetupError::Driver)?;
    if device.info().ring != ring {
        return Err(SetupError::Ring(device.info().ring));
    }
    let queues = device.take_queues().into_queues();
    if queues.len() != usize::from(args.queues) {
        return Err(SetupError::Queues {
            wanted: args.queues,
            got: queues.len(),
        });
    }

    let irqs: Vec<Arc<IrqEvent>> = (0..args.queues)
        .map(|q| {
            let event = Arc::new(IrqEvent::new());
            let signalled = event.clone();
            sim.set_used_notify_callback(q, Box::new(move || signalled.signal()));
            event
        })
        .collect();
    if args.inject_stall {
        sim.stall(0, true);
    }
    // Device threads go on the CPUs after the drivers' (wrapping around).
    let threads = sim.spawn_pinned(
        if args.device_polls() {
            ThreadMode::Poll
        } else {
            ThreadMode::Sleep
        },
        usize::from(args.queues),
    );

    let spec = args.job_spec(args.size / args.bs / u64::from(args.queues));
    let yield_when_idle = {
        let device_threads = if args.device_polls() { args.queues } else { 0 };
        usize::from(args.queues + device_threads) > available_cpus()
    };
    let counters: Arc<[AtomicU64]> = (0..args.queues).map(|_| AtomicU64::new(0)).collect();
    let progress = Progress::start(args, counters.clone());
    let show = progress.is_some();
    let finished = run_pinned(queues, |i, queue| {
        let counter = show.then(|| &counters[i]);
        job::run(
            i,
            queue,
            &SimHal,
            &spec,
            yield_when_idle,
            irqs[i].as_ref(),
            counter,
        )
    });
    if let Some(progress) = progress {
        progress.finish();
    }

    // The device stops first; then the queues and the device are torn down.
    drop(threads);
    let used_notifications = (0..args.queues)
        .map(|q| sim.stats(q).used_notifications)
        .sum();
    let irq_timeouts = irqs.iter().map(|irq| irq.timeouts()).sum();
    let violations = sim.violations();
    let queues = finished
        .into_iter()
        .map(|(queue, result)| (queue.stats(), result))
        .collect();
    drop(device);
    Ok(RunResult {
        queues,
        used_notifications,
        irq_timeouts,
        violations,
        ring,
        failure: None,
    })
}
