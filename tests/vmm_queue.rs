//! Our split-ring driver against the device side of rust-vmm's `virtio-queue`
//! over `vm-memory` guest memory (DESIGN.md §6): ring code and memory access
//! this project did not write.
//!
//! Each test states one property. The device is stepped inline, so nothing
//! depends on timing; a kick the driver wrongly leaves out leaves the device
//! asleep, and the test fails on "no progress" instead of hanging.

mod common;
mod vmm;

use std::collections::{BTreeMap, HashMap};

use common::{stamp, Rng};
use virtio_blk_mq::{
    BlkDevice, BlkQueue, Completion, Config, DmaBuffer, Error, Features, Mode, Op, RangeLimits,
    RingKind,
};
use vmm::{
    feature, status, CompletionOrder, Range, VmmBlkConfig, VmmDevice, VmmHal, VmmNotifier,
    VmmTransport,
};

type Device = BlkDevice<VmmHal, VmmTransport>;
type Queue = BlkQueue<VmmHal, VmmNotifier>;

/// Device rounds without any progress before a test calls it a hang.
const STALL_LIMIT: u32 = 100;

/// Driver, device and the memory they share, for one queue.
struct Rig {
    hal: VmmHal,
    dev: VmmDevice,
    device: Device,
    queue: Queue,
    event_idx: bool,
}

impl Rig {
    fn new(device_config: VmmBlkConfig, config: Config) -> Rig {
        let memory = vmm::guest_memory();
        let hal = VmmHal::new(memory.clone());
        let dev = VmmDevice::new(memory, device_config);
        let mut device = BlkDevice::new(hal.clone(), dev.transport(), config)
            .expect("the driver sets up the virtio-queue device");
        let queue = device.take_queues().into_queues().remove(0);
        let event_idx = dev.driver_features() & feature::EVENT_IDX != 0;
        Rig {
            hal,
            dev,
            device,
            queue,
            event_idx,
        }
    }

    fn buffer(&self, len: usize) -> DmaBuffer<VmmHal> {
        DmaBuffer::new(&self.hal, len).expect("guest RAM left")
    }

    /// Publishes, and checks the doorbell against what the device needs: a
    /// sleeping device must be kicked (else it never looks), an awake one
    /// has notifications off and must not be. With EVENT_IDX a kick already
    /// pending also suffices: `avail_event` lies behind the new batch.
    fn commit(&mut self) -> bool {
        let needed = self.dev.asleep(0) && !(self.event_idx && self.dev.kick_pending(0));
        let kicked = self.queue.commit();
        assert_eq!(
            kicked,
            needed,
            "commit #{}: kicked {kicked}, but the device {} a kick (event_idx {})",
            self.queue.stats().commits,
            if needed { "needed" } else { "did not need" },
            self.event_idx
        );
        kicked
    }

    /// Steps the device and polls until nothing is in flight.
    fn complete_all(&mut self) -> Vec<Completion<VmmHal>> {
        let mut done = Vec::new();
        let mut stalls = 0;
        while self.queue.in_flight() > 0 {
            self.dev.step(0, usize::MAX);
            if self.queue.poll(usize::MAX, |c| done.push(c)) == 0 {
                stalls += 1;
                assert!(stalls < STALL_LIMIT, "requests never completed");
            }
        }
        done
    }

    /// The device saw no driver mistake, and after teardown every DMA page is back.
    fn finish(self) {
        assert_eq!(self.dev.violations(), Vec::<String>::new());
        let Rig {
            hal,
            dev,
            device,
            queue,
            ..
        } = self;
        drop(queue);
        drop(device);
        assert_eq!(dev.status(), 0, "dropping the driver resets the device");
        assert!(!dev.queue_ready(0));
        assert_eq!(hal.live_pages(), 0, "teardown leaked DMA pages");
    }
}

fn one_completion(rig: &mut Rig) -> Completion<VmmHal> {
    let mut done = rig.complete_all();
    assert_eq!(done.len(), 1);
    done.pop().unwrap()
}

// ---------------------------------------------------------------------------
// Random read/write/verify across the 16-bit index wrap.

