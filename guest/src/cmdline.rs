//! The kernel command line: fio-style job options (`rw=randrw bs=4k
//! iodepth=32 runtime=5 verify=1 ring=packed mode=poll queues=2`) and the
//! `virtio_mmio.device=SIZE@BASE:IRQ[:ID]` entries QEMU's microvm appends.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use vblk_report::workload::Rw;
use virtio_blk_mq::transport::mmio::parse_device;

/// Ring layout asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ring {
    /// Split virtqueues.
    Split,
    /// Packed virtqueues.
    Packed,
}

/// Completion mode asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Busy-poll.
    Poll,
    /// Sleep until the used-buffer interrupt.
    Irq,
    /// Poll, then sleep after a spin budget.
    Hybrid,
}

/// Interrupt delivery for virtio-pci.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqKind {
    /// MSI-X, one vector per queue (when the device has it).
    Msix,
    /// The legacy INTx line through the I/O APIC, shared by all queues.
    Intx,
}

/// One `virtio_mmio.device=` entry: the driver's parser reads them.
pub use virtio_blk_mq::transport::mmio::MmioDeviceSpec as MmioDevice;

/// The job and the environment, as the command line gives them.
#[derive(Clone, Debug)]
pub struct Options {
    /// Job name in the report.
    pub name: String,
    /// I/O pattern.
    pub rw: Rw,
    /// Percentage of reads for `randrw`.
    pub rwmixread: u8,
    /// Bytes per request.
    pub bs: u64,
    /// Requests in flight per queue.
    pub iodepth: u16,
    /// Seconds to run.
    pub runtime_ms: u64,
    /// Stamp writes, check reads.
    pub verify: bool,
    /// Requests each queue issues at most (fio's `number_ios`).
    pub number_ios: Option<u64>,
    /// Ring layout.
    pub ring: Ring,
    /// Completion mode.
    pub mode: Mode,
    /// Queues (one vCPU each).
    pub queues: u16,
    /// vCPUs QEMU was given (`-smp`), so the kernel knows how many to start.
    pub cpus: usize,
    /// Bytes of the disk the job uses (0: all of it).
    pub size: u64,
    /// Hybrid: empty checks before sleeping.
    pub spin_budget: u32,
    /// What backs the disk, for the report (`null`, `file`, ...).
    pub disk: String,
    /// virtio-pci interrupt delivery.
    pub irq: IrqKind,
    /// virtio-mmio devices.
    pub mmio: Vec<MmioDevice>,
    /// Only boot and start the CPUs, then report success (the runner's
    /// check that an accelerator works).
    pub probe: bool,
    /// Drive the disk through the Kerla kext (`virtio_blk_mq_kext`), loaded
    /// as Kerla's `boot_kernel` would, instead of directly.
    pub kext: bool,
    /// Ring entries per queue (`None`: twice the depth, within 256).
    pub queue_size: Option<u16>,
    /// Negotiate VIRTIO_F_EVENT_IDX when the device offers it.
    pub event_idx: bool,
    /// A fault to provoke on purpose (`inject=`), to test the guest's handling.
    pub inject: Option<Inject>,
}

/// Faults the guest can provoke in the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// `inject=needs_reset`: after a tenth of the runtime, queue 0 submits a
    /// read into guest-physical memory that does not exist. QEMU cannot map
    /// it, calls virtio_error(): the device sets DEVICE_NEEDS_RESET, raises
    /// a configuration-change interrupt and stops processing its queues.
    NeedsReset,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "vblk".into(),
            rw: Rw::Randread,
            rwmixread: 50,
            bs: 4096,
            iodepth: 32,
            runtime_ms: 5000,
            verify: false,
            number_ios: None,
            ring: Ring::Packed,
            mode: Mode::Poll,
            queues: 1,
            cpus: 1,
            size: 0,
            spin_budget: 256,
            disk: "null".into(),
            irq: IrqKind::Msix,
            mmio: Vec::new(),
            probe: false,
            kext: false,
            queue_size: None,
            event_idx: true,
            inject: None,
        }
    }
}

