//! The hybrid fallback against a device on its own thread: a completion that
//! lands between re-arming and sleeping must never be lost.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use virtio_blk_mq::mq::{wait_for_completions, IrqEvent};
use virtio_blk_mq::{Config, Features, Mode, RingKind};
use virtio_blk_sim::{SimDevice, ThreadMode};

/// So long that only a lost notification can use it up.
const NEVER: Duration = Duration::from_secs(20);

fn never_loses_a_completion(
    ring: RingKind,
    features_off: Features,
    device: ThreadMode,
    mode: Mode,
) {
    let sim = SimDevice::new(sim_config(ring));
    let event = Arc::new(IrqEvent::with_slice(NEVER));
    let signal = event.clone();
    sim.set_used_notify_callback(0, Box::new(move || signal.signal()));
    let config = Config {
        mode,
        ..Config::default().without(features_off)
    };
    let (_device, mut queue) = start(&sim, config);
    let threads = sim.spawn(device);
    let mut buffers: Vec<_> = (0..4).map(|_| buffer(512)).collect();
    let mut rng = Rng(0x4242);
    let total = 20_000u64;
    let mut completed = 0;
    let mut tag = 0;
    while completed < total {
        // Depth 1..=4, and a zero spin budget: sleep as often as possible so
        // the arm/sleep window is hit again and again.
        let depth = 1 + rng.below(buffers.len() as u64);
        for _ in 0..depth {
            if tag == total {
                break;
            }
            let Some(buf) = buffers.pop() else { break };
            queue.read(tag % 1024, buf, tag).unwrap();
            tag += 1;
        }
        queue.commit();
        while !wait_for_completions(&mut queue, 0, &*event) {
            assert_eq!(
                event.timeouts(),
                0,
                "a sleep outlived {NEVER:?}: a notification was lost"
            );
        }
        queue.poll(usize::MAX, |c| {
            c.result.unwrap();
            buffers.push(c.buffer.unwrap());
            completed += 1;
        });
    }
    threads.stop();
    assert_eq!(completed, total);
    assert_eq!(
        event.timeouts(),
        0,
        "a sleep outlived {NEVER:?}: a notification was lost"
    );
    assert!(
        queue.stats().interrupts > 0,
        "the queue never slept, so the race was never tried"
    );
}

#[test]
fn split_hybrid_never_loses_a_completion() {
    never_loses_a_completion(
        RingKind::Split,
        Features::empty(),
        ThreadMode::Poll,
        Mode::Hybrid,
    );
    never_loses_a_completion(
        RingKind::Split,
        Features::EVENT_IDX,
        ThreadMode::Sleep,
        Mode::Hybrid,
    );
}

#[test]
fn packed_hybrid_never_loses_a_completion() {
    never_loses_a_completion(
        RingKind::Packed,
        Features::empty(),
        ThreadMode::Poll,
        Mode::Hybrid,
    );
    never_loses_a_completion(
        RingKind::Packed,
        Features::EVENT_IDX,
        ThreadMode::Sleep,
        Mode::Hybrid,
    );
}

#[test]
fn split_interrupt_mode_never_loses_a_completion() {
    never_loses_a_completion(
        RingKind::Split,
        Features::empty(),
        ThreadMode::Sleep,
        Mode::Interrupt,
    );
}

#[test]
fn packed_interrupt_mode_never_loses_a_completion() {
    never_loses_a_completion(
        RingKind::Packed,
        Features::empty(),
        ThreadMode::Sleep,
        Mode::Interrupt,
    );
}

/// Issue 14 item 5: requests placed but not committed are published by
/// `wait_for_completions`, so the wait ends with them completed instead of
/// sleeping, slice after slice, for requests the device cannot see.
#[test]
fn wait_for_completions_publishes_uncommitted_requests() {
    for ring in RINGS {
        for mode in [Mode::Poll, Mode::Interrupt, Mode::Hybrid] {
            let sim = SimDevice::new(sim_config(ring));
            let (_device, mut queue) = start_mode(&sim, mode);
            let waiter = StepWhileAsleep::new(&sim);
            queue.read(0, buffer(512), 7).unwrap();
            queue.read(8, buffer(512), 8).unwrap();
            // No commit: the requests are placed, invisible to the device.
            let mut woke_with_completions = false;
            for _ in 0..4 {
                if wait_for_completions(&mut queue, 0, &waiter) {
                    woke_with_completions = true;
                    break;
                }
                sim.step(0);
            }
            assert_eq!(queue.stats().commits, 1, "{ring:?} {mode:?}: not published");
            assert!(woke_with_completions, "{ring:?} {mode:?}: waited in vain");
            let mut tags = Vec::new();
            queue.poll(usize::MAX, |c| tags.push(c.tag));
            assert_eq!(tags, [7, 8], "{ring:?} {mode:?}");
        }
    }
}