const DISK_SECTORS: u64 = 512;

struct Workload {
    requests: u64,
    queue_size: u16,
    event_idx: bool,
    indirect: bool,
    order: CompletionOrder,
    seed: u64,
}

/// Runs `w` against a model of the disk. Every read is checked against the
/// model, every commit's kick against the device's sleep state; at the end
/// the disk itself, the device's counters and the teardown are checked.
/// Returns the requests completed.
fn random_verify(w: Workload) -> u64 {
    let mut config = Config {
        queue_size: Some(w.queue_size),
        // The whole ring for requests: with indirect tables every request
        // then takes its table (see vmm_split_direct_while_the_ring_has_room).
        max_requests: Some(w.queue_size),
        // Published by commit alone, so `Rig::commit` judges every doorbell.
        publish_batch: Some(0),
        ..Config::default()
    };
    if !w.event_idx {
        config = config.without(Features::EVENT_IDX);
    }
    if !w.indirect {
        config = config.without(Features::INDIRECT_DESC);
    }
    let mut rig = Rig::new(
        VmmBlkConfig {
            capacity_sectors: DISK_SECTORS,
            order: w.order,
            ..VmmBlkConfig::default()
        },
        config,
    );
    assert_eq!(rig.queue.ring_kind(), RingKind::Split);
    assert_eq!(rig.event_idx, w.event_idx);
    let features = rig.device.info().features;
    assert_eq!(features.contains(Features::INDIRECT_DESC), w.indirect);

    let mut rng = Rng(w.seed | 1);
    let mut generation_of = vec![0u32; DISK_SECTORS as usize];
    let mut busy = vec![false; DISK_SECTORS as usize];
    let mut pool: HashMap<usize, Vec<DmaBuffer<VmmHal>>> = HashMap::new();
    // tag -> (is_write, first sector, sectors); ordered so the oldest is first.
    let mut in_flight: BTreeMap<u64, (bool, u64, u64)> = BTreeMap::new();
    let (mut submitted, mut completed, mut next_generation) = (0u64, 0u64, 1u32);
    let (mut overtakes, mut stalls) = (0u64, 0u32);
    let size = u64::from(w.queue_size);

    while completed < w.requests {
        let batch = 1 + rng.below(size);
        let mut placed = 0;
        while placed < batch && submitted < w.requests {
            let sectors = 1 + rng.below(8);
            let first = rng.below(DISK_SECTORS - sectors + 1);
            let range = first as usize..(first + sectors) as usize;
            if busy[range.clone()].iter().any(|b| *b) {
                break;
            }
            let len = (sectors * 512) as usize;
            let mut buf = pool
                .entry(len)
                .or_default()
                .pop()
                .unwrap_or_else(|| rig.buffer(len));
            let is_write = rng.below(2) == 0;
            let result = if is_write {
                stamp(buf.as_mut_slice(), first, next_generation);
                rig.queue.write(first, buf, submitted)
            } else {
                rig.queue.read(first, buf, submitted)
            };
            if let Err(rejected) = result {
                assert_eq!(rejected.error, Error::QueueFull);
                pool.entry(len).or_default().push(rejected.buffer);
                break;
            }
            if is_write {
                generation_of[range.clone()].fill(next_generation);
                next_generation += 1;
            }
            busy[range].fill(true);
            in_flight.insert(submitted, (is_write, first, sectors));
            submitted += 1;
            placed += 1;
        }
        if placed > 0 {
            rig.commit();
        }
        // Sometimes the device drains the ring and sleeps, sometimes it stops
        // early and stays awake, so commits meet both states.
        let budget = if rng.below(4) == 0 {
            usize::MAX
        } else {
            1 + rng.below(size) as usize
        };
        rig.dev.step(0, budget);

        let mut finished = Vec::new();
        rig.queue.poll(usize::MAX, |c| finished.push(c));
        if placed == 0 && finished.is_empty() {
            stalls += 1;
            assert!(stalls < STALL_LIMIT, "no progress at request {completed}");
        } else {
            stalls = 0;
        }
        for completion in finished {
            completion.result.expect("request failed");
            let (is_write, first, sectors) = in_flight
                .remove(&completion.tag)
                .expect("a known tag, completed once");
            if in_flight.keys().next().is_some_and(|&t| t < completion.tag) {
                overtakes += 1;
            }
            let buf = completion.buffer.expect("buffer returned");
            assert_eq!(completion.op, if is_write { Op::Write } else { Op::Read });
            if !is_write {
                let mut expected = vec![0u8; buf.len()];
                for (i, block) in expected.chunks_mut(512).enumerate() {
                    let sector = first + i as u64;
                    let generation = generation_of[sector as usize];
                    if generation != 0 {
                        stamp(block, sector, generation);
                    }
                }
                assert!(
                    buf.as_slice() == expected.as_slice(),
                    "read of {first}+{sectors} (tag {}) returned wrong data",
                    completion.tag
                );
            }
            busy[first as usize..(first + sectors) as usize].fill(false);
            pool.entry(buf.len()).or_default().push(buf);
            completed += 1;
        }
    }

    assert!(in_flight.is_empty());
    let driver = rig.queue.stats();
    let device = rig.dev.stats(0);
    assert_eq!(driver.completed, completed);
    assert_eq!(device.chains, completed);
    let expected_indirect = if w.indirect { completed } else { 0 };
    assert_eq!(device.indirect_chains, expected_indirect);
    // Every kick woke a sleeping device; none hit an awake one.
    assert_eq!(driver.kicks, device.kicks);
    assert_eq!(device.kicks, device.wakeups);
    assert_eq!(device.kicks_while_awake, 0);
    // A one-entry ring is always drained, so there every commit must kick.
    assert!(
        w.queue_size == 1 || driver.kicks < driver.commits,
        "some commits met an awake device and stayed silent ({} kicks, {} commits)",
        driver.kicks,
        driver.commits
    );
    // Poll mode: the device never had cause to interrupt.
    assert_eq!(device.used_notifications, 0);
    let expected_flagged = if w.event_idx { 0 } else { device.batches };
    assert_eq!(device.suppressed_by_flag, expected_flagged);
    if w.order != CompletionOrder::InOrder {
        assert!(device.reordered_batches > 0);
        assert!(overtakes > 0, "completions overtook older requests");
    }
    // The disk agrees with the model.
    let mut disk = vec![0u8; 512];
    let mut expected = vec![0u8; 512];
    for sector in 0..DISK_SECTORS {
        rig.dev.read_disk(sector, &mut disk);
        expected.fill(0);
        let generation = generation_of[sector as usize];
        if generation != 0 {
            stamp(&mut expected, sector, generation);
        }
        assert!(disk == expected, "sector {sector} differs on disk");
    }
    drop(pool);
    rig.finish();
    completed
}

