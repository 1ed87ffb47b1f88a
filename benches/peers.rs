//! `peers/{virtio-drivers,ours}/qd{1,16}` (DESIGN.md §7): the workload of
//! `benches/rings.rs` driven once by rcore's `virtio-drivers` 0.13 and once by
//! this crate, on the same simulated device, so the two figures can be read
//! side by side.
//!
//! The workload: one thread, the sim stepped inline over a null disk (no data
//! copy, no cross-core traffic). One measured iteration is one batch: submit
//! `qd` 4 KiB reads, step the device once, complete them all. The time
//! criterion reports is per request (the batch time divided by `qd`), and its
//! throughput figure is therefore IOPS.
//!
//! # The device
//! Both drivers meet the same device: the sim's default offer minus
//! RING_PACKED, because virtio-drivers only knows the split ring (VIRTIO 1.2
//! §2.7) and a packed ring for ours would compare layouts, not drivers. Each
//! driver takes what it supports of that offer:
//! - virtio-drivers: VERSION_1, INDIRECT_DESC, EVENT_IDX, BLK_FLUSH (all of
//!   its block features the sim offers; BLK_RO is not offered).
//! - ours: VERSION_1, INDIRECT_DESC, EVENT_IDX, BLK_FLUSH, BLK_MQ,
//!   BLK_SIZE_MAX, BLK_SEG_MAX, BLK_BLK_SIZE, BLK_TOPOLOGY, BLK_CONFIG_WCE,
//!   BLK_DISCARD, BLK_WRITE_ZEROES, BLK_SECURE_ERASE, on a split ring. Of
//!   these only INDIRECT_DESC and EVENT_IDX touch the measured path.
//!
//! The bench prints what each device negotiated and its kicks per request
//! after measuring, and fails if any request failed or the sim saw a protocol
//! violation.
//!
//! # Depth 16
//! `VirtIOBlk` has one queue of a fixed 16 entries (a private constant in
//! 0.13, not a parameter). With INDIRECT_DESC each read (header, data, status:
//! three buffers) takes one ring descriptor pointing to a three-entry table,
//! so 16 reads fit; without it each would take three descriptors and only 5
//! would. The deeper id is therefore `qd16`, computed at run time from the
//! queue size and the negotiated features. Ours runs with a 16-entry queue
//! too (it also puts each read in an indirect table, one descriptor each).
//!
//! # Adapters
//! virtio-drivers reaches the sim through its own `Transport` and `Hal`
//! traits, implemented over [`SimTransport`] and [`SimHal`] in
//! `benches/common/peer_adapters.rs`. The sim accepts only addresses inside
//! live `SimHal` allocations (an IOMMU stand-in), so the request header, data
//! buffer and status byte handed to virtio-drivers live in one `SimHal` arena
//! and are shared in place. The one buffer we do not place is the indirect
//! table, which virtio-drivers allocates in a fresh `Box` per request:
//! `Hal::share` copies it into a bounce page (as a Hal for a device behind an
//! IOMMU must), at the cost of one 48-byte copy per request that
//! identity-mapped hardware would not need.
//!
//! # What differs between the two, by design of each API
//! - virtio-drivers publishes `avail.idx` and decides on a kick per request;
//!   ours places the batch and publishes it with one `commit`.
//! - Its EVENT_IDX check (`avail_idx >= avail_event + 1`) is true for every
//!   request after the one that crosses `avail_event`, where the spec's
//!   `vring_need_event` (§2.7.10) asks only for that one: it kicks `qd` times
//!   per batch here, ours once. A sim kick is a futex wake (a system call,
//!   standing in for a doorbell write that would exit to the hypervisor), so
//!   at qd16 the kicks are the largest part of the difference.
//! - It allocates and frees the indirect table per request; ours keeps one
//!   table per slot in DMA memory.
//! - It must complete in ring order (`complete_read_blocks` wants the token at
//!   the head of the used ring); the sim completes in order, so it can.

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]
// A bench, not the driver: it may use what Rust has had since 1.80.
#![allow(clippy::incompatible_msrv)]

