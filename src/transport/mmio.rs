//! virtio-mmio, version 2 (VIRTIO 1.2 §4.2).
//!
//! [`MmioTransport`] drives one register window: the control registers at
//! 0x000..0x100 and the device configuration from 0x100. Legacy (version 1)
//! devices are refused. All queues share one doorbell register,
//! `QueueNotify`, so each queue's [`MmioNotifier`] holds its own copy of that
//! pointer and writes its queue index there. The device has one interrupt
//! line; [`MmioInterrupt`] reads and acknowledges its cause from a handler on
//! any CPU.
//!
//! Without PCI there is no discovery: the platform says where the devices
//! are. QEMU's `microvm` machine appends them to the kernel command line as
//! `virtio_mmio.device=<size>@<base>:<irq>`, which [`cmdline_devices`] parses.
//!
//! # Usage in a kernel
//!
//! ```no_run
//! use virtio_blk_mq::transport::mmio::{cmdline_devices, MmioError, MmioTransport};
//! use virtio_blk_mq::{BlkDevice, Config, Transport};
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
//! # fn attach_irq(_: u32, _: impl Fn() + Send + Sync + 'static) {}
//! # let cmdline = "console=ttyS0 virtio_mmio.device=512@0xfeb00e00:12";
//! for spec in cmdline_devices(cmdline).filter_map(Result::ok) {
//!     let transport = match MmioTransport::new(&KernelHal, spec.base, spec.size as usize) {
//!         Ok(t) if t.device_type() == 2 => t,
//!         Ok(_) | Err(MmioError::NoDevice) => continue, // another type, or an empty slot
//!         Err(e) => panic!("virtio-mmio at {:#x}: {e}", spec.base),
//!     };
//!     let irq = transport.interrupt();
//!     attach_irq(spec.irq, move || {
//!         let cause = irq.acknowledge();
//!         if cause.queue { /* wake the queue owners */ }
//!         if cause.config { /* BlkDevice::check_status */ }
//!     });
//!     let mut device = BlkDevice::new(KernelHal, transport, Config::default()).expect("virtio-blk");
//!     let queues = device.take_queues().into_queues();
//! }
//! ```

mod cmdline;
#[cfg(test)]
mod tests;

pub use cmdline::{cmdline_devices, parse_device, CmdlineDevices, CmdlineError, MmioDeviceSpec};

use core::fmt;
use core::ptr::NonNull;

use crate::hal::{Hal, PhysAddr};
use crate::spec::{DeviceStatus, Features, MAX_PACKED_QUEUE_SIZE, MAX_SPLIT_QUEUE_SIZE};
use crate::transport::regs::{self, IsrStatus, Regs};
use crate::transport::{QueueAddresses, QueueNotifier, Transport, TransportError};

/// `MagicValue`: "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;
/// The only `Version` driven: 2 (virtio 1.x). Version 1 is legacy.
pub const VERSION: u32 = 2;
/// Smallest window: the control registers, up to the configuration space.
pub const MIN_WINDOW: usize = 0x100;
/// How many reads a reset waits for before giving up, unless changed with
/// [`MmioTransport::set_reset_poll_limit`].
pub const DEFAULT_RESET_POLL_LIMIT: u32 = 1 << 20;

/// Register offsets (§4.2.2). Every control register is 32 bits wide.
pub(crate) mod reg {
    pub const MAGIC_VALUE: usize = 0x000;
    pub const VERSION: usize = 0x004;
    pub const DEVICE_ID: usize = 0x008;
    pub const VENDOR_ID: usize = 0x00c;
    pub const DEVICE_FEATURES: usize = 0x010;
    pub const DEVICE_FEATURES_SEL: usize = 0x014;
    pub const DRIVER_FEATURES: usize = 0x020;
    pub const DRIVER_FEATURES_SEL: usize = 0x024;
    pub const QUEUE_SEL: usize = 0x030;
    pub const QUEUE_NUM_MAX: usize = 0x034;
    pub const QUEUE_NUM: usize = 0x038;
    pub const QUEUE_READY: usize = 0x044;
    pub const QUEUE_NOTIFY: usize = 0x050;
    pub const INTERRUPT_STATUS: usize = 0x060;
    pub const INTERRUPT_ACK: usize = 0x064;
    pub const STATUS: usize = 0x070;
    pub const QUEUE_DESC: usize = 0x080;
    pub const QUEUE_DRIVER: usize = 0x090;
    pub const QUEUE_DEVICE: usize = 0x0a0;
    pub const QUEUE_RESET: usize = 0x0c0;
    pub const CONFIG_GENERATION: usize = 0x0fc;
    pub const CONFIG: usize = 0x100;
}

