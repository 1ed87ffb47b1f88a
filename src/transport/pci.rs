//! Modern virtio over PCI (VIRTIO 1.2 §4.1).
//!
//! [`PciTransport`] finds the virtio structures through the capability list,
//! maps them through [`Hal::map_mmio`], switches on memory decoding and bus
//! mastering, and implements [`Transport`] over the common configuration
//! structure. Each queue's doorbell address is computed once, when the queue
//! is set up, and handed to the queue as a [`PciNotifier`] that owns just that
//! pointer. Interrupts are MSI-X, one vector per queue plus one for
//! configuration changes ([`PciTransport::enable_msix`]), or INTx with the
//! ISR status byte ([`IsrReader`]).
//!
//! The kernel provides configuration-space access for one function through
//! [`PciConfig`] and register mappings through [`Hal::map_mmio`].
//!
//! # Usage in a kernel
//!
//! ```no_run
//! use virtio_blk_mq::transport::pci::{self, MsixMessage, PciConfig, PciTransport};
//! use virtio_blk_mq::{BlkDevice, Config, Mode};
//! # use core::ptr::NonNull;
//! # use virtio_blk_mq::{Hal, PhysAddr};
//! # #[derive(Clone)] struct KernelHal;
//! # unsafe impl Hal for KernelHal {
//! #     fn dma_alloc(&self, _: usize) -> Option<(PhysAddr, NonNull<u8>)> { None }
//! #     unsafe fn dma_dealloc(&self, _: PhysAddr, _: NonNull<u8>, _: usize) {}
//! #     fn map_mmio(&self, paddr: PhysAddr, _: usize) -> Option<NonNull<u8>> {
//! #         NonNull::new(paddr as *mut u8)
//! #     }
//! # }
//! # struct Ecam { bus: u8, dev: u8, func: u8 }
//! # impl PciConfig for Ecam {
//! #     fn read_u8(&self, _: u16) -> u8 { 0 }
//! #     fn read_u16(&self, _: u16) -> u16 { 0 }
//! #     fn read_u32(&self, _: u16) -> u32 { 0 }
//! #     fn write_u8(&self, _: u16, _: u8) {}
//! #     fn write_u16(&self, _: u16, _: u16) {}
//! #     fn write_u32(&self, _: u16, _: u32) {}
//! # }
//! # fn lapic_msi(cpu: usize, vector: u8) -> MsixMessage {
//! #     MsixMessage { address: 0xfee0_0000 | (cpu as u64) << 12, data: u32::from(vector) }
//! # }
//! # fn cpus() -> usize { 4 }
//! # fn attach_irq(_: u8, _: impl Fn() + Send + Sync + 'static) {}
//! // 1. Enumeration: vendor 0x1af4, device 0x1042 (or transitional 0x1001).
//! let function = Ecam { bus: 0, dev: 3, func: 0 };
//! let (vendor, device) = (function.read_u16(0), function.read_u16(2));
//! assert!(pci::is_virtio_blk(vendor, device));
//!
//! // 2. Find and map the virtio structures; enables memory space + bus master.
//! let mut transport = PciTransport::new(&KernelHal, function).expect("virtio-pci layout");
//!
//! // 3. Interrupts, before BlkDevice::new (queue vectors are set before queue_enable).
//! let queues = cpus().min(usize::from(transport.num_queues()));
//! match transport.msix_vectors() {
//!     Some(table) if usize::from(table) > queues => {
//!         let per_queue: Vec<MsixMessage> = (0..queues).map(|q| lapic_msi(q, 0x40 + q as u8)).collect();
//!         transport.enable_msix(lapic_msi(0, 0x3f), &per_queue).expect("MSI-X vectors");
//!         // vector 0x40 + q wakes queue q's owner; 0x3f calls BlkDevice::check_status.
//!     }
//!     _ => {
//!         // INTx: read (and so acknowledge) the ISR from the handler.
//!         let isr = transport.isr_reader();
//!         attach_irq(transport.interrupt_line(), move || {
//!             let cause = isr.read();
//!             if cause.queue { /* wake every queue's owner */ }
//!             if cause.config { /* check the device status */ }
//!         });
//!     }
//! }
//!
//! // 4. Negotiate and set up the queues: one per CPU.
//! let config = Config { queues: queues as u16, mode: Mode::Hybrid, ..Config::default() };
//! let mut device = BlkDevice::new(KernelHal, transport, config).expect("virtio-blk");
//! let per_cpu = device.take_queues().into_queues();
//! ```

