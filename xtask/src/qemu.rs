//! Building the guest and running it in QEMU with a timeout.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vblk_report::blkdebug;

use crate::args::{parse_bytes, Accel, Disk, GuestArgs, Inject, Irq, Mode, Ring, TransportKind};

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

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
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

/// No display and no default devices; the serial console on stdout; exit
/// instead of rebooting.
pub const HEADLESS: &[&str] = &[
    "-display",
    "none",
    "-nodefaults",
    "-no-reboot",
    "-serial",
    "stdio",
];

/// The machine for a transport: `pc` for virtio-pci, `microvm` with
/// modern virtio-mmio for virtio-mmio.
pub fn machine_args(transport: TransportKind) -> &'static [&'static str] {
    match transport {
        TransportKind::Pci => &["-M", "pc"],
        // microvm's virtio-mmio defaults to the legacy (version 1) layout.
        TransportKind::Mmio => &[
            "-M",
            "microvm,acpi=off",
            "-global",
            "virtio-mmio.force-legacy=false",
        ],
    }
}

/// QEMU option values treat ',' as a separator; a literal one is doubled.
pub fn escape(value: &str) -> String {
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
    if let Some(n) = args.number_ios {
        cmdline.push_str(&format!(" number_ios={n}"));
    }
    if let Some(size) = args.queue_size {
        cmdline.push_str(&format!(" qsize={size}"));
    }
    if args.no_event_idx {
        cmdline.push_str(" event_idx=0");
    }
    if let Some(Inject::NeedsReset) = args.inject {
        cmdline.push_str(" inject=needs_reset");
    }
    cmdline
}

/// How QEMU boots the machine: a kernel image (our PVH guest or a Linux
/// bzImage), an optional initramfs, the kernel command line.
pub struct Boot<'a> {
    /// `-kernel`.
    pub kernel: &'a Path,
    /// `-initrd`.
    pub initrd: Option<&'a Path>,
    /// `-append`.
    pub append: &'a str,
}

/// QEMU's arguments for the machine, the disk and the kernel: the one place
/// the command line is built, for our guest and for the Linux guest alike, so
/// the two differ only in `boot`.
fn qemu_args(
    args: &GuestArgs,
    boot: &Boot<'_>,
    image: &DiskImage,
    size: u64,
    smp: u16,
    kvm: bool,
) -> Vec<String> {
    let mut qemu: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| qemu.extend(items.iter().map(|s| s.to_string()));
    push(machine_args(args.transport));
    if kvm {
        push(&["-accel", "kvm", "-cpu", "host"]);
    } else {
        push(&["-accel", "tcg,thread=multi"]);
    }
    // TCG gives the guest's barriers to the host only when the machine may
    // have more than one CPU (CF_PARALLEL); the device's threads need them.
    let maxcpus = args
        .maxcpus
        .unwrap_or(if kvm { smp } else { smp.max(2) })
        .max(smp);
    let smp = format!("{smp},maxcpus={maxcpus}");
    push(&["-smp", &smp, "-m", &args.memory]);
    push(HEADLESS);
    push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
    // The device's drive is node d0: the disk, or blkdebug over it (b0).
    let filtered = !args.blkdebug_error.is_empty();
    let disk_node = if filtered { "b0" } else { "d0" };
    match &image.path {
        None => push(&[
            "-blockdev",
            &format!("driver=null-co,node-name={disk_node},size={size},read-zeroes=on"),
        ]),
        Some(path) => push(&[
            "-blockdev",
            &format!(
                "driver=file,filename={},node-name=f0",
                escape(&path.to_string_lossy())
            ),
            "-blockdev",
            &format!("driver=raw,file=f0,node-name={disk_node}"),
        ]),
    }
    if filtered {
        push(&[
            "-blockdev",
            &format!(
                "driver=blkdebug,node-name=d0,image=b0,{}",
                blkdebug::inject_error_options(&args.blkdebug_error)
            ),
        ]);
    }
    let packed = if args.ring == Ring::Packed {
        "on"
    } else {
        "off"
    };
    // The kext asks for one queue per CPU plus one for its block driver;
    // an injector has a queue of its own.
    let num_queues = args
        .device_queues
        .unwrap_or(args.queues + u16::from(args.kext) + u16::from(args.inject.is_some()));
    let mut device = match args.transport {
        TransportKind::Pci => format!(
            "virtio-blk-pci,drive=d0,disable-legacy=on,disable-modern=off,num-queues={num_queues},packed={packed}"
        ),
        TransportKind::Mmio => format!(
            "virtio-blk-device,drive=d0,num-queues={num_queues},packed={packed}"
        ),
    };
    if args.iothread {
        push(&["-object", "iothread,id=io0"]);
        device.push_str(",iothread=io0");
    }
    if filtered {
        // QEMU merges adjacent requests into one I/O; an injected error
        // would then fail every request merged with the one it aims at.
        device.push_str(",request-merging=off");
    }
    push(&[
        "-device",
        &device,
        "-kernel",
        &boot.kernel.to_string_lossy(),
    ]);
    if let Some(initrd) = boot.initrd {
        push(&["-initrd", &initrd.to_string_lossy()]);
    }
    push(&["-append", boot.append]);
    qemu
}

