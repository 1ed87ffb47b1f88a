//! vblk-fastdev driven by this project's driver over vhost-user, one step at
//! a time: what one connection writes the next reads back, the config space
//! says what the device was built with, and the pollers count what they did.

use std::time::{Duration, Instant};

use vblk_fastdev::{DiskKind, FastConfig, FastDevice, DEVICE_ID};
use virtio_blk_mq::transport::vhost_user::{VhostUserHal, VhostUserNotifier, VhostUserTransport};
use virtio_blk_mq::{BlkDevice, BlkQueue, Completion, Config, DmaBuffer, RingKind};

type Queue = BlkQueue<VhostUserHal, VhostUserNotifier>;

/// Longest any wait for a completion may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(10);

fn device(disk: DiskKind, size: u64, queues: u16) -> FastDevice {
    FastDevice::spawn(&FastConfig {
        size,
        queues,
        disk,
        ..FastConfig::default()
    })
    .expect("vblk-fastdev starts")
}

fn connect(
    device: &FastDevice,
    queues: u16,
) -> (VhostUserHal, BlkDevice<VhostUserHal, VhostUserTransport>) {
    let hal = VhostUserHal::new(16 << 20).expect("DMA memory");
    let transport = VhostUserTransport::connect(device.socket(), &hal).expect("connect");
    let config = Config {
        queues,
        ..Config::default()
    };
    let blk = BlkDevice::new(hal.clone(), transport, config).expect("negotiation");
    (hal, blk)
}

/// Submits one request, commits, and polls until it completes.
fn one(queue: &mut Queue, submit: impl FnOnce(&mut Queue)) -> Completion<VhostUserHal> {
    submit(queue);
    queue.commit();
    let start = Instant::now();
    let mut done = None;
    while done.is_none() {
        assert!(
            start.elapsed() < TIMEOUT,
            "no completion within {TIMEOUT:?}"
        );
        queue.poll(1, |c| done = Some(c));
    }
    done.unwrap()
}

fn buffer(hal: &VhostUserHal, len: usize) -> DmaBuffer<VhostUserHal> {
    DmaBuffer::new(hal, len).expect("a DMA buffer")
}

#[test]
fn what_one_connection_writes_the_next_reads_back() {
    let fast = device(DiskKind::Ram, 1 << 20, 1);
    {
        let (hal, mut blk) = connect(&fast, 1);
        let mut queue = blk.take_queues().into_queues().remove(0);
        let mut data = buffer(&hal, 4096);
        data.as_mut_slice().fill(0xc3);
        let written = one(&mut queue, |q| q.write(16, data, 1).unwrap());
        assert_eq!(written.result, Ok(()));
        assert_eq!(one(&mut queue, |q| q.flush(2).unwrap()).result, Ok(()));
    }
    // A second frontend, after the first hung up: same disk.
    let (hal, mut blk) = connect(&fast, 1);
    let mut queue = blk.take_queues().into_queues().remove(0);
    let read = one(&mut queue, |q| q.read(16, buffer(&hal, 4096), 3).unwrap());
    assert_eq!(read.result, Ok(()));
    assert!(read.buffer.unwrap().as_slice().iter().all(|&b| b == 0xc3));
    let untouched = one(&mut queue, |q| q.read(0, buffer(&hal, 4096), 4).unwrap());
    assert!(untouched.buffer.unwrap().as_slice().iter().all(|&b| b == 0));
    let id = one(&mut queue, |q| q.get_id(buffer(&hal, 20), 5).unwrap());
    assert_eq!(id.result, Ok(()));
    assert!(id.buffer.unwrap().as_slice().starts_with(DEVICE_ID));
    // The first connection's pollers added their counts when it ended,
    // before the second was accepted.
    let served: u64 = fast.counters().iter().map(|c| c.requests).sum();
    assert!(served >= 2, "{:?}", fast.counters());
}

#[test]
fn the_device_offers_its_size_and_queues_on_a_split_ring() {
    let fast = device(DiskKind::Null, 4 << 20, 2);
    let (_hal, blk) = connect(&fast, 4);
    assert_eq!(blk.info().capacity_sectors, 8192);
    assert_eq!(blk.info().ring, RingKind::Split);
    assert_eq!(fast.capacity(), 4 << 20);
    assert_eq!(fast.disk_kind(), DiskKind::Null);
    let mut blk = blk;
    assert_eq!(blk.take_queues().into_queues().len(), 2);
}
