//! Building the guest and running it in QEMU with a timeout.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::args::{parse_bytes, Accel, Disk, GuestArgs, Irq, Mode, Ring, TransportKind};

const QEMU: &str = "qemu-system-x86_64";
/// How long a KVM probe boot may take (one that works takes well under a
/// second; a broken KVM tends to hang rather than fail).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// How the guest run ended.
pub enum Outcome {
    /// The guest ran the job and every check passed.
    Passed,
    /// The guest ran the job and it failed.
    Failed,
    /// Anything else: the guest could not run the job, crashed, or hung.
    Broken,
}

impl Outcome {
    /// The runner's exit status.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Outcome::Passed => ExitCode::SUCCESS,
            Outcome::Failed | Outcome::Broken => ExitCode::FAILURE,
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

/// Builds the guest kernel (release) and returns its path.
pub fn build_guest() -> Result<PathBuf, String> {
    let guest = repo_root().join("guest");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(guest.join("Cargo.toml"))
        .current_dir(&guest)
        .status()
        .map_err(|e| format!("cannot run cargo to build the guest: {e}"))?;
    if !status.success() {
        return Err("building the guest kernel failed".into());
    }
    Ok(guest.join("target/release/vblk-guest"))
}

fn qemu_present() -> Result<(), String> {
    match Command::new(QEMU).arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(format!(
            "{QEMU} --version failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(e) => Err(format!(
            "{QEMU} cannot run ({e}); install it: apt-get install qemu-system-x86"
        )),
    }
}

/// QEMU option values treat ',' as a separator; a literal one is doubled.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// Seconds (fractions allowed) from the --runtime text.
fn runtime_seconds(text: &str) -> Result<f64, String> {
    let number = text.strip_suffix('s').unwrap_or(text);
    match number.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Ok(s),
        _ => Err(format!(
            "--runtime {text}: not a positive number of seconds"
        )),
    }
}

/// A disk image that exists for the run, removed afterwards if we made it.
struct DiskImage {
    path: Option<PathBuf>,
    remove: bool,
}

