//! Finds the virtio-blk device (virtio-pci on the PCI list, or virtio-mmio
//! from the command line) and wires its interrupts; `drive` sets it up with
//! one queue per vCPU and runs the job on every queue at once; the results
//! are merged here.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use vblk_report::summary::JobLabels;
use vblk_report::verify::Initial;
use vblk_report::Summary;
use virtio_blk_mq::transport::pci::{self, MsixMessage, PciTransport};
use virtio_blk_mq::transport::MmioTransport;
use virtio_blk_mq::{QueueStats, Transport};

use crate::apic::Trigger;
use crate::cmdline::{self, IrqKind, Options};
use crate::hal::GuestHal;
use crate::job::{self, JobSpec, QueueResult};
use crate::pci::PciDevice;
use crate::wait;
use crate::{drive, health, irq, println, smp};

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
    if options.inject.is_some() && queues >= cpus {
        return Err(format!(
            "inject= needs a vCPU (and a device queue) beyond queues={queues}; {cpus} vCPUs are running"
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
        let isr = transport.isr_reader();
        let pba = crate::pci::msix_pba(device);
        let msix = transport.msix_enabled();
        let state = Box::new(move || {
            // Reading the ISR clears it: this is the one read after the stall.
            let isr = isr.read().bits();
            match (msix, pba) {
                (true, Some(pba)) => format!(
                    "ISR {isr:#x}; MSI-X pending bits {:#x} (bit 0: configuration, bit 1 + q: queue q)",
                    pba.read()
                ),
                _ => format!("ISR {isr:#x}; MSI-X off"),
            }
        });
        return drive::run(transport, options, state);
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
                    let status = line.acknowledge();
                    if status.queue {
                        wait::notify_all(queues);
                    }
                    if status.config {
                        health::config_changed(queues);
                    }
                }),
            )
            .map_err(|e| format!("virtio-mmio irq {}: {e}", spec.irq))?;
            println!(
                "vblk-guest: interrupts: I/O APIC input {} (level), shared by all queues",
                spec.irq
            );
        }
        let line = transport.interrupt();
        let state = Box::new(move || {
            // Acknowledging clears it: this is the one read after the stall.
            format!("InterruptStatus {:#x}", line.acknowledge().bits())
        });
        return drive::run(transport, options, state);
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
        // A configuration change may announce DEVICE_NEEDS_RESET: the
        // queues' owners look at the status (health.rs).
        let config = attach(0, Box::new(move || health::config_changed(queues)))?;
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
            let status = isr.read();
            if status.queue {
                wait::notify_all(queues);
            }
            if status.config {
                health::config_changed(queues);
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
