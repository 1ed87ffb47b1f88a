//! Command-line flags, parsed and checked before anything runs.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use vblk_report::blkdebug;
use vblk_report::units::SizeError;
use vblk_report::verify::Initial;

use crate::job::{seconds_to_ns, JobSpec};

/// Most entries a ring gets: vhost-user backends take no more (nor does
/// the sim). A deeper `--iodepth` runs at what such a ring holds
/// ([`Args::ring_depth`]).
pub const MAX_QUEUE_SIZE: u16 = 1024;

/// Deepest queue `--peer` compares at: the peer sizes its rings for direct
/// chains only, three entries a request.
pub const MAX_PEER_IODEPTH: u16 = 512;

/// fio-style block I/O benchmark for the virtio-blk-mq driver.
#[derive(Clone, Debug, Parser)]
#[command(name = "vblk-bench", version, about, long_about = None)]
pub struct Args {
    /// Device to drive: `sim` (in-process simulated device), `vhost-user:PATH`
    /// (an existing vhost-user-blk export), or `vhost-user` with
    /// `--spawn-daemon` / `--spawn-backend`.
    #[arg(long, default_value = "sim", value_parser = parse_target)]
    pub target: Target,

    /// With `--target vhost-user`: start qemu-storage-daemon with `--queues`
    /// queues on `--disk` (null-co of `--size` bytes, or a raw file), and
    /// stop it at the end (the same as `--spawn-backend qemu`).
    #[arg(long)]
    pub spawn_daemon: bool,

    /// With `--target vhost-user`: start this backend for the run and stop
    /// it at the end: `fast` (vblk-fastdev, in this process: one busy-polling
    /// thread per queue, `--disk null` or a sparse `--disk ram` of `--size`
    /// bytes) or `qemu` (qemu-storage-daemon, as `--spawn-daemon`).
    #[arg(long, value_enum, value_name = "fast|qemu")]
    pub spawn_backend: Option<SpawnBackend>,

    /// Run the same job with a peer driver against the same vhost-user
    /// export, alternating with ours, and print both side by side.
    #[arg(long, value_enum)]
    pub peer: Option<Peer>,

    /// With `--peer`: queue depths to compare (comma-separated); default `--iodepth`.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=i64::from(MAX_PEER_IODEPTH)))]
    pub compare_iodepths: Vec<u16>,

    /// With `--peer`: queue counts to compare (comma-separated); default `--queues`.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u16).range(1..=256))]
    pub compare_queues: Vec<u16>,

    /// With `--peer`: runs of each driver at each point.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: u32,

    /// Virtqueue layout.
    #[arg(long, value_enum, default_value_t = Ring::Packed)]
    pub ring: Ring,

    /// Request queues, one driver thread (pinned to CPU i) per queue.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub queues: u16,

    /// Requests kept in flight per queue. A depth beyond what a ring holds
    /// (1024 requests, 341 with --no-indirect) is accepted, as fio accepts
    /// it: the job runs at what the ring holds, and the report says so.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    pub iodepth: u16,

    /// The `--iodepth` given, when [`Args::cap_iodepth`] lowered `iodepth`
    /// to what a ring holds.
    #[arg(skip)]
    pub iodepth_asked: Option<u16>,

    /// Block size per request: a power of two from 512 to 1m (512, 4k, 64k, 1m).
    #[arg(long, default_value = "4k", value_parser = parse_block_size)]
    pub bs: u64,

    /// I/O pattern.
    #[arg(long, value_enum, default_value_t = Rw::Randread)]
    pub rw: Rw,

    /// Percentage of reads in a mixed (randrw) workload.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rwmixread: u8,

    /// Seconds to run (fractions allowed, e.g. 0.5).
    #[arg(long, default_value = "5", value_parser = parse_runtime)]
    pub runtime: f64,

    /// Disk size in bytes: 1g, 256m, 4096k, ... (a multiple of 512).
    #[arg(long, default_value = "1g", value_parser = parse_disk_size)]
    pub size: u64,

