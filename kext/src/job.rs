//! The in-kernel job: the bench CLI's fio-style job (`vblk_report::job`,
//! the engine the bare-metal guest runs too) on the calling CPU's own
//! queue, native path: submit, commit and poll with no lock and no
//! allocation per request. A kernel starts it from its command line
//! (`vblk.job=RW` and friends: [`crate::BootOptions`]); the result is the
//! run's [`Summary`], which the reports print as fio does.

use alloc::format;
use alloc::string::{String, ToString};

use vblk_report::job::{self, JobHost, JobSpec};
use vblk_report::summary::JobLabels;
use vblk_report::verify::Initial;
use vblk_report::workload::Rw;
use vblk_report::Summary;
use virtio_blk_mq::{Mode, RingKind};

use crate::clock::TscClock;
use crate::disk::Disk;
use crate::hal::KextHal;

/// What the job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JobOptions {
    /// The I/O pattern (`vblk.job=`).
    pub rw: Rw,
    /// Bytes per request (`vblk.bs=`, default 4 KiB).
    pub block_size: u64,
    /// Requests in flight (`vblk.iodepth=`, default 32).
    pub iodepth: u16,
    /// How long, ms (`vblk.runtime=` in seconds, default 2).
    pub runtime_ms: u64,
    /// Bytes of the disk the job covers from its start (`vblk.size=`;
    /// 0, the default: all of it).
    pub region_bytes: u64,
    /// Percentage of reads with `randrw` (`vblk.rwmixread=`, default 50).
    pub rwmixread: u8,
    /// Stamp writes and check reads (`vblk.verify=1`).
    pub verify: bool,
}

impl JobOptions {
    /// The defaults for pattern `rw`.
    pub fn new(rw: Rw) -> JobOptions {
        JobOptions {
            rw,
            block_size: 4096,
            iodepth: 32,
            runtime_ms: 2000,
            region_bytes: 0,
            rwmixread: 50,
            verify: false,
        }
    }
}

/// How long a request may stay in flight before the job gives up on it.
const REQUEST_TIMEOUT_NS: u64 = 30_000_000_000;

/// Time from the TSC, calibrated against the PIT before the job starts.
struct Tsc(TscClock);

impl JobHost for Tsc {
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
}

/// The job's per-queue specification on `disk`.
pub fn spec(
    options: &JobOptions,
    capacity_sectors: u64,
    spin_budget: u32,
) -> Result<JobSpec, String> {
    let disk_bytes = capacity_sectors.saturating_mul(512);
    let region = match options.region_bytes {
        0 => disk_bytes,
        bytes => bytes.min(disk_bytes),
    };
    if options.block_size == 0 || options.block_size % 512 != 0 {
        return Err(format!(
            "vblk.bs={}: want a multiple of 512",
            options.block_size
        ));
    }
    let blocks = region / options.block_size;
    if blocks == 0 {
        return Err(format!(
            "the disk's {region} bytes hold no {}-byte block",
            options.block_size
        ));
    }
    Ok(JobSpec {
        block_size: options.block_size,
        blocks_per_queue: blocks,
        random: options.rw.random(),
        read_percent: options.rw.read_percent(options.rwmixread),
        iodepth: options.iodepth.max(1),
        verify: options.verify,
        verify_initial: Initial::default(),
        number_ios: None,
        spin_budget,
        runtime_ns: options.runtime_ms.saturating_mul(1_000_000),
        request_timeout_ns: REQUEST_TIMEOUT_NS,
    })
}

/// Runs the job on `disk`, on the calling CPU's queue.
pub fn run(disk: &'static Disk, options: &JobOptions) -> Result<Summary, String> {
    let info = *disk.info();
    let spec = spec(options, info.capacity_sectors, disk.spin_budget())?;
    let clock = TscClock::calibrate().map_err(ToString::to_string)?;
    kerla_api::info!(
        "vblk-job: {}: TSC at {} MHz; {} {} B, iodepth {}, {} ms",
        disk.name(),
        clock.hz() / 1_000_000,
        options.rw.name(),
        options.block_size,
        spec.iodepth,
        options.runtime_ms
    );
    let mut queue = disk
        .take_queue_for_this_cpu()
        .ok_or("this CPU's queue is taken (or the device has none for it)")?;
    let waiter = queue.waiter();
    let result = job::run(
        queue.index(),
        &mut queue,
        &KextHal,
        &spec,
        &waiter,
        &Tsc(clock),
    );
    if let Some(problem) = &result.first_problem {
        kerla_api::warn!("vblk-job: {problem}");
    }
    let labels = JobLabels {
        name: "kerla".into(),
        rw: options.rw.name().into(),
        block_size: options.block_size,
        ring: match info.ring {
            RingKind::Split => "split",
            RingKind::Packed => "packed",
        }
        .into(),
        queues: 1,
        iodepth: spec.iodepth,
        mode: match queue.mode() {
            Mode::Poll => "poll",
            Mode::Interrupt => "irq",
            Mode::Hybrid => "hybrid",
        }
        .into(),
        disk: disk.name().into(),
    };
    let finished = [(queue.stats(), result)];
    Ok(Summary::of_queues(
        labels,
        &finished,
        disk.interrupts(),
        disk.waits_timed_out(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_covers_the_region_in_whole_blocks() {
        let mut options = JobOptions::new(Rw::Randread);
        let spec = spec(&options, 2048, 64).unwrap();
        assert_eq!(spec.blocks_per_queue, 2048 * 512 / 4096);
        assert!(spec.random);
        assert_eq!(spec.read_percent, 100);
        options.region_bytes = 64 * 1024;
        assert_eq!(
            super::spec(&options, 2048, 64).unwrap().blocks_per_queue,
            16
        );
        options.block_size = 1000;
        assert!(super::spec(&options, 2048, 64).is_err());
        options.block_size = 1 << 30;
        assert!(super::spec(&options, 2048, 64).is_err());
    }
}
