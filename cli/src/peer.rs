//! The peer driver: libblkio's `virtio-driver` crate (its own vhost-user
//! frontend, its own split/packed virtqueues) running the same job as ours
//! against the same vhost-user export, measured the same way.
//!
//! It has no commit step: each request is published as it is queued; after a
//! batch the job asks `avail_notif_needed()` and kicks if so, as libblkio's
//! own engine does. Data buffers come from a [`VhostUserHal`] memfd that is
//! registered with the backend through the peer's own `map_mem_region`.

use std::time::{Duration, Instant};

use virtio_blk_mq::mq::{available_cpus, pin_current_thread};
use virtio_blk_mq::transport::vhost_user::VhostUserHal;
use virtio_blk_mq::{DmaBuffer, QueueStats, RingKind};
use virtio_driver::{
    QueueNotifier, VhostUser, VirtioBlkConfig, VirtioBlkFeatureFlags, VirtioBlkQueue,
    VirtioBlkReqBuf, VirtioBlkTransport, VirtioFeatureFlags,
};

use crate::args::Args;
use crate::job::QueueResult;
use crate::sim_target::{RunResult, SetupError};
use crate::vhost_target::{memory_bytes, Backend};
use vblk_report::job::Recorder;
use vblk_report::workload::{Dir, Picker};

/// How long the drain may wait for requests in flight before giving up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Empty polls between two looks at the clock (as in our job).
const CLOCK_EVERY_EMPTY_POLLS: u32 = 256;
/// Empty polls between two yields of the CPU, when threads outnumber CPUs.
const YIELD_EVERY_EMPTY_POLLS: u32 = 64;

/// Features offered to the peer: what it can drive (no indirect descriptors
/// in its rings), plus the block features the job touches.
fn peer_features() -> u64 {
    (VirtioFeatureFlags::VERSION_1
        | VirtioFeatureFlags::RING_EVENT_IDX
        | VirtioFeatureFlags::RING_PACKED)
        .bits()
        | (VirtioBlkFeatureFlags::MQ
            | VirtioBlkFeatureFlags::FLUSH
            | VirtioBlkFeatureFlags::BLK_SIZE
            | VirtioBlkFeatureFlags::SEG_MAX
            | VirtioBlkFeatureFlags::SIZE_MAX
            | VirtioBlkFeatureFlags::TOPOLOGY)
            .bits()
}

/// The peer's rings hold direct chains (header, data, status: three
/// descriptors per request, no indirect tables), so they need 3 × depth entries.
fn peer_queue_size(iodepth: u16) -> u16 {
    (3 * u32::from(iodepth)).next_power_of_two().min(32768) as u16
}

fn err(what: &str) -> impl Fn(std::io::Error) -> SetupError + '_ {
    move |e| SetupError::Backend(format!("libblkio virtio-driver: {what}: {e}"))
}

/// What one queue's thread needs.
struct PeerQueue {
    queue: VirtioBlkQueue<'static, u16>,
    notifier: Box<dyn QueueNotifier>,
}

