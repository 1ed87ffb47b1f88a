//! Every request type, typed errors before submission, statuses after it,
//! for both ring layouts.

mod common;

use common::*;
use virtio_blk_mq::{Config, Error, Features, Op, RawSegment, RingKind};
use virtio_blk_sim::{DiskKind, Injection, SimDevice};

fn ram_sim(ring: RingKind, capacity: u64) -> SimDevice {
    let mut config = sim_config(ring);
    config.disk = DiskKind::Ram;
    config.capacity_sectors = capacity;
    SimDevice::new(config)
}

fn one(sim: &SimDevice, queue: &mut Queue) -> virtio_blk_mq::Completion<virtio_blk_sim::SimHal> {
    queue.commit();
    let mut done = complete_all(sim, queue);
    assert_eq!(done.len(), 1);
    done.remove(0)
}

fn every_request_type(ring: RingKind) {
    let sim = ram_sim(ring, 64);
    let (_device, mut queue) = start(&sim, Config::default());

    // WRITE then READ round trip.
    let mut data = buffer(4096);
    stamp(data.as_mut_slice(), 8, 7);
    let written = data.as_slice().to_vec();
    queue.write(8, data, 1).unwrap();
    let c = one(&sim, &mut queue);
    assert_eq!((c.tag, c.op, c.result), (1, Op::Write, Ok(())));
    let mut on_disk = vec![0u8; 4096];
    sim.read_disk(8, &mut on_disk);
    assert_eq!(on_disk, written);
    queue.read(8, buffer(4096), 2).unwrap();
    let c = one(&sim, &mut queue);
    assert_eq!((c.tag, c.op, c.result), (2, Op::Read, Ok(())));
    assert_eq!(c.buffer.unwrap().as_slice(), written.as_slice());

    // FLUSH.
    queue.flush(3).unwrap();
    let c = one(&sim, &mut queue);
    assert_eq!((c.tag, c.op, c.result), (3, Op::Flush, Ok(())));
    assert!(c.buffer.is_none());

    // GET_ID.
    queue.get_id(buffer(512), 4).unwrap();
    let c = one(&sim, &mut queue);
    assert_eq!(c.result, Ok(()));
    assert_eq!(
        &c.buffer.unwrap().as_slice()[..20],
        b"virtio-blk-sim\0\0\0\0\0\0"
    );

    // WRITE_ZEROES over part of what was written.
    queue.write_zeroes(9, 2, false, 5).unwrap();
    assert_eq!(one(&sim, &mut queue).result, Ok(()));
    sim.read_disk(8, &mut on_disk);
    assert_eq!(&on_disk[..512], &written[..512]);
    assert!(on_disk[512..1536].iter().all(|b| *b == 0));
    assert_eq!(&on_disk[1536..], &written[1536..]);

    // DISCARD and SECURE_ERASE complete OK.
    queue.discard(16, 8, 6).unwrap();
    assert_eq!(one(&sim, &mut queue).result, Ok(()));
    queue.secure_erase(24, 8, 7).unwrap();
    assert_eq!(one(&sim, &mut queue).result, Ok(()));

    // The raw path: a two-segment write by device address.
    let mut a = buffer(512);
    let mut b = buffer(1024);
    stamp(a.as_mut_slice(), 32, 9);
    stamp(b.as_mut_slice(), 33, 9);
    let segments = [
        RawSegment {
            addr: a.paddr(),
            len: 512,
        },
        RawSegment {
            addr: b.paddr(),
            len: 1024,
        },
    ];
    // SAFETY: `a` and `b` stay alive and untouched until the completion below.
    unsafe { queue.submit_raw(Op::Write, 32, &segments, 8) }.unwrap();
    assert_eq!(one(&sim, &mut queue).result, Ok(()));
    let mut raw_disk = vec![0u8; 1536];
    sim.read_disk(32, &mut raw_disk);
    assert_eq!(&raw_disk[..512], a.as_slice());
    assert_eq!(&raw_disk[512..], b.as_slice());
    assert_eq!(sim.violations(), Vec::<String>::new());
}

#[test]
fn split_every_request_type() {
    every_request_type(RingKind::Split);
}

#[test]
fn packed_every_request_type() {
    every_request_type(RingKind::Packed);
}

fn typed_errors_before_submission(ring: RingKind) {
    let mut sim_config = sim_config(ring);
    sim_config.capacity_sectors = 64;
    sim_config.blk_size = 4096;
    sim_config.size_max = 8192;
    sim_config.max_discard_sectors = 16;
    sim_config.discard_sector_alignment = 8;
    let sim = SimDevice::new(sim_config);
    let (device, mut queue) = start(&sim, Config::default());
    assert_eq!(device.info().block_size, 4096);

    let err = |r: Result<(), virtio_blk_mq::Rejected<_>>| r.unwrap_err().error;
    assert_eq!(err(queue.read(0, buffer(512), 0)), Error::Misaligned);
    assert_eq!(err(queue.read(1, buffer(4096), 0)), Error::Misaligned);
    assert_eq!(err(queue.read(64, buffer(4096), 0)), Error::OutOfRange);
    assert_eq!(
        err(queue.read(u64::MAX - 7, buffer(4096), 0)),
        Error::OutOfRange
    );
    assert_eq!(err(queue.read(0, buffer(0), 0)), Error::Empty);
    assert_eq!(err(queue.read(0, buffer(16384), 0)), Error::TooLarge);
    assert_eq!(err(queue.get_id(buffer(19), 0)), Error::TooSmall);
    assert_eq!(queue.discard(0, 32, 0), Err(Error::TooLarge));
    assert_eq!(queue.discard(4, 8, 0), Err(Error::Misaligned));
    assert_eq!(queue.discard(0, 0, 0), Err(Error::Empty));
    assert_eq!(queue.write_zeroes(60, 8, false, 0), Err(Error::OutOfRange));
    // SAFETY: no segment is given, so nothing is handed to the device.
    assert_eq!(
        unsafe { queue.submit_raw(Op::Read, 0, &[], 0) },
        Err(Error::Empty)
    );
    let too_many = vec![
        RawSegment {
            addr: 0x1000,
            len: 512
        };
        300
    ];
    // SAFETY: the request is refused before it reaches the ring.
    assert_eq!(
        unsafe { queue.submit_raw(Op::Read, 0, &too_many, 0) },
        Err(Error::TooManySegments)
    );
    // Nothing reached the ring.
    assert_eq!(queue.in_flight(), 0);
    assert_eq!(queue.stats().submitted, 0);
}

