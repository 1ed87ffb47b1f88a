//! `cargo xtask linux-fio`: Linux's own virtio_blk driver under real fio, on
//! the QEMU line `cargo xtask guest` uses for the same flags.
//!
//! The guest is Debian's kernel with an initramfs built here from Debian
//! packages ([`initramfs`]); its `/init` ([`init.sh`](init.sh)) loads the
//! virtio modules, runs fio with the options the host passes on the kernel
//! command line, prints fio's JSON between marker lines on the serial
//! console, and leaves through isa-debug-exit with our guest's exit codes.

mod debian;
mod elf;
pub mod fio;
mod initramfs;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub use initramfs::LinuxGuest;

use crate::args::{GuestArgs, Mode, TransportKind};
use crate::qemu::{self, Boot, Machine, Outcome};

/// Flags of `cargo xtask linux-fio`.
#[derive(Clone, Debug, clap::Args)]
pub struct LinuxArgs {
    /// The job and the machine, as for `cargo xtask guest`.
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Download the Debian packages again instead of reusing the cached ones.
    #[arg(long)]
    pub refresh_packages: bool,
}

/// Prefix of the init script's lines for the host.
const MARKER: &str = "@@vblk-linux ";

/// Where the packages and the initramfs are cached.
pub fn cache_dir() -> std::path::PathBuf {
    qemu::repo_root().join("target/linux-guest")
}

/// Builds (or finds cached) the Linux guest.
pub fn prepare(refresh_packages: bool) -> Result<LinuxGuest, String> {
    initramfs::prepare(&cache_dir(), refresh_packages)
}

/// Fits a job to Linux: polled mode needs a default queue besides the poll
/// queues, so the device gets `--queues + 1` queues unless
/// `--device-queues` says otherwise. Returns a note when a default was taken.
pub fn fit_job(args: &mut GuestArgs) -> Result<Option<String>, String> {
    if args.verify {
        return Err(
            "linux-fio does not verify data (use cargo xtask guest --verify for that)".into(),
        );
    }
    if args.number_ios.is_some() {
        return Err("linux-fio runs timed jobs: --number-ios is for cargo xtask guest".into());
    }
    if args.queue_size.is_some() || args.no_event_idx || args.inject.is_some() {
        return Err(
            "--queue-size, --no-event-idx and --inject configure our guest's driver; \
             linux-fio cannot pass them to Linux"
                .into(),
        );
    }
    if args.transport == TransportKind::Mmio {
        return Err(
            "--transport mmio: Debian's kernel finds virtio-mmio devices only through ACPI or a \
             device tree (it is built without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES), and the \
             microvm line our guest needs has acpi=off; compare on virtio-pci"
                .into(),
        );
    }
    match args.mode {
        Mode::Hybrid => Err(
            "Linux has no hybrid mode to compare with: use --mode irq (interrupts) or \
             --mode poll (poll queues, fio --hipri)"
                .into(),
        ),
        Mode::Irq => Ok(None),
        Mode::Poll => {
            if args.device_queues.is_some() {
                return Ok(None);
            }
            let queues = args.queues + 1;
            args.device_queues = Some(queues);
            Ok(Some(format!(
                "--mode poll: the device gets --device-queues {queues} (Linux needs a default \
                 queue besides its {} poll queue(s)); our guest with the same flags runs on \
                 the same line",
                args.queues
            )))
        }
    }
}

/// The Linux kernel command line for a job on `machine`.
pub fn kernel_cmdline(args: &GuestArgs, machine: &Machine) -> Result<String, String> {
    let options = fio::options(args, machine.runtime)?;
    // tsc=reliable: under TCG the TSC follows the host's clock, but a busy
    // host can make the clocksource watchdog mark it unstable, and fio's
    // clock reads then go to the HPET (an exit each). Our guest reads the
    // TSC; so does Linux with this.
    let mut cmdline = String::from("console=ttyS0 panic=-1 quiet loglevel=3 tsc=reliable");
    if args.mode == Mode::Poll {
        // virtio_blk sets up min(num-queues, nr_cpu_ids) queues and keeps
        // one of them for interrupts: with -smp N, N poll queues need
        // nr_cpu_ids = N + 1 (possible, never present, CPUs).
        let device_queues = args.device_queues.unwrap_or(args.queues);
        let possible = machine.smp.max(device_queues);
        cmdline.push_str(&format!(
            " possible_cpus={possible} virtio_blk.poll_queues={}",
            args.queues
        ));
    }
    cmdline.push_str(" vblk.fio=");
    cmdline.push_str(&options.join(","));
    Ok(cmdline)
}

