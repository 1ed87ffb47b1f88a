//! Booting the built Kerla under QEMU (TCG, two vCPUs: Kerla starts one)
//! with a virtio-blk device on a raw file, and reading what it printed.
//!
//! Kerla needs a virtio-net device (it panics "no ethernet drivers"
//! otherwise, even with `dhcp=off`), so every machine has one. Kerla's
//! multiboot path gets no `virtio_mmio.device=` from QEMU's microvm, so the
//! runner passes them itself: microvm hands out its virtio-mmio slots from
//! the top, 0x200 bytes apart from 0xfeb00000, interrupt 5 + slot.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::args::TransportKind;
use crate::qemu::{escape, machine_args, run_qemu_until, HEADLESS};

/// QEMU's exit code after Kerla halts through reboot(2): it writes 0x10 to
/// the isa-debug-exit port, which QEMU turns into `(0x10 << 1) | 1`.
pub const HALTED: i32 = 0x21;
/// What the init script prints once it runs (the kernel survived the
/// self-test and booted user space).
pub const INIT_MARKER: &str = "vblk-kerla: init reached";

/// One boot of the matrix.
#[derive(Clone, Copy, Debug)]
pub struct BootCase {
    /// Its name in the summary.
    pub name: &'static str,
    /// Where the disk sits: virtio-blk-pci on `pc`, virtio-blk-device
    /// (virtio-mmio version 2) on `microvm`.
    pub bus: TransportKind,
    /// `packed=on` (else split rings).
    pub packed: bool,
    /// The self-test's stamp for this boot.
    pub generation: u32,
}

/// The boots `cargo xtask kerla` runs: the packed 2-queue PCI device the
/// issue names, split rings, and virtio-mmio.
pub const CASES: [BootCase; 3] = [
    BootCase {
        name: "pci-packed",
        bus: TransportKind::Pci,
        packed: true,
        generation: 0x4b52_0001,
    },
    BootCase {
        name: "pci-split",
        bus: TransportKind::Pci,
        packed: false,
        generation: 0x4b52_0002,
    },
    BootCase {
        name: "mmio-packed",
        bus: TransportKind::Mmio,
        packed: true,
        generation: 0x4b52_0003,
    },
];

/// microvm's virtio-mmio slot `slot` (from the top) as Kerla's command line wants it.
fn mmio_slot(slot: u32) -> String {
    let top = 7 - slot;
    format!(
        "virtio_mmio.device=512@0x{:x}:{}",
        0xfeb0_0000u32 + top * 0x200,
        5 + top
    )
}

/// The kernel command line of a boot.
pub fn cmdline(case: &BootCase) -> String {
    let mut line = format!("dhcp=off vblk.selftest={}", case.generation);
    if case.bus == TransportKind::Mmio {
        // The network device is plugged first, the disk second.
        line = format!("{} {} {line}", mmio_slot(0), mmio_slot(1));
    }
    line
}

/// QEMU's arguments for a boot.
pub fn qemu_args(case: &BootCase, kernel: &Path, disk: &Path, queues: u16) -> Vec<String> {
    let packed = if case.packed { "on" } else { "off" };
    let disk = escape(&disk.to_string_lossy());
    let mut args: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(|s| s.to_string()));
    push(machine_args(case.bus));
    push(&["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m", "1024"]);
    push(HEADLESS);
    push(&[
        "-device",
        "isa-debug-exit,iobase=0x501,iosize=2",
        "-netdev",
        "user,id=net0",
    ]);
    let (net, blk) = match case.bus {
        TransportKind::Pci => (
            "virtio-net-pci,netdev=net0,disable-legacy=on".to_string(),
            format!(
                "virtio-blk-pci,drive=d0,disable-legacy=on,disable-modern=off,num-queues={queues},packed={packed}"
            ),
        ),
        TransportKind::Mmio => (
            "virtio-net-device,netdev=net0".to_string(),
            format!("virtio-blk-device,drive=d0,num-queues={queues},packed={packed}"),
        ),
    };
    push(&[
        "-device",
        &net,
        "-blockdev",
        &format!("driver=file,filename={disk},node-name=f0"),
        "-blockdev",
        "driver=raw,file=f0,node-name=d0",
        "-device",
        &blk,
        "-kernel",
        &kernel.to_string_lossy(),
        "-append",
        &cmdline(case),
    ]);
    args
}

