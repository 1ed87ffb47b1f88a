//! `rings/{split,packed}/qd{1,32,128}` (DESIGN.md §7): what one 4 KiB read
//! costs the driver and the device together, with both on one thread.
//!
//! The sim runs inline over a null disk, so there is no cross-core traffic and
//! no data copy: the figure is ring work (place, publish, consume, validate)
//! plus the sim's request handling. One measured iteration is one batch:
//! submit `qd` reads, commit once, step the device once, poll them all back.
//! The time criterion reports is per request (the batch time divided by
//! `qd`), and its throughput figure is therefore IOPS.
//!
//! Buffers are allocated before measuring and recycled from the completions,
//! so the measured loop allocates nothing.

mod common;

use std::time::{Duration, Instant};

use common::inline::InlineRig;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use virtio_blk_mq::{Config, Features, RingKind};
use virtio_blk_sim::{DiskKind, SimConfig};

/// Entries per queue.
const QUEUE_SIZE: u16 = 256;
/// Queue depths measured.
const DEPTHS: [u16; 3] = [1, 32, 128];
/// Ring layouts measured, with the name each has in the benchmark id.
const RINGS: [(RingKind, &str); 2] = [(RingKind::Split, "split"), (RingKind::Packed, "packed")];

/// A null-disk sim offering `ring`, driven with a 256-entry queue.
fn rig(ring: RingKind, depth: u16) -> InlineRig {
    let mut sim_config = SimConfig {
        disk: DiskKind::Null,
        ..SimConfig::default()
    };
    if ring == RingKind::Split {
        sim_config.features.remove(Features::RING_PACKED);
    }
    let config = Config {
        queue_size: Some(QUEUE_SIZE),
        ..Config::default()
    };
    InlineRig::new(sim_config, ring, config, depth)
}

fn rings(c: &mut Criterion) {
    let mut group = c.benchmark_group("rings");
    group.throughput(Throughput::Elements(1));
    for (ring, ring_name) in RINGS {
        for depth in DEPTHS {
            let mut rig = rig(ring, depth);
            group.bench_function(format!("{ring_name}/qd{depth}"), |b| {
                b.iter_custom(|batches| {
                    let start = Instant::now();
                    for _ in 0..batches {
                        rig.batch();
                    }
                    // One iteration is one request: divide the batch time.
                    start.elapsed() / u32::from(depth)
                })
            });
            rig.check();
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
}

criterion_group! {
    name = benches;
    config = config();
    targets = rings
}
criterion_main!(benches);
