//! Doorbell and used-buffer notification suppression, both directions, both rings.

mod common;

use common::*;
use virtio_blk_mq::{Config, Features, Mode, RingKind};
use virtio_blk_sim::SimDevice;

fn event_idx_kicks_once_per_batch_the_device_has_not_seen(ring: RingKind) {
    let sim = SimDevice::new(sim_config(ring));
    // Batches of 32 published by commit alone.
    let config = Config {
        publish_batch: Some(0),
        ..Config::default()
    };
    let (device, mut queue) = start(&sim, config);
    assert!(device.info().features.contains(Features::EVENT_IDX));

    submit_reads(&mut queue, 32);
    assert!(
        queue.commit(),
        "an idle device asked to hear about the first batch"
    );
    // The device has not looked at the ring since: no second doorbell.
    submit_reads(&mut queue, 32);
    assert!(
        !queue.commit(),
        "device has not consumed the first batch yet"
    );
    assert_eq!(sim.stats(0).kicks, 1);
    complete_all(&sim, &mut queue);
    // After the device caught up it asked again.
    submit_reads(&mut queue, 32);
    assert!(queue.commit());
    complete_all(&sim, &mut queue);
    assert_eq!(queue.stats().kicks, 2);
    assert_eq!(sim.stats(0).kicks, 2);
    assert_eq!(queue.stats().commits, 3);
    assert_eq!(queue.stats().completed, 96);
}

#[test]
fn split_event_idx_kicks_once_per_batch_the_device_has_not_seen() {
    event_idx_kicks_once_per_batch_the_device_has_not_seen(RingKind::Split);
}

#[test]
fn packed_event_idx_kicks_once_per_batch_the_device_has_not_seen() {
    event_idx_kicks_once_per_batch_the_device_has_not_seen(RingKind::Packed);
}

fn a_long_batch_is_published_in_pieces_of_publish_batch(ring: RingKind) {
    let sim = SimDevice::new(sim_config(ring));
    let config = Config {
        publish_batch: Some(16),
        ..Config::default()
    };
    let (_device, mut queue) = start(&sim, config);
    submit_reads(&mut queue, 40);
    // Two pieces of 16 went out without a commit, and without a doorbell:
    // that waits for the commit; the last 8 wait for it too.
    assert_eq!(queue.stats().commits, 0);
    assert_eq!(sim.stats(0).kicks, 0);
    let mut done = 0;
    for _ in 0..100 {
        sim.step(0);
        queue.poll(usize::MAX, |_| done += 1);
    }
    assert_eq!(done, 32, "the device sees the published pieces, no more");
    assert_eq!(queue.in_flight(), 8);
    // The device, idle again, asks about what comes after the 32 it took.
    assert!(queue.commit());
    assert_eq!(sim.stats(0).kicks, 1);
    assert_eq!(complete_all(&sim, &mut queue).len(), 8);
    // Everything decided: a second commit neither publishes nor rings.
    assert!(!queue.commit());
    assert_eq!(queue.stats().commits, 1);
    assert_eq!(queue.stats().completed, 40);
}

#[test]
fn split_a_long_batch_is_published_in_pieces_of_publish_batch() {
    a_long_batch_is_published_in_pieces_of_publish_batch(RingKind::Split);
}

#[test]
fn packed_a_long_batch_is_published_in_pieces_of_publish_batch() {
    a_long_batch_is_published_in_pieces_of_publish_batch(RingKind::Packed);
}

fn without_event_idx_every_commit_kicks(ring: RingKind) {
    let sim = SimDevice::new(sim_config(ring));
    let (_device, mut queue) = start(&sim, Config::default().without(Features::EVENT_IDX));
    submit_reads(&mut queue, 4);
    assert!(queue.commit());
    submit_reads(&mut queue, 4);
    assert!(queue.commit());
    // An empty commit publishes nothing and never kicks.
    assert!(!queue.commit());
    complete_all(&sim, &mut queue);
    assert_eq!(sim.stats(0).kicks, 2);
}

#[test]
fn split_without_event_idx_every_commit_kicks() {
    without_event_idx_every_commit_kicks(RingKind::Split);
}

#[test]
fn packed_without_event_idx_every_commit_kicks() {
    without_event_idx_every_commit_kicks(RingKind::Packed);
}