/// What the Linux guest reported.
#[derive(Debug)]
pub struct LinuxReport {
    /// fio's JSON document.
    pub json: serde_json::Value,
    /// `@@vblk-linux KEY VALUE` lines: kernel, cpus, clocksource, queues,
    /// io_poll, hctx (joined with "; "), fio.
    pub facts: BTreeMap<String, String>,
    /// fio's exit status.
    pub fio_status: Option<i32>,
    /// fio's stderr lines.
    pub fio_stderr: Vec<String>,
}

/// A kernel log line on the console (`[   12.345678] ...`).
fn kernel_log_line(line: &str) -> bool {
    let Some(rest) = line.trim_start().strip_prefix('[') else {
        return false;
    };
    rest.split_once(']').is_some_and(|(time, _)| {
        let time = time.trim();
        !time.is_empty() && time.chars().all(|c| c.is_ascii_digit() || c == '.')
    })
}

/// Reads the init script's report out of the console.
pub fn parse_console(lines: &[String]) -> Result<LinuxReport, String> {
    let mut facts: BTreeMap<String, String> = BTreeMap::new();
    let mut json_text = String::new();
    let mut in_json = false;
    let mut ended = false;
    let mut fio_status = None;
    let mut fio_stderr = Vec::new();
    for line in lines {
        // Output without a newline (a progress line) may run into a marker.
        if let Some(said) = line.find(MARKER).map(|at| &line[at + MARKER.len()..]) {
            let (key, value) = said.split_once(' ').unwrap_or((said, ""));
            match key {
                "fio-json-begin" => in_json = true,
                "fio-json-end" => {
                    in_json = false;
                    ended = true;
                    fio_status = value
                        .strip_prefix("status ")
                        .and_then(|s| s.trim().parse().ok());
                }
                "fio" if value.starts_with("stderr: ") => {
                    fio_stderr.push(value["stderr: ".len()..].to_string());
                }
                _ => {
                    let entry = facts.entry(key.to_string()).or_default();
                    if !entry.is_empty() {
                        entry.push_str("; ");
                    }
                    entry.push_str(value.trim());
                }
            }
        } else if in_json && !kernel_log_line(line) {
            json_text.push_str(line);
            json_text.push('\n');
        }
    }
    if !ended {
        return Err("the Linux guest printed no fio JSON (see its console)".into());
    }
    let json: serde_json::Value = serde_json::from_str(&json_text).map_err(|e| {
        format!(
            "fio's JSON does not parse ({e}); fio said: {}",
            fio_stderr.join(" / ")
        )
    })?;
    Ok(LinuxReport {
        json,
        facts,
        fio_status,
        fio_stderr,
    })
}

/// Boots the Linux guest on `machine` and runs the job; `echo` copies the
/// console to stdout. Returns the outcome, the report when there is one, and
/// the console.
pub fn run_linux(
    guest: &LinuxGuest,
    args: &GuestArgs,
    machine: &Machine,
    echo: bool,
) -> Result<(Outcome, Option<LinuxReport>, Vec<String>), String> {
    let cmdline = kernel_cmdline(args, machine)?;
    let boot = Boot {
        kernel: &guest.kernel,
        initrd: Some(&guest.initrd),
        append: &cmdline,
    };
    let qemu = machine.qemu_args(&boot);
    if echo {
        eprintln!("xtask linux-fio: qemu-system-x86_64 {}", shell_words(&qemu));
    }
    // Booting Linux under TCG takes seconds, longer on a loaded host.
    let timeout = Duration::from_secs(args.timeout.unwrap_or(machine.runtime.ceil() as u64 + 120));
    let run = qemu::run_qemu(&qemu, timeout, echo)?;
    let report = parse_console(&run.lines);
    let mut outcome = qemu::outcome("xtask linux-fio", &run, report.is_ok(), timeout);
    let report = match report {
        Ok(report) => {
            let error = report.json["jobs"][0]["error"].as_i64().unwrap_or(-1);
            if matches!(outcome, Outcome::Passed) && (error != 0 || report.fio_status != Some(0)) {
                eprintln!(
                    "xtask linux-fio: FAILED: fio reported error {error} (exit status {:?}): {}",
                    report.fio_status,
                    report.fio_stderr.join(" / ")
                );
                outcome = Outcome::Failed;
            }
            Some(report)
        }
        Err(error) => {
            if run.code == Some(1) {
                eprintln!("xtask linux-fio: {error}");
            }
            None
        }
    };
    Ok((outcome, report, run.lines))
}