mod caps;
mod error;
#[cfg(test)]
mod fake;
mod interrupt;
mod layout;
#[cfg(test)]
mod tests;

pub use error::{PciError, Structure};
pub use interrupt::{IsrReader, MsixMessage};

use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;

use crate::hal::Hal;
use crate::spec::{DeviceStatus, Features, MAX_PACKED_QUEUE_SIZE, MAX_SPLIT_QUEUE_SIZE};
use crate::transport::regs::{self, Regs};
use crate::transport::{QueueAddresses, QueueNotifier, Transport, TransportError};

use caps::{cfg_type, command, header};
use interrupt::{Msix, VectorPlan};
use layout::{choose, map_msix, map_structure, MAP_LIMIT};

/// PCI vendor ID of every virtio device (§4.1.2).
pub const VIRTIO_VENDOR_ID: u16 = 0x1af4;
/// PCI device ID of a modern (non-transitional) block device: 0x1040 + 2.
pub const DEVICE_ID_BLOCK: u16 = 0x1042;
/// Transitional PCI device ID of a block device (driven here in modern mode).
pub const DEVICE_ID_BLOCK_TRANSITIONAL: u16 = 0x1001;
/// The MSI-X vector value meaning "no interrupt" (§4.1.5.1.2).
pub const NO_VECTOR: u16 = 0xffff;

/// How many reads of `device_status` (or `queue_reset`) a reset waits for
/// before giving up on the device, unless changed with
/// [`PciTransport::set_reset_poll_limit`]. About a second of PCI reads.
pub const DEFAULT_RESET_POLL_LIMIT: u32 = 1 << 20;

/// The virtio device type of a PCI function, or `None` when it is not a
/// virtio device (§4.1.2): 0x1040 + type for modern IDs, the table of
/// transitional IDs otherwise.
pub fn virtio_device_type(vendor: u16, device: u16) -> Option<u32> {
    if vendor != VIRTIO_VENDOR_ID {
        return None;
    }
    match device {
        0x1040..=0x107f => Some(u32::from(device - 0x1040)),
        0x1000 => Some(1),
        0x1001 => Some(2),
        0x1002 => Some(5),
        0x1003 => Some(3),
        0x1004 => Some(8),
        0x1005 => Some(4),
        0x1009 => Some(9),
        _ => None,
    }
}

/// True for a virtio block function: vendor 0x1af4, device 0x1042 or 0x1001.
pub fn is_virtio_blk(vendor: u16, device: u16) -> bool {
    virtio_device_type(vendor, device) == Some(crate::spec::DEVICE_TYPE_BLOCK)
}

/// Configuration-space access to one PCI function, provided by the kernel
/// (port I/O 0xcf8/0xcfc, ECAM, or a platform's own mechanism).
///
/// The transport only makes naturally aligned accesses inside the 256-byte
/// standard configuration space. Methods take `&self`: an implementation that
/// needs a lock (the 0xcf8 address/data pair) takes it inside.
pub trait PciConfig {
    /// Reads the byte at `offset`.
    fn read_u8(&self, offset: u16) -> u8;
    /// Reads the 16-bit word at `offset` (2-byte aligned).
    fn read_u16(&self, offset: u16) -> u16;
    /// Reads the 32-bit word at `offset` (4-byte aligned).
    fn read_u32(&self, offset: u16) -> u32;
    /// Writes the byte at `offset`.
    fn write_u8(&self, offset: u16, value: u8);
    /// Writes the 16-bit word at `offset` (2-byte aligned).
    fn write_u16(&self, offset: u16, value: u16);
    /// Writes the 32-bit word at `offset` (4-byte aligned).
    fn write_u32(&self, offset: u16, value: u32);
}