/// More than 2^16 requests through a 64-entry ring: avail.idx, used.idx,
/// avail_event and used_event all wrap at least once.
fn wraps(event_idx: bool, indirect: bool, order: CompletionOrder) {
    let completed = random_verify(Workload {
        requests: 70_000,
        queue_size: 64,
        event_idx,
        indirect,
        order,
        seed: 0x7e57_0000 | u64::from(event_idx) << 1 | u64::from(indirect),
    });
    assert!(completed > 1 << 16, "the 16-bit indices must wrap");
}

#[test]
fn vmm_split_random_verify_across_index_wrap_event_idx_indirect() {
    wraps(true, true, CompletionOrder::Shuffled { seed: 0x51 });
}

#[test]
fn vmm_split_random_verify_across_index_wrap_event_idx_direct() {
    wraps(true, false, CompletionOrder::Reversed);
}

#[test]
fn vmm_split_random_verify_across_index_wrap_flags_indirect() {
    wraps(false, true, CompletionOrder::Reversed);
}

#[test]
fn vmm_split_random_verify_across_index_wrap_flags_direct() {
    wraps(false, false, CompletionOrder::Shuffled { seed: 0x52 });
}

/// Queue sizes 1 and 2 only fit a request (3 descriptors) through an
/// indirect table; 4 fits one direct chain at a time.
#[test]
fn vmm_split_tiny_queues_verify_data() {
    for (size, indirect) in [(1, true), (2, true), (4, false)] {
        for event_idx in [true, false] {
            random_verify(Workload {
                requests: 3_000,
                queue_size: size,
                event_idx,
                indirect,
                // One or two requests in flight leave little to reorder.
                order: CompletionOrder::InOrder,
                seed: 0x5100 + u64::from(size),
            });
        }
    }
}

