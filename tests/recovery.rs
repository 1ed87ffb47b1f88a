//! After the device fails as a whole: every request fails cleanly, buffers
//! come back only once the device is reset, and the device works again after
//! a recovery. Requests the device sits on are reported by the timeout scan.

mod common;

use common::*;
use virtio_blk_mq::{BlkDevice, Config, DeviceFault, Error, Op, Overdue, Recovered, RingKind};
use virtio_blk_sim::{DiskKind, SimConfig, SimDevice, SimHal};

fn ram_sim(ring: RingKind) -> SimDevice {
    SimDevice::new(SimConfig {
        disk: DiskKind::Ram,
        ..sim_config(ring)
    })
}

/// Writes a stamped block at `sector`, reads it back, checks it.
fn round_trip(sim: &SimDevice, queue: &mut Queue, sector: u64, generation: u32) {
    let mut data = buffer(4096);
    stamp(data.as_mut_slice(), sector, generation);
    queue.write(sector, data, 1).unwrap();
    queue.commit();
    for c in complete_all(sim, queue) {
        c.result.unwrap();
    }
    queue.read(sector, buffer(4096), 2).unwrap();
    queue.commit();
    let done = complete_all(sim, queue);
    let mut expected = vec![0; 4096];
    stamp(&mut expected, sector, generation);
    assert!(done[0].buffer.as_ref().unwrap().as_slice() == expected);
}

fn needs_reset_fails_everything_then_recover_brings_it_back(ring: RingKind) {
    let sim = ram_sim(ring);
    let (mut device, mut queue) = start(&sim, Config::default());
    round_trip(&sim, &mut queue, 64, 1);
    for tag in 0..5 {
        queue.read(tag * 8, buffer(4096), tag).unwrap();
    }
    queue.commit();
    assert_eq!(device.check_status(), Ok(()));
    sim.set_needs_reset();
    assert_eq!(device.check_status(), Err(Error::DeviceNeedsReset));

    // The owner's next poll fails every request in flight, without buffers:
    // the device was not reset yet and could still write them.
    let mut failed = Vec::new();
    assert_eq!(queue.poll(usize::MAX, |c| failed.push(c)), 5);
    assert!(failed.iter().all(|c| c.result == Err(Error::DeviceBroken)));
    assert!(failed.iter().all(|c| c.buffer.is_none()));
    let mut tags: Vec<u64> = failed.iter().map(|c| c.tag).collect();
    tags.sort_unstable();
    assert_eq!(tags, [0, 1, 2, 3, 4]);
    assert_eq!(queue.fault(), Some(DeviceFault::NeedsReset));
    assert_eq!(queue.poll(usize::MAX, |_| panic!("completed twice")), 0);
    let refused = queue.read(0, buffer(4096), 9).unwrap_err();
    assert_eq!(refused.error, Error::DeviceBroken);

    // Recovery resets the device; only then do the buffers come back.
    let mut returned = Vec::new();
    let queues = device
        .recover([queue], |r| match r {
            Recovered::Buffer { tag, buffer } => returned.push((tag, buffer.len())),
            Recovered::Completed(c) => panic!("request {} completed twice", c.tag),
        })
        .expect("device recovers");
    returned.sort_unstable();
    assert_eq!(returned, (0..5).map(|tag| (tag, 4096)).collect::<Vec<_>>());
    let mut queue = queues.into_queues().remove(0);
    assert_eq!(queue.fault(), None);
    assert_eq!(device.check_status(), Ok(()));
    // The data written before the failure is still there, and new I/O works.
    queue.read(64, buffer(4096), 3).unwrap();
    queue.commit();
    let mut expected = vec![0; 4096];
    stamp(&mut expected, 64, 1);
    assert!(
        complete_all(&sim, &mut queue)[0]
            .buffer
            .as_ref()
            .unwrap()
            .as_slice()
            == expected
    );
    round_trip(&sim, &mut queue, 128, 2);
    assert_eq!(sim.violations(), Vec::<String>::new());
}

#[test]
fn split_needs_reset_fails_everything_then_recover_brings_it_back() {
    needs_reset_fails_everything_then_recover_brings_it_back(RingKind::Split);
}

#[test]
fn packed_needs_reset_fails_everything_then_recover_brings_it_back() {
    needs_reset_fails_everything_then_recover_brings_it_back(RingKind::Packed);
}

