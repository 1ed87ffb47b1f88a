//! Finds the virtio-blk device (virtio-pci on the PCI list, or virtio-mmio
//! from the command line), wires its interrupts, sets it up with one queue
//! per vCPU, runs the job on every queue at once and merges the results.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use vblk_report::summary::JobLabels;
use vblk_report::verify::Initial;
use vblk_report::Summary;
use virtio_blk_mq::sync::SpinLock;
use virtio_blk_mq::transport::pci::{self, MsixMessage, PciTransport};
use virtio_blk_mq::transport::MmioTransport;
use virtio_blk_mq::{BlkDevice, BlkQueue, Config, Features, Mode, QueueStats, RingKind, Transport};

use crate::apic::Trigger;
use crate::cmdline::{self, IrqKind, Options};
use crate::hal::GuestHal;
use crate::job::{self, JobSpec, QueueResult};
use crate::pci::PciDevice;
use crate::wait::{self, QueueWaiter};
use crate::{irq, println, smp};

/// Virtio device type of a block device.
const VIRTIO_BLK: u32 = 2;

/// Runs the job on the first virtio-blk device found; the summary, or why
/// the job could not run.
pub fn run(options: &Options, pci_devices: &[PciDevice], cpus: usize) -> Result<Summary, String> {
    let queues = usize::from(options.queues);
    if queues > cpus {
        return Err(format!(
            "queues={queues} needs as many vCPUs (one owner each); {cpus} are running"
        ));
    }
    if let Some(device) = pci_devices
        .iter()
        .find(|d| pci::is_virtio_blk(d.vendor_id, d.device_id))
    {
        let f = device.function;
        println!(
            "vblk-guest: virtio-blk on PCI {:02x}:{:02x}.{}",
            f.bus, f.device, f.function
        );
        let mut transport = PciTransport::new(&GuestHal, f).map_err(|e| {
            format!(
                "virtio-pci {:02x}:{:02x}.{}: {e:?}",
                f.bus, f.device, f.function
            )
        })?;
        let interrupts = pci_interrupts(&mut transport, options)?;
        println!("vblk-guest: interrupts: {interrupts}");
        return run_device(transport, options);
    }
    for spec in &options.mmio {
        let transport = match MmioTransport::new(&GuestHal, spec.base, spec.size as usize) {
            Ok(transport) if transport.device_type() == VIRTIO_BLK => transport,
            Ok(_) => continue,
            Err(e) => {
                println!("vblk-guest: virtio-mmio at {:#x}: {e:?}", spec.base);
                continue;
            }
        };
        println!(
            "vblk-guest: virtio-blk on virtio-mmio at {:#x}, irq {}",
            spec.base, spec.irq
        );
        if options.mode != cmdline::Mode::Poll {
            let line = transport.interrupt();
            let apic_id = smp::apic_id(0);
            irq::attach_gsi(
                spec.irq,
                Trigger::Level,
                apic_id,
                Box::new(move || {
                    // Reading and acknowledging InterruptStatus lowers the line.
                    if line.acknowledge().queue {
                        wait::notify_all(queues);
                    }
                }),
            )
            .map_err(|e| format!("virtio-mmio irq {}: {e}", spec.irq))?;
            println!(
                "vblk-guest: interrupts: I/O APIC input {} (level), shared by all queues",
                spec.irq
            );
        }
        return run_device(transport, options);
    }
    Err("no virtio-blk device: none on PCI, none given by virtio_mmio.device=".into())
}

/// MSI-X with one vector per queue aimed at the queue's CPU, or INTx
/// through the I/O APIC. Poll mode sets up none.
fn pci_interrupts(
    transport: &mut PciTransport<crate::pci::PciFunction>,
    options: &Options,
) -> Result<String, String> {
    let queues = usize::from(options.queues);
    if options.mode == cmdline::Mode::Poll {
        return Ok("none (poll mode)".into());
    }
    let msix_fits = transport
        .msix_vectors()
        .is_some_and(|n| usize::from(n) > queues);
    if options.irq == IrqKind::Msix && msix_fits {
        let attach = |cpu: usize, handler: irq::Handler| {
            irq::attach_msi(smp::apic_id(cpu), handler)
                .map(|(_, address, data)| MsixMessage { address, data })
                .map_err(|e| e.to_string())
        };
        // Configuration changes are not acted on during a job.
        let config = attach(0, Box::new(|| {}))?;
        let per_queue = (0..queues)
            .map(|q| attach(q, Box::new(move || wait::notify(q))))
            .collect::<Result<Vec<_>, _>>()?;
        transport
            .enable_msix(config, &per_queue)
            .map_err(|e| format!("MSI-X: {e:?}"))?;
        return Ok(format!(
            "MSI-X, {queues} queue vectors, each on its queue's CPU"
        ));
    }
    let line = transport.interrupt_line();
    let isr = transport.isr_reader();
    irq::attach_gsi(
        u32::from(line),
        Trigger::Level,
        smp::apic_id(0),
        Box::new(move || {
            // Reading the ISR acknowledges it and de-asserts INTx.
            if isr.read().queue {
                wait::notify_all(queues);
            }
        }),
    )
    .map_err(|e| format!("INTx line {line}: {e}"))?;
    Ok(format!(
        "INTx, I/O APIC input {line} (level), shared by all queues"
    ))
}

