//! Property tests: the driver against a device that mixes honest steps with
//! hostile acts, in arbitrary interleavings, over both ring layouts. Each
//! case runs a script through `virtio_blk_sim::harness`, which checks the
//! driver's promises (no panic, no hang, every request completed exactly
//! once, every buffer back exactly once and never while the device may still
//! write it, no leak).

use proptest::prelude::*;
use virtio_blk_sim::harness::{run, Scenario};

/// Scripts of up to this many bytes (about as many steps).
const MAX_SCRIPT: usize = 96;

fn script(ring_bit: u8) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<u8>(),
        prop::collection::vec(any::<u8>(), 0..MAX_SCRIPT),
    )
        .prop_map(move |(head, mut steps)| {
            steps.insert(0, (head & !1) | ring_bit);
            steps
        })
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let scenario = Scenario::from_bytes(bytes);
    run(&scenario)
        .map(|_| ())
        .map_err(|why| TestCaseError::fail(format!("{why}\nscenario: {scenario:?}")))
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hostile_split_interleavings_keep_every_promise(bytes in script(0)) {
        check(&bytes)?;
    }

    #[test]
    fn hostile_packed_interleavings_keep_every_promise(bytes in script(1)) {
        check(&bytes)?;
    }
}

/// Cases per property: 50 000 each by default (100 000 in all); the
/// `HOSTILE_CASES` environment variable overrides it.
fn cases() -> u32 {
    std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

/// The random scripts reach what they are meant to test: the device lies in
/// every way, the driver detects faults, fails requests as broken, recovers,
/// and still completes requests with data and with status errors.
#[test]
fn hostile_scripts_reach_faults_recoveries_and_every_kind_of_completion() {
    use virtio_blk_sim::harness::Outcome;
    let mut total = Outcome::default();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for case in 0..4000u32 {
        let bytes: Vec<u8> = (0..64)
            .map(|i| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                if i == 0 {
                    (rng as u8 & !1) | (case & 1) as u8
                } else {
                    rng as u8
                }
            })
            .collect();
        let outcome = run(&Scenario::from_bytes(&bytes)).expect("every promise kept");
        total.submitted += outcome.submitted;
        total.ok += outcome.ok;
        total.io_errors += outcome.io_errors;
        total.broken += outcome.broken;
        total.faults += outcome.faults;
        total.recoveries += outcome.recoveries;
        total.tolerated_bad_reads += outcome.tolerated_bad_reads;
    }
    eprintln!("{total:?}");
    assert!(total.ok > 10_000, "{total:?}");
    assert!(total.io_errors > 100, "{total:?}");
    assert!(total.broken > 1000, "{total:?}");
    assert!(total.faults > 1000, "{total:?}");
    assert!(total.recoveries > 1000, "{total:?}");
}

/// Scripts for the lies that need a precise interleaving to bite.
mod scripted {
    use virtio_blk_mq::{DeviceFault, RingKind};
    use virtio_blk_sim::harness::{run, Scenario, Step};
    use virtio_blk_sim::Hostile;

    fn scenario(ring: RingKind, steps: Vec<Step>) -> Scenario {
        Scenario {
            ring,
            queue_size: 4,
            event_idx: true,
            indirect: true,
            max_requests: None,
            publish_batch: None,
            seed: 1,
            steps,
        }
    }

    /// A duplicate used element left unread while its id is reused by a new
    /// request must not complete that request: the device wrote it before
    /// the request existed for it. Another request stays in flight, so the
    /// duplicate is not simply overwritten (packed) before it is read.
    fn stale_duplicate_is_refused(ring: RingKind) {
        let steps = vec![
            Step::Read { block: 2 },
            Step::Read { block: 4 },
            Step::Commit,
            Step::Hostile(Hostile::RepeatUsedId),
            Step::DeviceStep,
            // Takes the honest completion, leaves the duplicate unread.
            Step::Poll { budget: 1 },
            // Reuses the freed id.
            Step::Read { block: 3 },
            Step::Commit,
            Step::Poll { budget: 8 },
        ];
        let outcome = run(&scenario(ring, steps)).expect("every promise kept");
        assert_eq!(
            outcome.fault_kinds.len(),
            1,
            "the duplicate is detected: {outcome:?}"
        );
        assert!(
            matches!(
                outcome.fault_kinds[0],
                DeviceFault::CompletedBeforePublished(_)
            ),
            "{outcome:?}"
        );
        assert_eq!(outcome.tolerated_bad_reads, 0, "{outcome:?}");
        assert!(
            outcome.broken >= 2,
            "both reads in flight fail: {outcome:?}"
        );
    }

    #[test]
    fn hostile_split_stale_duplicate_completion_is_refused() {
        stale_duplicate_is_refused(RingKind::Split);
    }

    #[test]
    fn hostile_packed_stale_duplicate_completion_is_refused() {
        stale_duplicate_is_refused(RingKind::Packed);
    }