fn recover_completes_requests_still_in_flight_with_their_buffers(ring: RingKind) {
    let sim = ram_sim(ring);
    let (mut device, mut queue) = start(&sim, Config::default());
    queue.write(0, buffer(512), 10).unwrap();
    queue.commit();
    // Placed but never committed: the device never saw it.
    queue.read(8, buffer(1024), 11).unwrap();
    let mut completed = Vec::new();
    let queues = device
        .recover([queue], |r| match r {
            Recovered::Completed(c) => completed.push(c),
            Recovered::Buffer { tag, .. } => panic!("request {tag} was never failed"),
        })
        .expect("device recovers");
    completed.sort_by_key(|c| c.tag);
    assert_eq!(completed.len(), 2);
    assert_eq!((completed[0].tag, completed[0].op), (10, Op::Write));
    assert_eq!((completed[1].tag, completed[1].op), (11, Op::Read));
    for c in &completed {
        assert_eq!(c.result, Err(Error::DeviceBroken));
    }
    assert_eq!(completed[0].buffer.as_ref().map(|b| b.len()), Some(512));
    assert_eq!(completed[1].buffer.as_ref().map(|b| b.len()), Some(1024));
    let mut queue = queues.into_queues().remove(0);
    round_trip(&sim, &mut queue, 0, 3);
}

#[test]
fn split_recover_completes_requests_still_in_flight_with_their_buffers() {
    recover_completes_requests_still_in_flight_with_their_buffers(RingKind::Split);
}

#[test]
fn packed_recover_completes_requests_still_in_flight_with_their_buffers() {
    recover_completes_requests_still_in_flight_with_their_buffers(RingKind::Packed);
}

fn a_queue_not_handed_back_is_retired(ring: RingKind) {
    let sim = SimDevice::new(SimConfig {
        num_queues: 2,
        ..sim_config(ring)
    });
    let config = Config {
        queues: 2,
        ..Config::default()
    };
    let mut device = BlkDevice::new(SimHal, sim.transport(), config).unwrap();
    let mut queues = device.take_queues().into_queues();
    let mut kept = queues.pop().unwrap();
    kept.read(0, buffer(512), 7).unwrap();
    kept.commit();
    let fresh = device
        .recover(queues, |r| panic!("nothing was in flight: {r:?}"))
        .expect("device recovers");
    assert_eq!(fresh.len(), 2);
    // The owner that kept its queue learns at its next poll; its buffer stays
    // with the queue (freed with it: the device is reset).
    let mut failed = Vec::new();
    assert_eq!(kept.poll(usize::MAX, |c| failed.push(c)), 1);
    assert_eq!(failed[0].tag, 7);
    assert_eq!(failed[0].result, Err(Error::DeviceBroken));
    assert_eq!(kept.fault(), Some(DeviceFault::DeviceReset));
    assert_eq!(
        kept.read(0, buffer(512), 8).unwrap_err().error,
        Error::DeviceBroken
    );
    drop(kept);
    let mut fresh = fresh.into_queues();
    for queue in &mut fresh {
        queue.read(0, buffer(512), 1).unwrap();
        queue.commit();
        assert_eq!(complete_all(&sim, queue)[0].result, Ok(()));
    }
}

#[test]
fn split_a_queue_not_handed_back_is_retired() {
    a_queue_not_handed_back_is_retired(RingKind::Split);
}

#[test]
fn packed_a_queue_not_handed_back_is_retired() {
    a_queue_not_handed_back_is_retired(RingKind::Packed);
}

fn overdue_requests_are_reported_once(ring: RingKind) {
    let sim = SimDevice::new(sim_config(ring));
    let (_device, mut queue) = start(&sim, Config::default());
    queue.read(0, buffer(512), 1).unwrap();
    queue.commit();
    let mut overdue = Vec::new();
    assert_eq!(queue.check_timeouts(3, |o| overdue.push(o)), 0);
    assert_eq!(queue.check_timeouts(3, |o| overdue.push(o)), 0);
    queue.flush(2).unwrap();
    queue.commit();
    assert_eq!(queue.check_timeouts(3, |o| overdue.push(o)), 1);
    assert_eq!(
        overdue,
        [Overdue {
            tag: 1,
            op: Op::Read,
            ticks: 3
        }]
    );
    assert_eq!(
        queue.check_timeouts(3, |o| overdue.push(o)),
        0,
        "the flush is 2 ticks old"
    );
    assert_eq!(queue.check_timeouts(3, |o| overdue.push(o)), 1, "the flush");
    assert_eq!(overdue[1].tag, 2);
    assert_eq!(
        queue.check_timeouts(3, |o| overdue.push(o)),
        0,
        "each reported once"
    );
    // Late completions are still delivered normally.
    let done = complete_all(&sim, &mut queue);
    assert_eq!(done.len(), 2);
    assert!(done.iter().all(|c| c.result.is_ok()));
    queue.read(0, buffer(512), 3).unwrap();
    queue.commit();
    assert_eq!(queue.check_timeouts(1, |o| overdue.push(o)), 1);
    assert_eq!(overdue[2].tag, 3);
}

#[test]
fn split_overdue_requests_are_reported_once() {
    overdue_requests_are_reported_once(RingKind::Split);
}

#[test]
fn packed_overdue_requests_are_reported_once() {
    overdue_requests_are_reported_once(RingKind::Packed);
}

