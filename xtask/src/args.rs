//! Flags of `cargo xtask guest`, shaped like the bench CLI's.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use vblk_report::blkdebug;

/// Project tasks.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about)]
pub struct Cli {
    /// The task.
    #[command(subcommand)]
    pub task: Task,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Task {
    /// Build the guest kernel and run a job in QEMU; exit 0 only if it passed.
    Guest(GuestArgs),
    /// Run the job with Linux's virtio_blk and real fio on the same QEMU line
    /// (a Debian kernel and initramfs, cached under target/linux-guest).
    #[command(mut_arg("memory", |a| a.default_value("1G")))]
    LinuxFio(crate::linux::LinuxArgs),
    /// Run our guest and the Linux guest on identical QEMU lines, alternating,
    /// over a matrix of jobs; print one table.
    #[command(mut_arg("memory", |a| a.default_value("1G")))]
    Compare(crate::compare::CompareArgs),
    /// Build the real Kerla (../shared/kerla/) with the project's patch
    /// series and the kext, boot it in QEMU, check the disk on the host.
    Kerla(crate::kerla::KerlaArgs),
    /// Our driver beside libblkio's on vblk-fastdev, and the idealised ring
    /// beside both: one table of ratios (and a plot with --plot).
    Perf(crate::perf::PerfArgs),
    /// Run the guest many times over a matrix of modes, rings, iothread
    /// on/off, depths and ring sizes; count passes, stalls (and what the
    /// stall report found) and errors; print a table.
    #[command(mut_arg("runtime", |a| a.default_value("1")))]
    Soak(crate::soak::SoakArgs),
}

/// One guest run.
#[derive(Clone, Debug, clap::Args)]
pub struct GuestArgs {
    /// Virtqueue layout.
    #[arg(long, value_enum, default_value_t = Ring::Packed)]
    pub ring: Ring,
    /// Request queues: one vCPU owns each. Capped at --smp, as Linux caps
    /// them at the CPU count; the device keeps this many (num-queues).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub queues: u16,
    /// vCPUs (default: one per queue).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub smp: Option<u16>,
    /// I/O pattern: randread, randwrite, randrw, read, write.
    #[arg(long, default_value = "randread", value_parser = ["randread", "randwrite", "randrw", "read", "write"])]
    pub rw: String,
    /// Percentage of reads with --rw randrw.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rwmixread: u8,
    /// Block size per request (512 ... 1m).
    #[arg(long, default_value = "4k")]
    pub bs: String,
    /// Requests kept in flight per queue.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub iodepth: u16,
    /// Seconds to run (fractions allowed).
    #[arg(long, default_value = "5")]
    pub runtime: String,
    /// Stamp every written block, check every read (needs a disk that keeps data).
    #[arg(long)]
    pub verify: bool,
    /// How the driver learns about completions.
    #[arg(long, value_enum, default_value_t = Mode::Poll)]
    pub mode: Mode,
    /// virtio-pci interrupt delivery in irq/hybrid mode.
    #[arg(long, value_enum, default_value_t = Irq::Msix)]
    pub irq: Irq,
    /// Device transport: virtio-pci (`pc` machine) or virtio-mmio (`microvm`).
    #[arg(long, value_enum, default_value_t = TransportKind::Pci)]
    pub transport: TransportKind,
    /// Backend: `null` (stores nothing, reads zeroes), `ram` (a temporary
    /// sparse file, removed afterwards) or `file:PATH` (a raw image).
    #[arg(long, default_value = "null", value_parser = parse_disk)]
    pub disk: Disk,
    /// Disk size in bytes (1g, 64m, ...) for null and ram disks.
    #[arg(long, default_value = "1g")]
    pub size: String,
    /// QEMU's blkdebug driver, put between the disk and the device, fails
    /// with EIO every read (or write) that includes this 512-byte sector;
    /// with `:once`, only the first. Repeat for more rules. The device then
    /// runs with request-merging=off, so a rule fails only its own request.
    #[arg(long, value_name = "read|write:SECTOR[:once]", value_parser = blkdebug::Rule::parse)]
    pub blkdebug_error: Vec<blkdebug::Rule>,
    /// Requests each queue issues at most (fio's number_ios): the job ends
    /// when they are done, or at --runtime.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub number_ios: Option<u64>,
    /// Accelerator: `auto` probes KVM and falls back to TCG.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Seconds before a hung guest is killed (default: runtime + 60).
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Guest memory.
    #[arg(long, default_value = "256M")]
    pub memory: String,
    /// Job name in the report.
    #[arg(long, default_value = "vblk")]
    pub name: String,
    /// Drive the disk through the Kerla kext (virtio_blk_mq_kext), loaded
    /// as Kerla's boot_kernel would; the device gets one queue more than
    /// --queues, for the kext's block driver.
    #[arg(long)]
    pub kext: bool,
    /// Give the device its own QEMU I/O thread (`-object iothread`).
    #[arg(long)]
    pub iothread: bool,
    /// The device's `num-queues` (default: --queues, plus one with --kext);
    /// the guest uses --queues of them. Linux's polled mode needs one more
    /// than its poll queues.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub device_queues: Option<u16>,
    /// Ring entries per queue (default: twice --iodepth, within 256): up to
    /// QEMU's 256; a power of two for split rings.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub queue_size: Option<u16>,
    /// QEMU's `maxcpus` (default: at least 2 under TCG, --smp under KVM).
    /// TCG elides a guest's memory barriers (mfence, lock-prefixed
    /// instructions) when the machine can have only one CPU, but virtio
    /// devices run in other host threads (an iothread, the main loop) and
    /// need them: with `--maxcpus 1` a single-vCPU guest can lose doorbells
    /// and interrupts. A CPU that is possible but not present costs nothing.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub maxcpus: Option<u16>,
    /// Do not negotiate VIRTIO_F_EVENT_IDX (doorbells and interrupts then
    /// follow the flags only).
    #[arg(long)]
    pub no_event_idx: bool,
    /// Break the device on purpose while the job runs, to check how the
    /// guest reports it. `needs-reset`: an extra vCPU submits a read into
    /// memory that does not exist; QEMU sets DEVICE_NEEDS_RESET (and says
    /// why on its stderr). Adds a vCPU and a device queue.
    #[arg(long, value_enum)]
    pub inject: Option<Inject>,
}

/// Faults `--inject` provokes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Inject {
    /// A request QEMU cannot map: DEVICE_NEEDS_RESET.
    NeedsReset,
}