/// Kerla's console with its colour codes removed.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What a boot printed, read.
#[derive(Debug, Default)]
pub struct Console {
    /// The kext was loaded.
    pub kext_loaded: bool,
    /// The prober's line for the disk (`virtio-blk-mq kext: ...`).
    pub disk_line: Option<String>,
    /// Kerla's kernel registered a block driver.
    pub registered: bool,
    /// `vblk-selftest: PASS ...` lines.
    pub passed: Vec<String>,
    /// `vblk-selftest: FAIL ...` lines.
    pub failed: Vec<String>,
    /// The init script ran.
    pub init_reached: bool,
    /// Kerla panicked (the line).
    pub panic: Option<String>,
}

/// Reads the console lines of a boot.
pub fn read_console(lines: &[String]) -> Console {
    let mut console = Console::default();
    for raw in lines {
        let line = strip_ansi(raw);
        if line.contains("kext: Loading virtio_blk_mq_kext") {
            console.kext_loaded = true;
        }
        if let Some(at) = line.find("virtio-blk-mq kext: virtio-blk-") {
            console.disk_line = Some(line[at..].to_string());
        }
        if line.contains("block: registered virtio-blk-") {
            console.registered = true;
        }
        if let Some(at) = line.find("vblk-selftest: PASS") {
            console.passed.push(line[at..].to_string());
        }
        if let Some(at) = line.find("vblk-selftest: FAIL") {
            console.failed.push(line[at..].to_string());
        }
        if line.contains(INIT_MARKER) {
            console.init_reached = true;
        }
        if line.contains("panicked at") && console.panic.is_none() {
            console.panic = Some(line.trim().to_string());
        }
    }
    console
}

/// A finished boot.
pub struct Booted {
    /// QEMU's console, line by line.
    pub lines: Vec<String>,
    /// QEMU's exit code (`None`: killed at the timeout).
    pub code: Option<i32>,
    /// How long it ran.
    pub time: Duration,
}

/// Boots `case` on `disk` (created zeroed, `size` bytes) and waits for it
/// to halt or time out.
pub fn boot(
    case: &BootCase,
    kernel: &Path,
    disk: &Path,
    size: u64,
    timeout: Duration,
    echo: bool,
) -> Result<Booted, String> {
    let file = std::fs::File::create(disk)
        .map_err(|e| format!("cannot create {}: {e}", disk.display()))?;
    file.set_len(size)
        .map_err(|e| format!("cannot size {}: {e}", disk.display()))?;
    drop(file);
    let start = Instant::now();
    // After a panic Kerla starts boot2dump, which looks for a GPT disk and
    // then hangs: stop there rather than at the timeout.
    let run = run_qemu_until(&qemu_args(case, kernel, disk, 2), timeout, echo, |line| {
        line.contains("booting boot2dump")
    })?;
    Ok(Booted {
        lines: run.lines,
        code: run.code,
        time: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_are_stripped() {
        assert_eq!(
            strip_ansi("\u{1b}[36mblock: registered x\u{1b}[0m"),
            "block: registered x"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn microvm_slots_count_down_from_the_top() {
        assert_eq!(mmio_slot(0), "virtio_mmio.device=512@0xfeb00e00:12");
        assert_eq!(mmio_slot(1), "virtio_mmio.device=512@0xfeb00c00:11");
        let mmio = cmdline(&CASES[2]);
        assert!(mmio.starts_with("virtio_mmio.device=512@0xfeb00e00:12 "));
        assert!(cmdline(&CASES[0]).ends_with("vblk.selftest=1263665153"));
    }

    #[test]
    fn the_console_is_read_for_each_step() {
        let lines: Vec<String> = [
            "\u{1b}[36mkext: Loading virtio_blk_mq_kext...\u{1b}[0m",
            "[INFO] virtio-blk-mq kext: virtio-blk-pci 00:04: 131072 sectors, Packed ring, 2 queues",
            "block: registered virtio-blk-pci 00:04",
            "vblk-selftest: PASS virtio-blk-pci 00:04: sectors ...",
            "vblk-kerla: init reached",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let console = read_console(&lines);
        assert!(console.kext_loaded && console.registered && console.init_reached);
        assert_eq!(console.passed.len(), 1);
        assert!(console.failed.is_empty() && console.panic.is_none());
        assert!(console.disk_line.unwrap().contains("Packed ring"));
        let panicked = read_console(&["panicked at kernel/x.rs:1:1:".to_string()]);
        assert!(panicked.panic.is_some());
    }
}