/// Runs the job with libblkio's driver against the export at `socket`.
pub fn run(args: &Args, backend: &Backend) -> Result<RunResult, SetupError> {
    let path = backend
        .socket()
        .to_str()
        .ok_or_else(|| SetupError::Backend("the socket path is not UTF-8".into()))?;
    let vhost = VhostUser::<VirtioBlkConfig, VirtioBlkReqBuf>::new(path, peer_features())
        .map_err(err("connect"))?;
    let mut transport: Box<VirtioBlkTransport> = Box::new(vhost);
    let ring = if transport.get_features() & VirtioFeatureFlags::RING_PACKED.bits() != 0 {
        RingKind::Packed
    } else {
        RingKind::Split
    };
    let capacity = u64::from(transport.get_config().map_err(err("GET_CONFIG"))?.capacity) * 512;
    let queues = VirtioBlkQueue::<u16>::setup_queues(
        &mut *transport,
        usize::from(args.queues),
        peer_queue_size(args.iodepth),
    )
    .map_err(err("queue setup"))?;
    let hal = VhostUserHal::new(memory_bytes(args.queues, args.iodepth, args.bs))
        .map_err(err("DMA memory"))?;
    transport
        .map_mem_region(hal.base() as usize, hal.size(), hal.fd(), 0)
        .map_err(err("map memory"))?;
    let blocks_per_queue = capacity / args.bs / u64::from(args.queues);
    if blocks_per_queue == 0 {
        return Err(SetupError::Backend("the export is too small".into()));
    }
    let peers: Vec<PeerQueue> = queues
        .into_iter()
        .enumerate()
        .map(|(i, queue)| PeerQueue {
            queue,
            notifier: transport.get_submission_notifier(i),
        })
        .collect();
    let yield_when_idle =
        usize::from(args.queues) + backend.busy_threads(args.queues) > available_cpus();
    let results: Vec<(QueueStats, QueueResult)> = std::thread::scope(|scope| {
        let threads: Vec<_> = peers
            .into_iter()
            .enumerate()
            .map(|(i, peer)| {
                let hal = &hal;
                scope.spawn(move || {
                    pin_current_thread(i);
                    run_queue(i, peer, hal, args, blocks_per_queue, yield_when_idle)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // The queues are gone; the transport (and its rings) goes last.
    drop(transport);
    Ok(RunResult {
        queues: results,
        used_notifications: 0,
        irq_timeouts: 0,
        violations: Vec::new(),
        ring,
        failure: None,
    })
}

/// One request slot of the peer's job.
struct Slot {
    buffer: DmaBuffer<VhostUserHal>,
    dir: Dir,
    block: u64,
    submitted: Instant,
}

fn run_queue(
    index: usize,
    mut peer: PeerQueue,
    hal: &VhostUserHal,
    args: &Args,
    blocks_per_queue: u64,
    yield_when_idle: bool,
) -> (QueueStats, QueueResult) {
    let mut stats = QueueStats::default();
    let mut result = QueueResult::new();
    let depth = args.iodepth;
    let mut slots: Vec<Slot> = Vec::with_capacity(usize::from(depth));
    for _ in 0..depth {
        let Some(buffer) = DmaBuffer::new(hal, args.bs as usize) else {
            result.errors += 1;
            result.first_problem = Some(format!("queue {index}: out of DMA memory"));
            return (stats, result);
        };
        slots.push(Slot {
            buffer,
            dir: Dir::Read,
            block: 0,
            submitted: Instant::now(),
        });
    }
    let mut free: Vec<u16> = (0..depth).rev().collect();
    let mut picker = Picker::new(
        index,
        blocks_per_queue,
        args.rw.random(),
        args.rw.read_percent(args.rwmixread),
        false,
        depth,
    );
    let first_byte = index as u64 * blocks_per_queue * args.bs;
    let mut done: Vec<(u16, i32)> = Vec::with_capacity(usize::from(depth));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.runtime);
    let (mut now, mut stopping, mut in_flight, mut empty) = (start, false, 0u32, 0u32);
    loop {
        if !stopping && now >= deadline {
            stopping = true;
        }
        if !stopping {
            let mut placed = false;
            while let Some(&slot_index) = free.last() {
                let Some((dir, block)) = picker.pick() else {
                    break;
                };
                let slot = &mut slots[usize::from(slot_index)];
                let offset = first_byte + block * args.bs;
                let ptr = slot.buffer.as_mut_slice().as_mut_ptr();
                let len = slot.buffer.len();
                // SAFETY: the buffer is DMA memory registered with the backend
                // (map_mem_region above), owned by this slot, and not touched
                // until the request's completion comes back.
                let queued = unsafe {
                    match dir {
                        Dir::Read => peer.queue.read_raw(offset, ptr, len, slot_index),
                        Dir::Write => peer.queue.write_raw(offset, ptr, len, slot_index),
                    }
                };
                if let Err(e) = queued {
                    picker.release(block);
                    result.errors += 1;
                    result
                        .first_problem
                        .get_or_insert_with(|| format!("queue {index}: {e}"));
                    stopping = true;
                    break;
                }
                free.pop();
                slot.dir = dir;
                slot.block = block;
                slot.submitted = now;
                stats.submitted += 1;
                // libblkio publishes each request as it queues it.
                stats.publishes += 1;
                in_flight += 1;
                placed = true;
            }
            if placed {
                stats.commits += 1;
                if peer.queue.avail_notif_needed() {
                    stats.kicks += 1;
                    let _ = peer.notifier.notify();
                }
            }
        }
        if in_flight == 0 {
            if stopping {
                break;
            }
            now = Instant::now();
            continue;
        }
        done.extend(peer.queue.completions().map(|c| (c.context, c.ret)));
        if done.is_empty() {
            stats.empty_polls += 1;
            empty = empty.wrapping_add(1);
            if yield_when_idle && empty.is_multiple_of(YIELD_EVERY_EMPTY_POLLS) {
                std::thread::yield_now();
            }
            if empty.is_multiple_of(CLOCK_EVERY_EMPTY_POLLS) {
                now = Instant::now();
            }
            if stopping && now >= deadline + DRAIN_TIMEOUT {
                result.errors += u64::from(in_flight);
                result
                    .first_problem
                    .get_or_insert_with(|| format!("queue {index}: {in_flight} never completed"));
                break;
            }
            continue;
        }
        now = Instant::now();
        for (slot_index, ret) in done.drain(..) {
            let Some(slot) = slots.get(usize::from(slot_index)) else {
                continue;
            };
            in_flight -= 1;
            stats.completed += 1;
            picker.release(slot.block);
            free.push(slot_index);
            if ret != 0 {
                result.errors += 1;
                result
                    .first_problem
                    .get_or_insert_with(|| format!("queue {index}: request failed ({ret})"));
                stopping = true;
                continue;
            }
            let latency = now.saturating_duration_since(slot.submitted);
            let latency_ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
            match slot.dir {
                Dir::Read => result.read.record(args.bs, latency_ns),
                Dir::Write => result.write.record(args.bs, latency_ns),
            }
        }
    }
    result.elapsed_ns =
        u64::try_from(now.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX);
    (stats, result)
}