    /// What backs the disk: `null` (keeps nothing; the default), `ram`
    /// (sim: allocates the whole size; --spawn-backend fast: sparse),
    /// `file:PATH` (--spawn-daemon: an existing raw image, all of it).
    #[arg(long, value_name = "null|ram|file:PATH", value_parser = parse_disk)]
    pub disk: Option<Disk>,

    /// How the driver learns about completions.
    #[arg(long, value_enum, default_value_t = Mode::Poll)]
    pub mode: Mode,

    /// How the simulated device's threads wait for requests (`auto`: poll
    /// with `--mode poll`, otherwise sleep until kicked).
    #[arg(long, value_enum, default_value_t = SimThreads::Auto)]
    pub sim_threads: SimThreads,

    /// In hybrid mode, empty checks before the driver re-arms and sleeps.
    #[arg(long, default_value_t = 256)]
    pub spin_budget: u32,

    /// Requests our driver lets wait unpublished before it publishes them on
    /// its own (the driver's `Config::publish_batch`; by default half of
    /// `--iodepth`); 0 publishes only when the job's batch ends.
    /// (libblkio's peer publishes every request as it goes.)
    #[arg(long)]
    pub publish_batch: Option<u16>,

    /// Switch off indirect descriptors (VIRTIO_F_INDIRECT_DESC): each request
    /// takes three descriptors of the ring, which is sized 4 × `--iodepth`.
    #[arg(long)]
    pub no_indirect: bool,

    /// Stamp every written block with its sector and a generation, check every
    /// read (needs a disk that keeps data: sim or --spawn-backend fast
    /// `--disk ram`, --spawn-daemon `--disk file:PATH`, or an existing export).
    #[arg(long)]
    pub verify: bool,

    /// With --verify: what a block holds before this run writes it: `zeros`
    /// (a fresh disk), `stamped` (an earlier --verify run with the same --bs
    /// wrote it), `either`.
    #[arg(long, value_enum, default_value_t = VerifyInitial::Either)]
    pub verify_initial: VerifyInitial,

    /// Requests each queue issues at most (fio's number_ios); the run ends
    /// when they are done or at --runtime, whichever comes first.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub number_ios: Option<u64>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Normal)]
    pub output_format: OutputFormat,

    /// Simulated device only: requests touching these 512-byte sectors fail
    /// with an I/O error (`START..END`), to see a failing run reported.
    #[arg(long, value_name = "START..END", value_parser = parse_sector_range)]
    pub inject_ioerr: Option<Range<u64>>,

    /// Simulated device only: queue 0 takes requests but never completes
    /// them, to see the request timeout fire.
    #[arg(long)]
    pub inject_stall: bool,

    /// --spawn-daemon only: QEMU's blkdebug driver fails with EIO every read
    /// (or write) that includes this 512-byte sector; with `:once`, only the
    /// first. Repeat the flag for more rules.
    #[arg(long, value_name = "read|write:SECTOR[:once]", value_parser = blkdebug::Rule::parse)]
    pub blkdebug_error: Vec<blkdebug::Rule>,

    /// Seconds a request may stay in flight before the run fails with it
    /// reported (a device that stopped answering).
    #[arg(long, default_value = "30", value_parser = parse_runtime)]
    pub request_timeout: f64,

    /// Job name shown in the report.
    #[arg(long, default_value = "vblk")]
    pub name: String,
}

/// Where the I/O goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The in-process simulated device.
    Sim,
    /// A vhost-user-blk backend listening on a Unix socket.
    VhostUser(PathBuf),
    /// A vhost-user-blk export this run starts itself (`--spawn-daemon`).
    VhostUserSpawn,
}

impl Target {
    /// Whether the target is a vhost-user backend.
    pub fn is_vhost_user(&self) -> bool {
        matches!(self, Target::VhostUser(_) | Target::VhostUserSpawn)
    }
}

/// A vhost-user-blk backend the run starts itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SpawnBackend {
    /// vblk-fastdev: busy-polling rust-vmm backend, null or sparse RAM disk.
    Fast,
    /// qemu-storage-daemon: null-co or a raw file.
    Qemu,
}

