//! One queue's poller: busy-polls the split ring's available index and
//! serves every request it finds (VIRTIO 1.2 §2.7).
//!
//! The poller works on a private copy of the framework's `Queue` (taken
//! when it starts, handed back when it stops), so the framework's lock on
//! the vring is taken only at those two points and to signal the call
//! eventfd: the request path takes no lock and allocates nothing.
//!
//! Doorbells: the poller never moves `avail_event` (EVENT_IDX) and sets
//! `VRING_USED_F_NO_NOTIFY` without it, so a driver that honours either
//! almost never kicks. Used-buffer notifications follow the driver's
//! `used_event` (or its NO_INTERRUPT flag), checked once per pass.
//!
//! A pass reads the three rings through slices validated once per pass
//! (`fast_pass`, `request::SplitChain`) and publishes the used index once;
//! rings that do not each lie in one region go through virtio-queue's
//! iterator and `add_used`. Under callgrind (vblk-bench, null disk, 4 KiB
//! random reads, split ring, qd32) a pass costs about 440 instructions per
//! request, from about 1 190 through virtio-queue's iterator and add_used.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::PoisonError;

use vhost_user_backend::{VringRwLock, VringT};
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestAddressSpace, VolatileMemory, VolatileSlice};

use crate::backend::Connection;
use crate::device::{Idle, QueueCounters};
use crate::memory::Memory;
use crate::request;

/// Empty polls between two looks at the stop signal and the idle policy.
const CHECK_EVERY: u32 = 64;
/// Empty polls between two looks (under the vring's lock) at whether the
/// frontend disabled the ring with SET_VRING_ENABLE 0.
const ENABLED_CHECK_EVERY: u32 = 4096;

/// Pollers running now, across every device in the process: the idle
/// policy yields the CPU when pollers and their drivers outnumber the CPUs.
static ACTIVE_POLLERS: AtomicUsize = AtomicUsize::new(0);

/// Counts this poller in [`ACTIVE_POLLERS`] while it lives.
struct Active;

impl Active {
    fn new() -> Active {
        ACTIVE_POLLERS.fetch_add(1, Ordering::Relaxed);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE_POLLERS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Polls queue `index` through `vring` until told to stop; returns at once
/// if the ring is not live.
pub(crate) fn run(connection: &Connection, index: usize, vring: &VringRwLock) {
    let Some(control) = connection.queues.get(index) else {
        return;
    };
    let _session = control
        .session
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // Read the epoch before the ring's state: a stop that marks the ring not
    // ready after this point also bumps the epoch after it (see stop_queue).
    let epoch = control.stop_epoch.load(Ordering::SeqCst);
    if connection.shutdown.load(Ordering::SeqCst) || control.broken.load(Ordering::Relaxed) {
        return;
    }
    let state = {
        let vring = vring.get_ref();
        if !vring.get_queue().ready() || !vring.is_enabled() {
            return;
        }
        vring.get_queue().state()
    };
    let Ok(queue) = Queue::try_from(state) else {
        return;
    };
    let Some(memory) = connection
        .memory
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
    else {
        return;
    };
    if connection.shared.pin_pollers {
        crate::pin::pin_current_thread((index + 1) % connection.shared.cpus);
    }
    let _active = Active::new();
    let mut poller = Poller {
        connection,
        index,
        epoch,
        generation: connection.memory_generation.load(Ordering::Acquire),
        snapshot: Memory::new(memory.memory().into_inner()),
        memory,
        used: Vec::with_capacity(usize::from(queue.size())),
        queue,
        counters: QueueCounters::default(),
    };
    let broken = poller.poll(vring);
    if broken {
        control.broken.store(true, Ordering::Relaxed);
    }
    // Hand the ring position back: GET_VRING_BASE reports next_avail, and a
    // later restart continues from here.
    let mut state = vring.get_mut();
    state
        .get_queue_mut()
        .set_next_avail(poller.queue.next_avail());
    state
        .get_queue_mut()
        .set_next_used(poller.queue.next_used());
    drop(state);
    connection.shared.counters[index].add(&poller.counters);
}

/// A running poller's state.
struct Poller<'a> {
    connection: &'a Connection,
    index: usize,
    /// The stop epoch it started under.
    epoch: u64,
    /// The memory table generation `snapshot` was taken at.
    generation: u64,
    memory: crate::backend::AtomicMemory,
    snapshot: Memory,
    /// Completions of the current pass, published after it.
    used: Vec<(u16, u32)>,
    queue: Queue,
    counters: QueueCounters,
}

impl Poller<'_> {
    /// The loop; returns whether it stopped because the ring broke.
    fn poll(&mut self, vring: &VringRwLock) -> bool {
        // Without EVENT_IDX this sets VRING_USED_F_NO_NOTIFY; with it the
        // avail_event the driver reads is simply never moved.
        let _ = self.queue.disable_notification(&self.snapshot);
        let mut empty = 0u32;
        // One round per memory table: the available index is looked up in it
        // once, then read through that slice on every poll (a bounds check
        // and a load, instead of a region lookup per look).
        loop {
            let snapshot = self.snapshot.clone();
            let avail_index = GuestAddress(self.queue.avail_ring())
                .checked_add(2)
                .and_then(|addr| snapshot.slice(addr, 2));
            let Some(avail_index) = avail_index else {
                return self.broke_at("the available index is outside the memory table");
            };
            loop {
                let Ok(avail) = avail_index.load::<u16>(0, Ordering::Acquire) else {
                    return self.broke_at("the available index is misaligned");
                };
                if u16::from_le(avail) == self.queue.next_avail() {
                    empty = empty.wrapping_add(1);
                    self.counters.empty_polls += 1;
                    if empty.is_multiple_of(CHECK_EVERY) {
                        if self.stopping()
                            || (empty.is_multiple_of(ENABLED_CHECK_EVERY) && !enabled(vring))
                        {
                            return false;
                        }
                        self.idle();
                    }
                    std::hint::spin_loop();
                    continue;
                }
                empty = 0;
                // A request may point into a region added just before it was
                // published: read the generation after the index (Acquire both).
                let generation = self.connection.memory_generation.load(Ordering::Acquire);
                if generation != self.generation {
                    self.generation = generation;
                    self.snapshot = Memory::new(self.memory.memory().into_inner());
                    break;
                }
                if let Err(broken) = self.pass(vring) {
                    return broken;
                }
                if self.stopping() {
                    return false;
                }
            }
        }
    }