// ---------------------------------------------------------------------------
// Setup and the request types.

/// What the driver negotiates with a device that offers everything we model,
/// and what it reads from a configuration space laid out from the spec.
#[test]
fn vmm_split_negotiates_features_and_reads_config_space() {
    let everything = VmmBlkConfig {
        capacity_sectors: 3000,
        seg_max: 12,
        max_queue_size: 128,
        discard: true,
        write_zeroes: true,
        ..VmmBlkConfig::default()
    };
    let rig = Rig::new(everything.clone(), Config::default());
    let info = *rig.device.info();
    assert_eq!(info.capacity_sectors, 3000);
    assert_eq!(info.block_size, 512);
    assert_eq!(info.max_segments, 12, "seg_max caps the driver's 32");
    assert_eq!(info.device_queues, 1);
    assert!(info.flush);
    let limits = RangeLimits {
        max_sectors: 64,
        max_ranges: 1,
        sector_alignment: 1,
    };
    assert_eq!(info.discard, Some(limits));
    assert_eq!(info.write_zeroes, Some(limits));
    assert!(info.write_zeroes_may_unmap);
    assert_eq!(info.ring, RingKind::Split);
    assert_eq!(rig.queue.size(), 128, "the device's maximum, under 256");
    let accepted = rig.dev.driver_features();
    assert_eq!(accepted, rig.dev.offered_features(), "all of it is wanted");
    assert_eq!(accepted & feature::RING_PACKED, 0);
    assert_eq!(
        info.features.bits(),
        accepted,
        "driver and device agree on what was negotiated"
    );
    assert_eq!(
        rig.dev.status(),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
    assert!(rig.dev.queue_ready(0));
    rig.finish();

    // Switched off on the driver side: the device sees them declined.
    let off = Features::EVENT_IDX | Features::INDIRECT_DESC | Features::BLK_DISCARD;
    let rig = Rig::new(everything, Config::default().without(off));
    let accepted = rig.dev.driver_features();
    assert_eq!(accepted & (feature::EVENT_IDX | feature::INDIRECT_DESC), 0);
    assert_eq!(accepted & feature::DISCARD, 0);
    assert_ne!(accepted & feature::WRITE_ZEROES, 0);
    assert_eq!(rig.device.info().discard, None);
    rig.finish();

    // Not offered: not used, whatever the driver would like.
    let rig = Rig::new(
        VmmBlkConfig {
            event_idx: false,
            indirect: false,
            ..VmmBlkConfig::default()
        },
        Config::default(),
    );
    let features = rig.device.info().features;
    assert!(!features.contains(Features::EVENT_IDX));
    assert!(!features.contains(Features::INDIRECT_DESC));
    assert_eq!(rig.dev.driver_features() & !rig.dev.offered_features(), 0);
    rig.finish();
}

/// A write, a FLUSH (header and status only), and a read of the same sectors.
#[test]
fn vmm_split_flush_round_trip() {
    let mut rig = Rig::new(VmmBlkConfig::default(), Config::default());
    let mut data = rig.buffer(4096);
    stamp(data.as_mut_slice(), 40, 7);
    rig.queue.write(40, data, 1).unwrap();
    rig.queue.flush(2).unwrap();
    rig.commit();
    let mut done = rig.complete_all();
    done.sort_by_key(|c| c.tag);
    assert_eq!(done.len(), 2);
    assert_eq!((done[1].tag, done[1].op), (2, Op::Flush));
    assert_eq!(done[1].result, Ok(()));
    assert!(done[1].buffer.is_none());
    assert_eq!(rig.dev.flushes(), 1);

    rig.queue.read(40, rig.buffer(4096), 3).unwrap();
    rig.commit();
    let read = one_completion(&mut rig);
    let mut expected = vec![0u8; 4096];
    stamp(&mut expected, 40, 7);
    assert!(read.buffer.unwrap().as_slice() == expected.as_slice());
    drop(done);
    rig.finish();
}

/// GET_ID returns the device's 20-byte id, NUL-padded when shorter, and the
/// device writes nothing past those 20 bytes of the caller's buffer.
#[test]
fn vmm_split_get_id_round_trip() {
    for id in [&b"0123456789abcdefghij"[..], &b"vmm-blk"[..]] {
        let mut rig = Rig::new(
            VmmBlkConfig {
                id: id.to_vec(),
                ..VmmBlkConfig::default()
            },
            Config::default(),
        );
        let mut buf = rig.buffer(512);
        buf.as_mut_slice().fill(0xaa);
        rig.queue.get_id(buf, 9).unwrap();
        rig.commit();
        let done = one_completion(&mut rig);
        assert_eq!((done.tag, done.op, done.result), (9, Op::GetId, Ok(())));
        let buf = done.buffer.unwrap();
        let mut expected = [0u8; 20];
        expected[..id.len()].copy_from_slice(id);
        assert_eq!(&buf.as_slice()[..20], &expected);
        assert!(buf.as_slice()[20..].iter().all(|&b| b == 0xaa));
        drop(buf);
        rig.finish();
    }
}

/// WRITE_ZEROES zeroes exactly its range; DISCARD reaches the device with
/// its range and no unmap flag.
#[test]
fn vmm_split_write_zeroes_and_discard_round_trip() {
    let mut rig = Rig::new(
        VmmBlkConfig {
            discard: true,
            write_zeroes: true,
            ..VmmBlkConfig::default()
        },
        Config::default(),
    );
    let mut data = rig.buffer(16 * 512);
    stamp(data.as_mut_slice(), 0, 3);
    rig.queue.write(0, data, 1).unwrap();
    rig.commit();
    one_completion(&mut rig).result.unwrap();

    rig.queue.write_zeroes(4, 8, true, 2).unwrap();
    rig.queue.discard(20, 4, 3).unwrap();
    rig.commit();
    let done = rig.complete_all();
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| c.result == Ok(())));
    assert_eq!(
        rig.dev.write_zeroes(),
        [Range {
            sector: 4,
            sectors: 8,
            flags: 1
        }]
    );
    assert_eq!(
        rig.dev.discards(),
        [Range {
            sector: 20,
            sectors: 4,
            flags: 0
        }]
    );

    rig.queue.read(0, rig.buffer(16 * 512), 4).unwrap();
    rig.commit();
    let read = one_completion(&mut rig).buffer.unwrap();
    let mut expected = vec![0u8; 16 * 512];
    stamp(&mut expected, 0, 3);
    expected[4 * 512..12 * 512].fill(0);
    assert!(read.as_slice() == expected.as_slice());
    drop(read);
    rig.finish();
}