/// Every queue's job, over the first `size` bytes of a disk of
/// `capacity_sectors` (all of it when `size` is 0), split evenly between
/// the queues.
pub fn job_spec(options: &Options, capacity_sectors: u64) -> Result<JobSpec, String> {
    let disk_bytes = capacity_sectors * 512;
    let region = if options.size == 0 {
        disk_bytes
    } else {
        options.size.min(disk_bytes)
    };
    let blocks_per_queue = region / options.bs / u64::from(options.queues);
    if blocks_per_queue == 0 {
        return Err(format!(
            "the disk ({disk_bytes} bytes) holds less than one block per queue"
        ));
    }
    Ok(JobSpec {
        block_size: options.bs,
        blocks_per_queue,
        random: options.rw.random(),
        read_percent: options.rw.read_percent(options.rwmixread),
        iodepth: options.iodepth,
        verify: options.verify,
        verify_initial: Initial::default(),
        number_ios: options.number_ios,
        spin_budget: options.spin_budget,
        runtime_ns: options.runtime_ms * 1_000_000,
        request_timeout_ns: job::REQUEST_TIMEOUT_NS,
    })
}

fn mode_name(mode: cmdline::Mode) -> &'static str {
    match mode {
        cmdline::Mode::Poll => "poll",
        cmdline::Mode::Irq => "irq",
        cmdline::Mode::Hybrid => "hybrid",
    }
}

/// One queue's seat: taken by its CPU for the run, then given back with the result.
type Seat<N> = SpinLock<Option<(BlkQueue<GuestHal, N>, Option<QueueResult>)>>;

fn run_device<T: Transport>(transport: T, options: &Options) -> Result<Summary, String> {
    let wanted_ring = match options.ring {
        cmdline::Ring::Split => RingKind::Split,
        cmdline::Ring::Packed => RingKind::Packed,
    };
    let mut features = Features::SUPPORTED;
    if wanted_ring == RingKind::Split {
        features.remove(Features::RING_PACKED);
    }
    let config = Config {
        features,
        queues: options.queues,
        // Twice the depth, as the bench CLI sizes it, within QEMU's 256.
        queue_size: Some((2 * options.iodepth).next_power_of_two().min(256)),
        mode: match options.mode {
            cmdline::Mode::Poll => Mode::Poll,
            cmdline::Mode::Irq => Mode::Interrupt,
            cmdline::Mode::Hybrid => Mode::Hybrid,
        },
        ..Config::default()
    };
    let mut device = BlkDevice::new(GuestHal, transport, config)
        .map_err(|e| format!("device setup failed: {e}"))?;
    let info = *device.info();
    if info.ring != wanted_ring {
        return Err(format!(
            "the device negotiated a {:?} ring instead",
            info.ring
        ));
    }
    let queues = device.take_queues().into_queues();
    if queues.len() != usize::from(options.queues) {
        return Err(format!(
            "asked for {} queues, the device set up {} (num-queues on the QEMU side?)",
            options.queues,
            queues.len()
        ));
    }
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
    smp::run_on_cpus(count, &|cpu| {
        // Each CPU takes its own queue: the only lock is this hand-over.
        let Some((mut queue, _)) = seats[cpu].lock().take() else {
            return;
        };
        let result = job::run(cpu, &mut queue, &spec, &QueueWaiter(cpu), &GuestHal);
        *seats[cpu].lock() = Some((queue, Some(result)));
    });
    let mut finished = Vec::with_capacity(count);
    for seat in seats {
        match seat.into_inner() {
            Some((queue, Some(result))) => finished.push((queue.stats(), result)),
            _ => return Err("a queue's CPU did not report back".into()),
        }
    }
    drop(device);
    let (mut notifications, mut timeouts) = (0, 0);
    for queue in 0..finished.len() {
        let (n, t) = wait::counts(queue);
        notifications += n;
        timeouts += t;
    }
    Ok(summarize(options, &finished, notifications, timeouts))
}

/// Merges the queues' results into the report; `notifications` and
/// `timeouts` are the used-buffer interrupts delivered and the waits that
/// ended without one.
pub fn summarize(
    options: &Options,
    finished: &[(QueueStats, QueueResult)],
    notifications: u64,
    timeouts: u64,
) -> Summary {
    for (_, result) in finished {
        if let Some(problem) = &result.first_problem {
            println!("vblk-guest: {problem}");
        }
    }
    let labels = JobLabels {
        name: options.name.clone(),
        rw: options.rw.name().into(),
        block_size: options.bs,
        ring: match options.ring {
            cmdline::Ring::Split => "split",
            cmdline::Ring::Packed => "packed",
        }
        .into(),
        queues: options.queues,
        iodepth: options.iodepth,
        mode: mode_name(options.mode).into(),
        disk: options.disk.clone(),
    };
    Summary::of_queues(labels, finished, notifications, timeouts)
}