/// A driver to compare ours with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Peer {
    /// libblkio's `virtio-driver` crate: its own vhost-user frontend and virtqueues.
    Libblkio,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Sim => write!(f, "sim"),
            Target::VhostUser(path) => write!(f, "vhost-user:{}", path.display()),
            Target::VhostUserSpawn => write!(f, "vhost-user"),
        }
    }
}

/// Virtqueue layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ring {
    /// Split virtqueue (VIRTIO 1.2 §2.7).
    Split,
    /// Packed virtqueue (VIRTIO 1.2 §2.8).
    Packed,
}

/// I/O pattern, named as fio names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Rw {
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Random mix of reads and writes (`--rwmixread`).
    Randrw,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
}

impl Rw {
    /// Offsets are drawn at random (otherwise they advance sequentially).
    pub fn random(self) -> bool {
        matches!(self, Rw::Randread | Rw::Randwrite | Rw::Randrw)
    }

    /// Percentage of requests that are reads.
    pub fn read_percent(self, rwmixread: u8) -> u8 {
        match self {
            Rw::Randread | Rw::Read => 100,
            Rw::Randwrite | Rw::Write => 0,
            Rw::Randrw => rwmixread,
        }
    }
}

/// What backs the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disk {
    /// Stores nothing: the cheapest device (sim, or the daemon's null-co).
    Null,
    /// The simulated device keeps every byte in memory.
    Ram,
    /// The daemon exports a raw image file.
    File(PathBuf),
}

impl Disk {
    /// The name the report shows.
    pub fn name(&self) -> &'static str {
        match self {
            Disk::Null => "null",
            Disk::Ram => "ram",
            Disk::File(_) => "file",
        }
    }
}

/// What a block holds before the run writes it (`--verify-initial`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VerifyInitial {
    /// Zeros: a fresh disk.
    Zeros,
    /// A whole block stamped for its own sectors by an earlier --verify run.
    Stamped,
    /// Zeros or such a stamp.
    Either,
}

impl From<VerifyInitial> for Initial {
    fn from(value: VerifyInitial) -> Initial {
        match value {
            VerifyInitial::Zeros => Initial::Zeros,
            VerifyInitial::Stamped => Initial::Stamped,
            VerifyInitial::Either => Initial::Either,
        }
    }
}

/// Driver completion mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Busy-poll; used-buffer notifications off.
    Poll,
    /// Sleep until the device's used-buffer notification.
    Irq,
    /// Poll while busy, sleep on the notification after `--spin-budget` empty checks.
    Hybrid,
}

/// How the simulated device's threads wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SimThreads {
    /// `poll` for `--mode poll`, `sleep` otherwise.
    Auto,
    /// Busy-poll the rings; the driver never needs to kick.
    Poll,
    /// Sleep until kicked.
    Sleep,
}

/// Report format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// fio's human-readable report.
    Normal,
    /// fio's JSON field names.
    Json,
}

impl Args {
    /// Parses the command line; on a bad flag or combination prints clap's
    /// message and exits with status 2.
    pub fn parse_checked() -> Args {
        let mut args = Args::parse();
        if let Err(message) = args.check() {
            Args::command()
                .error(ErrorKind::ArgumentConflict, message)
                .exit();
        }
        args.cap_iodepth();
        args
    }

    /// Requests one ring of [`MAX_QUEUE_SIZE`] entries holds in flight: one
    /// entry each at worst (the request in its indirect table), or three
    /// with `--no-indirect` (header, data, status).
    pub fn ring_depth(&self) -> u16 {
        if self.no_indirect {
            MAX_QUEUE_SIZE / 3
        } else {
            MAX_QUEUE_SIZE
        }
    }

    /// Lowers `iodepth` to [`Args::ring_depth`] when it asks for more,
    /// keeping the depth given in `iodepth_asked` for the report.
    pub fn cap_iodepth(&mut self) {
        let depth = self.ring_depth();
        if self.iodepth > depth {
            self.iodepth_asked = Some(self.iodepth);
            self.iodepth = depth;
        }
    }