mod common;

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use virtio_blk_mq::{Config, DmaBuffer, Features, RingKind, PAGE_SIZE};
use virtio_blk_sim::{DiskKind, SimConfig, SimDevice, SimHal};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};

use common::inline::{InlineRig, BLOCK, BLOCK_SECTORS};
use common::peer_adapters::{DirectWindow, PeerHal, PeerTransport};

/// Ring descriptors one read takes without indirect tables: header, data, status.
const BUFFERS_PER_READ: u16 = 3;
/// The only queue either driver uses.
const QUEUE: u16 = 0;

/// The device both drivers meet (see the module docs for why not packed).
fn sim_config() -> SimConfig {
    let mut config = SimConfig {
        disk: DiskKind::Null,
        ..SimConfig::default()
    };
    config.features.remove(Features::RING_PACKED);
    config
}

/// Reads start below this, so every read lies inside the disk.
fn sector_span(config: &SimConfig) -> u64 {
    config.capacity_sectors / BLOCK_SECTORS * BLOCK_SECTORS
}

// ---------------------------------------------------------------------------
// The two rigs

/// One virtio-drivers request's buffers, all inside the rig's arena.
struct PeerSlot {
    req: NonNull<BlkReq>,
    data: NonNull<[u8]>,
    resp: NonNull<BlkResp>,
    /// What `read_blocks_nb` returned for the request in flight.
    token: u16,
}

/// virtio-drivers' `VirtIOBlk` on a sim device, with `depth` slots.
struct PeerRig {
    // Declared first so it drops (and resets the device) before the arena goes.
    blk: VirtIOBlk<PeerHal, PeerTransport>,
    slots: Vec<PeerSlot>,
    sim: SimDevice,
    /// Lets the arena's buffers be shared in place.
    _window: DirectWindow,
    /// Request headers, data and status bytes of every slot.
    _arena: DmaBuffer<SimHal>,
    next_sector: u64,
    sector_span: u64,
    submitted: u64,
}

impl PeerRig {
    fn new(depth: u16) -> PeerRig {
        let config = sim_config();
        let sector_span = sector_span(&config);
        let sim = SimDevice::new(config);
        let blk = VirtIOBlk::<PeerHal, _>::new(PeerTransport::new(sim.transport()))
            .expect("virtio-drivers accepts the sim");

        // `depth` data pages, then one page of headers followed by status bytes.
        let depth = usize::from(depth);
        let headers = depth * BLOCK;
        let statuses = headers + depth * size_of::<BlkReq>();
        assert!(
            statuses + depth <= headers + PAGE_SIZE,
            "headers fit one page"
        );
        let mut arena =
            DmaBuffer::new(&SimHal, headers + PAGE_SIZE).expect("dma memory for the arena");
        let base = NonNull::from(arena.as_mut_slice()).cast::<u8>();
        let slots = (0..depth)
            .map(|i| {
                // SAFETY: every offset below is inside the arena (checked above).
                // The arena is page-aligned and a type's size is a multiple of
                // its alignment, so each header and status byte is aligned.
                // Nothing else refers to this memory yet.
                unsafe {
                    let req = base.add(headers + i * size_of::<BlkReq>()).cast::<BlkReq>();
                    let resp = base.add(statuses + i).cast::<BlkResp>();
                    req.write(BlkReq::default());
                    resp.write(BlkResp::default());
                    PeerSlot {
                        req,
                        data: NonNull::slice_from_raw_parts(base.add(i * BLOCK), BLOCK),
                        resp,
                        token: 0,
                    }
                }
            })
            .collect();
        let window = DirectWindow::register(base.as_ptr() as usize, arena.len());
        PeerRig {
            blk,
            slots,
            sim,
            _window: window,
            _arena: arena,
            next_sector: 0,
            sector_span,
            submitted: 0,
        }
    }

    /// The deepest batch virtio-drivers' fixed queue takes on this device.
    fn deepest(&self) -> u16 {
        let per_read = if self
            .sim
            .negotiated_features()
            .contains(Features::INDIRECT_DESC)
        {
            1
        } else {
            BUFFERS_PER_READ
        };
        self.blk.virt_queue_size() / per_read
    }

