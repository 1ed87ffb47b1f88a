//! `icount`: a fixed workload to count instructions with callgrind, split by
//! phase. Not a timing bench: it prints no times, and criterion is not used.
//!
//! ```sh
//! cargo bench --no-run --bench icount
//! valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/deps/icount-* split 32 poll
//! scripts/callgrind-calls.py cg.out icount_
//! ```
//!
//! Arguments: ring (`split` or `packed`), depth, device (`step`: the inline
//! [`SimDevice::step`](virtio_blk_sim::SimDevice::step) of `rings/*`;
//! `poll`: [`SimDevice::poll_step`](virtio_blk_sim::SimDevice::poll_step),
//! what a polling device thread does each round, the threaded benches'
//! device) and optionally `peers` (the `peers/ours/*` rig: 16 entries, every
//! read in its indirect table). The rig is the one `rings/*` measures (one
//! thread, null disk, 4 KiB reads, 256 entries); after a warm-up it runs
//! [`BATCHES`] batches through `#[inline(never)]` functions, one per phase,
//! so callgrind's inclusive cost of each is that phase's instructions:
//!
//! | function | called | per request |
//! | --- | --- | --- |
//! | `icount_read` | once per read | its Ir/call: `BlkQueue::read` |
//! | `icount_submit` | once per read | its Ir/call: the read and the rig's own work (a buffer, a sector) |
//! | `icount_commit` | once per batch | Ir/call ÷ depth |
//! | `icount_device` | once per batch | Ir/call ÷ depth: the sim's side |
//! | `icount_poll` | once per batch | Ir/call ÷ depth (with the rig's callback: ~10 per read) |
//! | `icount_empty_poll` | once per batch, after it | Ir/call: one `poll_step` that finds nothing |
//!
//! Run without arguments (as `cargo test --benches` does) it runs every
//! workload for a few batches and checks them, quickly.

mod common;

use common::inline::{Buffer, InlineRig, Queue, Submitted};
use virtio_blk_mq::{Config, Features, RingKind};
use virtio_blk_sim::{DiskKind, SimConfig};

/// Batches measured.
const BATCHES: u32 = 2000;
/// Batches run before them, so every slot and cache line has been used once.
const WARM_UP: u32 = 100;

/// The rig `rings/*` (or, with `peers`, `peers/ours/*`) measures.
fn rig(ring: RingKind, depth: u16, peers: bool) -> InlineRig {
    let mut sim_config = SimConfig {
        disk: DiskKind::Null,
        ..SimConfig::default()
    };
    if ring == RingKind::Split {
        sim_config.features.remove(Features::RING_PACKED);
    }
    let size = if peers { 16 } else { 256 };
    let config = Config {
        queue_size: Some(size),
        max_requests: peers.then_some(size),
        ..Config::default()
    };
    InlineRig::new(sim_config, ring, config, depth)
}

#[inline(never)]
fn icount_read(queue: &mut Queue, sector: u64, buffer: Buffer, tag: u64) -> Submitted {
    queue.read(sector, buffer, tag)
}

#[inline(never)]
fn icount_submit(rig: &mut InlineRig) {
    rig.submit_one_with(icount_read);
}

#[inline(never)]
fn icount_commit(rig: &mut InlineRig) {
    rig.commit();
}

#[inline(never)]
fn icount_device(rig: &InlineRig, poll: bool) {
    if poll {
        rig.poll_device();
    } else {
        rig.step_device();
    }
}

#[inline(never)]
fn icount_poll(rig: &mut InlineRig) {
    rig.reap();
}

#[inline(never)]
fn icount_empty_poll(rig: &InlineRig) {
    rig.poll_device();
}

/// Runs `batches` batches of `rig` through the phase functions.
fn run(rig: &mut InlineRig, batches: u32, poll: bool) {
    for _ in 0..batches {
        for _ in 0..rig.depth() {
            icount_submit(rig);
        }
        icount_commit(rig);
        icount_device(rig, poll);
        icount_poll(rig);
        icount_empty_poll(rig);
    }
}

fn workload(ring: RingKind, depth: u16, poll: bool, peers: bool, batches: u32) {
    let mut rig = rig(ring, depth, peers);
    // Warm-up and measured batches run the same code: callgrind counts both,
    // the warm-up's share is WARM_UP / (WARM_UP + BATCHES) of every line.
    run(&mut rig, WARM_UP.min(batches), poll);
    run(&mut rig, batches, poll);
    rig.check();
    println!(
        "{ring:?} qd{depth} device={} rig={}: {} requests in {} batches",
        if poll { "poll" } else { "step" },
        if peers { "peers" } else { "rings" },
        rig.submitted,
        rig.submitted / u64::from(depth),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let words: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if words.is_empty() {
        // `cargo test --benches` (or `cargo bench`): every workload, briefly.
        for ring in [RingKind::Split, RingKind::Packed] {
            for depth in [1, 32, 128] {
                for poll in [false, true] {
                    workload(ring, depth, poll, false, 4);
                }
            }
        }
        workload(RingKind::Split, 16, false, true, 4);
        return;
    }
    let ring = match words[0] {
        "split" => RingKind::Split,
        "packed" => RingKind::Packed,
        other => panic!("ring {other:?}: want split or packed"),
    };
    let depth: u16 = words
        .get(1)
        .map(|d| d.parse().expect("depth: a number"))
        .unwrap_or(32);
    let poll = match words.get(2).copied().unwrap_or("step") {
        "step" => false,
        "poll" => true,
        other => panic!("device {other:?}: want step or poll"),
    };
    let peers = words.get(3) == Some(&"peers");
    workload(ring, depth, poll, peers, BATCHES);
}
