//! Interrupt handlers by vector, and the two ways a device line reaches one:
//! an I/O APIC input (INTx, virtio-mmio) or an MSI-X message. This is the
//! interface the kext API's `attach_irq(irq, closure)` sits on.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicPtr, AtomicU8, Ordering};

use crate::apic::{self, Trigger};

/// A device interrupt handler. Runs with interrupts off on an IST stack; it
/// must not allocate, print, or take a lock the interrupted code may hold.
pub type Handler = Box<dyn Fn() + Send + Sync>;

/// Vectors handed out to devices: after the exceptions, below the fixed ones.
const FIRST_DEVICE_VECTOR: u8 = 0x30;
const LAST_DEVICE_VECTOR: u8 = 0xDF;
/// Wakes a halted CPU; the handler does nothing.
pub const WAKE_VECTOR: u8 = 0xF0;
/// The local APIC timer's heartbeat; the handler does nothing.
pub const HEARTBEAT_VECTOR: u8 = 0xF1;

static NEXT_VECTOR: AtomicU8 = AtomicU8::new(FIRST_DEVICE_VECTOR);

#[allow(clippy::declare_interior_mutable_const)]
const NO_HANDLER: AtomicPtr<Handler> = AtomicPtr::new(core::ptr::null_mut());
static HANDLERS: [AtomicPtr<Handler>; 256] = [NO_HANDLER; 256];

/// Why an interrupt could not be attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqError {
    /// Every device vector is taken.
    NoVector,
    /// The vector has a handler already.
    Busy(u8),
    /// The I/O APIC has no such input.
    NoSuchInput(u32),
}

impl core::fmt::Display for IrqError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            IrqError::NoVector => write!(f, "no free interrupt vector"),
            IrqError::Busy(v) => write!(f, "vector {v:#x} already has a handler"),
            IrqError::NoSuchInput(gsi) => write!(f, "the I/O APIC has no input {gsi}"),
        }
    }
}

/// Takes a free device vector.
pub fn alloc_vector() -> Result<u8, IrqError> {
    NEXT_VECTOR
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            (v <= LAST_DEVICE_VECTOR).then_some(v + 1)
        })
        .map_err(|_| IrqError::NoVector)
}

/// Installs `handler` for `vector` (once; handlers stay for good).
pub fn attach_vector(vector: u8, handler: Handler) -> Result<(), IrqError> {
    let boxed = Box::into_raw(Box::new(handler));
    HANDLERS[usize::from(vector)]
        .compare_exchange(
            core::ptr::null_mut(),
            boxed,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .map(|_| ())
        .map_err(|_| {
            // SAFETY: `boxed` was never published; we still own it.
            drop(unsafe { Box::from_raw(boxed) });
            IrqError::Busy(vector)
        })
}

/// Routes I/O APIC input `gsi` to a new vector on the CPU with APIC id
/// `apic_id` and runs `handler` for it. Returns the vector.
pub fn attach_gsi(
    gsi: u32,
    trigger: Trigger,
    apic_id: u32,
    handler: Handler,
) -> Result<u8, IrqError> {
    let vector = alloc_vector()?;
    attach_vector(vector, handler)?;
    apic::route(gsi, vector, apic_id, trigger).map_err(|_| IrqError::NoSuchInput(gsi))?;
    Ok(vector)
}

/// An MSI-X message raising a new vector on `apic_id`, which runs `handler`:
/// (vector, address, data).
pub fn attach_msi(apic_id: u32, handler: Handler) -> Result<(u8, u64, u32), IrqError> {
    let vector = alloc_vector()?;
    attach_vector(vector, handler)?;
    let (address, data) = apic::msi_message(apic_id, vector);
    Ok((vector, address, data))
}

/// Runs the handler of `vector` and acknowledges it (called by idt.rs).
pub fn dispatch(vector: u8) {
    if vector == apic::SPURIOUS_VECTOR {
        return;
    }
    let handler = HANDLERS[usize::from(vector)].load(Ordering::Acquire);
    if !handler.is_null() {
        // SAFETY: handlers are leaked boxes, never freed once published.
        unsafe { (*handler)() };
    }
    apic::eoi();
}