    /// Submits a read per slot, steps the device, completes them in order.
    #[inline]
    fn batch(&mut self) {
        for slot in &mut self.slots {
            let sector = self.next_sector;
            self.next_sector = (sector + BLOCK_SECTORS) % self.sector_span;
            let block = usize::try_from(sector).expect("sector fits usize");
            // SAFETY: the three buffers lie in the arena, which outlives `blk`;
            // the slot has nothing else in flight, and no reference to them
            // exists until `complete_read_blocks` below takes them back.
            let token = unsafe {
                self.blk.read_blocks_nb(
                    block,
                    slot.req.as_mut(),
                    slot.data.as_mut(),
                    slot.resp.as_mut(),
                )
            };
            slot.token =
                token.unwrap_or_else(|error| panic!("virtio-drivers refused a read: {error}"));
        }
        self.submitted += self.slots.len() as u64;
        let done = self.sim.step(QUEUE);
        assert_eq!(done, self.slots.len(), "a step completes the whole batch");
        for slot in &mut self.slots {
            // SAFETY: the buffers `read_blocks_nb` took with this token, in
            // submission order, which is the order the sim used them in.
            let result = unsafe {
                self.blk.complete_read_blocks(
                    slot.token,
                    slot.req.as_ref(),
                    slot.data.as_mut(),
                    slot.resp.as_mut(),
                )
            };
            // A status byte other than OK comes back as an error here.
            if let Err(error) = result {
                panic!("virtio-drivers read (token {}) failed: {error}", slot.token);
            }
        }
    }

    fn check(&self, id: &str) {
        report_and_check(id, &self.sim, self.submitted);
    }
}

/// Our driver on the same sim device, measured as `benches/rings.rs` does;
/// `queue_size` matches virtio-drivers' ring, so both walk rings of one size.
fn ours_rig(depth: u16, queue_size: u16) -> InlineRig {
    let config = Config {
        queue_size: Some(queue_size),
        // As many requests as entries, as virtio-drivers takes them: at full
        // depth every read then sits in its indirect table.
        max_requests: Some(queue_size),
        ..Config::default()
    };
    InlineRig::new(sim_config(), RingKind::Split, config, depth)
}

/// Fails on any violation or lost request; prints what the figures rest on.
fn report_and_check(id: &str, sim: &SimDevice, submitted: u64) {
    assert_eq!(
        sim.violations(),
        Vec::<String>::new(),
        "{id}: protocol violations"
    );
    let stats = sim.stats(QUEUE);
    assert_eq!(stats.completed, submitted, "{id}: every request completed");
    eprintln!(
        "{id}: {submitted} reads, {:.2} kicks per read, negotiated {:?}",
        stats.kicks as f64 / submitted.max(1) as f64,
        sim.negotiated_features()
    );
}

// ---------------------------------------------------------------------------
// Benchmarks

/// Times `batches` calls of `batch`, per request.
fn per_request(batches: u64, depth: u16, mut batch: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..batches {
        batch();
    }
    // One iteration is one request: divide the batch time.
    start.elapsed() / u32::from(depth)
}

fn peers(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers");
    group.throughput(Throughput::Elements(1));

    let mut shallow = PeerRig::new(1);
    let deep = shallow.deepest();
    let queue_size = shallow.blk.virt_queue_size();
    group.bench_function("virtio-drivers/qd1", |b| {
        b.iter_custom(|batches| per_request(batches, 1, || shallow.batch()))
    });
    shallow.check("peers/virtio-drivers/qd1");
    drop(shallow);

    let mut rig = PeerRig::new(deep);
    group.bench_function(format!("virtio-drivers/qd{deep}"), |b| {
        b.iter_custom(|batches| per_request(batches, deep, || rig.batch()))
    });
    rig.check(&format!("peers/virtio-drivers/qd{deep}"));
    drop(rig);

    for depth in [1, deep] {
        let mut rig = ours_rig(depth, queue_size);
        group.bench_function(format!("ours/qd{depth}"), |b| {
            b.iter_custom(|batches| per_request(batches, depth, || rig.batch()))
        });
        rig.check();
        report_and_check(&format!("peers/ours/qd{depth}"), &rig.sim, rig.submitted);
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
    targets = peers
}
criterion_main!(benches);