/// Why a virtio-mmio window cannot be driven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmioError {
    /// `MagicValue` is not 0x74726976: nothing virtio lives here.
    BadMagic(u32),
    /// `Version` is 1: a legacy device.
    LegacyVersion,
    /// `Version` is neither 1 nor 2.
    UnsupportedVersion(u32),
    /// `DeviceID` is 0: a placeholder slot with no device behind it. Not an
    /// error to report (§4.2.3.1.1): skip the slot.
    NoDevice,
    /// The window is smaller than the control registers.
    WindowTooSmall(usize),
    /// The window's base is not 4-byte aligned.
    Misaligned,
    /// The Hal could not map the window.
    MapFailed {
        /// Physical address asked for.
        paddr: PhysAddr,
        /// Bytes asked for.
        len: usize,
    },
}

impl fmt::Display for MmioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmioError::BadMagic(m) => write!(
                f,
                "virtio-mmio magic is {m:#010x}, not 0x74726976: no virtio device here"
            ),
            MmioError::LegacyVersion => write!(
                f,
                "legacy virtio-mmio (version 1) is not supported; give QEMU -global virtio-mmio.force-legacy=false"
            ),
            MmioError::UnsupportedVersion(v) => {
                write!(f, "virtio-mmio version {v} is unknown (2 is supported)")
            }
            MmioError::NoDevice => write!(f, "empty virtio-mmio slot (device ID 0)"),
            MmioError::WindowTooSmall(len) => write!(
                f,
                "virtio-mmio window of {len} bytes is smaller than its {MIN_WINDOW}-byte register block"
            ),
            MmioError::Misaligned => write!(f, "virtio-mmio window is not 4-byte aligned"),
            MmioError::MapFailed { paddr, len } => write!(
                f,
                "the Hal could not map {len} bytes of registers at {paddr:#x}"
            ),
        }
    }
}

/// virtio-mmio version 2 transport (VIRTIO 1.2 §4.2) over one register window.
pub struct MmioTransport {
    regs: Regs,
    /// `QueueNotify`, `InterruptStatus`, `InterruptACK`, taken once.
    queue_notify: NonNull<u32>,
    interrupt: MmioInterrupt,
    device_type: u32,
    vendor_id: u32,
    /// Private shadow of the features the driver wrote (never read back).
    driver_features: u64,
    reset_poll_limit: u32,
    /// The last reset timed out: the device is not answering.
    dead: bool,
}

// SAFETY: the window is a register mapping valid for the rest of the program
// (the Hal's `map_mmio` contract, or `from_raw`'s caller) with no CPU
// affinity; all access is volatile through `&mut self`, or `&self` for reads.
unsafe impl Send for MmioTransport {}

impl fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("base", &format_args!("{:#x}", self.regs.addr()))
            .field("len", &self.regs.len())
            .field("device_type", &self.device_type)
            .field("vendor_id", &format_args!("{:#x}", self.vendor_id))
            .finish()
    }
}

impl MmioTransport {
    /// Maps the `size`-byte window at `base` through `hal` and checks it
    /// holds a version 2 device (§4.2.3.1.1: magic, version, then device ID;
    /// nothing else is touched before those pass).
    pub fn new<H: Hal>(hal: &H, base: PhysAddr, size: usize) -> Result<Self, MmioError> {
        if size < MIN_WINDOW {
            return Err(MmioError::WindowTooSmall(size));
        }
        if base % 4 != 0 {
            return Err(MmioError::Misaligned);
        }
        let mapped = hal.map_mmio(base, size).ok_or(MmioError::MapFailed {
            paddr: base,
            len: size,
        })?;
        // SAFETY: the Hal's `map_mmio` contract: `size` bytes of device
        // registers at `mapped`, uncached, mapped for the rest of the program.
        unsafe { Self::from_raw(mapped, size) }
    }

