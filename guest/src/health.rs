//! The device's health while a job runs: configuration-change interrupts
//! and the device status they announce. A device that hits an internal error
//! sets DEVICE_NEEDS_RESET (VIRTIO 1.2 §2.1.1), raises a configuration
//! change (§4.1.4.5: ISR bit 1, or the MSI-X configuration vector) and stops
//! serving its queues; QEMU does this in `virtio_error()`. Without a look at
//! the status such a device reads as "requests never completed".
//!
//! Interrupt handlers only mark the change ([`config_changed`]); the queues'
//! owners look at the status from their wait loops through a [`Watch`],
//! which fails every queue of a broken device so each owner's next poll
//! completes its requests with an error.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use virtio_blk_mq::DeviceStatus;

use crate::time;

/// How often an owner looks at the device status while it waits, even with
/// no configuration change signalled (poll mode has no interrupts at all).
const STATUS_PERIOD_NS: u64 = 50_000_000;

static CONFIG_PENDING: AtomicBool = AtomicBool::new(false);
static CONFIG_CHANGES: AtomicU64 = AtomicU64::new(0);
static NEEDS_RESET_SEEN: AtomicBool = AtomicBool::new(false);

/// From an interrupt handler: the device signalled a configuration change.
/// Wakes the owners of queues `0..queues` so a sleeping one looks.
pub fn config_changed(queues: usize) {
    CONFIG_CHANGES.fetch_add(1, Ordering::Relaxed);
    CONFIG_PENDING.store(true, Ordering::Release);
    for queue in 0..queues {
        crate::wait::wake_owner(queue);
    }
}

/// A configuration change is signalled and nobody has looked yet.
pub fn config_pending() -> bool {
    CONFIG_PENDING.load(Ordering::Acquire)
}

/// Configuration-change interrupts so far.
pub fn config_changes() -> u64 {
    CONFIG_CHANGES.load(Ordering::Relaxed)
}

/// Notes what a status read found, for the report.
pub fn record(status: DeviceStatus) {
    if status.contains(DeviceStatus::DEVICE_NEEDS_RESET) {
        NEEDS_RESET_SEEN.store(true, Ordering::Release);
    }
}

/// The device set DEVICE_NEEDS_RESET at some check during the run.
pub fn needs_reset_seen() -> bool {
    NEEDS_RESET_SEEN.load(Ordering::Acquire)
}

/// The device status in words, for a report line.
pub fn describe(status: DeviceStatus) -> alloc::string::String {
    let mut names = alloc::vec::Vec::new();
    for (flag, name) in [
        (DeviceStatus::ACKNOWLEDGE, "ACKNOWLEDGE"),
        (DeviceStatus::DRIVER, "DRIVER"),
        (DeviceStatus::FEATURES_OK, "FEATURES_OK"),
        (DeviceStatus::DRIVER_OK, "DRIVER_OK"),
        (DeviceStatus::DEVICE_NEEDS_RESET, "DEVICE_NEEDS_RESET"),
        (DeviceStatus::FAILED, "FAILED"),
    ] {
        if status.contains(flag) {
            names.push(name);
        }
    }
    alloc::format!("{:#04x} ({})", status.bits(), names.join(" | "))
}

/// What a [`Watch`] needs from the device's control plane.
pub trait StatusCheck: Sync {
    /// Reads the device status; on DEVICE_NEEDS_RESET fails every queue of
    /// the device, so each owner's next poll completes its requests in
    /// flight with an error and later submissions fail at once.
    fn check(&self) -> DeviceStatus;
}

/// Looks at the device status from the queues' wait loops: when a
/// configuration change is pending, and every [`STATUS_PERIOD_NS`] anyway.
pub struct Watch<'a> {
    check: &'a dyn StatusCheck,
    next_check_ns: AtomicU64,
}

impl<'a> Watch<'a> {
    /// A watch over `check`; the first [`Watch::tick`] looks at once.
    pub fn new(check: &'a dyn StatusCheck) -> Self {
        Watch {
            check,
            next_check_ns: AtomicU64::new(0),
        }
    }

    /// Called by a queue's owner while it waits for completions.
    pub fn tick(&self) {
        let changed =
            CONFIG_PENDING.load(Ordering::Relaxed) && CONFIG_PENDING.swap(false, Ordering::AcqRel);
        let now = time::now_ns();
        if !changed && now < self.next_check_ns.load(Ordering::Relaxed) {
            return;
        }
        self.next_check_ns
            .store(now + STATUS_PERIOD_NS, Ordering::Relaxed);
        record(self.check.check());
    }
}