    /// Checks that the flags make sense together.
    pub fn check(&self) -> Result<(), String> {
        if self.spawn_daemon && self.spawn_backend == Some(SpawnBackend::Fast) {
            return Err("--spawn-daemon is --spawn-backend qemu: give one of the two".into());
        }
        match (&self.target, self.spawn()) {
            (Target::VhostUserSpawn, None) => {
                return Err("--target vhost-user needs a socket (vhost-user:PATH), \
                            --spawn-daemon or --spawn-backend fast|qemu"
                    .into())
            }
            (Target::VhostUser(_), Some(_)) => {
                return Err(
                    "--spawn-daemon / --spawn-backend start their own export: use \
                            --target vhost-user"
                        .into(),
                )
            }
            (Target::Sim, Some(_)) => {
                return Err("--spawn-daemon / --spawn-backend need --target vhost-user".into())
            }
            _ => {}
        }
        let fast = self.spawn() == Some(SpawnBackend::Fast);
        match (&self.target, &self.disk) {
            (Target::Sim, Some(Disk::File(_))) => {
                return Err(
                    "--disk file:PATH is for --target vhost-user --spawn-daemon \
                            (the simulated disk is null or ram)"
                        .into(),
                )
            }
            (Target::VhostUserSpawn, Some(Disk::Ram)) if !fast => {
                return Err("--disk ram is for --target sim or --spawn-backend fast: \
                            the daemon exports null or file:PATH"
                    .into())
            }
            (Target::VhostUserSpawn, Some(Disk::File(_))) if fast => {
                return Err("--spawn-backend fast serves --disk null or ram \
                            (file:PATH is for --spawn-daemon)"
                    .into())
            }
            (Target::VhostUser(_), Some(_)) => {
                return Err("an existing export serves its own disk: --disk is for \
                            --target sim or --spawn-daemon"
                    .into())
            }
            _ => {}
        }
        // An existing export's disk is its own: verify finds out what it keeps.
        if self.verify && self.disk() == Disk::Null {
            match self.target {
                Target::Sim => {
                    return Err("--verify needs a disk that keeps data: --disk ram".into())
                }
                Target::VhostUserSpawn if fast => {
                    return Err("--verify needs a disk that keeps data: --disk ram".into())
                }
                Target::VhostUserSpawn => {
                    return Err("--verify needs a disk that keeps data: --disk file:PATH".into())
                }
                Target::VhostUser(_) => {}
            }
        }
        if !self.verify && self.verify_initial != VerifyInitial::Either {
            return Err("--verify-initial goes with --verify".into());
        }
        if self.target.is_vhost_user() && (self.inject_ioerr.is_some() || self.inject_stall) {
            return Err("--inject-ioerr and --inject-stall are for --target sim \
                        (--spawn-daemon has --blkdebug-error)"
                .into());
        }
        if !self.blkdebug_error.is_empty() && self.spawn() != Some(SpawnBackend::Qemu) {
            return Err("--blkdebug-error needs --target vhost-user --spawn-daemon \
                        (the sim has --inject-ioerr)"
                .into());
        }
        if self.peer.is_some() {
            if self.verify || self.number_ios.is_some() || !self.blkdebug_error.is_empty() {
                return Err("--peer compares timed runs: --verify, --number-ios and \
                            --blkdebug-error are for runs of our driver alone"
                    .into());
            }
            if !self.target.is_vhost_user() {
                return Err("--peer compares drivers against a vhost-user export: \
                            use --target vhost-user"
                    .into());
            }
            if self.mode != Mode::Poll {
                return Err("--peer compares busy-polling drivers: use --mode poll".into());
            }
            if self.iodepth > MAX_PEER_IODEPTH {
                return Err(format!(
                    "--peer compares at depths up to {MAX_PEER_IODEPTH}: lower --iodepth"
                ));
            }
        } else if !self.compare_iodepths.is_empty() || !self.compare_queues.is_empty() {
            return Err("--compare-iodepths / --compare-queues need --peer".into());
        }
        let blocks = self.size / self.bs;
        if blocks < u64::from(self.queues) {
            return Err(format!(
                "--size {} holds {blocks} blocks of {} bytes: fewer than one per queue ({})",
                self.size, self.bs, self.queues
            ));
        }
        // The sim allocates a RAM disk whole; vblk-fastdev's is sparse.
        if self.disk() == Disk::Ram && self.target == Target::Sim {
            if let Some(available) = available_memory() {
                // Leave room for the rest of the process and the system.
                if self.size > available / 10 * 8 {
                    return Err(format!(
                        "--disk ram --size {} does not fit in memory ({} bytes available)",
                        self.size, available
                    ));
                }
            }
        }
        Ok(())
    }

