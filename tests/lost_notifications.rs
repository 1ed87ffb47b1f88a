//! A doorbell or an interrupt that never arrives: the queue rings again
//! (bounded), and a waiter whose notification was lost looks at the ring
//! again when its sleep ends, so neither loss hangs the owner.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use virtio_blk_mq::mq::{wait_for_completions, IrqEvent};
use virtio_blk_mq::{Config, Mode, Rekick, RingKind};
use virtio_blk_sim::{SimDevice, ThreadMode};

/// Polls `queue` while stepping a device that only runs when kicked, until
/// nothing is in flight or `max_polls` polls went by; returns the polls.
fn poll_sleeping_device(sim: &SimDevice, queue: &mut Queue, max_polls: u64) -> u64 {
    let mut polls = 0;
    while queue.in_flight() > 0 && polls < max_polls {
        sim.step_kicked(queue.index());
        queue.poll(usize::MAX, |c| c.result.unwrap());
        polls += 1;
    }
    polls
}

/// The default configuration with re-kicks after `empty_polls` empty polls
/// or `ticks` ticks.
fn rekick_after(empty_polls: u32, ticks: u32) -> Config {
    Config {
        rekick: Rekick { empty_polls, ticks },
        ..Config::default()
    }
}

fn lost_kick_is_rung_again_after_empty_polls(ring: RingKind) {
    let sim = SimDevice::new(sim_config(ring));
    let (_device, mut queue) = start(&sim, rekick_after(64, 0));
    for round in 0..12 {
        if round % 3 == 1 {
            sim.drop_next_kick(0);
        }
        submit_reads(&mut queue, 4);
        assert!(
            queue.commit(),
            "round {round}: the sleeping device asked for a kick"
        );
        let polls = poll_sleeping_device(&sim, &mut queue, 10_000);
        assert_eq!(
            queue.in_flight(),
            0,
            "round {round}: stuck after {polls} polls"
        );
    }
    assert_eq!(sim.stats(0).dropped_kicks, 4);
    assert_eq!(queue.stats().rekicks, 4, "one re-kick per lost kick");
    assert_eq!(queue.stats().completed, 48);

    // Without re-kicks the same loss leaves the requests where they are.
    let sim = SimDevice::new(sim_config(ring));
    let config = Config {
        rekick: Rekick::NEVER,
        ..Config::default()
    };
    let (_device, mut queue) = start(&sim, config);
    sim.drop_next_kick(0);
    submit_reads(&mut queue, 4);
    queue.commit();
    poll_sleeping_device(&sim, &mut queue, 100_000);
    assert_eq!(queue.in_flight(), 4, "a lost kick strands the batch");
    assert_eq!(queue.stats().rekicks, 0);
}

#[test]
fn split_lost_kick_is_rung_again_after_empty_polls() {
    lost_kick_is_rung_again_after_empty_polls(RingKind::Split);
}

#[test]
fn packed_lost_kick_is_rung_again_after_empty_polls() {
    lost_kick_is_rung_again_after_empty_polls(RingKind::Packed);
}

/// An owner that sleeps instead of polling: `check_timeouts` ticks re-kick.
fn lost_kick_is_rung_again_after_ticks(ring: RingKind) {
    let sim = SimDevice::new(sim_config(ring));
    let config = Config {
        mode: Mode::Interrupt,
        rekick: Rekick {
            empty_polls: 0,
            ticks: 2,
        },
        ..Config::default()
    };
    let (_device, mut queue) = start(&sim, config);
    sim.drop_next_kick(0);
    submit_reads(&mut queue, 2);
    queue.commit();
    let mut ticks = 0;
    while queue.in_flight() > 0 {
        ticks += 1;
        assert!(ticks <= 3, "not re-kicked within 3 ticks");
        queue.check_timeouts(u32::MAX, |_| {});
        sim.step_kicked(0);
        queue.poll(usize::MAX, |c| c.result.unwrap());
    }
    // Tick 1: placed during it; tick 2: a whole tick stuck; tick 3: two.
    assert_eq!(ticks, 3);
    assert_eq!(queue.stats().rekicks, 1);
    assert_eq!(queue.stats().empty_polls, 2);
}

#[test]
fn split_lost_kick_is_rung_again_after_ticks() {
    lost_kick_is_rung_again_after_ticks(RingKind::Split);
}

#[test]
fn packed_lost_kick_is_rung_again_after_ticks() {
    lost_kick_is_rung_again_after_ticks(RingKind::Packed);
}

