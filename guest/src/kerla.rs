//! The kernel's side of the kext API stand-in (`kerla_api::kernel_ops`):
//! what Kerla's kernel and runtime provide to a kext, implemented over this
//! kernel's services — pages from `mm`, interrupt lines through the I/O
//! APIC (`irq::attach_gsi`, edge-triggered as Kerla programs it), PCI
//! configuration reads and writes of function 0 (the stand-in scans as
//! Kerla does), the virtio-mmio devices from the command line.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use kerla_api::address::PAddr;
use kerla_api::driver::block::BlockDriver;
use kerla_api::driver::VirtioMmioDevice;
use kerla_api::kernel_ops::KernelOps;
use virtio_blk_mq::sync::SpinLock;
use virtio_blk_mq::transport::PciConfig;

use crate::apic::Trigger;
use crate::cmdline::MmioDevice;
use crate::pci::PciFunction;
use crate::{arch, irq, mm, println, smp};

/// I/O APIC inputs a kext may attach to.
const LINES: usize = 24;
/// Handlers sharing one line.
const HANDLERS_PER_LINE: usize = 4;

/// A kext's handler: `FnMut`, so it runs under a flag that keeps it from
/// running twice at once (a line is routed to one CPU and handlers run with
/// interrupts off, so the flag is never contended in practice).
struct KextHandler {
    running: AtomicBool,
    f: UnsafeCell<Box<dyn FnMut() + Send + Sync>>,
}

// SAFETY: `f` is reached only by the one caller that set `running` (see
// `run`); the closure itself is Send + Sync.
unsafe impl Sync for KextHandler {}

impl KextHandler {
    fn run(&self) {
        if self.running.swap(true, Ordering::Acquire) {
            return;
        }
        // SAFETY: `running` was false and we set it: no one else is inside.
        unsafe { (*self.f.get())() };
        self.running.store(false, Ordering::Release);
    }
}

#[allow(clippy::declare_interior_mutable_const)]
const NO_HANDLER: AtomicPtr<KextHandler> = AtomicPtr::new(core::ptr::null_mut());
#[allow(clippy::declare_interior_mutable_const)]
const NO_HANDLERS: [AtomicPtr<KextHandler>; HANDLERS_PER_LINE] = [NO_HANDLER; HANDLERS_PER_LINE];
/// Handlers per line; leaked boxes, never freed once published.
static HANDLERS: [[AtomicPtr<KextHandler>; HANDLERS_PER_LINE]; LINES] = [NO_HANDLERS; LINES];
#[allow(clippy::declare_interior_mutable_const)]
const UNROUTED: AtomicBool = AtomicBool::new(false);
/// Whether the line already has a vector.
static ROUTED: [AtomicBool; LINES] = [UNROUTED; LINES];

/// Runs every handler of `line` (from the line's vector).
fn run_line(line: usize) {
    for slot in &HANDLERS[line] {
        let handler = slot.load(Ordering::Acquire);
        if !handler.is_null() {
            // SAFETY: published handlers are leaked boxes, never freed.
            unsafe { (*handler).run() };
        }
    }
}

/// Block drivers the kexts registered.
static BLOCK_DRIVERS: SpinLock<Vec<Box<dyn BlockDriver>>> = SpinLock::new(Vec::new());
/// The virtio-mmio devices of the command line.
static MMIO_DEVICES: SpinLock<Vec<MmioDevice>> = SpinLock::new(Vec::new());

struct GuestOps;

static OPS: GuestOps = GuestOps;

impl KernelOps for GuestOps {
    fn alloc_pages(&self, num_pages: usize) -> Option<PAddr> {
        mm::alloc_pages(num_pages).map(|paddr| PAddr::new(paddr as usize))
    }

    /// Edge-triggered, active high, routed to CPU 0: how Kerla programs
    /// its I/O APIC. (A level line would suit PCI INTx better; matching
    /// Kerla keeps the kext honest about what it will get there: an edge
    /// lost while the line stays asserted costs a wait its timeout.)
    fn attach_irq(&self, irq: u8, f: Box<dyn FnMut() + Send + Sync + 'static>) {
        let line = usize::from(irq);
        if line >= LINES {
            println!("vblk-guest: attach_irq: no I/O APIC input {irq}");
            return;
        }
        let handler = Box::into_raw(Box::new(KextHandler {
            running: AtomicBool::new(false),
            f: UnsafeCell::new(f),
        }));
        let published = HANDLERS[line].iter().any(|slot| {
            slot.compare_exchange(
                core::ptr::null_mut(),
                handler,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
        });
        if !published {
            // SAFETY: never published, so still ours.
            drop(unsafe { Box::from_raw(handler) });
            println!("vblk-guest: attach_irq: line {irq} has {HANDLERS_PER_LINE} handlers already");
            return;
        }
        if !ROUTED[line].swap(true, Ordering::AcqRel) {
            let routed = irq::attach_gsi(
                u32::from(irq),
                Trigger::Edge,
                smp::apic_id(0),
                Box::new(move || run_line(line)),
            );
            if let Err(e) = routed {
                println!("vblk-guest: attach_irq: line {irq}: {e}");
            }
        }
    }

    fn register_block_driver(&self, driver: Box<dyn BlockDriver>) {
        BLOCK_DRIVERS.lock().push(driver);
    }

    fn pci_config_read32(&self, bus: u8, slot: u8, offset: u8) -> u32 {
        function_zero(bus, slot).read_u32(u16::from(offset & 0xfc))
    }

    fn pci_config_write32(&self, bus: u8, slot: u8, offset: u8, value: u32) {
        function_zero(bus, slot).write_u32(u16::from(offset & 0xfc), value)
    }

    fn virtio_mmio_devices(&self) -> Vec<VirtioMmioDevice> {
        MMIO_DEVICES
            .lock()
            .iter()
            .filter_map(|d| {
                Some(VirtioMmioDevice {
                    mmio_base: PAddr::new(usize::try_from(d.base).ok()?),
                    irq: u8::try_from(d.irq).ok()?,
                })
            })
            .collect()
    }

    fn save_and_disable_interrupts(&self) -> bool {
        let were_on = arch::interrupts_enabled();
        arch::disable_interrupts();
        were_on
    }

    fn restore_interrupts(&self, were_on: bool) {
        if were_on {
            arch::enable_interrupts();
        }
    }
}

fn function_zero(bus: u8, device: u8) -> PciFunction {
    PciFunction {
        bus,
        device: device & 0x1f,
        function: 0,
    }
}

/// `kerla_api::kernel_ops::init` with this kernel's services; the
/// virtio-mmio devices are the command line's.
pub fn init(mmio: &[MmioDevice]) {
    *MMIO_DEVICES.lock() = mmio.to_vec();
    kerla_api::kernel_ops::init(&OPS);
}

/// Takes the block drivers registered so far.
pub fn take_block_drivers() -> Vec<Box<dyn BlockDriver>> {
    core::mem::take(&mut *BLOCK_DRIVERS.lock())
}