    /// Like [`MmioTransport::new`], over an already-mapped window.
    ///
    /// # Safety
    /// `base` must be valid for volatile reads and writes of `size` bytes of
    /// a device's registers, mapped uncached, and stay so for as long as the
    /// transport, its notifiers and its interrupt handles exist.
    pub unsafe fn from_raw(base: NonNull<u8>, size: usize) -> Result<Self, MmioError> {
        if size < MIN_WINDOW {
            return Err(MmioError::WindowTooSmall(size));
        }
        if (base.as_ptr() as usize) % 4 != 0 {
            return Err(MmioError::Misaligned);
        }
        // SAFETY: the caller's guarantee, passed on.
        let regs = unsafe { Regs::new(base, size) };
        let magic = regs.read::<u32>(reg::MAGIC_VALUE);
        if magic != MAGIC {
            return Err(MmioError::BadMagic(magic));
        }
        match regs.read::<u32>(reg::VERSION) {
            VERSION => {}
            1 => return Err(MmioError::LegacyVersion),
            other => return Err(MmioError::UnsupportedVersion(other)),
        }
        let device_type = regs.read::<u32>(reg::DEVICE_ID);
        if device_type == 0 {
            return Err(MmioError::NoDevice);
        }
        let vendor_id = regs.read::<u32>(reg::VENDOR_ID);
        // Present in every window of MIN_WINDOW aligned bytes (checked above).
        let fixed = |offset| regs.reg::<u32>(offset).ok_or(MmioError::Misaligned);
        let queue_notify = fixed(reg::QUEUE_NOTIFY)?;
        let interrupt = MmioInterrupt {
            status: fixed(reg::INTERRUPT_STATUS)?,
            ack: fixed(reg::INTERRUPT_ACK)?,
        };
        Ok(MmioTransport {
            regs,
            queue_notify,
            interrupt,
            device_type,
            vendor_id,
            driver_features: 0,
            reset_poll_limit: DEFAULT_RESET_POLL_LIMIT,
            dead: false,
        })
    }

    /// `VendorID`.
    pub fn vendor_id(&self) -> u32 {
        self.vendor_id
    }

    /// How many reads a reset (device or queue) waits for before giving up.
    pub fn set_reset_poll_limit(&mut self, reads: u32) {
        self.reset_poll_limit = reads.max(1);
    }

    /// A handle that reads and acknowledges the interrupt cause from a
    /// handler on any CPU, without the transport.
    pub fn interrupt(&self) -> MmioInterrupt {
        self.interrupt
    }

    /// Reads `InterruptStatus` and acknowledges what it found.
    pub fn acknowledge_interrupt(&self) -> IsrStatus {
        self.interrupt().acknowledge()
    }

    fn read(&self, offset: usize) -> u32 {
        self.regs.read::<u32>(offset)
    }

    fn write(&self, offset: usize, value: u32) {
        self.regs.write::<u32>(offset, value)
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

    fn config<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.regs.read_config(reg::CONFIG.checked_add(offset)?)
    }
}

impl Transport for MmioTransport {
    type Notifier = MmioNotifier;

    fn device_type(&self) -> u32 {
        self.device_type
    }

    /// Reads both 32-bit halves through `DeviceFeaturesSel`.
    fn device_features(&mut self) -> u64 {
        self.write(reg::DEVICE_FEATURES_SEL, 0);
        let low = self.read(reg::DEVICE_FEATURES);
        self.write(reg::DEVICE_FEATURES_SEL, 1);
        let high = self.read(reg::DEVICE_FEATURES);
        u64::from(high) << 32 | u64::from(low)
    }

    /// Writes both 32-bit halves through `DriverFeaturesSel`.
    fn set_driver_features(&mut self, features: u64) {
        self.driver_features = features;
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
    }

    fn status(&mut self) -> DeviceStatus {
        DeviceStatus::from_bits_retain(self.read(reg::STATUS) as u8)
    }

    fn set_status(&mut self, status: DeviceStatus) {
        self.write(reg::STATUS, u32::from(status.bits()));
    }

    /// Writes 0 to `Status` and waits, a bounded number of reads, for it to
    /// read back 0. A device that never does is logged, and every later queue
    /// setup fails with [`TransportError::DeviceGone`].
    fn reset(&mut self) {
        self.write(reg::STATUS, 0);
        let done = self.wait_for(|t| t.read(reg::STATUS) == 0);
        self.driver_features = 0;
        self.dead = !done;
        if !done {
            log::error!(
                "virtio-mmio at {:#x}: device did not complete a reset",
                self.regs.addr()
            );
        }
    }

    fn config_generation(&mut self) -> u32 {
        self.read(reg::CONFIG_GENERATION)
    }

    /// Reads of fields beyond the window read 0.
    fn read_config_u8(&mut self, offset: usize) -> u8 {
        self.config::<1>(offset).map_or(0, |b| b[0])
    }

    fn read_config_u16(&mut self, offset: usize) -> u16 {
        self.config(offset).map_or(0, u16::from_le_bytes)
    }

    fn read_config_u32(&mut self, offset: usize) -> u32 {
        self.config(offset).map_or(0, u32::from_le_bytes)
    }

    fn max_queue_size(&mut self, queue: u16) -> u16 {
        self.write(reg::QUEUE_SEL, u32::from(queue));
        u16::try_from(self.read(reg::QUEUE_NUM_MAX)).unwrap_or(u16::MAX)
    }