    /// A used element naming a request that was placed but not yet
    /// committed: the device cannot have seen it.
    fn completion_of_an_unpublished_request_is_refused(ring: RingKind) {
        let steps = vec![
            Step::Read { block: 2 },
            Step::Commit,
            // Placed, not published: the lowest id the device thinks free.
            Step::Read { block: 3 },
            Step::Hostile(Hostile::UsedIdNotInFlight),
            Step::Stall(false),
            Step::DeviceStep,
            Step::Poll { budget: 8 },
        ];
        // Two entries, both for requests: each request sits in its own
        // indirect table, so the second one has id 1, the id the device picks.
        let outcome = run(&Scenario {
            queue_size: 2,
            max_requests: Some(2),
            // Else a queue of two publishes each request as it is placed.
            publish_batch: Some(0),
            ..scenario(ring, steps)
        })
        .expect("every promise kept");
        assert_eq!(
            outcome.fault_kinds,
            [DeviceFault::CompletedBeforePublished(1)],
            "{outcome:?}"
        );
    }

    #[test]
    fn hostile_split_completion_of_an_unpublished_request_is_refused() {
        completion_of_an_unpublished_request_is_refused(RingKind::Split);
    }

    #[test]
    fn hostile_packed_completion_of_an_unpublished_request_is_refused() {
        completion_of_an_unpublished_request_is_refused(RingKind::Packed);
    }

    /// Each detectable lie, told while two requests are in flight, is
    /// reported as the fault it is.
    fn each_lie_is_named(ring: RingKind) {
        type IsExpected = fn(&DeviceFault) -> bool;
        let lies: [(Hostile, IsExpected); 8] = [
            (Hostile::UsedIdOutOfRange, |f| {
                matches!(f, DeviceFault::IdOutOfRange(_))
            }),
            (Hostile::UsedIdNotInFlight, |f| {
                matches!(f, DeviceFault::IdNotInFlight(_))
            }),
            (Hostile::RepeatUsedId, |f| {
                matches!(f, DeviceFault::IdNotInFlight(_))
            }),
            (Hostile::GarbageStatus(7), |f| {
                matches!(f, DeviceFault::BadStatus { status: 7, .. })
            }),
            (Hostile::StatusNotWritten, |f| {
                matches!(f, DeviceFault::BadStatus { status: 0xff, .. })
            }),
            (Hostile::UsedIndexJump, |f| {
                matches!(f, DeviceFault::UsedIndexJump { .. })
            }),
            (Hostile::WrongWrap, |f| {
                matches!(f, DeviceFault::BadUsedFlags { .. })
            }),
            (Hostile::GarbageUsedFlags, |f| {
                matches!(f, DeviceFault::BadUsedFlags { .. })
            }),
        ];
        for (act, expected) in lies {
            if !act.applies_to(ring) {
                continue;
            }
            let steps = vec![
                Step::Read { block: 2 },
                Step::Read { block: 4 },
                Step::Commit,
                Step::Hostile(act),
                Step::DeviceStep,
                Step::Poll { budget: 8 },
            ];
            let outcome = run(&scenario(ring, steps)).expect("every promise kept");
            assert!(
                outcome.fault_kinds.first().is_some_and(expected),
                "{act:?}: {outcome:?}"
            );
            assert_eq!(outcome.tolerated_bad_reads, 0, "{act:?}");
        }
    }

    /// A used length beyond the writable bytes posted is counted, not
    /// fatal: the read completes with its data, the queue keeps running.
    fn a_used_length_too_long_is_tolerated(ring: RingKind) {
        let steps = vec![
            Step::Read { block: 2 },
            Step::Read { block: 4 },
            Step::Commit,
            Step::Hostile(Hostile::UsedLenTooLong),
            Step::DeviceStep,
            Step::Poll { budget: 8 },
            Step::Read { block: 6 },
            Step::Commit,
            Step::DeviceStep,
            Step::Poll { budget: 8 },
        ];
        let outcome = run(&scenario(ring, steps)).expect("every promise kept");
        assert_eq!(outcome.faults, 0, "{outcome:?}");
        assert!(outcome.submitted >= 3, "{outcome:?}");
        assert_eq!(outcome.ok, outcome.submitted, "{outcome:?}");
        assert_eq!(outcome.tolerated_bad_reads, 0);
    }

    #[test]
    fn hostile_split_a_used_length_too_long_is_tolerated() {
        a_used_length_too_long_is_tolerated(RingKind::Split);
    }

    #[test]
    fn hostile_packed_a_used_length_too_long_is_tolerated() {
        a_used_length_too_long_is_tolerated(RingKind::Packed);
    }

    #[test]
    fn hostile_split_each_lie_is_named() {
        each_lie_is_named(RingKind::Split);
    }

    #[test]
    fn hostile_packed_each_lie_is_named() {
        each_lie_is_named(RingKind::Packed);
    }
}