/// With RING_RESET one broken queue is reset alone: the fresh queue works,
/// the other queue never notices, and the buffers the broken queue kept
/// back stay parked until a full device reset (a device may still write
/// them after a queue reset).
fn one_queue_recovers_while_the_other_runs(ring: RingKind) {
    use virtio_blk_sim::Hostile;
    let sim = SimDevice::new(SimConfig {
        num_queues: 2,
        disk: DiskKind::Ram,
        ..sim_config(ring)
    });
    let config = Config {
        queues: 2,
        ..Config::default()
    };
    let mut device = BlkDevice::new(SimHal, sim.transport(), config).unwrap();
    assert!(device
        .info()
        .features
        .contains(virtio_blk_mq::Features::RING_RESET));
    let mut queues = device.take_queues().into_queues();
    let mut other = queues.pop().unwrap();
    let mut broken = queues.pop().unwrap();
    other.read(0, buffer(512), 100).unwrap();
    other.commit();
    broken.read(0, buffer(512), 1).unwrap();
    broken.read(8, buffer(512), 2).unwrap();
    broken.commit();
    sim.inject_hostile(0, Hostile::UsedIdOutOfRange).unwrap();
    sim.step(0);
    let mut failed = Vec::new();
    broken.poll(usize::MAX, |c| failed.push((c.tag, c.result)));
    failed.sort_by_key(|(tag, _)| *tag);
    assert_eq!(
        failed,
        [(1, Err(Error::DeviceBroken)), (2, Err(Error::DeviceBroken))]
    );
    assert_eq!(
        broken.fault(),
        Some(DeviceFault::IdOutOfRange(u32::from(broken.size())))
    );

    let mut fresh = device
        .recover_queue(broken, |r| {
            panic!("nothing comes back before a device reset: {r:?}")
        })
        .expect("queue 0 recovers alone");
    assert_eq!(fresh.index(), 0);
    round_trip(&sim, &mut fresh, 16, 4);
    // The other queue's request was never disturbed.
    assert_eq!(other.fault(), None);
    let done = complete_all(&sim, &mut other);
    assert_eq!((done[0].tag, done[0].result), (100, Ok(())));
    assert_eq!(sim.violations(), Vec::<String>::new());
}

#[test]
fn split_one_queue_recovers_while_the_other_runs() {
    one_queue_recovers_while_the_other_runs(RingKind::Split);
}

#[test]
fn packed_one_queue_recovers_while_the_other_runs() {
    one_queue_recovers_while_the_other_runs(RingKind::Packed);
}

/// Without RING_RESET the queue comes back untouched in the refusal.
#[test]
fn split_recover_queue_without_ring_reset_hands_the_queue_back() {
    let sim = SimDevice::new(sim_config(RingKind::Split));
    let config = Config::default().without(virtio_blk_mq::Features::RING_RESET);
    let (mut device, mut queue) = start(&sim, config);
    queue.read(0, buffer(512), 5).unwrap();
    queue.commit();
    let refused = device
        .recover_queue(queue, |r| panic!("nothing may come back: {r:?}"))
        .expect_err("refused without RING_RESET");
    assert!(matches!(refused.error, Error::NotSupported(_)));
    let mut queue = refused.queue.expect("the queue comes back");
    let done = complete_all(&sim, &mut queue);
    assert_eq!((done[0].tag, done[0].result), (5, Ok(())));
}

/// Requests in flight on a queue reset alone complete with `DeviceBroken`
/// and without their buffers, which stay parked until the device is reset.
fn queue_reset_completes_in_flight_requests_without_buffers(ring: RingKind) {
    let sim = ram_sim(ring);
    let (mut device, mut queue) = start(&sim, Config::default());
    sim.stall(0, true);
    queue.read(0, buffer(512), 1).unwrap();
    queue.read(8, buffer(512), 2).unwrap();
    queue.commit();
    sim.step(0);
    let mut failed = Vec::new();
    let mut fresh = device
        .recover_queue(queue, |r| match r {
            Recovered::Completed(c) => failed.push((c.tag, c.result, c.buffer.is_some())),
            Recovered::Buffer { tag, .. } => panic!("buffer of {tag} handed back"),
        })
        .expect("queue 0 recovers alone");
    failed.sort_by_key(|(tag, ..)| *tag);
    assert_eq!(
        failed,
        [
            (1, Err(Error::DeviceBroken), false),
            (2, Err(Error::DeviceBroken), false)
        ]
    );
    round_trip(&sim, &mut fresh, 4, 2);
    assert_eq!(sim.violations(), Vec::<String>::new());
}

#[test]
fn split_queue_reset_completes_in_flight_requests_without_buffers() {
    queue_reset_completes_in_flight_requests_without_buffers(RingKind::Split);
}

#[test]
fn packed_queue_reset_completes_in_flight_requests_without_buffers() {
    queue_reset_completes_in_flight_requests_without_buffers(RingKind::Packed);
}