    /// Programs the selected queue (§4.2.3.2): checks it is not ready and
    /// exists, writes `QueueNum`, the three area addresses as low/high
    /// register pairs, then `QueueReady`.
    fn setup_queue(
        &mut self,
        queue: u16,
        size: u16,
        addrs: QueueAddresses,
    ) -> Result<(), TransportError> {
        if self.dead {
            return Err(TransportError::DeviceGone);
        }
        self.write(reg::QUEUE_SEL, u32::from(queue));
        if self.read(reg::QUEUE_READY) != 0 {
            return Err(TransportError::QueueInUse(queue));
        }
        let max = self.read(reg::QUEUE_NUM_MAX);
        if max == 0 {
            return Err(TransportError::NoSuchQueue(queue));
        }
        let packed = self.driver_features & Features::RING_PACKED.bits() != 0;
        let limit = if packed {
            MAX_PACKED_QUEUE_SIZE
        } else {
            MAX_SPLIT_QUEUE_SIZE
        };
        if size == 0
            || u32::from(size) > max
            || size > limit
            || (!packed && !size.is_power_of_two())
        {
            return Err(TransportError::BadQueueSize(size));
        }
        self.write(reg::QUEUE_NUM, u32::from(size));
        self.regs.write_u64_halves(reg::QUEUE_DESC, addrs.desc);
        self.regs.write_u64_halves(reg::QUEUE_DRIVER, addrs.driver);
        self.regs.write_u64_halves(reg::QUEUE_DEVICE, addrs.device);
        self.write(reg::QUEUE_READY, 1);
        Ok(())
    }

    fn notifier(&mut self, queue: u16) -> MmioNotifier {
        MmioNotifier {
            reg: self.queue_notify,
            queue: u32::from(queue),
        }
    }

    /// Resets one queue (§4.2.2, §2.6.1): writes 1 to `QueueReset`, then
    /// waits, a bounded number of reads, until both `QueueReset` and
    /// `QueueReady` read 0.
    fn reset_queue(&mut self, queue: u16) -> Result<(), TransportError> {
        if self.driver_features & Features::RING_RESET.bits() == 0 {
            return Err(TransportError::Unsupported);
        }
        if self.dead {
            return Err(TransportError::DeviceGone);
        }
        self.write(reg::QUEUE_SEL, u32::from(queue));
        self.write(reg::QUEUE_RESET, 1);
        let done =
            self.wait_for(|t| t.read(reg::QUEUE_RESET) == 0 && t.read(reg::QUEUE_READY) == 0);
        if !done {
            log::error!(
                "virtio-mmio at {:#x}: device did not complete the reset of queue {queue}",
                self.regs.addr()
            );
            return Err(TransportError::DeviceGone);
        }
        Ok(())
    }
}

/// The doorbell of one queue: writes the queue index to `QueueNotify`, one
/// 32-bit write (§4.2.3.3). Every queue's notifier holds its own copy of the
/// register pointer, so queues never share the transport.
#[derive(Debug)]
pub struct MmioNotifier {
    reg: NonNull<u32>,
    queue: u32,
}

// SAFETY: the pointer is a register of a permanent mapping with no CPU
// affinity; a write to it is a doorbell and touches no Rust-visible memory.
unsafe impl Send for MmioNotifier {}

impl QueueNotifier for MmioNotifier {
    #[inline]
    fn notify(&self) {
        // The ring writes this doorbell announces reach the device first.
        crate::barrier::before_doorbell();
        // SAFETY: `reg` is the aligned QueueNotify register inside the mapped
        // window (taken through `Regs::reg`); the mapping is permanent.
        unsafe { regs::write_reg(self.reg, self.queue) }
    }
}

/// Reads and acknowledges a virtio-mmio interrupt from a handler on any CPU
/// (§4.2.3.4): `InterruptStatus`, then the same bits to `InterruptACK`.
#[derive(Clone, Copy, Debug)]
pub struct MmioInterrupt {
    status: NonNull<u32>,
    ack: NonNull<u32>,
}

// SAFETY: both pointers are registers of a permanent mapping; the device
// defines concurrent reads and acknowledgements, and nothing else is reached.
unsafe impl Send for MmioInterrupt {}
// SAFETY: as for Send; `acknowledge` takes `&self` and only does volatile accesses.
unsafe impl Sync for MmioInterrupt {}

impl MmioInterrupt {
    /// Reads why the device interrupted and acknowledges exactly those
    /// (defined) bits. An empty result means the interrupt was not ours.
    pub fn acknowledge(&self) -> IsrStatus {
        // SAFETY: an aligned register inside the mapped window.
        let bits = unsafe { regs::read_reg(self.status) };
        let cause = IsrStatus::from_bits(bits);
        if !cause.is_empty() {
            // SAFETY: as above. Only defined bits are written (§4.2.2.2).
            unsafe { regs::write_reg(self.ack, cause.bits()) };
        }
        cause
    }
}
