//! [`StateLock`]: the lock around a queue's device state.
//!
//! A device thread polling an idle queue takes this lock on every round,
//! and at one request per round taking and releasing a `std::sync::Mutex`
//! was a tenth of the device's work: besides the atomic exchange on each
//! side, its poisoning asks at both ends whether the thread is panicking.
//! The sim ignored poisoning anyway (a panicking test thread must not hide
//! the state), so this lock has none. Nobody holds it for long or while
//! waiting for anything else: the device's step (a ring's worth of
//! requests at most, never a callback), and control operations of the
//! driver and the tests (queue setup and reset, injecting hostile acts).
//! The I/O path of the driver never takes it. So a waiter spins a little,
//! then yields its CPU until the holder is done, rather than sleeping in
//! the kernel.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// A lock that cannot be poisoned: a panic while it is held releases it
/// (the guard's `Drop` runs while unwinding) and leaves the value as the
/// panicking code left it, as `lock` in `device.rs` treated a poisoned
/// `Mutex`.
pub(crate) struct StateLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a `StateGuard`, and at most one
// guard exists at a time (`locked`), so sharing the lock between threads
// hands the value from one thread to another, never to two at once: what
// `T: Send` allows, as for `std::sync::Mutex`.
unsafe impl<T: Send> Sync for StateLock<T> {}

/// Proof that the lock is held; the value is reached through it.
pub(crate) struct StateGuard<'a, T> {
    lock: &'a StateLock<T>,
}

impl<T> StateLock<T> {
    pub(crate) const fn new(value: T) -> StateLock<T> {
        StateLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, waiting for the holder to release it.
    #[inline]
    pub(crate) fn lock(&self) -> StateGuard<'_, T> {
        // Acquire pairs with the Release in the guard's drop: what the last
        // holder wrote to the value is visible to this one.
        if self
            .locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        StateGuard { lock: self }
    }

    /// [`Self::lock`] when the lock is held: spins on a plain load (no
    /// cache-line ping-pong while it stays held), then yields.
    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            // Relaxed: only a hint; the exchange below is what acquires.
            while self.locked.load(Ordering::Relaxed) {
                if spins < 100 {
                    spins += 1;
                    core::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            // Acquire: as in `lock`.
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

impl<T> Deref for StateGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this guard holds the lock, so no other guard exists and
        // nothing else reaches the value until it is dropped.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for StateGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // through the guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for StateGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // Release: every write to the value through this guard is visible
        // to the next holder, whose Acquire exchange pairs with this store.
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Threads adding under the lock lose no update.
    #[test]
    fn excludes() {
        let lock = Arc::new(StateLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no panic");
        }
        assert_eq!(*lock.lock(), 80_000);
    }

    /// A panic while the lock is held releases it and keeps the value.
    #[test]
    fn a_panic_releases_it() {
        let lock = Arc::new(StateLock::new(1u32));
        let held = lock.clone();
        let joined = std::thread::spawn(move || {
            let mut guard = held.lock();
            *guard = 2;
            panic!("holder panics");
        })
        .join();
        assert!(joined.is_err());
        assert_eq!(*lock.lock(), 2);
    }
}
