//! Drives the device through one job: negotiates it with the command line's
//! ring, mode, queue size and features; gives every queue to its own CPU;
//! watches the device's health while the job runs; and, for a queue that
//! still has requests in flight after the drain timeout, prints the stall
//! report (`stall`).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use vblk_report::Summary;
use virtio_blk_mq::sync::SpinLock;
use virtio_blk_mq::{
    BlkDevice, BlkQueue, Config, DeviceStatus, Features, Mode, RingKind, Transport,
};

use crate::blkdev::{job_spec, summarize};
use crate::cmdline::{self, Options};
use crate::hal::GuestHal;
use crate::health::{self, StatusCheck, Watch};
use crate::job::{self, QueueResult};
use crate::wait::{self, QueueWaiter};
use crate::{inject, println, smp, stall};

/// Describes the transport's interrupt state for a stall report.
pub type InterruptState = Box<dyn Fn() -> String>;

/// One queue's seat: taken by its CPU for the run, then given back with the result.
type Seat<N> = SpinLock<Option<(BlkQueue<GuestHal, N>, Option<QueueResult>)>>;

/// The device's control plane while the job runs: any queue's CPU may look
/// at its status (a lock, but only every few tens of milliseconds).
struct Control<'d, T: Transport>(SpinLock<&'d mut BlkDevice<GuestHal, T>>);

impl<T: Transport> StatusCheck for Control<'_, T>
where
    BlkDevice<GuestHal, T>: Send,
{
    fn check(&self) -> DeviceStatus {
        let mut device = self.0.lock();
        let status = device.status();
        if status.contains(DeviceStatus::DEVICE_NEEDS_RESET) {
            // Fails every queue: their owners' next poll ends what is in flight.
            let _ = device.check_status();
        }
        status
    }
}

/// The driver's configuration for the command line.
fn config(options: &Options) -> Config {
    let mut features = Features::SUPPORTED;
    if options.ring == cmdline::Ring::Split {
        features.remove(Features::RING_PACKED);
    }
    if !options.event_idx {
        features.remove(Features::EVENT_IDX);
    }
    Config {
        features,
        // One more for the injector, when there is one.
        queues: options.queues + u16::from(options.inject.is_some()),
        // Twice the depth, as the bench CLI sizes it, within QEMU's 256.
        queue_size: Some(
            options
                .queue_size
                .unwrap_or((2 * options.iodepth).next_power_of_two().min(256)),
        ),
        mode: match options.mode {
            cmdline::Mode::Poll => Mode::Poll,
            cmdline::Mode::Irq => Mode::Interrupt,
            cmdline::Mode::Hybrid => Mode::Hybrid,
        },
        ..Config::default()
    }
}

/// Sets the device up, runs the job, reports stalls; the merged summary.
pub fn run<T: Transport>(
    transport: T,
    options: &Options,
    interrupts: InterruptState,
) -> Result<Summary, String>
where
    BlkDevice<GuestHal, T>: Send,
{
    let wanted_ring = match options.ring {
        cmdline::Ring::Split => RingKind::Split,
        cmdline::Ring::Packed => RingKind::Packed,
    };
    let config = config(options);
    let mut device = BlkDevice::new(GuestHal, transport, config)
        .map_err(|e| format!("device setup failed: {e}"))?;
    let info = *device.info();
    if info.ring != wanted_ring {
        return Err(format!(
            "the device negotiated a {:?} ring instead",
            info.ring
        ));
    }
    let mut queues = device.take_queues().into_queues();
    if queues.len() != usize::from(config.queues) {
        return Err(format!(
            "asked for {} queues, the device set up {} (num-queues on the QEMU side?)",
            config.queues,
            queues.len()
        ));
    }
    let injector = options
        .inject
        .map(|what| (what, SpinLock::new(queues.pop()), SpinLock::new(None)));
    let spec = job_spec(options, info.capacity_sectors)?;
    println!(
        "vblk-guest: {} sectors, {:?} ring, features {:#x}, {} queues of {} entries",
        info.capacity_sectors,
        info.ring,
        info.features.bits(),
        queues.len(),
        queues[0].size()
    );
    let count = queues.len();
    let seats: Vec<Seat<T::Notifier>> = queues
        .into_iter()
        .enumerate()
        .map(|(i, queue)| {
            wait::set_owner(i, i);
            SpinLock::new(Some((queue, None)))
        })
        .collect();
    let control = Control(SpinLock::new(&mut device));
    let watch = Watch::new(&control);
    let cpus = count + usize::from(injector.is_some());
    smp::run_on_cpus(cpus, &|cpu| {
        if cpu == count {
            if let Some((what, queue, report)) = &injector {
                if let Some(mut queue) = queue.lock().take() {
                    let delay = spec.runtime_ns / 10;
                    *report.lock() = Some(inject::run(*what, &mut queue, delay, spec.runtime_ns));
                }
            }
            return;
        }
        // Each CPU takes its own queue: the only lock is this hand-over.
        let Some((mut queue, _)) = seats[cpu].lock().take() else {
            return;
        };
        let result = job::run_watched(cpu, &mut queue, &spec, &QueueWaiter(cpu), &GuestHal, &watch);
        *seats[cpu].lock() = Some((queue, Some(result)));
    });
    let device = control.0.into_inner();
    if let Some((_, _, report)) = &injector {
        if let Some(report) = report.lock().take() {
            println!("vblk-guest: inject: {report}");
        }
    }
    let mut finished = Vec::with_capacity(count);
    let mut rekicks = 0;
    let mut declined = 0;
    for (index, seat) in seats.into_iter().enumerate() {
        let Some((mut queue, Some(result))) = seat.into_inner() else {
            return Err("a queue's CPU did not report back".into());
        };
        let stats = queue.stats();
        rekicks += stats.rekicks;
        declined += stats.rekicks_declined;
        if queue.in_flight() > 0 {
            stall::diagnose(index, &mut queue, device, &*interrupts);
        }
        finished.push((stats, result));
    }
    // What the driver's lost-kick recovery did (`cargo xtask soak` reads it).
    println!("vblk-guest: doorbells rung again by the driver (re-kicks): {rekicks}");
    println!("vblk-guest: re-kicks declined (the device had suppressed doorbells): {declined}");
    let status = device.status();
    health::record(status);
    if health::needs_reset_seen() {
        println!(
            "vblk-guest: the device set DEVICE_NEEDS_RESET (status {}) after {} \
             configuration-change interrupts: it hit an error it cannot go on from \
             (QEMU says why on its stderr); its queues were failed",
            health::describe(status),
            health::config_changes()
        );
    }
    let (mut notifications, mut timeouts) = (0, 0);
    for queue in 0..finished.len() {
        let (n, t) = wait::counts(queue);
        notifications += n;
        timeouts += t;
    }
    Ok(summarize(options, &finished, notifications, timeouts))
}