/// Completions the device puts in the used ring last-first reach the caller
/// in that order, each with its own tag and its own sector's data.
#[test]
fn vmm_split_out_of_order_completions_keep_tags_and_data() {
    let mut rig = Rig::new(
        VmmBlkConfig {
            order: CompletionOrder::Reversed,
            ..VmmBlkConfig::default()
        },
        Config::default(),
    );
    for tag in 0..8u64 {
        let mut sector = vec![0u8; 512];
        stamp(&mut sector, tag * 3, tag as u32 + 1);
        rig.dev.write_disk(tag * 3, &sector);
    }
    for tag in 0..8u64 {
        rig.queue.read(tag * 3, rig.buffer(512), tag).unwrap();
    }
    rig.commit();
    let done = rig.complete_all();
    let tags: Vec<u64> = done.iter().map(|c| c.tag).collect();
    assert_eq!(tags, [7, 6, 5, 4, 3, 2, 1, 0]);
    for completion in done {
        let mut expected = vec![0u8; 512];
        stamp(&mut expected, completion.tag * 3, completion.tag as u32 + 1);
        assert!(completion.buffer.unwrap().as_slice() == expected.as_slice());
    }
    rig.finish();
}

// ---------------------------------------------------------------------------
// Notifications in both directions, as virtio-queue computes them.

