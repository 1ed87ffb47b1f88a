//! `kext=1`: the disk is driven by the Kerla kext, loaded the way Kerla's
//! `boot_kernel` loads one: `kerla_api::kernel_ops::init` with this
//! kernel's services, then the kext's `init()`, then `init_drivers`, which
//! offers every PCI function and virtio-mmio device to the kext's prober.
//! Then two checks through what the kext registered:
//!
//! - the synchronous path, run with interrupts off as a Kerla system call
//!   runs: sectors written with a pattern and read back (1 sector through
//!   PR #108's `BlockDriver`, 3 and 160 through the kext's `Disk`, the last
//!   larger than the kext's bounce buffer), requests that must be refused (a
//!   length that is not whole sectors, a sector past the end), a flush; the
//!   sectors are zeroed again afterwards, as a fresh disk reads;
//! - the fio-style job, on the kext's native per-CPU queues: each CPU takes
//!   its own queue from the disk and runs the job on it, as in the direct
//!   path; in Hybrid mode idle queues sleep until the interrupt the kext
//!   attached with `attach_irq`.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use kerla_api::driver::block::BlockDriver;
use vblk_report::Summary;
use virtio_blk_mq::sync::SpinLock;
use virtio_blk_mq::{Config, Features, Mode, QueueStats, RingKind};
use virtio_blk_mq_kext::{BlockError, Cpus, Disk, KextConfig, KextHal, SECTOR_SIZE};

use crate::blkdev;
use crate::cmdline::{self, Options};
use crate::exit::Status;
use crate::job::{self, QueueResult};
use crate::{arch, cpu, kerla, logger, println, smp};

/// Why the kext path stopped: the exit status and the message.
pub type Failure = (Status, String);

fn broken(why: String) -> Failure {
    (Status::Broken, why)
}

/// Loads the kext, checks the block driver, runs the job on the native queues.
pub fn run(options: &Options, cpus: usize) -> Result<Summary, Failure> {
    logger::init();
    kerla::init(&options.mmio);
    let config = kext_config(options, cpus);
    if is_default(&config) {
        println!("vblk-guest: kext: loading virtio_blk_mq_kext: init()");
        virtio_blk_mq_kext::init();
    } else {
        println!(
            "vblk-guest: kext: loading virtio_blk_mq_kext: init_with({:?} mode, {} ring)",
            config.driver.mode,
            if config.driver.features.contains(Features::RING_PACKED) {
                "packed"
            } else {
                "split"
            }
        );
        virtio_blk_mq_kext::init_with(config);
    }
    kerla_api::kernel_ops::init_drivers();
    let drivers = kerla::take_block_drivers();
    let names: Vec<&str> = drivers.iter().map(|d| d.name()).collect();
    println!(
        "vblk-guest: kext: {} block driver(s) registered: {names:?}",
        drivers.len()
    );
    let disks = virtio_blk_mq_kext::disks();
    let (Some(driver), Some(&disk)) = (drivers.first(), disks.first()) else {
        return Err(broken("the kext took no virtio-blk device".into()));
    };
    let wanted = match options.ring {
        cmdline::Ring::Split => RingKind::Split,
        cmdline::Ring::Packed => RingKind::Packed,
    };
    if disk.info().ring != wanted {
        return Err(broken(format!(
            "the device negotiated a {:?} ring instead",
            disk.info().ring
        )));
    }
    let keeps_data = options.disk != "null";
    // A Kerla system call runs with interrupts off: so does this.
    let were_on = arch::interrupts_enabled();
    arch::disable_interrupts();
    let checked = round_trip(&**driver, disk, keeps_data);
    if were_on {
        arch::enable_interrupts();
    }
    let checked = checked.map_err(|why| (Status::Failed, why))?;
    println!("vblk-guest: kext: block driver: {checked}");
    run_job(options, cpus, disk).map_err(broken)
}

/// The kext's settings for the command line's ring, mode and spin budget,
/// on `cpus` CPUs (Kerla's kext API has no CPU query: the kernel says).
fn kext_config(options: &Options, cpus: usize) -> KextConfig {
    let mut features = Features::SUPPORTED;
    if options.ring == cmdline::Ring::Split {
        features.remove(Features::RING_PACKED);
    }
    let defaults = KextConfig::default();
    KextConfig {
        driver: Config {
            features,
            mode: match options.mode {
                cmdline::Mode::Poll => Mode::Poll,
                cmdline::Mode::Irq => Mode::Interrupt,
                cmdline::Mode::Hybrid => Mode::Hybrid,
            },
            ..defaults.driver
        },
        spin_budget: options.spin_budget,
        cpus: Cpus {
            count: cpus,
            current: cpu::index,
        },
        ..defaults
    }
}

/// Whether `config` is what the kext's plain `init()` sets up.
fn is_default(config: &KextConfig) -> bool {
    let defaults = KextConfig::default();
    config.driver == defaults.driver
        && config.queues == defaults.queues
        && config.spin_budget == defaults.spin_budget
        && config.cpus.count() == defaults.cpus.count()
}

/// Byte `i` of the `case`-th pattern written at `sector`.
fn pattern(sector: u64, case: usize, i: usize) -> u8 {
    let sector = sector + (i / SECTOR_SIZE) as u64;
    (sector as u8) ^ (i as u8).rotate_left(3) ^ (0x5a + case as u8)
}

