//! `BlkQueue::debug_snapshot`: the positions a stall report prints follow
//! the ring as requests are published and completed.

mod common;

use common::*;
use virtio_blk_mq::snapshot::RingSnapshot;
use virtio_blk_mq::{Config, RingKind};
use virtio_blk_sim::SimDevice;

#[test]
fn split_snapshot_follows_publish_and_completion() {
    let sim = SimDevice::new(sim_config(RingKind::Split));
    let (_device, mut queue) = start(&sim, Config::default());
    for i in 0..3 {
        queue.read(i * 8, buffer(4096), i).unwrap();
    }
    let RingSnapshot::Split(placed) = queue.debug_snapshot() else {
        panic!("a split queue gave a packed snapshot");
    };
    assert_eq!((placed.avail_idx, placed.published_idx), (3, 0));
    assert_eq!(placed.shared_avail_idx, 0, "nothing is published yet");
    assert_eq!(placed.in_flight, 3);
    assert!(placed.event_idx);
    queue.commit();
    let RingSnapshot::Split(published) = queue.debug_snapshot() else {
        unreachable!()
    };
    assert_eq!(
        (published.published_idx, published.shared_avail_idx),
        (3, 3)
    );
    assert_eq!(published.used_idx, 0);
    complete_all(&sim, &mut queue);
    let RingSnapshot::Split(done) = queue.debug_snapshot() else {
        unreachable!()
    };
    assert_eq!((done.used_idx, done.last_used, done.in_flight), (3, 3, 0));
    // The device asks for a doorbell at the next index it has not seen.
    assert_eq!(done.avail_event, 3);
}

#[test]
fn packed_snapshot_follows_publish_and_completion() {
    let sim = SimDevice::new(sim_config(RingKind::Packed));
    let (_device, mut queue) = start(&sim, Config::default());
    let size = queue.size();
    for i in 0..2 {
        queue.read(i * 8, buffer(4096), i).unwrap();
    }
    queue.commit();
    let RingSnapshot::Packed(published) = queue.debug_snapshot() else {
        panic!("a packed queue gave a split snapshot");
    };
    assert_eq!(published.size, size);
    assert_eq!(published.in_flight, 2);
    assert_eq!((published.next_used, published.used_wrap), (0, true));
    assert!(published.next_avail > 0 && published.avail_wrap);
    // The head at next_used is ours, available in lap 1: AVAIL set, USED clear.
    assert_eq!(published.flags_at_next_used & 0x8080, 0x0080);
    complete_all(&sim, &mut queue);
    let RingSnapshot::Packed(done) = queue.debug_snapshot() else {
        unreachable!()
    };
    assert_eq!(done.in_flight, 0);
    assert_eq!(
        (done.next_used, done.used_wrap),
        (published.next_avail, published.avail_wrap)
    );
    let text = queue.debug_snapshot().to_string();
    assert!(text.starts_with("packed size"), "{text}");
}