/// Kicks follow the device's own suppression state, step by step:
/// - asleep (notifications on): the first publish kicks;
/// - a second publish before the device ran: with EVENT_IDX, `avail_event`
///   still names the first batch, so no kick; without it, `used.flags` is
///   still 0, so the driver must kick again;
/// - awake (notifications off): no kick either way;
/// - asleep again after draining: the next publish kicks.
fn kicks_follow_device_suppression(event_idx: bool) {
    let config = if event_idx {
        Config::default()
    } else {
        Config::default().without(Features::EVENT_IDX)
    };
    let mut rig = Rig::new(VmmBlkConfig::default(), config);
    let mut tag = 0;
    let mut submit = |rig: &mut Rig, count: u64| {
        for _ in 0..count {
            rig.queue.read(tag % 64, rig.buffer(512), tag).unwrap();
            tag += 1;
        }
    };

    submit(&mut rig, 4);
    assert!(rig.commit(), "a sleeping device is kicked");
    submit(&mut rig, 4);
    assert_eq!(rig.commit(), !event_idx);
    assert_eq!(rig.dev.step(0, 2), 2, "woken, it serves part of the ring");
    assert!(!rig.dev.asleep(0));
    submit(&mut rig, 4);
    assert!(!rig.commit(), "an awake device is not kicked");
    assert_eq!(rig.dev.step(0, usize::MAX), 10);
    assert!(rig.dev.asleep(0), "drained, it sleeps");
    assert_eq!(rig.queue.poll(usize::MAX, drop), 12);
    submit(&mut rig, 4);
    assert!(rig.commit(), "asleep again, it is kicked again");
    assert_eq!(rig.complete_all().len(), 4);

    let device = rig.dev.stats(0);
    let expected_kicks = if event_idx { 2 } else { 3 };
    assert_eq!(rig.queue.stats().kicks, expected_kicks);
    assert_eq!(device.kicks, expected_kicks);
    assert_eq!(device.wakeups, 2, "one wake-up per sleep");
    assert_eq!(device.kicks_while_awake, 0);
    assert_eq!(rig.queue.stats().commits, 4);
    rig.finish();
}

#[test]
fn vmm_split_event_idx_kicks_once_per_device_sleep() {
    kicks_follow_device_suppression(true);
}

#[test]
fn vmm_split_flags_kick_until_device_sets_no_notify() {
    kicks_follow_device_suppression(false);
}

/// In Poll mode the device never has cause to interrupt: with EVENT_IDX,
/// `virtio-queue`'s `needs_notification` never fires (the driver keeps
/// `used_event` behind it), and without, every batch it would notify is
/// covered by `VIRTQ_AVAIL_F_NO_INTERRUPT`.
///
/// With EVENT_IDX the run is also the deterministic wrap case for kicks:
/// batches of 48 to a device that drains and sleeps before each commit, for
/// 1400 batches, so one batch that must kick straddles avail.idx 65535 -> 0
/// (a wrap-unsafe event test misses it and the device never wakes).
#[test]
fn vmm_split_poll_mode_suppresses_used_notifications() {
    for (event_idx, rounds) in [(true, 1400u64), (false, 200)] {
        let mut config = Config {
            queue_size: Some(64),
            max_requests: Some(64),
            // Batches of 48 published by commit alone (see Rig::commit).
            publish_batch: Some(0),
            ..Config::default()
        };
        if !event_idx {
            config = config.without(Features::EVENT_IDX);
        }
        let mut rig = Rig::new(VmmBlkConfig::default(), config);
        assert_eq!(rig.queue.mode(), Mode::Poll);
        let mut buffers: Vec<_> = (0..48).map(|_| rig.buffer(512)).collect();
        for round in 0..rounds {
            for (i, buf) in buffers.drain(..).enumerate() {
                rig.queue.read(i as u64, buf, round).unwrap();
            }
            assert!(rig.commit(), "the device sleeps before every batch");
            // Two device steps per batch: two used-ring batches to judge.
            assert_eq!(rig.dev.step(0, 20), 20);
            assert_eq!(rig.dev.step(0, usize::MAX), 28);
            rig.queue
                .poll(usize::MAX, |c| buffers.push(c.buffer.unwrap()));
            assert_eq!(buffers.len(), 48, "round {round}");
        }
        let device = rig.dev.stats(0);
        assert_eq!(device.chains, 48 * rounds);
        assert_eq!(device.batches, 2 * rounds);
        assert_eq!(device.used_notifications, 0);
        let expected_flagged = if event_idx { 0 } else { device.batches };
        assert_eq!(device.suppressed_by_flag, expected_flagged);
        assert_eq!(rig.queue.stats().kicks, rounds);
        drop(buffers);
        rig.finish();
    }
}