    /// The backend this run starts: `--spawn-backend`, or qemu for `--spawn-daemon`.
    pub fn spawn(&self) -> Option<SpawnBackend> {
        self.spawn_backend
            .or(self.spawn_daemon.then_some(SpawnBackend::Qemu))
    }

    /// What backs the disk: `--disk`, else null.
    pub fn disk(&self) -> Disk {
        self.disk.clone().unwrap_or(Disk::Null)
    }

    /// Entries per ring: the next power of two ≥ 3 × iodepth, capped at
    /// [`MAX_QUEUE_SIZE`], so every request in flight fits as a direct chain
    /// (header, data, status); with indirect tables the driver falls back to
    /// a table when a capped ring runs short (see `Config::max_requests`,
    /// set to iodepth).
    pub fn queue_size(&self) -> u16 {
        (3 * u32::from(self.iodepth))
            .next_power_of_two()
            .min(u32::from(MAX_QUEUE_SIZE)) as u16
    }

    /// The driver's configuration for this job, whatever the target.
    pub fn driver_config(&self) -> virtio_blk_mq::Config {
        let config = virtio_blk_mq::Config {
            queues: self.queues,
            queue_size: Some(self.queue_size()),
            max_requests: Some(self.iodepth),
            publish_batch: self.publish_batch,
            mode: match self.mode {
                Mode::Poll => virtio_blk_mq::Mode::Poll,
                Mode::Irq => virtio_blk_mq::Mode::Interrupt,
                Mode::Hybrid => virtio_blk_mq::Mode::Hybrid,
            },
            ..virtio_blk_mq::Config::default()
        };
        if self.no_indirect {
            config.without(virtio_blk_mq::Features::INDIRECT_DESC)
        } else {
            config
        }
    }

    /// Every queue's job, over `blocks_per_queue` blocks each.
    pub fn job_spec(&self, blocks_per_queue: u64) -> JobSpec {
        JobSpec {
            block_size: self.bs,
            blocks_per_queue,
            random: self.rw.random(),
            read_percent: self.rw.read_percent(self.rwmixread),
            iodepth: self.iodepth,
            verify: self.verify,
            verify_initial: self.verify_initial.into(),
            number_ios: self.number_ios,
            spin_budget: self.spin_budget,
            runtime_ns: seconds_to_ns(self.runtime),
            request_timeout_ns: seconds_to_ns(self.request_timeout),
        }
    }

    /// Whether the device threads busy-poll.
    pub fn device_polls(&self) -> bool {
        match self.sim_threads {
            SimThreads::Auto => self.mode == Mode::Poll,
            SimThreads::Poll => true,
            SimThreads::Sleep => false,
        }
    }
}

fn parse_disk(s: &str) -> Result<Disk, String> {
    match s {
        "null" => Ok(Disk::Null),
        "ram" => Ok(Disk::Ram),
        _ => match s.strip_prefix("file:") {
            Some("") => Err("file: needs a path: file:PATH".into()),
            Some(path) => Ok(Disk::File(PathBuf::from(path))),
            None => Err(format!("`{s}`: expected null, ram or file:PATH")),
        },
    }
}

