//! The driver against a real vhost-user-blk backend: qemu-storage-daemon,
//! started by each test on a null-co or raw-file backend and stopped by pid.
//! Needs the `vhost-user` feature and the daemon (Debian: qemu-utils);
//! without the daemon these tests fail with a message saying so.
#![cfg(feature = "vhost-user")]

mod vhost;

use std::time::{Duration, Instant};

use vhost::*;
use virtio_blk_mq::mq::{run_pinned, wait_for_completions};
use virtio_blk_mq::spec::BLK_ID_BYTES;
use virtio_blk_mq::transport::vhost_user::{DaemonBackend, DaemonConfig};
use virtio_blk_mq::transport::Transport;
use virtio_blk_mq::{Config, DeviceFault, DeviceStatus, Error, Features, Mode, RingKind};

const SECTOR: u64 = 512;

#[test]
fn config_features_and_queue_count_come_from_the_export() {
    let daemon = null_daemon(64 << 20, 2);
    let (_hal, mut device) = connect(
        &daemon,
        Config {
            queues: 4,
            ..Config::default()
        },
    );
    let info = *device.info();
    assert_eq!(info.capacity_sectors, (64 << 20) / SECTOR);
    assert_eq!(info.device_queues, 2, "GET_QUEUE_NUM / num_queues");
    // The daemon offers no RING_PACKED: the driver falls back to split.
    assert_eq!(info.ring, RingKind::Split);
    for feature in [
        Features::VERSION_1,
        Features::EVENT_IDX,
        Features::BLK_MQ,
        Features::BLK_FLUSH,
    ] {
        assert!(info.features.contains(feature), "{feature:?} negotiated");
    }
    assert!(info.discard.is_some() && info.write_zeroes.is_some());
    assert_eq!(device.take_queues().len(), 2, "min(asked, offered) queues");
    let status = device.status();
    assert!(status.contains(DeviceStatus::DRIVER_OK | DeviceStatus::FEATURES_OK));
    assert!(!status.contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert_eq!(device.check_status(), Ok(()));
}

/// One thread per queue, each on its own half of the disk: writes stamped
/// blocks at depth `depth`, then reads them all back and compares.
fn stamped_round_trip(
    queue: &mut Queue,
    hal: &virtio_blk_mq::transport::vhost_user::VhostUserHal,
    first_sector: u64,
    blocks: u64,
    block: usize,
    depth: u64,
    generation: u32,
) {
    let sectors_per_block = block as u64 / SECTOR;
    let deadline = Instant::now() + COMPLETION_TIMEOUT;
    for write in [true, false] {
        let mut next = 0;
        let mut done = 0;
        while done < blocks {
            while next < blocks && u64::from(queue.in_flight()) < depth {
                let sector = first_sector + next * sectors_per_block;
                let mut data = buffer(hal, block);
                if write {
                    stamp(data.as_mut_slice(), sector, generation);
                    queue.write(sector, data, next).unwrap();
                } else {
                    queue.read(sector, data, next).unwrap();
                }
                next += 1;
            }
            queue.commit();
            let polled = queue.poll(usize::MAX, |c| {
                c.result.unwrap();
                if !write {
                    let sector = first_sector + c.tag * sectors_per_block;
                    let got = c.buffer.as_ref().unwrap().as_slice();
                    assert!(
                        got == stamped(block, sector, generation),
                        "queue read back wrong data at sector {sector}"
                    );
                }
                done += 1;
            });
            if polled == 0 {
                assert!(Instant::now() < deadline, "requests never completed");
            }
        }
    }
}

#[test]
fn both_queues_write_and_read_back_stamped_blocks_on_a_raw_file() {
    const BLOCK: usize = 4096;
    const BLOCKS_PER_QUEUE: u64 = 256;
    let image = TempImage::new(4 << 20);
    let daemon = daemon(
        DaemonBackend::File {
            path: image.path().into(),
        },
        2,
    );
    let (hal, mut device) = connect(
        &daemon,
        Config {
            queues: 2,
            ..Config::default()
        },
    );
    let queues = device.take_queues().into_queues();
    assert_eq!(queues.len(), 2);
    let region_sectors = BLOCKS_PER_QUEUE * BLOCK as u64 / SECTOR;
    let hal_ref = &hal;
    let mut finished = run_pinned(queues, |i, queue| {
        let first = i as u64 * region_sectors;
        stamped_round_trip(
            queue,
            hal_ref,
            first,
            BLOCKS_PER_QUEUE,
            BLOCK,
            16,
            7 + i as u32,
        );
        queue.stats()
    });
    for (_, stats) in &finished {
        assert_eq!(stats.completed, 2 * BLOCKS_PER_QUEUE);
        assert_eq!(stats.submitted, stats.completed);
    }
    // Make the writes durable before looking at the file from the host.
    let queue = &mut finished[0].0;
    let flushed = one(queue, |q| q.flush(99));
    assert_eq!(flushed.result, Ok(()));
    drop(finished);
    drop(device);
    drop(daemon);

    let bytes = image.bytes();
    for i in 0..2u64 {
        let first = i * region_sectors;
        let len = (BLOCKS_PER_QUEUE * BLOCK as u64) as usize;
        let start = (first * SECTOR) as usize;
        for b in 0..BLOCKS_PER_QUEUE {
            let sector = first + b * (BLOCK as u64 / SECTOR);
            let at = (sector * SECTOR) as usize;
            assert!(
                bytes[at..at + BLOCK] == stamped(BLOCK, sector, 7 + i as u32),
                "the file holds the wrong bytes at sector {sector}"
            );
        }
        assert!(start + len <= bytes.len());
    }
}

/// What [`every_block`] does with each block.
enum Pass<'a> {
    /// Write the block stamped with this generation.
    Write(u32),
    /// Read the block; where the read succeeds, it must hold what the
    /// function returns for the block's first sector.
    Read(&'a dyn Fn(u64) -> Vec<u8>),
}

/// Writes or reads blocks `0..blocks` at depth 8; returns each block's
/// completion result, by block number.
fn every_block(
    queue: &mut Queue,
    hal: &virtio_blk_mq::transport::vhost_user::VhostUserHal,
    blocks: u64,
    block: usize,
    pass: &Pass<'_>,
) -> Vec<Result<(), Error>> {
    let sectors_per_block = block as u64 / SECTOR;
    let mut results = vec![None; blocks as usize];
    let mut next = 0;
    let deadline = Instant::now() + COMPLETION_TIMEOUT;
    while results.iter().any(Option::is_none) {
        while next < blocks && queue.in_flight() < 8 {
            let sector = next * sectors_per_block;
            let mut data = buffer(hal, block);
            match pass {
                Pass::Write(generation) => {
                    stamp(data.as_mut_slice(), sector, *generation);
                    queue.write(sector, data, next).unwrap();
                }
                Pass::Read(_) => queue.read(sector, data, next).unwrap(),
            }
            next += 1;
        }
        queue.commit();
        let polled = queue.poll(usize::MAX, |c| {
            if let (Pass::Read(expected), Ok(())) = (pass, c.result) {
                let sector = c.tag * sectors_per_block;
                assert!(
                    c.buffer.as_ref().unwrap().as_slice() == expected(sector),
                    "wrong data read back at sector {sector}"
                );
            }
            results[c.tag as usize] = Some(c.result);
        });
        if polled == 0 {
            assert!(Instant::now() < deadline, "requests never completed");
        }
    }
    results.into_iter().map(Option::unwrap).collect()
}

/// The blocks whose request failed, with the error.
fn failures(results: &[Result<(), Error>]) -> Vec<(usize, Error)> {
    results
        .iter()
        .enumerate()
        .filter_map(|(block, r)| r.err().map(|e| (block, e)))
        .collect()
}

#[test]
fn blkdebug_fails_exactly_the_requests_on_its_sectors_and_the_queue_carries_on() {
    const BLOCK: usize = 4096;
    const BLOCKS: u64 = 64;
    let image = TempImage::new(BLOCKS * BLOCK as u64);
    // Writes including sector 83 (block 10) always fail; the first read
    // including sector 160 (block 20) fails, later ones succeed.
    let daemon = daemon_with(DaemonConfig {
        backend: DaemonBackend::File {
            path: image.path().into(),
        },
        num_queues: 1,
        writable: true,
        blkdebug: Some(
            "inject-error.0.event=none,inject-error.0.iotype=write,inject-error.0.sector=83,\
             inject-error.1.event=none,inject-error.1.iotype=read,inject-error.1.sector=160,\
             inject-error.1.once=on"
                .into(),
        ),
    });
    let (hal, mut device) = connect(&daemon, Config::default());
    let mut queue = device.take_queues().into_queues().remove(0);

    let writes = every_block(&mut queue, &hal, BLOCKS, BLOCK, &Pass::Write(5));
    assert_eq!(failures(&writes), [(10, Error::IoError)]);
    // Block 10 kept its zeros; every other block reached the file.
    let on_disk = |sector: u64| {
        if sector / (BLOCK as u64 / SECTOR) == 10 {
            vec![0; BLOCK]
        } else {
            stamped(BLOCK, sector, 5)
        }
    };
    let bytes = image.bytes();
    for (block, data) in bytes.chunks(BLOCK).enumerate() {
        let sector = (block * BLOCK) as u64 / SECTOR;
        assert!(data == on_disk(sector), "block {block} differs on disk");
    }

    // Two read passes: only the first read of block 20 fails, and every
    // read that succeeds returns what is on disk.
    let first = every_block(&mut queue, &hal, BLOCKS, BLOCK, &Pass::Read(&on_disk));
    assert_eq!(failures(&first), [(20, Error::IoError)]);
    let second = every_block(&mut queue, &hal, BLOCKS, BLOCK, &Pass::Read(&on_disk));
    assert_eq!(failures(&second), []);
    // The queue is not fenced off and the device is fine: a failed request
    // is the device's verdict on that request alone.
    assert_eq!(queue.fault(), None);
    assert_eq!(device.check_status(), Ok(()));
}

#[test]
fn both_queues_run_random_reads_at_once_on_a_null_backend() {
    let daemon = null_daemon(256 << 20, 2);
    let (hal, mut device) = connect(
        &daemon,
        Config {
            queues: 2,
            ..Config::default()
        },
    );
    let queues = device.take_queues().into_queues();
    let hal_ref = &hal;
    let finished = run_pinned(queues, |i, queue| {
        let run_until = Instant::now() + Duration::from_millis(300);
        let deadline = run_until + COMPLETION_TIMEOUT;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ i as u64;
        let mut ok = 0u64;
        let mut spare: Vec<_> = (0..32).map(|_| buffer(hal_ref, 4096)).collect();
        while Instant::now() < run_until || queue.in_flight() > 0 {
            while Instant::now() < run_until {
                let Some(data) = spare.pop() else { break };
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let sector = (seed % ((256 << 20) / 4096)) * 8;
                queue.read(sector, data, 0).unwrap();
            }
            queue.commit();
            queue.poll(64, |c| {
                c.result.unwrap();
                assert!(c
                    .buffer
                    .as_ref()
                    .unwrap()
                    .as_slice()
                    .iter()
                    .all(|&b| b == 0));
                spare.push(c.buffer.unwrap());
                ok += 1;
            });
            assert!(Instant::now() < deadline, "requests never completed");
        }
        ok
    });
    for (queue, ok) in &finished {
        assert!(
            *ok > 100,
            "queue {} completed only {ok} reads",
            queue.index()
        );
        assert!(queue.stats().kicks > 0, "qemu-storage-daemon needs kicks");
    }
}

#[test]
fn flush_discard_write_zeroes_and_get_id_on_a_raw_file() {
    let image = TempImage::new(1 << 20);
    let daemon = daemon(
        DaemonBackend::File {
            path: image.path().into(),
        },
        1,
    );
    let (hal, mut device) = connect(&daemon, Config::default());
    let mut queue = device.take_queues().into_queues().remove(0);

    // 16 stamped sectors at 0.
    let mut data = buffer(&hal, 8192);
    stamp(data.as_mut_slice(), 0, 3);
    let written = one(&mut queue, |q| q.write(0, data, 1).map_err(|r| r.error));
    assert_eq!(written.result, Ok(()));
    assert_eq!(one(&mut queue, |q| q.flush(2)).result, Ok(()));

    // Zero the first 8 sectors; the second 8 keep their stamp.
    let zeroed = one(&mut queue, |q| q.write_zeroes(0, 8, false, 3));
    assert_eq!(zeroed.result, Ok(()));
    let read = one(&mut queue, |q| {
        q.read(0, buffer(&hal, 8192), 4).map_err(|r| r.error)
    });
    let got = read.buffer.unwrap();
    assert!(got.as_slice()[..4096].iter().all(|&b| b == 0));
    assert!(got.as_slice()[4096..] == stamped(8192, 0, 3)[4096..]);

    // Discard is a hint: it must complete OK; what it reads back is not fixed.
    assert_eq!(one(&mut queue, |q| q.discard(8, 8, 5)).result, Ok(()));

    let id = one(&mut queue, |q| {
        q.get_id(buffer(&hal, BLK_ID_BYTES), 6).map_err(|r| r.error)
    });
    assert_eq!(id.result, Ok(()));
    assert_eq!(id.buffer.unwrap().len(), BLK_ID_BYTES);

    assert_eq!(one(&mut queue, |q| q.flush(7)).result, Ok(()));
    let bytes = image.bytes();
    assert!(
        bytes[..4096].iter().all(|&b| b == 0),
        "the host sees the zeroes"
    );
}

#[test]
fn a_killed_daemon_fails_in_flight_and_later_requests_without_a_hang() {
    // Every request takes 20 ms, so requests are in flight when the daemon dies.
    let mut daemon = daemon(
        DaemonBackend::Null {
            size: 64 << 20,
            latency_ns: 20_000_000,
        },
        2,
    );
    let (hal, mut device) = connect(
        &daemon,
        Config {
            queues: 2,
            ..Config::default()
        },
    );
    let mut queues = device.take_queues().into_queues();
    for queue in &mut queues {
        for tag in 0..8 {
            queue.read(tag * 8, buffer(&hal, 4096), tag).unwrap();
        }
        queue.commit();
    }
    std::thread::sleep(Duration::from_millis(5));
    daemon.kill();

    // The control plane notices within a bounded number of checks.
    let deadline = Instant::now() + Duration::from_secs(5);
    while device.check_status().is_ok() {
        assert!(Instant::now() < deadline, "the dead backend went unnoticed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(device.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    let why = device.transport_mut().failure().map(str::to_owned);
    assert!(
        why.unwrap().contains("closed"),
        "the failure names the cause"
    );

    for queue in &mut queues {
        let mut failed = Vec::new();
        queue.poll(usize::MAX, |c| failed.push(c));
        assert_eq!(failed.len(), 8, "every request in flight completes");
        assert!(failed.iter().all(|c| c.result == Err(Error::DeviceBroken)));
        assert_eq!(queue.fault(), Some(DeviceFault::NeedsReset));
        let refused = queue.read(0, buffer(&hal, 4096), 99).unwrap_err();
        assert_eq!(refused.error, Error::DeviceBroken);
        assert_eq!(queue.flush(100), Err(Error::DeviceBroken));
    }
    // Recovery cannot reach the dead backend: it fails, promptly.
    let started = Instant::now();
    assert!(device.recover(queues, |_| {}).is_err());
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(device);
}

#[test]
fn a_daemon_killed_under_load_stops_the_polling_threads_with_errors() {
    let mut daemon = daemon(
        DaemonBackend::Null {
            size: 64 << 20,
            latency_ns: 200_000,
        },
        2,
    );
    let (hal, mut device) = connect(
        &daemon,
        Config {
            queues: 2,
            ..Config::default()
        },
    );
    let queues = device.take_queues().into_queues();
    let hal_ref = &hal;
    let (outcomes, noticed) = std::thread::scope(|scope| {
        let workers = scope.spawn(move || {
            run_pinned(queues, |_, queue| {
                // Keep 16 reads in flight until a request fails; bounded.
                let deadline = Instant::now() + Duration::from_secs(10);
                let mut spare: Vec<_> = (0..16).map(|_| buffer(hal_ref, 4096)).collect();
                let (mut ok, mut broken, mut refused) = (0u64, 0u64, false);
                // A failed device fails everything in flight in one poll,
                // so the first failure ends the run.
                while broken == 0 {
                    assert!(Instant::now() < deadline, "a polling thread hung");
                    {
                        while let Some(data) = spare.pop() {
                            if let Err(r) = queue.read(8, data, 0) {
                                assert_eq!(r.error, Error::DeviceBroken);
                                refused = true;
                                broken += 1;
                                break;
                            }
                        }
                        queue.commit();
                    }
                    queue.poll(64, |c| match c.result {
                        Ok(()) => {
                            ok += 1;
                            spare.push(c.buffer.unwrap());
                        }
                        Err(e) => {
                            assert_eq!(e, Error::DeviceBroken);
                            broken += 1;
                        }
                    });
                    std::thread::yield_now();
                }
                (ok, broken, refused)
            })
        });
        std::thread::sleep(Duration::from_millis(200));
        daemon.kill();
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut noticed = false;
        while !noticed && Instant::now() < deadline {
            noticed = device.check_status().is_err();
            std::thread::sleep(Duration::from_millis(10));
        }
        (workers.join().unwrap(), noticed)
    });
    assert!(noticed, "check_status never saw the dead backend");
    for (queue, (ok, broken, _)) in &outcomes {
        assert!(*ok > 0, "the queue worked before the kill");
        assert!(*broken > 0, "requests failed after the kill");
        assert_eq!(queue.fault(), Some(DeviceFault::NeedsReset));
    }
}

#[test]
fn interrupt_and_hybrid_modes_sleep_on_the_call_eventfd() {
    // Each request takes 200 µs in the backend, far longer than the 16 empty
    // checks hybrid spins before it sleeps, so both modes must sleep.
    let daemon = daemon(
        DaemonBackend::Null {
            size: 64 << 20,
            latency_ns: 200_000,
        },
        1,
    );
    for mode in [Mode::Interrupt, Mode::Hybrid] {
        let (hal, mut device) = connect(
            &daemon,
            Config {
                mode,
                ..Config::default()
            },
        );
        let irq = device.transport_mut().irq(0).expect("queue 0 is set up");
        let mut queue = device.take_queues().into_queues().remove(0);
        let deadline = Instant::now() + COMPLETION_TIMEOUT;
        let mut completed = 0;
        for round in 0..50u64 {
            for tag in 0..4 {
                queue
                    .read((round * 4 + tag) % 1024 * 8, buffer(&hal, 4096), tag)
                    .unwrap();
            }
            queue.commit();
            while queue.in_flight() > 0 {
                wait_for_completions(&mut queue, 16, &irq);
                completed += queue.poll(usize::MAX, |c| c.result.unwrap());
                assert!(
                    Instant::now() < deadline,
                    "{mode:?}: requests never completed"
                );
            }
        }
        assert_eq!(completed, 200);
        assert!(
            queue.stats().interrupts > 0,
            "{mode:?}: never woken by a call"
        );
        // A lost notification would cost a 100 ms wait slice on most of the
        // 50 rounds' sleeps; allow a couple for a machine that descheduled the
        // daemon for that long.
        assert!(
            irq.timeouts() <= 2,
            "{mode:?}: used-buffer notifications were lost"
        );
        drop(queue);
        drop(device);
    }
}

#[test]
fn reset_and_recover_set_the_device_up_again() {
    let image = TempImage::new(1 << 20);
    let daemon = daemon(
        DaemonBackend::File {
            path: image.path().into(),
        },
        1,
    );
    let (hal, mut device) = connect(&daemon, Config::default());
    let mut queue = device.take_queues().into_queues().remove(0);
    let mut data = buffer(&hal, 4096);
    stamp(data.as_mut_slice(), 16, 1);
    assert_eq!(
        one(&mut queue, |q| q.write(16, data, 1).map_err(|r| r.error)).result,
        Ok(())
    );

    let mut set = device.recover([queue], |_| {}).expect("recovered");
    let mut queue = set.into_queues().remove(0);
    let read = one(&mut queue, |q| {
        q.read(16, buffer(&hal, 4096), 2).map_err(|r| r.error)
    });
    assert!(read.buffer.unwrap().as_slice() == stamped(4096, 16, 1));
    assert!(device.transport_mut().control_stats().resets >= 2);
    set = device.take_queues();
    assert!(set.is_empty());
}

#[test]
fn a_missing_socket_is_a_connect_error() {
    let hal = virtio_blk_mq::transport::vhost_user::VhostUserHal::new(1 << 20).unwrap();
    let path = std::env::temp_dir().join("vblk-no-such-socket.sock");
    let error =
        virtio_blk_mq::transport::vhost_user::VhostUserTransport::connect(&path, &hal).unwrap_err();
    assert!(error.to_string().contains("cannot connect"));
    // The transport trait is what BlkDevice drives; keep it in scope for readers.
    fn _is_transport<T: Transport>() {}
}

#[test]
fn a_backend_that_never_answers_fails_the_connect_in_bounded_time() {
    let path = std::env::temp_dir().join(format!("vblk-silent-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let silent = std::thread::spawn(move || {
        // Accept, then say nothing until the test is done.
        let (connection, _) = listener.accept().unwrap();
        let _ = wait.recv();
        drop(connection);
    });
    let hal = virtio_blk_mq::transport::vhost_user::VhostUserHal::new(1 << 20).unwrap();
    let started = Instant::now();
    let error = virtio_blk_mq::transport::vhost_user::VhostUserTransport::connect_with_timeout(
        &path,
        &hal,
        Duration::from_millis(200),
    )
    .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "connect hung");
    assert!(error.to_string().contains("did not answer"), "{error}");
    release.send(()).unwrap();
    silent.join().unwrap();
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_stopped_daemon_shows_as_overdue_requests_and_a_bounded_reset() {
    let daemon = null_daemon(64 << 20, 1);
    let (hal, mut device) =
        connect_with_timeout(&daemon, Config::default(), Duration::from_millis(300));
    let mut queue = device.take_queues().into_queues().remove(0);
    assert_eq!(one(&mut queue, |q| q.flush(0)).result, Ok(()));

    signal(&daemon, "STOP");
    for tag in 0..4 {
        queue.read(tag * 8, buffer(&hal, 4096), tag).unwrap();
    }
    queue.commit();
    // One tick per 10 ms; the requests are overdue after 5 ticks.
    let mut overdue = Vec::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(10));
        queue.check_timeouts(5, |o| overdue.push(o.tag));
        if overdue.len() == 4 {
            break;
        }
    }
    overdue.sort_unstable();
    assert_eq!(
        overdue,
        [0, 1, 2, 3],
        "every stuck request is reported once"
    );
    assert_eq!(
        queue.poll(usize::MAX, |_| panic!("a stopped daemon completed")),
        0
    );

    // A reset needs the backend to answer: the watchdog bounds the wait.
    let started = Instant::now();
    let mut recovered = Vec::new();
    assert!(device.recover([queue], |r| recovered.push(r)).is_err());
    assert!(started.elapsed() < Duration::from_secs(3), "the reset hung");
    assert_eq!(recovered.len(), 4, "the stuck requests came back");
    assert!(device.status().contains(DeviceStatus::DEVICE_NEEDS_RESET));
    assert!(device
        .transport_mut()
        .failure()
        .unwrap()
        .contains("did not answer"));
    signal(&daemon, "CONT");
}