    /// Serves every available request, publishes them, notifies if asked.
    // Not inlined: callgrind then shows a pass's inclusive cost (a call per pass).
    #[inline(never)]
    fn pass(&mut self, vring: &VringRwLock) -> Result<(), bool> {
        match self.fast_pass() {
            Some(result) => result?,
            None => self.general_pass()?,
        }
        self.counters.passes += 1;
        if self.wants_notification() {
            self.counters.notifications += 1;
            if let Err(e) = vring.signal_used_queue() {
                log::warn!("vblk-fastdev: queue {}: call eventfd: {e}", self.index);
            }
        }
        Ok(())
    }

    /// The pass through validated slices of the three rings: `None` when one
    /// of them does not lie inside one region of guest memory (then the
    /// general path, through virtio-queue's iterator and `add_used`, serves
    /// the pass and reports whatever is wrong).
    ///
    /// Why this reads the rings itself: virtio-queue reads every avail
    /// entry, descriptor and used element through vm-memory's generic
    /// `Bytes` path (a region lookup and a slice iterator each, ~100
    /// instructions); here each ring is looked up once per pass and every
    /// access is a bounds-checked read or write of a `VolatileSlice`. The
    /// checks stay those of virtio-queue: the number of new entries is at
    /// most the queue size, a head index is below it, a chain is bounded by
    /// its table (see `request::SplitChain`); the ring position stays in the
    /// `Queue` (`next_avail`, `next_used`), which its notification logic
    /// (`needs_notification`) and the hand-back at stop read.
    fn fast_pass(&mut self) -> Option<Result<(), bool>> {
        let mem = &self.snapshot;
        let disk = &self.connection.shared.disk;
        let size = self.queue.size();
        if size == 0 {
            return None;
        }
        let entries = usize::from(size);
        // Layouts of VIRTIO 1.2 §2.7: 16-byte descriptors; avail: flags,
        // idx, ring[size] (used_event after it is not ours to read here);
        // used: flags, idx, ring[size] of 8-byte elements.
        let table = mem.slice(GuestAddress(self.queue.desc_table()), 16 * entries)?;
        let avail = mem.slice(GuestAddress(self.queue.avail_ring()), 4 + 2 * entries)?;
        let used = mem.slice(GuestAddress(self.queue.used_ring()), 4 + 8 * entries)?;
        // Acquire: the entries and descriptors the index publishes are read
        // after it (as virtio-queue's `iter` does).
        let Ok(avail_idx) = avail.load::<u16>(2, Ordering::Acquire) else {
            return None;
        };
        let avail_idx = u16::from_le(avail_idx);
        let mut next_avail = self.queue.next_avail();
        let mut next_used = self.queue.next_used();
        let pending = avail_idx.wrapping_sub(next_avail);
        if pending > size {
            // Same error virtio-queue's iterator gives.
            return Some(Err(self.broke_at(&format!(
                "the driver published {pending} requests on a ring of {size}"
            ))));
        }
        for _ in 0..pending {
            // Ring slots are indices modulo the size (§2.7.6), as in
            // virtio-queue; `slot < size`, so inside the slice.
            let slot = usize::from(next_avail % size);
            // In bounds (slot < size), so this cannot fail; were it to, the
            // pass stops with the ring broken rather than serve twice.
            let Ok(head) = avail.get_ref::<u16>(4 + 2 * slot) else {
                return Some(Err(self.broke_at("reading the available ring")));
            };
            let head = u16::from_le(head.load());
            if head >= size {
                // virtio-queue's add_used refuses such a head: the ring is broken.
                self.queue.set_next_avail(next_avail);
                let _ = publish(&mut self.queue, &used, next_used);
                return Some(Err(
                    self.broke_at(&format!("head index {head} out of range"))
                ));
            }
            let len = request::serve_split(mem, table, size, head, disk);
            let slot = usize::from(next_used % size);
            let element = (u64::from(len) << 32) | u64::from(head);
            // One volatile 8-byte write (id, len), unaligned-safe.
            let Ok(slot) = used.get_ref::<u64>(4 + 8 * slot) else {
                return Some(Err(self.broke_at("writing the used ring")));
            };
            slot.store(element.to_le());
            next_avail = next_avail.wrapping_add(1);
            next_used = next_used.wrapping_add(1);
        }
        self.queue.set_next_avail(next_avail);
        self.counters.requests += u64::from(pending);
        if publish(&mut self.queue, &used, next_used).is_none() {
            return Some(Err(self.broke_at("the used index is misaligned")));
        }
        Some(Ok(()))
    }