fn poll_mode_gets_no_used_notifications(ring: RingKind, features_off: Features) {
    let sim = SimDevice::new(sim_config(ring));
    let (_device, mut queue) = start(&sim, Config::default().without(features_off));
    for _ in 0..200 {
        submit_reads(&mut queue, 16);
        queue.commit();
        complete_all(&sim, &mut queue);
    }
    assert_eq!(queue.stats().completed, 3200);
    assert_eq!(sim.stats(0).used_notifications, 0);
}

#[test]
fn split_poll_mode_gets_no_used_notifications() {
    poll_mode_gets_no_used_notifications(RingKind::Split, Features::empty());
    poll_mode_gets_no_used_notifications(RingKind::Split, Features::EVENT_IDX);
}

#[test]
fn packed_poll_mode_gets_no_used_notifications() {
    poll_mode_gets_no_used_notifications(RingKind::Packed, Features::empty());
    poll_mode_gets_no_used_notifications(RingKind::Packed, Features::EVENT_IDX);
}

fn interrupt_mode_rearms(ring: RingKind, features_off: Features) {
    let sim = SimDevice::new(sim_config(ring));
    let config = Config {
        mode: Mode::Interrupt,
        ..Config::default().without(features_off)
    };
    let (_device, mut queue) = start(&sim, config);
    submit_reads(&mut queue, 8);
    queue.commit();
    sim.drain(0);
    let after_first = sim.stats(0).used_notifications;
    assert!(after_first >= 1, "an armed queue is notified");
    // Drained: the last, empty, look moved the event index (or left
    // notifications on without EVENT_IDX).
    let mut done = 0;
    done += queue.poll(usize::MAX, |_| {});
    assert_eq!(done, 8);
    assert!(
        !queue.arm_notifications(),
        "nothing is waiting after a full drain"
    );
    submit_reads(&mut queue, 8);
    queue.commit();
    sim.drain(0);
    assert!(
        sim.stats(0).used_notifications > after_first,
        "re-armed queue is notified again"
    );
    assert!(
        queue.arm_notifications(),
        "completions are waiting: keep polling"
    );
}

#[test]
fn split_interrupt_mode_rearms() {
    interrupt_mode_rearms(RingKind::Split, Features::empty());
    interrupt_mode_rearms(RingKind::Split, Features::EVENT_IDX);
}

#[test]
fn packed_interrupt_mode_rearms() {
    interrupt_mode_rearms(RingKind::Packed, Features::empty());
    interrupt_mode_rearms(RingKind::Packed, Features::EVENT_IDX);
}

/// Issue 14 item 1: an owner that drains completions from its interrupt
/// handler with `poll` and never calls `arm_notifications` (the
/// `Mode::Interrupt` contract) gets one interrupt per batch the device
/// completes, for as long as it runs, not only the first.
fn interrupt_handler_that_only_polls_stays_armed(ring: RingKind) {
    let sim = SimDevice::new(sim_config(ring));
    let config = Config {
        mode: Mode::Interrupt,
        ..Config::default()
    };
    let (device, mut queue) = start(&sim, config);
    assert!(device.info().features.contains(Features::EVENT_IDX));
    // Enough rounds to wrap a packed ring several times (its wrap counter
    // travels in off_wrap) and to move split's used_event far.
    let rounds = 200u64;
    for round in 0..rounds {
        let count = 1 + round % 7;
        submit_reads(&mut queue, count);
        queue.commit();
        sim.drain(0);
        assert_eq!(
            sim.stats(0).used_notifications,
            round + 1,
            "round {round}: the device did not interrupt for its completions"
        );
        // The "interrupt handler": poll until empty, nothing else.
        let mut done = 0;
        while queue.poll(3, |c| c.result.unwrap()) > 0 {
            done += 1;
        }
        assert!(done > 0);
        assert_eq!(queue.in_flight(), 0);
    }
    assert_eq!(sim.stats(0).used_notifications, rounds);
}

#[test]
fn split_interrupt_handler_that_only_polls_stays_armed() {
    interrupt_handler_that_only_polls_stays_armed(RingKind::Split);
}

#[test]
fn packed_interrupt_handler_that_only_polls_stays_armed() {
    interrupt_handler_that_only_polls_stays_armed(RingKind::Packed);
}
