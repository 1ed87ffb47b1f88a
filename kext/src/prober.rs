//! The `DeviceProber`: takes every virtio-blk function on PCI (modern
//! virtio-pci, through the rebuilt configuration space) and every
//! virtio-mmio device of type 2, sets each up with one queue per CPU (plus
//! one), attaches its interrupt line, and registers a block driver.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;

use kerla_api::driver::block::register_block_driver;
use kerla_api::driver::pci::PciDevice;
use kerla_api::driver::{attach_irq, DeviceProber, VirtioMmioDevice};
use kerla_api::sync::SpinLock;
use kerla_api::{info, warn};
use virtio_blk_mq::spec::DEVICE_TYPE_BLOCK;
use virtio_blk_mq::transport::mmio::MmioError;
use virtio_blk_mq::transport::pci::is_virtio_blk;
use virtio_blk_mq::transport::{MmioTransport, PciTransport};
use virtio_blk_mq::{BlkDevice, Config, Transport};

use crate::block::VirtioBlkDriver;
use crate::config::KextConfig;
use crate::disk::Disk;
use crate::hal::KextHal;
use crate::irq::{IrqSource, IrqState};
use crate::pci_view::ConfigView;
use crate::transport::KextTransport;

/// Bytes of a virtio-mmio window. Kerla's `VirtioMmioDevice` carries no
/// size; QEMU's windows are 0x200 bytes (registers, then 0x100 of device
/// configuration, more than virtio-blk's).
pub const MMIO_WINDOW: usize = 0x200;

/// Every disk set up so far.
pub(crate) static DISKS: SpinLock<alloc::vec::Vec<&'static Disk>> =
    SpinLock::new(alloc::vec::Vec::new());

/// The kext's prober.
pub(crate) struct Prober {
    config: KextConfig,
}

impl Prober {
    pub(crate) fn new(config: KextConfig) -> Prober {
        Prober { config }
    }

    /// Negotiates, sets up the queues, attaches the line, registers.
    fn set_up(&self, name: String, transport: KextTransport, line: Option<u8>, source: IrqSource) {
        let cpus = self.config.cpus;
        let config = Config {
            queues: self.config.queues_wanted(),
            ..self.config.driver
        };
        let device = match BlkDevice::new(KextHal, transport, config) {
            Ok(device) => device,
            Err(error) => {
                warn!("virtio-blk-mq kext: {name}: setup failed: {error}");
                return;
            }
        };
        // BlkDevice::new set up this many queues.
        let queues = config.queues.clamp(1, device.info().device_queues.max(1));
        let irq: &'static IrqState = Box::leak(Box::new(IrqState::new(usize::from(queues))));
        let disk: &'static Disk = Box::leak(Box::new(Disk::new(
            name,
            device,
            cpus,
            irq,
            line,
            self.config.spin_budget,
        )));
        // The hybrid fallback (and configuration changes): only atomics and
        // the device's interrupt register in the handler.
        if let Some(line) = line {
            attach_irq(line, move || irq.handle(&source));
        }
        let info = disk.info();
        info!(
            "virtio-blk-mq kext: {}: {} sectors, {:?} ring, {} queues ({} CPUs), {:?} mode, irq {}",
            disk.name(),
            info.capacity_sectors,
            info.ring,
            disk.queues(),
            cpus.count(),
            self.config.driver.mode,
            line.map_or(String::from("none"), |l| format!("{l}")),
        );
        DISKS.lock().push(disk);
        register_block_driver(Box::new(VirtioBlkDriver::new(disk)));
    }
}

impl DeviceProber for Prober {
    fn probe_pci(&self, pci_device: &PciDevice) {
        let header = pci_device.config();
        if !is_virtio_blk(header.vendor_id(), header.device_id()) {
            return;
        }
        let name = format!(
            "virtio-blk-pci {:02x}:{:02x}",
            pci_device.bus(),
            pci_device.slot()
        );
        let view = ConfigView::new(pci_device);
        // The view cannot write the command register; Kerla's one write can.
        pci_device.enable_bus_master();
        let transport = match PciTransport::new(&KextHal, view) {
            Ok(transport) => transport,
            Err(error) => {
                warn!("virtio-blk-mq kext: {name}: {error}");
                return;
            }
        };
        let line = Some(header.interrupt_line()).filter(|&l| l != 0 && l != 0xff);
        let source = IrqSource::Pci(transport.isr_reader());
        self.set_up(name, KextTransport::Pci(Box::new(transport)), line, source);
    }

    fn probe_virtio_mmio(&self, mmio_device: &VirtioMmioDevice) {
        let base = mmio_device.mmio_base.value() as u64;
        let transport = match MmioTransport::new(&KextHal, base, MMIO_WINDOW) {
            Ok(transport) if transport.device_type() == DEVICE_TYPE_BLOCK => transport,
            // Another device type, or an empty slot.
            Ok(_) | Err(MmioError::NoDevice) => return,
            Err(error) => {
                warn!("virtio-blk-mq kext: virtio-mmio at {base:#x}: {error}");
                return;
            }
        };
        let name = format!("virtio-blk-mmio {base:#x}");
        let source = IrqSource::Mmio(transport.interrupt());
        self.set_up(
            name,
            KextTransport::Mmio(transport),
            Some(mmio_device.irq),
            source,
        );
    }
}