fn parse_target(s: &str) -> Result<Target, String> {
    if s == "sim" {
        return Ok(Target::Sim);
    }
    if s == "vhost-user" {
        return Ok(Target::VhostUserSpawn);
    }
    match s.strip_prefix("vhost-user:") {
        Some("") => Err("vhost-user needs a socket path: vhost-user:PATH".into()),
        Some(path) => Ok(Target::VhostUser(PathBuf::from(path))),
        None => {
            Err("expected `sim`, `vhost-user:PATH` or `vhost-user` (with --spawn-daemon)".into())
        }
    }
}

/// Parses a byte count with an optional binary suffix: `512`, `4k`, `64K`,
/// `1m`, `1g`, `2KiB`, `1MB` (fio's default: k = 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    vblk_report::units::parse_bytes(s).map_err(|error| match error {
        SizeError::NoNumber => format!("`{s}` is not a size (examples: 512, 4k, 64k, 1m, 1g)"),
        SizeError::UnknownUnit => format!("`{s}` has an unknown unit (use k, m, g or t)"),
        SizeError::TooLarge => format!("`{s}` is too large"),
    })
}

fn parse_sectors_multiple(s: &str) -> Result<u64, String> {
    let bytes = parse_bytes(s)?;
    if bytes == 0 {
        return Err("must not be zero".into());
    }
    if bytes % 512 != 0 {
        return Err(format!("{bytes} bytes is not a multiple of 512"));
    }
    Ok(bytes)
}

fn parse_block_size(s: &str) -> Result<u64, String> {
    let bytes = parse_sectors_multiple(s)?;
    // Power-of-two blocks keep every request aligned to its own size, as real
    // block layers issue them. One request carries one buffer, and the
    // simulated device's size_max is 1 MiB.
    if !bytes.is_power_of_two() || bytes > 1 << 20 {
        return Err(format!(
            "{bytes} bytes is not a power of two from 512 to 1m (512, 1k, 2k, 4k, ..., 1m)"
        ));
    }
    Ok(bytes)
}

fn parse_disk_size(s: &str) -> Result<u64, String> {
    parse_sectors_multiple(s)
}

fn parse_sector_range(s: &str) -> Result<Range<u64>, String> {
    let (start, end) = s
        .split_once("..")
        .ok_or_else(|| format!("`{s}` is not a sector range START..END"))?;
    let number = |text: &str| {
        text.trim()
            .parse::<u64>()
            .map_err(|_| format!("`{text}` is not a sector number"))
    };
    let range = number(start)?..number(end)?;
    if range.is_empty() {
        return Err(format!("{s} is an empty range"));
    }
    Ok(range)
}

fn parse_runtime(s: &str) -> Result<f64, String> {
    let number = s.strip_suffix('s').unwrap_or(s);
    match number.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs <= 1e6 => Ok(secs),
        Ok(_) => Err("must be a positive number of seconds (at most 1e6)".into()),
        Err(_) => Err(format!("`{s}` is not a number of seconds")),
    }
}

