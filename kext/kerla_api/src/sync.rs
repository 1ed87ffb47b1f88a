//! A spin lock (Kerla's `kerla_api::sync`). Like Kerla's, it keeps
//! interrupts off on the holding CPU while held (through the kernel's
//! hooks), so an interrupt handler on that CPU can never spin on a lock its
//! own CPU holds.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::kernel_ops::kernel_ops;

/// Mutual exclusion by spinning, interrupts off while held.
pub struct SpinLock<T: ?Sized> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a guard and at most one guard
// exists at a time (`locked`), so sharing the lock never shares a `&mut T`;
// T moves between CPUs with the lock, hence T: Send.
unsafe impl<T: ?Sized + Send> Sync for SpinLock<T> {}
// SAFETY: sending the lock sends the T inside.
unsafe impl<T: ?Sized + Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A lock around `value`.
    pub const fn new(value: T) -> SpinLock<T> {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, when no one else can hold the lock.
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }
}

impl<T: ?Sized> SpinLock<T> {
    /// Turns interrupts off, then spins until the lock is free and takes it.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        let interrupts_were_on = kernel_ops().save_and_disable_interrupts();
        // Acquire pairs with the Release in the guard's drop: the previous
        // holder's writes are visible to us.
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            core::hint::spin_loop();
        }
        SpinLockGuard {
            lock: self,
            interrupts_were_on,
        }
    }

    /// Whether someone holds the lock now.
    pub fn is_locked(&self) -> bool {
        self.locked.load(Ordering::Relaxed)
    }
}

/// Access to a [`SpinLock`]'s value; unlocks (and restores interrupts) when dropped.
pub struct SpinLockGuard<'a, T: ?Sized> {
    lock: &'a SpinLock<T>,
    interrupts_were_on: bool,
}

impl<T: ?Sized> Deref for SpinLockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while we hold `locked`.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T: ?Sized> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while we hold `locked`, and `&mut
        // self` makes this the only reference through it.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T: ?Sized> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // Release: our writes happen before the next holder's Acquire.
        self.lock.locked.store(false, Ordering::Release);
        kernel_ops().restore_interrupts(self.interrupts_were_on);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::SpinLock;
    use std::sync::Arc;

    #[test]
    fn four_threads_count_under_the_lock() {
        let counter = Arc::new(SpinLock::new(0u64));
        let threads: std::vec::Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *counter.lock() += 1;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(*counter.lock(), 40_000);
        assert!(!counter.is_locked());
    }
}