/// What one QEMU run printed and how it ended.
pub struct Run {
    /// QEMU's exit code; `None` when it was killed (timeout) or by a signal.
    pub code: Option<i32>,
    /// Killed after the timeout.
    pub timed_out: bool,
    /// The console, line by line.
    pub lines: Vec<String>,
    /// When each line arrived, since QEMU started (host time).
    pub arrived: Vec<Duration>,
    /// QEMU's own messages (its stderr: `virtio_error()` reports, warnings).
    pub stderr: Vec<String>,
    /// The stderr lines were copied to ours as they came.
    pub echoed: bool,
}

/// Runs QEMU, copying the guest's console to stdout and QEMU's stderr to
/// ours as they come (when `echo`; either way both are kept in the
/// [`Run`]), killing it after `timeout`.
pub fn run_qemu(qemu: &[String], timeout: Duration, echo: bool) -> Result<Run, String> {
    run_qemu_until(qemu, timeout, echo, |_| false)
}

/// [`run_qemu`], also killing QEMU once the console prints a line for
/// which `stop` is true (a kernel that panicked and will never exit);
/// that run reports `timed_out: false` and no exit code.
pub fn run_qemu_until(
    qemu: &[String],
    timeout: Duration,
    echo: bool,
    stop: impl Fn(&str) -> bool + Send + 'static,
) -> Result<Run, String> {
    let mut child = Command::new(QEMU)
        .args(qemu)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let stderr = child.stderr.take().expect("stderr is piped");
    let errors = std::thread::spawn(move || {
        let mut kept = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("{line}");
            }
            kept.push(line);
        }
        kept
    });
    let (lines_tx, lines_rx) = mpsc::channel();
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_seen = stopped.clone();
    let start = Instant::now();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The guest's serial console ends lines with CR LF.
            let line = line.trim_end_matches('\r').to_string();
            if stop(&line) {
                stop_seen.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if echo {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
                let _ = out.flush();
            }
            if lines_tx.send((start.elapsed(), line)).is_err() {
                break;
            }
        }
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = child.kill();
            break child.wait().map_err(|e| e.to_string())?;
        }
        if start.elapsed() >= timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = reader.join();
    let (arrived, lines) = lines_rx.try_iter().unzip();
    let stderr = errors.join().unwrap_or_default();
    Ok(Run {
        code: if timed_out || stopped.load(std::sync::atomic::Ordering::Relaxed) {
            None
        } else {
            status.code()
        },
        timed_out,
        lines,
        arrived,
        stderr,
        echoed: echo,
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
    probe_args.iothread = false;
    probe_args.device_queues = None;
    probe_args.blkdebug_error.clear();
    let image = DiskImage {
        path: None,
        remove: false,
    };
    let boot = Boot {
        kernel,
        initrd: None,
        append: "probe=1",
    };
    let qemu = qemu_args(&probe_args, &boot, &image, 1 << 20, 1, true);
    matches!(
        run_qemu(&qemu, PROBE_TIMEOUT, false),
        Ok(Run { code: Some(1), .. })
    )
}

/// One run's machine, resolved from the flags: everything of the QEMU line
/// except how it boots.
pub struct Machine {
    args: GuestArgs,
    /// Seconds the job runs.
    pub runtime: f64,
    /// vCPUs.
    pub smp: u16,
    /// KVM (else TCG).
    pub kvm: bool,
    size: u64,
    image: DiskImage,
    /// Appended to every QEMU line (e.g. a `-cpu` that overrides the
    /// default).
    pub extra_args: Vec<String>,
}

impl Machine {
    /// Checks the flags and creates a ram disk's file; the accelerator is
    /// TCG until [`Machine::choose_accel`].
    pub fn new(args: &GuestArgs) -> Result<Machine, String> {
        let runtime = runtime_seconds(&args.runtime)?;
        let size = parse_bytes(&args.size)
            .filter(|s| *s > 0 && s % 512 == 0)
            .ok_or_else(|| format!("--size {}: a non-zero multiple of 512 bytes", args.size))?;
        if args.verify && args.disk == Disk::Null {
            return Err(
                "--verify needs a disk that keeps data: --disk ram or --disk file:PATH".into(),
            );
        }
        let injector = u16::from(args.inject.is_some());
        let smp = args.smp.unwrap_or(args.queues + injector);
        if smp < args.queues + injector {
            return Err(format!(
                "--smp {smp} is fewer vCPUs than --queues {}{}: each queue needs its own vCPU",
                args.queues,
                if injector > 0 {
                    " plus the injector's"
                } else {
                    ""
                }
            ));
        }
        if args.device_queues.is_some_and(|n| n < args.queues) {
            return Err(format!(
                "--device-queues {} is fewer than --queues {}",
                args.device_queues.unwrap_or_default(),
                args.queues
            ));
        }
        qemu_present()?;
        Ok(Machine {
            args: args.clone(),
            runtime,
            smp,
            kvm: false,
            size,
            image: disk_image(args, size)?,
            extra_args: Vec::new(),
        })
    }

    /// Chooses the accelerator: `--accel auto` probes KVM by booting
    /// `probe_kernel` (our guest), so every runner decides alike.
    pub fn choose_accel(&mut self, probe_kernel: &Path) {
        self.kvm = match self.args.accel {
            Accel::Tcg => false,
            Accel::Kvm => true,
            Accel::Auto => kvm_works(probe_kernel, &self.args),
        };
    }

    /// QEMU's arguments for this machine booting `boot`.
    pub fn qemu_args(&self, boot: &Boot<'_>) -> Vec<String> {
        let mut args = qemu_args(&self.args, boot, &self.image, self.size, self.smp, self.kvm);
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// One line for the log: accelerator, vCPUs, transport.
    pub fn describe(&self) -> String {
        format!(
            "{} with {} vCPUs, {} transport{}",
            if self.kvm {
                "KVM"
            } else {
                "TCG (no usable KVM)"
            },
            self.smp,
            match self.args.transport {
                TransportKind::Pci => "virtio-pci",
                TransportKind::Mmio => "virtio-mmio",
            },
            if self.args.iothread {
                ", device on an iothread"
            } else {
                ""
            }
        )
    }
}

/// Reads how a guest run ended from the isa-debug-exit status (our guest's
/// codes, which the Linux guest's init uses too), explaining failures on
/// stderr as `who: FAILED: ...`, followed by QEMU's own messages.
pub fn outcome(who: &str, run: &Run, reported: bool, timeout: Duration) -> Outcome {
    let outcome = judge(who, run, reported, timeout);
    if !matches!(outcome, Outcome::Passed) {
        show_stderr(who, run);
    }
    outcome
}

/// QEMU's stderr after a failure (`virtio_error()` explains a broken device
/// there); when it was echoed already, only where to look.
fn show_stderr(who: &str, run: &Run) {
    if run.stderr.is_empty() {
        eprintln!("{who}: QEMU wrote nothing on its stderr");
    } else if run.echoed {
        eprintln!("{who}: QEMU's stderr is above ({} lines)", run.stderr.len());
    } else {
        eprintln!("{who}: QEMU's stderr:");
        for line in run.stderr.iter().rev().take(40).rev() {
            eprintln!("    {line}");
        }
    }
}

fn judge(who: &str, run: &Run, reported: bool, timeout: Duration) -> Outcome {
    match run.code {
        _ if run.timed_out => {
            eprintln!(
                "{who}: FAILED: the guest did not finish within {} s and was killed \
                 (hung guest?)",
                timeout.as_secs()
            );
            Outcome::Broken
        }
        Some(1) if reported => Outcome::Passed,
        Some(1) => {
            eprintln!("{who}: FAILED: the guest exited without printing its report");
            Outcome::Broken
        }
        Some(3) => {
            eprintln!("{who}: FAILED: the job ran and failed (errors or wrong data)");
            Outcome::Failed
        }
        Some(5) => {
            eprintln!("{who}: FAILED: the guest could not run the job (see its console above)");
            Outcome::Broken
        }
        Some(code) => {
            eprintln!("{who}: FAILED: QEMU exited with status {code} (not through isa-debug-exit)");
            Outcome::Broken
        }
        None => {
            eprintln!("{who}: FAILED: QEMU was killed by a signal");
            Outcome::Broken
        }
    }
}

/// Our guest's report line: fio's JSON schema on one line.
pub fn report_line(lines: &[String]) -> Option<&str> {
    lines
        .iter()
        .map(String::as_str)
        .find(|l| l.starts_with("{\"fio version\""))
}

/// Runs our guest (already built) on `machine`; `echo` copies its console to
/// stdout. Returns the outcome and the console lines.
pub fn run_guest(
    args: &GuestArgs,
    machine: &Machine,
    kernel: &Path,
    echo: bool,
) -> Result<(Outcome, Vec<String>), String> {
    let (outcome, run) = run_guest_capture(args, machine, kernel, echo)?;
    Ok((outcome, run.lines))
}

/// [`run_guest`], returning the whole [`Run`] (QEMU's stderr too).
pub fn run_guest_capture(
    args: &GuestArgs,
    machine: &Machine,
    kernel: &Path,
    echo: bool,
) -> Result<(Outcome, Run), String> {
    let cmdline = kernel_cmdline(args, machine.smp, machine.runtime);
    let boot = Boot {
        kernel,
        initrd: None,
        append: &cmdline,
    };
    let qemu = machine.qemu_args(&boot);
    let timeout = Duration::from_secs(args.timeout.unwrap_or(machine.runtime.ceil() as u64 + 60));
    let run = run_qemu(&qemu, timeout, echo)?;
    let reported = report_line(&run.lines).is_some();
    let outcome = outcome("xtask guest", &run, reported, timeout);
    Ok((outcome, run))
}

/// Caps `--queues` at `--smp`, the way Linux's virtio_blk sets up no more
/// request queues than there are CPUs: the guest runs one queue per vCPU,
/// and the device keeps the `num-queues` the flags gave it. Returns a notice
/// when it changed the job.
pub fn cap_queues_at_vcpus(args: &mut GuestArgs) -> Option<String> {
    let smp = args.smp.filter(|&smp| smp < args.queues)?;
    let asked = args.queues;
    let device = *args
        .device_queues
        .get_or_insert(asked + u16::from(args.kext));
    args.queues = smp;
    Some(format!(
        "--queues {asked} capped at --smp {smp}: one queue per vCPU, as Linux does \
         (the device keeps num-queues={device})"
    ))
}

/// Builds the guest, runs the job, reports how it ended.
pub fn run(args: &GuestArgs) -> Result<Outcome, String> {
    let mut args = args.clone();
    if let Some(notice) = cap_queues_at_vcpus(&mut args) {
        eprintln!("xtask guest: {notice}");
    }
    let mut machine = Machine::new(&args)?;
    let kernel = build_guest()?;
    machine.choose_accel(&kernel);
    eprintln!("xtask guest: {}", machine.describe());
    Ok(run_guest(&args, &machine, &kernel, true)?.0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::args::{Cli, Task};

    fn guest_args(flags: &[&str]) -> GuestArgs {
        let cli = Cli::parse_from([&["cargo xtask", "guest"][..], flags].concat());
        let Task::Guest(args) = cli.task else {
            unreachable!("parsed as guest")
        };
        args
    }

    fn line(flags: &[&str], image: Option<&str>) -> Vec<String> {
        let args = guest_args(flags);
        let image = DiskImage {
            path: image.map(PathBuf::from),
            remove: false,
        };
        let boot = Boot {
            kernel: Path::new("/k"),
            initrd: None,
            append: "",
        };
        qemu_args(&args, &boot, &image, 1 << 20, 1, false)
    }

    #[test]
    fn blkdebug_rules_wrap_the_disk_and_turn_request_merging_off() {
        let plain = line(&[], Some("/d.img"));
        assert!(plain.contains(&"driver=raw,file=f0,node-name=d0".to_string()));
        assert!(!plain
            .iter()
            .any(|a| a.contains("blkdebug") || a.contains("merging")));

        let rules = [
            "--blkdebug-error",
            "read:8",
            "--blkdebug-error",
            "write:16:once",
        ];
        let qemu = line(&rules, Some("/d.img"));
        assert!(qemu.contains(&"driver=raw,file=f0,node-name=b0".to_string()));
        let blkdebug = qemu
            .iter()
            .find(|a| a.starts_with("driver=blkdebug,node-name=d0,image=b0,"))
            .expect("a blkdebug node named d0");
        assert!(blkdebug.ends_with(&blkdebug::inject_error_options(
            &guest_args(&rules).blkdebug_error
        )));
        let device = qemu
            .iter()
            .find(|a| a.starts_with("virtio-blk-pci,"))
            .unwrap();
        assert!(device.contains("drive=d0") && device.ends_with(",request-merging=off"));
        // A null disk can be wrapped too.
        let null = line(&rules, None);
        assert!(null
            .iter()
            .any(|a| a.starts_with("driver=null-co,node-name=b0,")));
    }

    #[test]
    fn queues_above_the_vcpus_are_capped_and_the_device_keeps_its_count() {
        let mut args = guest_args(&["--queues", "4", "--smp", "2"]);
        let notice = cap_queues_at_vcpus(&mut args).expect("the job was changed");
        assert!(notice.contains("--queues 4 capped at --smp 2"), "{notice}");
        assert_eq!((args.queues, args.device_queues), (2, Some(4)));
        assert!(kernel_cmdline(&args, 2, 1.0).contains(" queues=2 cpus=2 "));
        let boot = Boot {
            kernel: Path::new("/k"),
            initrd: None,
            append: "",
        };
        let image = DiskImage {
            path: None,
            remove: false,
        };
        let qemu = qemu_args(&args, &boot, &image, 1 << 20, 2, false);
        assert!(
            qemu.iter().any(|a| a.contains(",num-queues=4,")),
            "{qemu:?}"
        );

        // The kext's block driver keeps its extra queue on the device.
        let mut kext = guest_args(&["--queues", "4", "--smp", "2", "--kext"]);
        assert!(cap_queues_at_vcpus(&mut kext).is_some());
        assert_eq!((kext.queues, kext.device_queues), (2, Some(5)));
        let mut given = guest_args(&["--queues", "4", "--smp", "3", "--device-queues", "8"]);
        assert!(cap_queues_at_vcpus(&mut given).is_some());
        assert_eq!((given.queues, given.device_queues), (3, Some(8)));

        // Enough vCPUs, or one per queue by default: nothing changes.
        for flags in [&["--queues", "2", "--smp", "4"][..], &["--queues", "3"][..]] {
            let mut args = guest_args(flags);
            let before = (args.queues, args.smp, args.device_queues);
            assert_eq!(cap_queues_at_vcpus(&mut args), None, "{flags:?}");
            assert_eq!((args.queues, args.smp, args.device_queues), before);
        }
    }

    #[test]
    fn number_ios_goes_on_the_kernel_command_line() {
        let args = guest_args(&["--number-ios", "512"]);
        assert!(kernel_cmdline(&args, 1, 1.0).ends_with(" number_ios=512"));
        assert!(!kernel_cmdline(&guest_args(&[]), 1, 1.0).contains("number_ios"));
    }
}