impl<C: PciConfig + ?Sized> PciConfig for &C {
    fn read_u8(&self, offset: u16) -> u8 {
        (**self).read_u8(offset)
    }
    fn read_u16(&self, offset: u16) -> u16 {
        (**self).read_u16(offset)
    }
    fn read_u32(&self, offset: u16) -> u32 {
        (**self).read_u32(offset)
    }
    fn write_u8(&self, offset: u16, value: u8) {
        (**self).write_u8(offset, value)
    }
    fn write_u16(&self, offset: u16, value: u16) {
        (**self).write_u16(offset, value)
    }
    fn write_u32(&self, offset: u16, value: u32) {
        (**self).write_u32(offset, value)
    }
}

/// Offsets in `struct virtio_pci_common_cfg` (§4.1.4.3).
pub(crate) mod common {
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    pub const DEVICE_FEATURE: usize = 0x04;
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    pub const DRIVER_FEATURE: usize = 0x0c;
    pub const MSIX_CONFIG: usize = 0x10;
    pub const NUM_QUEUES: usize = 0x12;
    pub const DEVICE_STATUS: usize = 0x14;
    pub const CONFIG_GENERATION: usize = 0x15;
    pub const QUEUE_SELECT: usize = 0x16;
    pub const QUEUE_SIZE: usize = 0x18;
    pub const QUEUE_MSIX_VECTOR: usize = 0x1a;
    pub const QUEUE_ENABLE: usize = 0x1c;
    pub const QUEUE_NOTIFY_OFF: usize = 0x1e;
    pub const QUEUE_DESC: usize = 0x20;
    pub const QUEUE_DRIVER: usize = 0x28;
    pub const QUEUE_DEVICE: usize = 0x30;
    pub const QUEUE_RESET: usize = 0x3a;
    /// Length up to and including `queue_device` (virtio 1.0).
    pub const MIN_LEN: usize = 0x38;
    /// Length including `queue_reset` (needed for RING_RESET).
    pub const RESET_LEN: usize = 0x3c;
}

/// Modern virtio-pci transport (VIRTIO 1.2 §4.1) over one PCI function.
pub struct PciTransport<C: PciConfig> {
    config: C,
    device_type: u32,
    common: Regs,
    notify: Regs,
    /// Doorbell at offset 0 of the notify region (always valid).
    notify_base: NonNull<u16>,
    notify_multiplier: u32,
    isr: NonNull<u8>,
    device_config: Regs,
    msix: Result<Msix, PciError>,
    plan: Option<VectorPlan>,
    /// The configuration vector was mapped since the last device reset.
    config_vector_mapped: bool,
    /// Doorbell of each queue set up since the last reset, by queue index.
    doorbells: Vec<Option<NonNull<u16>>>,
    /// Private shadow of the features the driver wrote (never read back).
    driver_features: u64,
    reset_poll_limit: u32,
    /// The last reset timed out: the device is not answering.
    dead: bool,
    last_error: Option<PciError>,
}

// SAFETY: the raw pointers are register mappings that the Hal guarantees
// valid for the rest of the program and not tied to a thread or CPU; all
// access is volatile and goes through `&mut self` (or `&self` for the ISR read,
// which the device defines as safe to race). The config accessor moves with
// the transport, hence C: Send.
unsafe impl<C: PciConfig + Send> Send for PciTransport<C> {}

impl<C: PciConfig> fmt::Debug for PciTransport<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PciTransport")
            .field("device_type", &self.device_type)
            .field("common", &format_args!("{:#x}", self.common.addr()))
            .field("notify", &format_args!("{:#x}", self.notify.addr()))
            .field("notify_multiplier", &self.notify_multiplier)
            .field("msix", &self.msix_vectors())
            .field("msix_enabled", &self.plan.is_some())
            .finish()
    }
}

