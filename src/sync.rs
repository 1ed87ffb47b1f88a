//! A minimal spin lock for the two places that need one: queue teardown and
//! the explicit shared-queue path. Never used on a queue's own I/O path.
//!
//! Also, crate-private, the atomics the rings share with the device
//! (`atomic`): `core`'s, or in the model-checking build loom's, so the model
//! checker sees every access of the publish / notify / re-arm protocol.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crossbeam_utils::Backoff;

/// Mutual exclusion by spinning.
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: `value` is reached only through a guard, and at most one guard
// exists at a time (the `locked` flag), so sharing the lock shares no `&mut T`
// between threads; T itself moves between threads, hence T: Send.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: sending the lock sends the T inside.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A lock around `value`.
    pub const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Spins (with backoff) until the lock is free, then takes it.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let backoff = Backoff::new();
        // Acquire pairs with the Release in the guard's drop: the previous
        // holder's writes to `value` are visible to us.
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            backoff.snooze();
        }
        SpinLockGuard { lock: self }
    }

    /// The value, when no one else can hold the lock.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

/// Access to a [`SpinLock`]'s value; unlocks when dropped.
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while `locked` is held by us.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while `locked` is held by us, and
        // `&mut self` makes this the only reference through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Release: our writes to `value` happen before the next holder's Acquire.
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// The atomic types and fences of memory shared with the device.
///
/// Under `cfg(all(test, loom))` (the model-checking build of the unit tests,
/// `src/loom_model.rs`) these are loom's, which record every access and let
/// loom try every interleaving and every value the memory model allows;
/// otherwise `core`'s, at no cost.
pub(crate) mod atomic {
    #[cfg(not(all(test, loom)))]
    pub(crate) use core::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
    #[cfg(all(test, loom))]
    pub(crate) use loom::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
}