    /// The pass through virtio-queue's iterator and `add_used`.
    fn general_pass(&mut self) -> Result<(), bool> {
        let mem = &self.snapshot;
        let disk = &self.connection.shared.disk;
        match self.queue.iter(mem) {
            Ok(chains) => {
                for chain in chains {
                    let head = chain.head_index();
                    self.used.push((head, request::serve(mem, chain, disk)));
                }
            }
            Err(e) => return Err(self.broke("reading the available ring", &e)),
        }
        self.counters.requests += self.used.len() as u64;
        for (head, len) in self.used.drain(..) {
            if let Err(e) = self.queue.add_used(mem, head, len) {
                log::error!(
                    "vblk-fastdev: queue {}: adding a used element: {e}",
                    self.index
                );
                return Err(true);
            }
        }
        Ok(())
    }

    /// Whether the driver asked for a used-buffer notification: EVENT_IDX's
    /// `used_event` (§2.7.10), else the avail ring's NO_INTERRUPT flag.
    fn wants_notification(&mut self) -> bool {
        let mem = &self.snapshot;
        if self.queue.event_idx_enabled() {
            return self.queue.needs_notification(mem).unwrap_or(true);
        }
        // Order the used index store before reading the driver's flag.
        std::sync::atomic::fence(Ordering::SeqCst);
        let flags: u16 = mem
            .read_obj(GuestAddress(self.queue.avail_ring()))
            .map(u16::from_le)
            .unwrap_or(0);
        flags & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0
    }

    fn stopping(&self) -> bool {
        self.connection.queues[self.index]
            .stop_epoch
            .load(Ordering::Relaxed)
            != self.epoch
            || self.connection.shutdown.load(Ordering::Relaxed)
    }

    /// What an idle poller does every [`CHECK_EVERY`] empty polls.
    fn idle(&self) {
        let shared = &self.connection.shared;
        // Each poller's driver busy-polls a CPU too.
        let oversubscribed = || 2 * ACTIVE_POLLERS.load(Ordering::Relaxed) > shared.cpus;
        match shared.idle {
            Idle::Spin => {}
            Idle::Yield => std::thread::yield_now(),
            Idle::Auto if oversubscribed() => std::thread::yield_now(),
            Idle::Auto => {}
        }
    }

    /// Logs why the ring is unusable; returns `true` (broken).
    fn broke(&self, what: &str, e: &virtio_queue::Error) -> bool {
        self.broke_at(&format!("{what}: {e}"))
    }

    /// Logs why the ring is unusable; returns `true` (broken).
    fn broke_at(&self, why: &str) -> bool {
        log::error!(
            "vblk-fastdev: queue {}: {why}; not polled again until restarted",
            self.index
        );
        true
    }
}

/// Publishes the used index `next_used` (one store per pass): Release, so
/// a driver that reads it with Acquire sees every used element and status
/// byte written before it (virtio-queue's `add_used` stores it the same way).
fn publish(queue: &mut Queue, used: &VolatileSlice<'_>, next_used: u16) -> Option<()> {
    used.store(next_used.to_le(), 2, Ordering::Release).ok()?;
    queue.set_next_used(next_used);
    Some(())
}

/// Whether the frontend still has the ring enabled.
fn enabled(vring: &VringRwLock) -> bool {
    vring.get_ref().is_enabled()
}