impl<C: PciConfig> PciTransport<C> {
    /// Finds the virtio structures of the function behind `config`, maps them
    /// through `hal`, and enables memory space and bus mastering. Interrupts
    /// start as INTx; see [`PciTransport::enable_msix`].
    ///
    /// BARs must already have addresses (firmware assigns them; a kernel that
    /// assigns its own does so first). They are sized by the all-ones probe
    /// with decoding off, so a structure reaching beyond its BAR is caught.
    pub fn new<H: Hal>(hal: &H, config: C) -> Result<Self, PciError> {
        let vendor = config.read_u16(header::VENDOR_ID);
        let device = config.read_u16(header::DEVICE_ID);
        let device_type =
            virtio_device_type(vendor, device).ok_or(PciError::NotVirtio { vendor, device })?;
        let caps = caps::walk(&config)?;
        let bars = caps::read_bars(&config);

        let common_cap = choose(&caps.virtio, cfg_type::COMMON, &bars, Structure::Common)?;
        let notify_cap = choose(&caps.virtio, cfg_type::NOTIFY, &bars, Structure::Notify)?;
        let isr_cap = choose(&caps.virtio, cfg_type::ISR, &bars, Structure::Isr)?;
        let device_cap = choose(
            &caps.virtio,
            cfg_type::DEVICE,
            &bars,
            Structure::DeviceConfig,
        )?;

        let common = map_structure(
            hal,
            &bars,
            &common_cap,
            Structure::Common,
            common::MIN_LEN as u64,
            4,
            MAP_LIMIT,
        )?;
        // The notify region spans every queue's doorbell: map it whole.
        let notify = map_structure(hal, &bars, &notify_cap, Structure::Notify, 2, 2, u64::MAX)?;
        let notify_base = notify
            .reg::<u16>(0)
            .ok_or(PciError::Misaligned(Structure::Notify))?;
        let isr = map_structure(hal, &bars, &isr_cap, Structure::Isr, 1, 1, MAP_LIMIT)?
            .reg::<u8>(0)
            .ok_or(PciError::TooShort(Structure::Isr))?;
        let device_config = map_structure(
            hal,
            &bars,
            &device_cap,
            Structure::DeviceConfig,
            1,
            4,
            MAP_LIMIT,
        )?;
        let msix = match caps.msix {
            Some(cap) => map_msix(hal, &bars, cap).inspect_err(|e| {
                log::warn!("virtio-pci: MSI-X unusable ({e}); INTx only");
            }),
            None => Err(PciError::NoMsix),
        };
        if let Ok(msix) = &msix {
            // Start from INTx whatever an earlier owner left behind.
            let at = u16::from(msix.cap.at) + caps::MSIX_CONTROL;
            let control = config.read_u16(at);
            config.write_u16(
                at,
                control & !(caps::MSIX_ENABLE | caps::MSIX_FUNCTION_MASK),
            );
        }
        let cmd = config.read_u16(header::COMMAND);
        config.write_u16(
            header::COMMAND,
            (cmd | command::MEMORY_SPACE | command::BUS_MASTER) & !command::INTX_DISABLE,
        );

        Ok(PciTransport {
            config,
            device_type,
            common,
            notify,
            notify_base,
            notify_multiplier: notify_cap.notify_multiplier,
            isr,
            device_config,
            msix,
            plan: None,
            config_vector_mapped: false,
            doorbells: Vec::new(),
            driver_features: 0,
            reset_poll_limit: DEFAULT_RESET_POLL_LIMIT,
            dead: false,
            last_error: None,
        })
    }

    /// The configuration-space accessor.
    pub fn pci_config(&self) -> &C {
        &self.config
    }

    /// Virtqueues the device supports (`num_queues`, §4.1.4.3).
    pub fn num_queues(&self) -> u16 {
        self.common.read::<u16>(common::NUM_QUEUES)
    }

    /// How many reads a reset (device or queue) waits for before giving up.
    pub fn set_reset_poll_limit(&mut self, reads: u32) {
        self.reset_poll_limit = reads.max(1);
    }

    /// The detailed cause of the last failure that [`Transport`] methods can
    /// only report coarsely (a refused vector, a doorbell outside its region,
    /// a reset that never finished).
    pub fn last_error(&self) -> Option<PciError> {
        self.last_error
    }

    fn fail(&mut self, error: PciError) -> PciError {
        log::error!("virtio-pci: {error}");
        self.last_error = Some(error);
        error
    }

    // ---- queues -------------------------------------------------------------

    fn select(&mut self, queue: u16) {
        self.common.write::<u16>(common::QUEUE_SELECT, queue);
    }

    /// The doorbell of the selected queue, checked against the notify region
    /// (§4.1.4.4: `cap.offset + queue_notify_off * notify_off_multiplier`).
    fn doorbell(&mut self, queue: u16) -> Result<NonNull<u16>, PciError> {
        let notify_off = self.common.read::<u16>(common::QUEUE_NOTIFY_OFF);
        let offset = u64::from(notify_off) * u64::from(self.notify_multiplier);
        usize::try_from(offset)
            .ok()
            .and_then(|offset| self.notify.reg::<u16>(offset))
            .ok_or_else(|| self.fail(PciError::NotifyOutsideRegion { queue }))
    }