/// Writes and reads back whole sectors through the block driver and the
/// disk's synchronous API, checks the refusals, flushes, and zeroes the
/// sectors again. Returns what was checked, or the first thing that went
/// wrong.
fn round_trip(driver: &dyn BlockDriver, disk: &Disk, keeps_data: bool) -> Result<String, String> {
    let capacity = disk.info().capacity_sectors;
    if capacity < 256 {
        return Err(format!(
            "the disk has {capacity} sectors; the check needs 256"
        ));
    }
    // The last sector; three sectors; 80 KiB (more than one bounce buffer).
    let cases = [
        (capacity - 1, 1usize),
        (capacity - 8, 3),
        (capacity - 200, 160),
    ];
    for (case, &(sector, count)) in cases.iter().enumerate() {
        let len = count * SECTOR_SIZE;
        let data: Vec<u8> = (0..len).map(|i| pattern(sector, case, i)).collect();
        let mut back = vec![0xeeu8; len];
        if case == 0 {
            // PR #108's own methods, which cannot return errors.
            driver.write_block(sector, &data);
            driver.read_block(sector, &mut back);
        } else {
            disk.write(sector, &data)
                .map_err(|e| format!("write of {len} bytes at sector {sector}: {e}"))?;
            disk.read(sector, &mut back)
                .map_err(|e| format!("read of {len} bytes at sector {sector}: {e}"))?;
        }
        if keeps_data {
            if let Some(at) = (0..len).find(|&i| back[i] != data[i]) {
                return Err(format!(
                    "{len} bytes at sector {sector}: byte {at} reads back {:#04x}, {:#04x} was written",
                    back[at], data[at]
                ));
            }
        }
    }
    let expect = |what: &str, got: Result<(), BlockError>, want: BlockError| {
        if got == Err(want) {
            Ok(())
        } else {
            Err(format!("{what}: {got:?}, expected Err({want:?})"))
        }
    };
    expect(
        "read of 100 bytes",
        disk.read(0, &mut [0u8; 100]),
        BlockError::Misaligned,
    )?;
    expect(
        "write of 700 bytes",
        disk.write(0, &[0u8; 700]),
        BlockError::Misaligned,
    )?;
    expect(
        "read of the sector after the last",
        disk.read(capacity, &mut [0u8; 512]),
        BlockError::OutOfRange,
    )?;
    expect(
        "write of 2 sectors from the last",
        disk.write(capacity - 1, &[0u8; 1024]),
        BlockError::OutOfRange,
    )?;
    // PR #108's form of a bad request: logged by the kext, no panic.
    driver.read_block(0, &mut [0u8; 100]);
    disk.flush().map_err(|e| format!("flush: {e}"))?;
    for &(sector, count) in &cases {
        disk.write(sector, &vec![0u8; count * SECTOR_SIZE])
            .map_err(|e| format!("zeroing sector {sector}: {e}"))?;
    }
    Ok(format!(
        "512, 1536 and 81920 bytes written and read back ({}); 100 and 700 bytes refused (Misaligned); \
         past the end refused (OutOfRange); flush ok",
        if keeps_data {
            "data compared: ok"
        } else {
            "not compared: disk=null keeps no data"
        }
    ))
}

/// One queue's outcome, handed back by its CPU.
type Finished = SpinLock<Option<(QueueStats, QueueResult)>>;

/// The job on the kext's native queues: CPU `i` takes queue `i`.
fn run_job(options: &Options, cpus: usize, disk: &'static Disk) -> Result<Summary, String> {
    let queues = usize::from(options.queues);
    if queues > cpus {
        return Err(format!(
            "queues={queues} needs as many vCPUs (one owner each); {cpus} are running"
        ));
    }
    if queues > disk.queues() {
        return Err(format!(
            "asked for {queues} queues, the kext set up {} (num-queues on the QEMU side?)",
            disk.queues()
        ));
    }
    let info = disk.info();
    println!(
        "vblk-guest: kext: {} sectors, {:?} ring, {} queues set up, {} for the job; interrupts: {}",
        info.capacity_sectors,
        info.ring,
        disk.queues(),
        queues,
        match disk.irq_line() {
            Some(line) => format!("line {line} through attach_irq"),
            None => "none".into(),
        }
    );
    let spec = blkdev::job_spec(options, info.capacity_sectors)?;
    let results: Vec<Finished> = (0..queues).map(|_| SpinLock::new(None)).collect();
    smp::run_on_cpus(queues, &|cpu| {
        // The native API: this CPU's own queue, no lock from here on.
        let Some(mut queue) = disk.take_queue_for_this_cpu() else {
            return;
        };
        if queue.index() != cpu {
            return;
        }
        let waiter = queue.waiter();
        let result = job::run(cpu, &mut queue, &spec, &waiter, &KextHal);
        *results[cpu].lock() = Some((queue.stats(), result));
    });
    let mut finished = Vec::with_capacity(queues);
    for (cpu, result) in results.into_iter().enumerate() {
        match result.into_inner() {
            Some(done) => finished.push(done),
            None => return Err(format!("CPU {cpu} could not take its queue from the kext")),
        }
    }
    // Read once, so the line and the report agree.
    let (interrupts, timed_out) = (disk.interrupts(), disk.waits_timed_out());
    println!(
        "vblk-guest: kext: {interrupts} used-buffer interrupts through attach_irq, {timed_out} sleeps timed out"
    );
    Ok(blkdev::summarize(options, &finished, interrupts, timed_out))
}
