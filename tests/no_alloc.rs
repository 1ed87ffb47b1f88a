//! The per-I/O path (submit, commit, poll) makes no heap allocation.
//!
//! A counting global allocator counts only while the current thread has
//! armed it, so the sim's own work and other threads are not counted.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::*;
use virtio_blk_mq::{Config, Features, RingKind};
use virtio_blk_sim::{DiskKind, SimDevice};

struct Counting;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; the counters are
// const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ARMED.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ARMED.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ARMED.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns how many allocator calls this thread made inside it.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    COUNT.with(|c| c.set(0));
    ARMED.with(|a| a.set(true));
    let result = f();
    ARMED.with(|a| a.set(false));
    (result, COUNT.with(Cell::get))
}

fn io_path_allocates_nothing(ring: RingKind, features_off: Features) {
    let mut sim_config = sim_config(ring);
    sim_config.disk = DiskKind::Ram;
    let sim = SimDevice::new(sim_config);
    let (_device, mut queue) = start(&sim, Config::default().without(features_off));
    let mut buffers: Vec<_> = (0..32).map(|_| buffer(4096)).collect();
    let mut returned = Vec::with_capacity(32);
    let mut total = 0;
    for round in 0..50u64 {
        let (_, submit_allocs) = allocations_in(|| {
            for (i, buf) in buffers.drain(..).enumerate() {
                let sector = (i as u64 * 8) % 1024;
                if (round + i as u64) % 2 == 0 {
                    queue.write(sector, buf, i as u64).unwrap();
                } else {
                    queue.read(sector, buf, i as u64).unwrap();
                }
            }
            queue.flush(99).unwrap();
            queue.discard(2048, 8, 100).unwrap();
            queue.commit();
        });
        sim.drain(0);
        let (_, poll_allocs) = allocations_in(|| {
            queue.poll(usize::MAX, |c| {
                c.result.unwrap();
                if let Some(buf) = c.buffer {
                    returned.push(buf);
                }
            });
        });
        assert_eq!(submit_allocs, 0, "submit/commit allocated in round {round}");
        assert_eq!(poll_allocs, 0, "poll allocated in round {round}");
        total += returned.len();
        std::mem::swap(&mut buffers, &mut returned);
    }
    assert_eq!(total, 50 * 32);
    assert_eq!(queue.stats().completed, 50 * 34);
}

#[test]
fn split_io_path_allocates_nothing() {
    io_path_allocates_nothing(RingKind::Split, Features::empty());
    io_path_allocates_nothing(RingKind::Split, Features::INDIRECT_DESC);
}

#[test]
fn packed_io_path_allocates_nothing() {
    io_path_allocates_nothing(RingKind::Packed, Features::empty());
    io_path_allocates_nothing(RingKind::Packed, Features::INDIRECT_DESC);
}

#[test]
fn counting_allocator_sees_allocations() {
    // Guards the guard: an allocation inside the armed section is counted.
    let (v, count) = allocations_in(|| vec![1u8; 64]);
    assert_eq!(v.len(), 64);
    assert!(count >= 1);
}