    fn wait_for<F: FnMut(&Self) -> bool>(&self, mut done: F) -> bool {
        for _ in 0..self.reset_poll_limit {
            if done(self) {
                return true;
            }
            core::hint::spin_loop();
        }
        done(self)
    }
}

impl<C: PciConfig> Transport for PciTransport<C> {
    type Notifier = PciNotifier;

    fn device_type(&self) -> u32 {
        self.device_type
    }

    /// Reads both 32-bit halves through the `device_feature_select` window.
    fn device_features(&mut self) -> u64 {
        self.common.write::<u32>(common::DEVICE_FEATURE_SELECT, 0);
        let low = self.common.read::<u32>(common::DEVICE_FEATURE);
        self.common.write::<u32>(common::DEVICE_FEATURE_SELECT, 1);
        let high = self.common.read::<u32>(common::DEVICE_FEATURE);
        u64::from(high) << 32 | u64::from(low)
    }

    /// Writes both 32-bit halves through the `driver_feature_select` window.
    fn set_driver_features(&mut self, features: u64) {
        self.driver_features = features;
        self.common.write::<u32>(common::DRIVER_FEATURE_SELECT, 0);
        self.common
            .write::<u32>(common::DRIVER_FEATURE, features as u32);
        self.common.write::<u32>(common::DRIVER_FEATURE_SELECT, 1);
        self.common
            .write::<u32>(common::DRIVER_FEATURE, (features >> 32) as u32);
    }