/// In Interrupt mode the device notifies exactly when the driver asked:
/// with EVENT_IDX at the first completion past where the driver stands
/// (`used_event`), which `poll` moves as it drains, so every batch is
/// notified whether or not the owner re-arms; without EVENT_IDX for every
/// batch (`avail.flags` stays 0).
#[test]
fn vmm_split_interrupt_mode_notifications_follow_used_event() {
    for event_idx in [true, false] {
        let mut config = Config {
            mode: Mode::Interrupt,
            ..Config::default()
        };
        if !event_idx {
            config = config.without(Features::EVENT_IDX);
        }
        let mut rig = Rig::new(VmmBlkConfig::default(), config);
        let batch = |rig: &mut Rig| {
            for i in 0..8 {
                rig.queue.read(i, rig.buffer(512), i).unwrap();
            }
            rig.commit();
            rig.dev.step(0, usize::MAX);
            assert_eq!(rig.queue.poll(usize::MAX, drop), 8);
            rig.dev.stats(0).used_notifications
        };
        assert_eq!(batch(&mut rig), 1, "armed at setup: notified");
        assert_eq!(batch(&mut rig), 2, "draining with poll kept it armed");
        assert!(!rig.queue.arm_notifications(), "nothing is waiting");
        assert_eq!(batch(&mut rig), 3, "re-armed: notified again");
        rig.finish();
    }
}

/// With the default `max_requests` (half the ring) a request goes as a
/// direct chain while the ring's free descriptors can spare it, and in its
/// indirect table once they are short; half the ring's entries in requests
/// always fit, and one more is refused as QueueFull. virtio-queue's device
/// side serves both kinds.
#[test]
fn vmm_split_direct_while_the_ring_has_room_indirect_when_short() {
    let config = Config {
        queue_size: Some(64),
        ..Config::default()
    };
    let mut rig = Rig::new(VmmBlkConfig::default(), config);
    let mut buffers: Vec<_> = (0..32).map(|_| rig.buffer(512)).collect();
    for round in 0..50u64 {
        for (i, buf) in buffers.drain(..).enumerate() {
            let sector = round * 32 + i as u64;
            rig.queue
                .read(sector % 256, buf, sector)
                .expect("32 requests fit in a 64-entry queue");
        }
        let refused = rig.queue.read(0, rig.buffer(512), 0).unwrap_err();
        assert_eq!(refused.error, Error::QueueFull, "a 33rd is one too many");
        rig.commit();
        assert_eq!(rig.dev.step(0, usize::MAX), 32);
        rig.queue.poll(usize::MAX, |c| {
            c.result.expect("read succeeded");
            buffers.push(c.buffer.expect("buffer back"));
        });
    }
    let stats = rig.dev.stats(0);
    assert_eq!(stats.chains, 50 * 32);
    // From an empty ring: 16 reads go direct (3 descriptors each) before
    // the reserve for the other 16 leaves room only for their tables.
    assert_eq!(stats.indirect_chains, 50 * 16, "{stats:?}");
    assert_eq!(rig.dev.violations(), Vec::<String>::new());
}