/// A command line as a shell would take it (words with spaces quoted).
pub fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains([' ', '"', '\'', '$', '\\']) {
                format!("'{}'", w.replace('\'', "'\\''"))
            } else {
                w.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Builds our guest only to probe KVM the way `cargo xtask guest` does.
pub fn choose_accel(machine: &mut Machine, args: &GuestArgs) -> Result<(), String> {
    if args.accel == crate::args::Accel::Auto && Path::new("/dev/kvm").exists() {
        let kernel = qemu::build_guest()?;
        machine.choose_accel(&kernel);
    } else {
        machine.choose_accel(Path::new("/nonexistent"));
    }
    Ok(())
}

/// `cargo xtask linux-fio`.
pub fn run(args: &LinuxArgs) -> Result<Outcome, String> {
    let mut job = args.guest.clone();
    if let Some(note) = fit_job(&mut job)? {
        eprintln!("xtask linux-fio: {note}");
    }
    let mut machine = Machine::new(&job)?;
    let guest = prepare(args.refresh_packages)?;
    choose_accel(&mut machine, &job)?;
    eprintln!(
        "xtask linux-fio: Linux {} with fio, {}",
        guest.release,
        machine.describe()
    );
    let (outcome, report, _) = run_linux(&guest, &job, &machine, true)?;
    if let Some(report) = report {
        let figures = fio::Figures::from_json(&report.json);
        eprintln!(
            "xtask linux-fio: io_poll {}, queues {}, clocksource {}",
            report.facts.get("io_poll").map_or("?", String::as_str),
            report.facts.get("queues").map_or("?", String::as_str),
            report.facts.get("clocksource").map_or("?", String::as_str),
        );
        if let Some(f) = figures {
            eprintln!("xtask linux-fio: {}", f.summary());
        }
        // fio's JSON on one line, with what the guest found out beside it.
        let mut json = report.json;
        json["vblk_linux"] = serde_json::json!({
            "kernel": guest.release,
            "packages": guest.packages,
            "facts": report.facts,
        });
        println!("{json}");
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn the_console_report_parses_around_kernel_messages() {
        let console = lines(
            "Linux version 6.1\n\
             @@vblk-linux io_poll 1\n\
             @@vblk-linux hctx 0 cpus 0\n\
             @@vblk-linux hctx 1 cpus 1\n\
             @@vblk-linux fio-json-begin\n\
             {\n\
             \"fio version\" : \"fio-3.33\",\n\
             [   12.345678] random: crng init done\n\
             \"jobs\" : [ { \"error\" : 0 } ]\n\
             }\n\
             @@vblk-linux fio-json-end status 0\n\
             @@vblk-linux fio stderr: note: both iodepth >= 1 and synchronous I/O engine\n",
        );
        let report = parse_console(&console).unwrap();
        assert_eq!(report.json["fio version"], "fio-3.33");
        assert_eq!(report.facts["io_poll"], "1");
        assert_eq!(report.facts["hctx"], "0 cpus 0; 1 cpus 1");
        assert_eq!(report.fio_status, Some(0));
        assert_eq!(report.fio_stderr.len(), 1);
    }

    #[test]
    fn a_console_without_the_json_is_an_error() {
        assert!(parse_console(&lines("@@vblk-linux io_poll 0\n")).is_err());
        assert!(kernel_log_line("[    0.000000] Linux version"));
        assert!(!kernel_log_line("[ { \"a\": 1 } ]"));
    }

    #[test]
    fn polled_jobs_get_a_default_queue_and_hybrid_is_refused() {
        let cli = <crate::args::Cli as clap::Parser>::try_parse_from([
            "xtask", "guest", "--mode", "poll", "--queues", "2",
        ])
        .unwrap();
        let crate::args::Task::Guest(mut args) = cli.task else {
            unreachable!()
        };
        assert!(fit_job(&mut args).unwrap().is_some());
        assert_eq!(args.device_queues, Some(3));
        args.mode = Mode::Hybrid;
        assert!(fit_job(&mut args).is_err());
        args.mode = Mode::Irq;
        args.transport = TransportKind::Mmio;
        assert!(fit_job(&mut args).unwrap_err().contains("virtio-mmio"));
    }
}