/// `MemAvailable` from /proc/meminfo, in bytes, where there is one.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_fio_forms() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("4k"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("1m"), Ok(1 << 20));
        assert_eq!(parse_bytes("1g"), Ok(1 << 30));
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert!(parse_bytes("k").is_err());
        assert!(parse_bytes("4x").is_err());
        assert!(parse_bytes("99999999999999999999").is_err());
    }

    #[test]
    fn block_size_must_be_a_sector_multiple() {
        assert_eq!(parse_block_size("4k"), Ok(4096));
        assert!(parse_block_size("3k").is_err());
        assert!(parse_block_size("1000").is_err());
        assert!(parse_block_size("0").is_err());
        assert!(parse_block_size("2m").is_err());
    }

    #[test]
    fn target_accepts_sim_and_vhost_user_paths() {
        assert_eq!(parse_target("sim"), Ok(Target::Sim));
        assert_eq!(
            parse_target("vhost-user:/tmp/vhost.sock"),
            Ok(Target::VhostUser("/tmp/vhost.sock".into()))
        );
        assert!(parse_target("vhost-user:").is_err());
        assert_eq!(parse_target("vhost-user"), Ok(Target::VhostUserSpawn));
        assert!(parse_target("qemu").is_err());
    }

    #[test]
    fn sector_ranges_are_start_dot_dot_end() {
        assert_eq!(parse_sector_range("8..16"), Ok(8..16));
        assert!(parse_sector_range("16..8").is_err());
        assert!(parse_sector_range("8-16").is_err());
        assert!(parse_sector_range("a..b").is_err());
    }

    #[test]
    fn runtime_takes_fractions() {
        assert_eq!(parse_runtime("0.5"), Ok(0.5));
        assert_eq!(parse_runtime("3s"), Ok(3.0));
        assert!(parse_runtime("0").is_err());
        assert!(parse_runtime("-1").is_err());
        assert!(parse_runtime("inf").is_err());
    }

    #[test]
    fn queue_size_holds_three_descriptors_per_request_rounded_up_and_capped() {
        let args = |depth: &str| Args::parse_from(["vblk-bench", "--iodepth", depth]);
        assert_eq!(args("1").queue_size(), 4);
        assert_eq!(args("32").queue_size(), 128);
        assert_eq!(args("43").queue_size(), 256);
        assert_eq!(args("512").queue_size(), 1024);
        let direct = Args::parse_from(["vblk-bench", "--iodepth", "32", "--no-indirect"]);
        assert_eq!(direct.queue_size(), 128);
    }

    #[test]
    fn an_iodepth_beyond_the_ring_is_taken_and_capped_to_what_it_holds() {
        let capped = |flags: &[&str]| {
            let mut args = Args::parse_from([&["vblk-bench"][..], flags].concat());
            assert_eq!(args.check(), Ok(()), "{flags:?}");
            args.cap_iodepth();
            (args.iodepth, args.iodepth_asked, args.queue_size())
        };
        // One ring entry a request at worst (its indirect table).
        assert_eq!(capped(&["--iodepth", "4096"]), (1024, Some(4096), 1024));
        assert_eq!(capped(&["--iodepth", "65535"]), (1024, Some(65535), 1024));
        assert_eq!(capped(&["--iodepth", "1024"]), (1024, None, 1024));
        assert_eq!(capped(&["--iodepth", "600"]), (600, None, 1024));
        // Three entries a request: header, data, status.
        let direct = |depth| capped(&["--no-indirect", "--iodepth", depth]);
        assert_eq!(direct("512"), (341, Some(512), 1024));
        assert_eq!(direct("341"), (341, None, 1024));
        assert_eq!(capped(&["--iodepth", "32"]), (32, None, 128));
        // The peer's rings stay within reach of the export.
        let mut peer = Args::parse_from([
            "vblk-bench",
            "--target",
            "vhost-user:/s",
            "--peer",
            "libblkio",
            "--iodepth",
            "513",
        ]);
        assert!(peer.check().is_err());
        peer.iodepth = 512;
        assert_eq!(peer.check(), Ok(()));
    }

    #[test]
    fn spawn_daemon_goes_with_vhost_user_only() {
        let check = |args: &[&str]| {
            let mut all = vec!["vblk-bench"];
            all.extend_from_slice(args);
            Args::parse_from(all).check()
        };
        assert_eq!(check(&["--target", "vhost-user", "--spawn-daemon"]), Ok(()));
        assert!(check(&["--target", "vhost-user"]).is_err());
        assert!(check(&["--target", "vhost-user:/s", "--spawn-daemon"]).is_err());
        assert!(check(&["--spawn-daemon"]).is_err());
        assert!(check(&["--peer", "libblkio"]).is_err());
        assert!(check(&["--target", "vhost-user:/s", "--disk", "ram"]).is_err());
        assert!(check(&[
            "--target",
            "vhost-user:/s",
            "--peer",
            "libblkio",
            "--mode",
            "irq"
        ])
        .is_err());
        assert!(check(&["--compare-iodepths", "1,8"]).is_err());
        let args = Args::parse_from([
            "vblk-bench",
            "--target",
            "vhost-user",
            "--spawn-daemon",
            "--peer",
            "libblkio",
            "--compare-iodepths",
            "1,8,32",
            "--compare-queues",
            "1,2",
        ]);
        assert_eq!(args.check(), Ok(()));
        assert_eq!(args.compare_iodepths, [1, 8, 32]);
        assert_eq!(args.compare_queues, [1, 2]);
    }

    #[test]
    fn spawn_daemon_is_spawn_backend_qemu() {
        let args = |a: &[&str]| Args::parse_from([&["vblk-bench"][..], a].concat());
        assert_eq!(args(&["--spawn-daemon"]).spawn(), Some(SpawnBackend::Qemu));
        assert_eq!(
            args(&["--spawn-backend", "fast"]).spawn(),
            Some(SpawnBackend::Fast)
        );
        assert_eq!(args(&[]).spawn(), None);
        let fast = ["--target", "vhost-user", "--spawn-backend", "fast"];
        assert_eq!(
            check(&[&fast[..], &["--disk", "ram", "--verify"]].concat()),
            Ok(())
        );
        assert!(check(&[&fast[..], &["--verify"]].concat())
            .unwrap_err()
            .contains("--disk ram"));
        // A sparse RAM disk may be larger than memory.
        assert_eq!(
            check(&[&fast[..], &["--disk", "ram", "--size", "64t"]].concat()),
            Ok(())
        );
    }

    fn check(args: &[&str]) -> Result<(), String> {
        let mut all = vec!["vblk-bench"];
        all.extend_from_slice(args);
        Args::parse_from(all).check()
    }

    #[test]
    fn verify_needs_a_disk_that_keeps_data() {
        assert!(check(&["--verify"]).unwrap_err().contains("--disk ram"));
        assert_eq!(
            check(&["--verify", "--disk", "ram", "--size", "1m"]),
            Ok(())
        );
        let spawn = ["--target", "vhost-user", "--spawn-daemon", "--verify"];
        assert!(check(&spawn).unwrap_err().contains("--disk file:PATH"));
        assert_eq!(
            check(&[&spawn[..], &["--disk", "file:/x.img"]].concat()),
            Ok(())
        );
        // What an existing export keeps is its business: verify finds out.
        assert_eq!(check(&["--target", "vhost-user:/s", "--verify"]), Ok(()));
        assert!(check(&["--verify-initial", "stamped"]).is_err());
    }

    #[test]
    fn disks_go_with_their_targets() {
        assert_eq!(
            parse_disk("file:/a,b.img"),
            Ok(Disk::File("/a,b.img".into()))
        );
        assert!(parse_disk("file:").is_err());
        assert!(parse_disk("nvme").unwrap_err().contains("file:PATH"));
        assert!(check(&["--disk", "file:/x.img"]).is_err());
        let spawn = ["--target", "vhost-user", "--spawn-daemon"];
        assert!(check(&[&spawn[..], &["--disk", "ram"]].concat()).is_err());
        assert_eq!(check(&[&spawn[..], &["--disk", "null"]].concat()), Ok(()));
        assert!(check(&["--target", "vhost-user:/s", "--disk", "null"]).is_err());
    }

    #[test]
    fn blkdebug_errors_need_a_spawned_daemon() {
        let spawn = ["--target", "vhost-user", "--spawn-daemon"];
        let rules = [
            "--blkdebug-error",
            "read:8",
            "--blkdebug-error",
            "write:16:once",
        ];
        let args = Args::parse_from([&["vblk-bench"][..], &spawn, &rules].concat());
        assert_eq!(args.check(), Ok(()));
        assert_eq!(args.blkdebug_error.len(), 2);
        assert!(args.blkdebug_error[1].once);
        assert!(check(&rules).unwrap_err().contains("--spawn-daemon"));
        assert!(check(&["--target", "vhost-user:/s", "--blkdebug-error", "read:8"]).is_err());
        assert!(check(&[&spawn[..], &["--inject-ioerr", "0..8"]].concat()).is_err());
        let peer = ["--peer", "libblkio", "--number-ios", "10"];
        assert!(check(&[&spawn[..], &peer].concat()).is_err());
    }
}
