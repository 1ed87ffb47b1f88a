//! `cargo xtask compare`: our guest and the Linux guest (Debian's kernel,
//! virtio_blk, real fio) run the same jobs on the same QEMU line, one after
//! the other, in one invocation; one table shows IOPS and completion
//! latencies for both and the ratio ours ÷ Linux.

use std::collections::BTreeMap;
use std::time::Instant;

use clap::ValueEnum;
use serde_json::json;

use crate::args::{Accel, Disk, GuestArgs, Mode};
use crate::linux::fio::Figures;
use crate::linux::{self, LinuxGuest};
use crate::qemu::{self, Boot, Machine, Outcome};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A Markdown table with a header of facts.
    Normal,
    /// One JSON document.
    Json,
}

/// Whether the device runs on its own iothread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum OnOff {
    /// In QEMU's main loop.
    Off,
    /// On `-object iothread`.
    On,
}

/// Flags of `cargo xtask compare`.
#[derive(Clone, Debug, clap::Args)]
pub struct CompareArgs {
    /// The machine and the job (ring, transport, disk, rw, bs, runtime, ...)
    /// as for `cargo xtask guest`; --mode, --queues, --iodepth, --smp and
    /// --iothread come from the lists below instead.
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Completion modes: irq (Linux: interrupts) and poll (Linux: poll
    /// queues and fio --hipri).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "irq,poll")]
    pub modes: Vec<Mode>,
    /// Without and with a QEMU iothread for the device.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off,on")]
    pub iothreads: Vec<OnOff>,
    /// Jobs (our guest: queues, one vCPU each; fio: numjobs).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub numjobs: Vec<u16>,
    /// Requests in flight per job.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub iodepths: Vec<u16>,
    /// Runs of every job per guest (alternating which guest goes first);
    /// the table shows the median of each figure.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Normal)]
    pub output_format: Format,
    /// Also write the JSON report to this file (for scripts/plot-compare.py).
    #[arg(long)]
    pub json_out: Option<std::path::PathBuf>,
    /// Download the Debian packages again instead of reusing the cached ones.
    #[arg(long)]
    pub refresh_packages: bool,
}

/// One job of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Job {
    mode: ModeKey,
    iothread: OnOff,
    numjobs: u16,
    iodepth: u16,
}

/// `Mode` with an order (irq first, as the table reads).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ModeKey {
    Irq,
    Poll,
}

impl ModeKey {
    fn name(self) -> &'static str {
        match self {
            ModeKey::Irq => "irq",
            ModeKey::Poll => "poll",
        }
    }
}

/// Which guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Ours,
    Linux,
}