    fn status(&mut self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.common.read::<u8>(common::DEVICE_STATUS))
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.common
            .write::<u8>(common::DEVICE_STATUS, status.bits());
    }

    /// Writes 0 to `device_status` and waits, a bounded number of reads, for
    /// it to read back 0 (§4.1.4.3.2). A device that never does is reported
    /// ([`PciTransport::last_error`]) and every later queue setup fails with
    /// [`TransportError::DeviceGone`].
    fn reset(&mut self) {
        self.common.write::<u8>(common::DEVICE_STATUS, 0);
        let done = self.wait_for(|t| t.common.read::<u8>(common::DEVICE_STATUS) == 0);
        self.doorbells.clear();
        self.driver_features = 0;
        self.config_vector_mapped = false;
        self.dead = !done;
        if !done {
            self.fail(PciError::ResetTimeout);
        }
    }

    fn config_generation(&mut self) -> u32 {
        u32::from(self.common.read::<u8>(common::CONFIG_GENERATION))
    }

    /// Reads of fields beyond the device configuration window read 0.
    fn read_config_u8(&mut self, offset: usize) -> u8 {
        self.device_config
            .read_config::<1>(offset)
            .map_or(0, |b| b[0])
    }

    fn read_config_u16(&mut self, offset: usize) -> u16 {
        self.device_config
            .read_config(offset)
            .map_or(0, u16::from_le_bytes)
    }

    fn read_config_u32(&mut self, offset: usize) -> u32 {
        self.device_config
            .read_config(offset)
            .map_or(0, u32::from_le_bytes)
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        if queue >= self.num_queues() {
            return 0;
        }
        self.select(queue);
        self.common.read::<u16>(common::QUEUE_SIZE)
    }

    /// Programs the selected queue (§4.1.5.1.3): size, MSI-X vector (read
    /// back), the three area addresses as low/high halves, then
    /// `queue_enable`. Computes and keeps the queue's doorbell address.
    ///
    /// A refused vector or a doorbell outside the notification region fails
    /// with [`TransportError::Unsupported`]; [`PciTransport::last_error`]
    /// names the cause.
    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddresses,
    ) -> Result<(), TransportError> {
        if self.dead {
            return Err(TransportError::DeviceGone);
        }
        if queue >= self.num_queues() {
            return Err(TransportError::NoSuchQueue(queue));
        }
        self.select(queue);
        let max = self.common.read::<u16>(common::QUEUE_SIZE);
        if max == 0 {
            return Err(TransportError::NoSuchQueue(queue));
        }
        if self.common.read::<u16>(common::QUEUE_ENABLE) != 0 {
            return Err(TransportError::QueueInUse(queue));
        }
        let packed = self.driver_features & Features::RING_PACKED.bits() != 0;
        let limit = if packed {
            MAX_PACKED_QUEUE_SIZE
        } else {
            MAX_SPLIT_QUEUE_SIZE
        };
        if size == 0 || size > max || size > limit || (!packed && !size.is_power_of_two()) {
            return Err(TransportError::BadQueueSize(size));
        }
        let doorbell = self
            .doorbell(queue)
            .map_err(|_| TransportError::Unsupported)?;
        self.map_queue_vector(queue)
            .map_err(|_| TransportError::Unsupported)?;

        self.common.write::<u16>(common::QUEUE_SIZE, size);
        self.common.write_u64_halves(common::QUEUE_DESC, addrs.desc);
        self.common
            .write_u64_halves(common::QUEUE_DRIVER, addrs.driver);
        self.common
            .write_u64_halves(common::QUEUE_DEVICE, addrs.device);
        self.common.write::<u16>(common::QUEUE_ENABLE, 1);

        let slot = usize::from(queue);
        if self.doorbells.len() <= slot {
            self.doorbells.resize(slot + 1, None);
        }
        self.doorbells[slot] = Some(doorbell);
        Ok(())
    }

    fn notifier(&mut self, queue: u16) -> PciNotifier {
        let reg = match self.doorbells.get(usize::from(queue)).copied().flatten() {
            Some(reg) => reg,
            None => {
                // Contract breach (no successful setup_queue): a doorbell that
                // exists, so a kick is at worst spurious, never a stray write.
                log::error!("virtio-pci: notifier for queue {queue}, which is not set up");
                self.notify_base
            }
        };
        PciNotifier { reg, queue }
    }

    /// Resets one queue (§4.1.4.3.2, §2.6.1): writes 1 to `queue_reset`,
    /// then waits, a bounded number of reads, until the device presents 0 in
    /// both `queue_reset` and `queue_enable`.
    fn reset_queue(&mut self, queue: u16) -> Result<(), TransportError> {
        if self.driver_features & Features::RING_RESET.bits() == 0
            || self.common.len() < common::RESET_LEN
        {
            return Err(TransportError::Unsupported);
        }
        if self.dead {
            return Err(TransportError::DeviceGone);
        }
        if queue >= self.num_queues() {
            return Err(TransportError::NoSuchQueue(queue));
        }
        self.select(queue);
        self.common.write::<u16>(common::QUEUE_RESET, 1);
        let done = self.wait_for(|t| {
            t.common.read::<u16>(common::QUEUE_RESET) == 0
                && t.common.read::<u16>(common::QUEUE_ENABLE) == 0
        });
        if let Some(slot) = self.doorbells.get_mut(usize::from(queue)) {
            *slot = None;
        }
        if !done {
            self.fail(PciError::QueueResetTimeout { queue });
            return Err(TransportError::DeviceGone);
        }
        Ok(())
    }
}

/// The doorbell of one queue: its precomputed notification address. Writes
/// the queue index there, 16 bits (§4.1.5.2). Owns nothing else, so queues
/// never share the transport.
#[derive(Debug)]
pub struct PciNotifier {
    reg: NonNull<u16>,
    queue: u16,
}

// SAFETY: the pointer is a register of a permanent mapping (the Hal's
// `map_mmio` contract) with no CPU affinity; a write to it is a device
// doorbell and touches no Rust-visible memory.
unsafe impl Send for PciNotifier {}

impl PciNotifier {
    /// The doorbell's virtual address (for diagnostics).
    pub fn address(&self) -> usize {
        self.reg.as_ptr() as usize
    }
}

impl QueueNotifier for PciNotifier {
    #[inline]
    fn notify(&self) {
        // The ring writes this doorbell announces reach the device first.
        crate::barrier::before_doorbell();
        // SAFETY: `reg` came from `Regs::reg` on the mapped notify region, so
        // it is in bounds and 2-byte aligned, and the mapping is permanent.
        unsafe { regs::write_reg(self.reg, self.queue) }
    }
}