/// A byte count with an optional binary suffix (`512`, `4k`, `1m`, `1g`).
pub fn parse_bytes(text: &str) -> Option<u64> {
    vblk_report::units::parse_bytes(text).ok()
}

/// Seconds, fractions allowed, to milliseconds.
fn parse_seconds(text: &str) -> Option<u64> {
    let text = text.strip_suffix('s').unwrap_or(text);
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut ms = whole.checked_mul(1000)?;
    let mut scale = 100;
    for digit in fraction.chars().take(3) {
        ms += u64::from(digit.to_digit(10)?) * scale;
        scale /= 10;
    }
    (ms > 0).then_some(ms)
}

fn flag(value: &str) -> Option<bool> {
    match value {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Parses the whole command line; unknown keys are refused so a typo is not
/// silently ignored.
pub fn parse(cmdline: &str) -> Result<Options, String> {
    let mut options = Options::default();
    for word in cmdline.split_whitespace() {
        let (key, value) = word
            .split_once('=')
            .ok_or_else(|| format!("`{word}` is not KEY=VALUE"))?;
        let bad = || format!("bad value for {key}: `{value}`");
        match key {
            "name" => options.name = value.to_string(),
            "rw" | "readwrite" => options.rw = Rw::from_name(value).ok_or_else(bad)?,
            "rwmixread" => {
                options.rwmixread = value.parse().ok().filter(|p| *p <= 100).ok_or_else(bad)?
            }
            "bs" => {
                options.bs = parse_bytes(value)
                    .filter(|bs| bs.is_power_of_two() && (512..=1 << 20).contains(bs))
                    .ok_or_else(|| format!("bs={value}: a power of two from 512 to 1m"))?
            }
            "iodepth" => {
                options.iodepth = value
                    .parse()
                    .ok()
                    .filter(|d| (1..=512).contains(d))
                    .ok_or_else(bad)?
            }
            "runtime" => options.runtime_ms = parse_seconds(value).ok_or_else(bad)?,
            "verify" => options.verify = flag(value).ok_or_else(bad)?,
            "number_ios" => {
                options.number_ios = Some(value.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?)
            }
            "ring" => {
                options.ring = match value {
                    "split" => Ring::Split,
                    "packed" => Ring::Packed,
                    _ => return Err(bad()),
                }
            }
            "mode" => {
                options.mode = match value {
                    "poll" => Mode::Poll,
                    "irq" | "interrupt" => Mode::Irq,
                    "hybrid" => Mode::Hybrid,
                    _ => return Err(bad()),
                }
            }
            "irq" => {
                options.irq = match value {
                    "msix" => IrqKind::Msix,
                    "intx" => IrqKind::Intx,
                    _ => return Err(bad()),
                }
            }
            "queues" | "numjobs" => {
                options.queues = value.parse().ok().filter(|q| *q >= 1).ok_or_else(bad)?
            }
            "cpus" => options.cpus = value.parse().ok().filter(|c| *c >= 1).ok_or_else(bad)?,
            "size" => options.size = parse_bytes(value).ok_or_else(bad)?,
            "spin_budget" => options.spin_budget = value.parse().map_err(|_| bad())?,
            "disk" => options.disk = value.to_string(),
            "probe" => options.probe = flag(value).ok_or_else(bad)?,
            "kext" => options.kext = flag(value).ok_or_else(bad)?,
            "qsize" => {
                options.queue_size = Some(
                    value
                        .parse()
                        .ok()
                        .filter(|n| (1..=32768).contains(n))
                        .ok_or_else(bad)?,
                )
            }
            "event_idx" => options.event_idx = flag(value).ok_or_else(bad)?,
            "inject" => {
                options.inject = match value {
                    "needs_reset" => Some(Inject::NeedsReset),
                    _ => return Err(bad()),
                }
            }
            "virtio_mmio.device" => options.mmio.push(parse_device(value).map_err(|_| bad())?),
            _ => return Err(format!("unknown option `{key}`")),
        }
    }
    if options.verify && options.disk == "null" {
        return Err("verify=1 needs a disk that keeps data (disk=null keeps none)".into());
    }
    Ok(options)
}