/// Virtqueue layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Ring {
    /// Split virtqueues.
    Split,
    /// Packed virtqueues.
    Packed,
}

/// Completion mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Busy-poll.
    Poll,
    /// Sleep until the used-buffer interrupt.
    Irq,
    /// Poll while busy, then sleep.
    Hybrid,
}

/// virtio-pci interrupt delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Irq {
    /// One MSI-X vector per queue, aimed at the queue's vCPU.
    Msix,
    /// The INTx line through the I/O APIC.
    Intx,
}

/// Device transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TransportKind {
    /// virtio-blk-pci on the `pc` machine.
    Pci,
    /// virtio-blk-device on `microvm`.
    Mmio,
}

/// Accelerator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// KVM if a probe boot works, TCG otherwise.
    Auto,
    /// KVM only.
    Kvm,
    /// TCG (multi-threaded) only.
    Tcg,
}

/// What backs the disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Disk {
    /// QEMU's null-co driver.
    Null,
    /// A temporary sparse file.
    Ram,
    /// A raw image file.
    File(PathBuf),
}

fn parse_disk(s: &str) -> Result<Disk, String> {
    match s {
        "null" => Ok(Disk::Null),
        "ram" => Ok(Disk::Ram),
        _ => match s.strip_prefix("file:") {
            Some("") | None => Err("expected null, ram or file:PATH".into()),
            Some(path) => Ok(Disk::File(path.into())),
        },
    }
}

/// Parses a byte count with an optional binary suffix (as the bench CLI does).
pub fn parse_bytes(s: &str) -> Option<u64> {
    vblk_report::units::parse_bytes(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks_parse() {
        assert_eq!(parse_disk("null"), Ok(Disk::Null));
        assert_eq!(
            parse_disk("file:/tmp/a.img"),
            Ok(Disk::File("/tmp/a.img".into()))
        );
        assert!(parse_disk("file:").is_err());
        assert!(parse_disk("nvme").is_err());
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("64m"), Some(64 << 20));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("1x"), None);
    }
}