/// Both guests' runs of one job.
#[derive(Default)]
struct Row {
    ours: Vec<Figures>,
    linux: Vec<Figures>,
    /// The Linux guest's facts (io_poll, queues, clocksource), last run.
    facts: BTreeMap<String, String>,
    errors: Vec<String>,
    /// The QEMU line without its -kernel, -initrd and -append.
    qemu: Vec<String>,
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut values: Vec<f64> = values.collect();
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The median of each figure over runs.
fn typical(runs: &[Figures]) -> Option<Figures> {
    Some(Figures {
        iops: median(runs.iter().map(|f| f.iops))?,
        clat_mean_ns: median(runs.iter().map(|f| f.clat_mean_ns))?,
        clat_p50_ns: median(runs.iter().map(|f| f.clat_p50_ns))?,
        clat_p99_ns: median(runs.iter().map(|f| f.clat_p99_ns))?,
        lat_mean_ns: median(runs.iter().filter_map(|f| f.lat_mean_ns)),
        ios: median(runs.iter().map(|f| f.ios as f64))? as u64,
    })
}

/// The QEMU line minus how it boots: what must be equal for both guests.
fn without_boot(line: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut items = line.iter();
    while let Some(item) = items.next() {
        if matches!(item.as_str(), "-kernel" | "-initrd" | "-append") {
            items.next();
        } else {
            out.push(item.clone());
        }
    }
    out
}

/// The job's flags, as `cargo xtask guest` takes them.
fn job_args(base: &GuestArgs, job: Job) -> Result<GuestArgs, String> {
    let mut args = base.clone();
    args.mode = match job.mode {
        ModeKey::Irq => Mode::Irq,
        ModeKey::Poll => Mode::Poll,
    };
    args.queues = job.numjobs;
    args.smp = None;
    args.iodepth = job.iodepth;
    args.iothread = job.iothread == OnOff::On;
    args.device_queues = None;
    linux::fit_job(&mut args)?;
    Ok(args)
}

/// Reads `/proc/loadavg`'s three load averages.
/// The host's load average (1, 5, 15 minutes), as /proc/loadavg says.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// QEMU's version line.
pub(crate) fn qemu_version() -> String {
    std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// Runs one guest once on `machine`; records the figures or the error.
fn run_side(
    side: Side,
    args: &GuestArgs,
    machine: &Machine,
    ours_kernel: &std::path::Path,
    linux_guest: &LinuxGuest,
    row: &mut Row,
) -> Result<(), String> {
    let label = match side {
        Side::Ours => "ours",
        Side::Linux => "Linux",
    };
    let started = Instant::now();
    let (outcome, json, lines) = match side {
        Side::Ours => {
            let (outcome, lines) = qemu::run_guest(args, machine, ours_kernel, false)?;
            let json = qemu::report_line(&lines).and_then(|l| serde_json::from_str(l).ok());
            (outcome, json, lines)
        }
        Side::Linux => {
            let (outcome, report, lines) = linux::run_linux(linux_guest, args, machine, false)?;
            let json = report.map(|r| {
                row.facts = r.facts;
                r.json
            });
            (outcome, json, lines)
        }
    };
    let figures = json.as_ref().and_then(Figures::from_json);
    match (outcome, figures) {
        (Outcome::Passed, Some(figures)) => {
            eprintln!(
                "xtask compare:   {label:5} {} ({:.0} s)",
                figures.summary(),
                started.elapsed().as_secs_f64()
            );
            match side {
                Side::Ours => row.ours.push(figures),
                Side::Linux => row.linux.push(figures),
            }
        }
        _ => {
            eprintln!("xtask compare:   {label}: FAILED; its console:");
            for line in lines.iter().rev().take(40).rev() {
                eprintln!("    {line}");
            }
            row.errors.push(format!("{label} failed"));
        }
    }
    Ok(())
}

/// `cargo xtask compare`.
pub fn run(args: &CompareArgs) -> Result<Outcome, String> {
    let base = &args.guest;
    if base.verify {
        return Err("compare does not verify data: drop --verify".into());
    }
    let mut jobs: Vec<Job> = Vec::new();
    for &mode in &args.modes {
        let mode = match mode {
            Mode::Irq => ModeKey::Irq,
            Mode::Poll => ModeKey::Poll,
            Mode::Hybrid => return Err("--modes: Linux has no hybrid mode; use irq,poll".into()),
        };
        for &iothread in &args.iothreads {
            for &numjobs in &args.numjobs {
                for &iodepth in &args.iodepths {
                    if numjobs == 0 || iodepth == 0 {
                        return Err("--numjobs and --iodepths take positive numbers".into());
                    }
                    jobs.push(Job {
                        mode,
                        iothread,
                        numjobs,
                        iodepth,
                    });
                }
            }
        }
    }
    jobs.sort();
    jobs.dedup();
    let load_before = load_average();
    // Check every job's flags before anything long starts.
    for &job in &jobs {
        Machine::new(&job_args(base, job)?)?;
    }
    let ours_kernel = qemu::build_guest()?;
    let linux_guest = linux::prepare(args.refresh_packages)?;
    // One accelerator decision for every run.
    let mut probe = Machine::new(&job_args(base, jobs[0])?)?;
    probe.choose_accel(&ours_kernel);
    let accel = if probe.kvm { Accel::Kvm } else { Accel::Tcg };
    eprintln!(
        "xtask compare: {} jobs x {} run(s) x 2 guests, {}; load average {load_before}",
        jobs.len(),
        args.repeat,
        if probe.kvm { "KVM" } else { "TCG" }
    );
    drop(probe);
    let mut rows: BTreeMap<Job, Row> = BTreeMap::new();
    let mut turn = 0u32;
    for round in 0..args.repeat {
        for &job in &jobs {
            let mut job_flags = job_args(base, job)?;
            job_flags.accel = accel;
            let mut machine = Machine::new(&job_flags)?;
            machine.choose_accel(&ours_kernel);
            let row = rows.entry(job).or_default();
            let ours_line = machine.qemu_args(&Boot {
                kernel: &ours_kernel,
                initrd: None,
                append: "",
            });
            let linux_line = machine.qemu_args(&Boot {
                kernel: &linux_guest.kernel,
                initrd: Some(&linux_guest.initrd),
                append: "",
            });
            // The point of the exercise: nothing but the boot differs.
            if without_boot(&ours_line) != without_boot(&linux_line) {
                return Err("internal error: the two guests' QEMU lines differ".into());
            }
            row.qemu = without_boot(&ours_line);
            eprintln!(
                "xtask compare: [{}/{}] {} iothread={} numjobs={} iodepth={} (round {})",
                turn % jobs.len() as u32 + 1,
                jobs.len(),
                job.mode.name(),
                lower(job.iothread),
                job.numjobs,
                job.iodepth,
                round + 1
            );
            // Alternate who goes first, so drift in the host's load does not
            // always favour the same guest.
            let order = if turn.is_multiple_of(2) {
                [Side::Ours, Side::Linux]
            } else {
                [Side::Linux, Side::Ours]
            };
            for side in order {
                run_side(side, &job_flags, &machine, &ours_kernel, &linux_guest, row)?;
            }
            turn += 1;
        }
    }
    let load_after = load_average();
    let context = Context {
        args,
        linux_guest: &linux_guest,
        accel,
        load_before,
        load_after,
    };
    let json = serde_json::to_string_pretty(&json_report(&context, &rows)).unwrap_or_default();
    if let Some(path) = &args.json_out {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    match args.output_format {
        Format::Normal => print!("{}", table(&context, &rows)),
        Format::Json => println!("{json}"),
    }
    let failed = rows.values().any(|r| !r.errors.is_empty());
    Ok(if failed {
        Outcome::Failed
    } else {
        Outcome::Passed
    })
}

/// What the report's header says.
struct Context<'a> {
    args: &'a CompareArgs,
    linux_guest: &'a LinuxGuest,
    accel: Accel,
    load_before: String,
    load_after: String,
}

/// A flag value's name as the command line spells it.
fn lower(value: impl std::fmt::Debug) -> String {
    format!("{value:?}").to_lowercase()
}

fn disk_name(disk: &Disk) -> String {
    match disk {
        Disk::Null => "null".into(),
        Disk::Ram => "ram".into(),
        Disk::File(path) => format!("file:{}", path.display()),
    }
}

fn ratio(ours: f64, linux: f64) -> Option<f64> {
    (linux > 0.0 && ours.is_finite()).then(|| ours / linux)
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

fn us(ns: f64) -> String {
    format!("{:.1}", ns / 1e3)
}

/// The Markdown table, with its header.
fn table(context: &Context<'_>, rows: &BTreeMap<Job, Row>) -> String {
    let base = &context.args.guest;
    let mut out = String::new();
    out.push_str(&format!(
        "ours: vblk-guest (this repository); Linux: {} virtio_blk, {}\n",
        context.linux_guest.release,
        context
            .linux_guest
            .packages
            .iter()
            .find(|p| p.starts_with("fio "))
            .map_or("fio", String::as_str)
    ));
    out.push_str(&format!(
        "{}, {}; {} ring, {} transport, {} disk of {}, {} {}, runtime {} s, memory {}, \
         {} run(s) per guest (median)\n",
        qemu_version(),
        lower(context.accel),
        lower(base.ring),
        lower(base.transport),
        disk_name(&base.disk),
        base.size,
        base.rw,
        base.bs,
        base.runtime,
        base.memory,
        context.args.repeat
    ));
    out.push_str(&format!(
        "host load average (1, 5, 15 min): {} before, {} after\n\n",
        context.load_before, context.load_after
    ));
    out.push_str(
        "| mode | iothread | jobs | QD | IOPS ours | IOPS Linux | ÷ | clat mean µs ours | Linux | ÷ \
         | p50 µs ours | Linux | ÷ | p99 µs ours | Linux | ÷ | lat mean µs Linux | ÷ | Linux io_poll |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n");
    for (job, row) in rows {
        let ours = typical(&row.ours);
        let linux = typical(&row.linux);
        let cell = |f: Option<Figures>, pick: fn(&Figures) -> f64, show: fn(f64) -> String| {
            f.as_ref().map_or("failed".into(), |f| show(pick(f)))
        };
        let r = |pick: fn(&Figures) -> f64| {
            fmt_ratio(ours.zip(linux).and_then(|(o, l)| ratio(pick(&o), pick(&l))))
        };
        let iops = |x: f64| format!("{x:.0}");
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            job.mode.name(),
            if job.iothread == OnOff::On { "on" } else { "off" },
            job.numjobs,
            job.iodepth,
            cell(ours, |f| f.iops, iops),
            cell(linux, |f| f.iops, iops),
            r(|f| f.iops),
            cell(ours, |f| f.clat_mean_ns, us),
            cell(linux, |f| f.clat_mean_ns, us),
            r(|f| f.clat_mean_ns),
            cell(ours, |f| f.clat_p50_ns, us),
            cell(linux, |f| f.clat_p50_ns, us),
            r(|f| f.clat_p50_ns),
            cell(ours, |f| f.clat_p99_ns, us),
            cell(linux, |f| f.clat_p99_ns, us),
            r(|f| f.clat_p99_ns),
            cell(linux, Figures::total_mean_ns, us),
            r(Figures::total_mean_ns),
            row.facts.get("io_poll").map_or("?", String::as_str),
        ));
    }
    out.push_str(
        "\n÷ = ours ÷ Linux: above 1 for IOPS, below 1 for latencies means ours is faster. \
         clat: fio's completion latency (Linux: from after io_uring submitted the request; \
         ours: from before the request went into the ring). lat: fio's submission + \
         completion latency, compared with our clat.\n",
    );
    let mut notes: Vec<String> = Vec::new();
    for (job, row) in rows {
        if let Some(queues) = row.facts.get("queues") {
            let note = format!(
                "{} numjobs={}: Linux {queues}; hctx {}; clocksource {}",
                job.mode.name(),
                job.numjobs,
                row.facts.get("hctx").map_or("?", String::as_str),
                row.facts.get("clocksource").map_or("?", String::as_str)
            );
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
        for error in &row.errors {
            notes.push(format!(
                "{} iothread={} numjobs={} iodepth={}: {error}",
                job.mode.name(),
                lower(job.iothread),
                job.numjobs,
                job.iodepth
            ));
        }
    }
    for note in notes {
        out.push_str(&format!("- {note}\n"));
    }
    if let Some((_, row)) = rows.iter().next() {
        out.push_str(&format!(
            "\nQEMU line of the first job (both guests; plus -kernel, -initrd, -append):\n{} {}\n",
            "qemu-system-x86_64",
            row.qemu.join(" ")
        ));
    }
    out
}

fn figures_json(f: Option<Figures>) -> serde_json::Value {
    f.map_or(serde_json::Value::Null, |f| {
        json!({
            "iops": f.iops,
            "clat_mean_ns": f.clat_mean_ns,
            "clat_p50_ns": f.clat_p50_ns,
            "clat_p99_ns": f.clat_p99_ns,
            "lat_mean_ns": f.lat_mean_ns,
            "total_ios": f.ios,
        })
    })
}

fn json_report(context: &Context<'_>, rows: &BTreeMap<Job, Row>) -> serde_json::Value {
    let base = &context.args.guest;
    let jobs: Vec<serde_json::Value> = rows
        .iter()
        .map(|(job, row)| {
            let ours = typical(&row.ours);
            let linux = typical(&row.linux);
            let r = |pick: fn(&Figures) -> f64| {
                ours.zip(linux).and_then(|(o, l)| ratio(pick(&o), pick(&l)))
            };
            json!({
                "mode": job.mode.name(),
                "iothread": job.iothread == OnOff::On,
                "numjobs": job.numjobs,
                "iodepth": job.iodepth,
                "ours": figures_json(ours),
                "linux": figures_json(linux),
                "ratio": {
                    "iops": r(|f| f.iops),
                    "clat_mean": r(|f| f.clat_mean_ns),
                    "clat_p50": r(|f| f.clat_p50_ns),
                    "clat_p99": r(|f| f.clat_p99_ns),
                    "ours_clat_mean_to_linux_lat_mean": r(Figures::total_mean_ns),
                },
                "ours_runs": row.ours.iter().map(|f| figures_json(Some(*f))).collect::<Vec<_>>(),
                "linux_runs": row.linux.iter().map(|f| figures_json(Some(*f))).collect::<Vec<_>>(),
                "linux_facts": row.facts,
                "errors": row.errors,
                "qemu": row.qemu,
            })
        })
        .collect();
    json!({
        "qemu": qemu_version(),
        "accel": lower(context.accel),
        "linux": {
            "kernel": context.linux_guest.release,
            "packages": context.linux_guest.packages,
        },
        "job": {
            "ring": lower(base.ring),
            "transport": lower(base.transport),
            "disk": disk_name(&base.disk),
            "rw": base.rw,
            "bs": base.bs,
            "size": base.size,
            "runtime": base.runtime,
            "memory": base.memory,
            "repeat": context.args.repeat,
        },
        "load_average": { "before": context.load_before, "after": context.load_after },
        "jobs": jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_boot_is_all_that_is_dropped() {
        let line: Vec<String> = [
            "-M", "pc", "-kernel", "k", "-initrd", "i", "-append", "a b", "-m", "1G",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(without_boot(&line), ["-M", "pc", "-m", "1G"]);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn ratios_need_a_linux_figure() {
        assert_eq!(ratio(2.0, 4.0), Some(0.5));
        assert_eq!(ratio(2.0, 0.0), None);
    }
}