/// A device that never hears the doorbell gets a bounded number of
/// re-kicks, and its requests still end up in the timeout report.
#[test]
fn a_deaf_device_is_rekicked_a_bounded_number_of_times_then_times_out() {
    for ring in RINGS {
        let sim = SimDevice::new(sim_config(ring));
        let (_device, mut queue) = start(&sim, rekick_after(16, 1));
        let doorbells = 1 + Rekick::MAX_PER_STALL + 4;
        for _ in 0..doorbells {
            sim.drop_next_kick(0);
        }
        submit_reads(&mut queue, 3);
        assert!(queue.commit(), "{ring:?}: a fresh device asks for a kick");
        let mut overdue = 0;
        for _ in 0..100 {
            poll_sleeping_device(&sim, &mut queue, 1_000);
            overdue += queue.check_timeouts(50, |o| assert!(o.ticks >= 50));
        }
        let stats = queue.stats();
        assert_eq!(stats.rekicks, u64::from(Rekick::MAX_PER_STALL), "{ring:?}");
        assert_eq!(stats.rekicks_declined, 0, "{ring:?}: it was waiting");
        let device = sim.stats(0);
        assert_eq!(device.kicks, 0, "{ring:?}");
        assert_eq!(device.dropped_kicks, 1 + stats.rekicks, "{ring:?}");
        assert_eq!(overdue, 3, "{ring:?}: every request reported once");
        assert_eq!(queue.in_flight(), 3);
    }
}

/// A device that took the requests and sits on them, doorbells suppressed
/// (a polling device) or re-enabled past them (a sleeping one), is not
/// waiting for a doorbell: no re-kick, however long it takes; the requests
/// still time out, and complete when the device goes on.
#[test]
fn a_device_holding_its_requests_is_not_rekicked() {
    for ring in RINGS {
        for polling in [true, false] {
            let sim = SimDevice::new(sim_config(ring));
            let (_device, mut queue) = start(&sim, rekick_after(16, 1));
            let serve = |sim: &SimDevice| {
                if polling {
                    sim.poll_step(0)
                } else {
                    sim.step(0)
                }
            };
            // Some traffic first, so the suppression state is the device's own.
            for _ in 0..8 {
                submit_reads(&mut queue, 4);
                queue.commit();
                while queue.in_flight() > 0 {
                    serve(&sim);
                    queue.poll(usize::MAX, |c| c.result.unwrap());
                }
            }
            sim.stall(0, true);
            submit_reads(&mut queue, 3);
            queue.commit();
            serve(&sim);
            let mut overdue = 0;
            for _ in 0..100 {
                for _ in 0..1_000 {
                    queue.poll(usize::MAX, |_| {
                        panic!("{ring:?}: a stalled device completed")
                    });
                }
                overdue += queue.check_timeouts(50, |_| {});
            }
            let stats = queue.stats();
            let what = format!("{ring:?}, polling device: {polling}");
            assert_eq!(stats.rekicks, 0, "{what}");
            assert!(stats.rekicks_declined >= 8, "{what}: {stats:?}");
            assert_eq!(overdue, 3, "{what}: the timeout path still reports them");
            sim.stall(0, false);
            serve(&sim);
            assert_eq!(queue.poll(usize::MAX, |c| c.result.unwrap()), 3, "{what}");
        }
    }
}

/// The device completes while the owner sleeps and its interrupt is lost:
/// when the sleep ends (a slice, or a spurious wake-up), the waiter looks at
/// the ring and finds the completion.
#[test]
fn a_lost_interrupt_is_found_when_the_sleep_ends() {
    for ring in RINGS {
        for mode in [Mode::Interrupt, Mode::Hybrid] {
            let sim = SimDevice::new(sim_config(ring));
            let (_device, mut queue) = start_mode(&sim, mode);
            let waiter = StepWhileAsleep::new(&sim);
            for round in 0..20u64 {
                sim.drop_next_interrupt(0);
                queue.read(round * 8, buffer(512), round).unwrap();
                queue.commit();
                assert!(
                    wait_for_completions(&mut queue, 0, &waiter),
                    "{ring:?} {mode:?} round {round}: the completion was not found"
                );
                assert_eq!(queue.poll(usize::MAX, |c| assert_eq!(c.tag, round)), 1);
            }
            assert_eq!(waiter.sleeps.get(), 20, "{ring:?} {mode:?}");
            let device = sim.stats(0);
            assert_eq!(device.dropped_interrupts, 20, "{ring:?} {mode:?}");
            assert_eq!(device.used_notifications, 0, "{ring:?} {mode:?}");
        }
    }
}

/// The same against a device thread and the std waiter, whose sleeps end
/// after a slice: every tenth interrupt is lost, nothing hangs.
#[test]
fn lost_interrupts_against_a_device_thread_cost_a_slice_not_a_hang() {
    for ring in RINGS {
        let sim = SimDevice::new(sim_config(ring));
        let event = Arc::new(IrqEvent::with_slice(Duration::from_millis(2)));
        let signal = event.clone();
        sim.set_used_notify_callback(0, Box::new(move || signal.signal()));
        let config = Config {
            mode: Mode::Hybrid,
            ..Config::default()
        };
        let (_device, mut queue) = start(&sim, config);
        let threads = sim.spawn(ThreadMode::Sleep);
        for i in 0..300u64 {
            if i % 10 == 0 {
                sim.drop_next_interrupt(0);
            }
            queue.read(i % 1024, buffer(512), i).unwrap();
            queue.commit();
            let mut sleeps = 0;
            while !wait_for_completions(&mut queue, 0, &*event) {
                sleeps += 1;
                assert!(sleeps < 10_000, "request {i} never completed");
            }
            assert_eq!(queue.poll(usize::MAX, |c| assert_eq!(c.tag, i)), 1);
        }
        threads.stop();
        assert_eq!(queue.stats().completed, 300);
    }
}