#[test]
fn split_typed_errors_before_submission() {
    typed_errors_before_submission(RingKind::Split);
}

#[test]
fn packed_typed_errors_before_submission() {
    typed_errors_before_submission(RingKind::Packed);
}

fn features_switched_off_are_refused(ring: RingKind) {
    let sim = ram_sim(ring, 64);
    let off = Features::BLK_FLUSH
        | Features::BLK_DISCARD
        | Features::BLK_WRITE_ZEROES
        | Features::BLK_SECURE_ERASE;
    let (device, mut queue) = start(&sim, Config::default().without(off));
    assert!(!device.info().features.intersects(off));
    assert!(!sim.negotiated_features().intersects(off));
    assert_eq!(queue.flush(0), Err(Error::NotSupported("flush")));
    assert_eq!(queue.discard(0, 1, 0), Err(Error::NotSupported("discard")));
    assert_eq!(
        queue.write_zeroes(0, 1, true, 0),
        Err(Error::NotSupported("write zeroes"))
    );
    assert_eq!(
        queue.secure_erase(0, 1, 0),
        Err(Error::NotSupported("secure erase"))
    );
}

#[test]
fn split_features_switched_off_are_refused() {
    features_switched_off_are_refused(RingKind::Split);
}

#[test]
fn packed_features_switched_off_are_refused() {
    features_switched_off_are_refused(RingKind::Packed);
}

fn read_only_device(ring: RingKind) {
    let mut sim_config = sim_config(ring);
    sim_config.features |= Features::BLK_RO;
    sim_config.disk = DiskKind::Ram;
    let sim = SimDevice::new(sim_config);
    let (device, mut queue) = start(&sim, Config::default());
    assert!(device.info().read_only);
    let rejected = queue.write(0, buffer(512), 1).unwrap_err();
    assert_eq!(rejected.error, Error::ReadOnly);
    assert_eq!(rejected.buffer.len(), 512);
    assert_eq!(queue.discard(0, 1, 2), Err(Error::ReadOnly));
    assert_eq!(queue.write_zeroes(0, 1, false, 3), Err(Error::ReadOnly));
    assert_eq!(queue.secure_erase(0, 1, 4), Err(Error::ReadOnly));
    // SAFETY: refused before it reaches the ring.
    let raw = unsafe {
        queue.submit_raw(
            Op::Write,
            0,
            &[RawSegment {
                addr: 0x1000,
                len: 512,
            }],
            5,
        )
    };
    assert_eq!(raw, Err(Error::ReadOnly));
    assert_eq!(queue.stats().submitted, 0);
    // Reads still work.
    queue.read(0, buffer(512), 6).unwrap();
    assert_eq!(one(&sim, &mut queue).result, Ok(()));
}

#[test]
fn split_read_only_device() {
    read_only_device(RingKind::Split);
}

#[test]
fn packed_read_only_device() {
    read_only_device(RingKind::Packed);
}

fn device_errors_surface(ring: RingKind) {
    let mut sim_config = sim_config(ring);
    sim_config.disk = DiskKind::Ram;
    sim_config.inject = vec![
        Injection {
            sectors: 10..12,
            status: 1,
        },
        Injection {
            sectors: 20..21,
            status: 2,
        },
    ];
    let sim = SimDevice::new(sim_config);
    let (_device, mut queue) = start(&sim, Config::default());
    queue.read(10, buffer(512), 1).unwrap();
    queue.write(20, buffer(512), 2).unwrap();
    queue.read(30, buffer(512), 3).unwrap();
    queue.commit();
    let mut done = complete_all(&sim, &mut queue);
    done.sort_by_key(|c| c.tag);
    let results: Vec<_> = done.iter().map(|c| (c.tag, c.result)).collect();
    assert_eq!(
        results,
        vec![
            (1, Err(Error::IoError)),
            (2, Err(Error::Unsupported)),
            (3, Ok(()))
        ]
    );
    // Failed requests still give their buffers back.
    assert!(done.iter().all(|c| c.buffer.is_some()));
}

#[test]
fn split_ioerr_and_unsupp_surface() {
    device_errors_surface(RingKind::Split);
}

#[test]
fn packed_ioerr_and_unsupp_surface() {
    device_errors_surface(RingKind::Packed);
}