impl Drop for DiskImage {
    fn drop(&mut self) {
        if let (true, Some(path)) = (self.remove, &self.path) {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn disk_image(args: &GuestArgs, size: u64) -> Result<DiskImage, String> {
    match &args.disk {
        Disk::Null => Ok(DiskImage {
            path: None,
            remove: false,
        }),
        Disk::File(path) => {
            if !path.exists() {
                return Err(format!("--disk file:{}: no such file", path.display()));
            }
            Ok(DiskImage {
                path: Some(path.clone()),
                remove: false,
            })
        }
        Disk::Ram => {
            let path = std::env::temp_dir().join(format!("vblk-guest-{}.img", std::process::id()));
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            file.set_len(size)
                .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
            Ok(DiskImage {
                path: Some(path),
                remove: true,
            })
        }
    }
}

/// The kernel command line: the job, in fio's option names.
fn kernel_cmdline(args: &GuestArgs, smp: u16, runtime: f64) -> String {
    let disk = match args.disk {
        Disk::Null => "null",
        Disk::Ram => "ram",
        Disk::File(_) => "file",
    };
    let mut cmdline = format!(
        "name={} rw={} rwmixread={} bs={} iodepth={} runtime={runtime} verify={} ring={} mode={} \
         irq={} queues={} cpus={smp} disk={disk}",
        args.name,
        args.rw,
        args.rwmixread,
        args.bs,
        args.iodepth,
        u8::from(args.verify),
        match args.ring {
            Ring::Split => "split",
            Ring::Packed => "packed",
        },
        match args.mode {
            Mode::Poll => "poll",
            Mode::Irq => "irq",
            Mode::Hybrid => "hybrid",
        },
        match args.irq {
            Irq::Msix => "msix",
            Irq::Intx => "intx",
        },
        args.queues,
    );
    if let Disk::File(_) = args.disk {
        // A file's whole size is the job's region; nothing to pass.
    } else {
        cmdline.push_str(&format!(" size={}", args.size));
    }
    if args.kext {
        cmdline.push_str(" kext=1");
    }
    cmdline
}

/// QEMU's arguments for the machine, the disk and the kernel.
fn qemu_args(
    args: &GuestArgs,
    kernel: &Path,
    cmdline: &str,
    image: &DiskImage,
    size: u64,
    smp: u16,
    kvm: bool,
) -> Vec<String> {
    let mut qemu: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| qemu.extend(items.iter().map(|s| s.to_string()));
    match args.transport {
        TransportKind::Pci => push(&["-M", "pc"]),
        // microvm's virtio-mmio defaults to the legacy (version 1) layout.
        TransportKind::Mmio => push(&[
            "-M",
            "microvm,acpi=off",
            "-global",
            "virtio-mmio.force-legacy=false",
        ]),
    }
    if kvm {
        push(&["-accel", "kvm", "-cpu", "host"]);
    } else {
        push(&["-accel", "tcg,thread=multi"]);
    }
    let smp = smp.to_string();
    push(&[
        "-smp",
        &smp,
        "-m",
        &args.memory,
        "-display",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-serial",
        "stdio",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
    ]);
    match &image.path {
        None => push(&[
            "-blockdev",
            &format!("driver=null-co,node-name=d0,size={size},read-zeroes=on"),
        ]),
        Some(path) => push(&[
            "-blockdev",
            &format!(
                "driver=file,filename={},node-name=f0",
                escape(&path.to_string_lossy())
            ),
            "-blockdev",
            "driver=raw,file=f0,node-name=d0",
        ]),
    }
    let packed = if args.ring == Ring::Packed {
        "on"
    } else {
        "off"
    };
    // The kext asks for one queue per CPU plus one for its block driver.
    let num_queues = args.queues + u16::from(args.kext);
    let device = match args.transport {
        TransportKind::Pci => format!(
            "virtio-blk-pci,drive=d0,disable-legacy=on,disable-modern=off,num-queues={num_queues},packed={packed}"
        ),
        TransportKind::Mmio => {
            format!("virtio-blk-device,drive=d0,num-queues={num_queues},packed={packed}")
        }
    };
    push(&[
        "-device",
        &device,
        "-kernel",
        &kernel.to_string_lossy(),
        "-append",
        cmdline,
    ]);
    qemu
}

/// What one QEMU run printed and how it ended.
struct Run {
    /// QEMU's exit code; `None` when it was killed (timeout) or by a signal.
    code: Option<i32>,
    timed_out: bool,
    lines: Vec<String>,
}

/// Runs QEMU, copying the guest's console to stdout as it comes (when
/// `echo`; otherwise QEMU's own messages are dropped too), killing it after
/// `timeout`.
fn run_qemu(qemu: &[String], timeout: Duration, echo: bool) -> Result<Run, String> {
    let mut child = Command::new(QEMU)
        .args(qemu)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(if echo {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let (lines_tx, lines_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The guest's serial console ends lines with CR LF.
            let line = line.trim_end_matches('\r').to_string();
            if echo {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    Ok(Run {
        code: if timed_out { None } else { status.code() },
        timed_out,
        lines: lines_rx.try_iter().collect(),
    })
}

/// Whether KVM works: /dev/kvm opens and a probe boot of the guest passes.
fn kvm_works(kernel: &Path, args: &GuestArgs) -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        return false;
    }
    let mut probe_args = args.clone();
    probe_args.disk = Disk::Null;
    let image = DiskImage {
        path: None,
        remove: false,
    };
    let qemu = qemu_args(&probe_args, kernel, "probe=1", &image, 1 << 20, 1, true);
    matches!(
        run_qemu(&qemu, PROBE_TIMEOUT, false),
        Ok(Run { code: Some(1), .. })
    )
}

/// Builds the guest, runs the job, reports how it ended.
pub fn run(args: &GuestArgs) -> Result<Outcome, String> {
    let runtime = runtime_seconds(&args.runtime)?;
    let size = parse_bytes(&args.size)
        .filter(|s| *s > 0 && s % 512 == 0)
        .ok_or_else(|| format!("--size {}: a non-zero multiple of 512 bytes", args.size))?;
    if args.verify && args.disk == Disk::Null {
        return Err("--verify needs a disk that keeps data: --disk ram or --disk file:PATH".into());
    }
    let smp = args.smp.unwrap_or(args.queues);
    if smp < args.queues {
        return Err(format!(
            "--smp {smp} is fewer vCPUs than --queues {}: each queue needs its own vCPU",
            args.queues
        ));
    }
    qemu_present()?;
    let kernel = build_guest()?;
    let kvm = match args.accel {
        Accel::Tcg => false,
        Accel::Kvm => true,
        Accel::Auto => kvm_works(&kernel, args),
    };
    eprintln!(
        "xtask guest: {} with {} vCPUs, {} transport",
        if kvm { "KVM" } else { "TCG (no usable KVM)" },
        smp,
        match args.transport {
            TransportKind::Pci => "virtio-pci",
            TransportKind::Mmio => "virtio-mmio",
        }
    );
    let image = disk_image(args, size)?;
    let cmdline = kernel_cmdline(args, smp, runtime);
    let qemu = qemu_args(args, &kernel, &cmdline, &image, size, smp, kvm);
    let timeout = Duration::from_secs(args.timeout.unwrap_or(runtime.ceil() as u64 + 60));
    let run = run_qemu(&qemu, timeout, true)?;
    let reported = run.lines.iter().any(|l| l.starts_with("{\"fio version\""));
    let outcome = match run.code {
        _ if run.timed_out => {
            eprintln!(
                "xtask guest: FAILED: the guest did not finish within {} s and was killed \
                 (hung guest?)",
                timeout.as_secs()
            );
            Outcome::Broken
        }
        Some(1) if reported => Outcome::Passed,
        Some(1) => {
            eprintln!("xtask guest: FAILED: the guest exited without printing its report");
            Outcome::Broken
        }
        Some(3) => {
            eprintln!("xtask guest: FAILED: the job ran and failed (errors or wrong data)");
            Outcome::Failed
        }
        Some(5) => {
            eprintln!(
                "xtask guest: FAILED: the guest could not run the job (see its console above)"
            );
            Outcome::Broken
        }
        Some(code) => {
            eprintln!(
                "xtask guest: FAILED: QEMU exited with status {code} (not through isa-debug-exit)"
            );
            Outcome::Broken
        }
        None => {
            eprintln!("xtask guest: FAILED: QEMU was killed by a signal");
            Outcome::Broken
        }
    };
    Ok(outcome)
}
