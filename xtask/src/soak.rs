//! `cargo xtask soak`: many short guest runs over a matrix of completion
//! modes, rings, iothread on/off, depths and ring sizes, one QEMU at a time,
//! counting how each run ended: passed, stalled (and what the guest's stall
//! report found: a lost kick the extra doorbell rescued, or a device that
//! stopped), or failed otherwise. Prints a table (Markdown) and optionally
//! JSON; keeps the console and QEMU's stderr of every run that did not pass.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;

use crate::args::{Accel, GuestArgs, Mode, Ring};
use crate::compare::{load_average, qemu_version, OnOff};
use crate::qemu::{self, Machine, Outcome, Run};

/// Flags of `cargo xtask soak`.
#[derive(Clone, Debug, clap::Args)]
pub struct SoakArgs {
    /// The machine and the job as for `cargo xtask guest`; --mode, --ring,
    /// --iothread, --iodepth and --queue-size come from the lists below.
    #[command(flatten)]
    pub guest: GuestArgs,
    /// Completion modes.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "irq,hybrid,poll"
    )]
    pub modes: Vec<Mode>,
    /// Ring layouts.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "split,packed"
    )]
    pub rings: Vec<Ring>,
    /// Without and with a QEMU iothread for the device.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "off,on")]
    pub iothreads: Vec<OnOff>,
    /// Requests in flight.
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    pub iodepths: Vec<u16>,
    /// Ring sizes (default: the guest's, twice the depth within 256).
    #[arg(long, value_delimiter = ',')]
    pub queue_sizes: Vec<u16>,
    /// Runs of every cell of the matrix; the cells take turns, in an order
    /// shuffled every round, so a change in the host's load spreads evenly.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs_per_cell: u32,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the console and QEMU's stderr of runs that did not pass go.
    #[arg(long, default_value = "target/soak")]
    pub log_dir: PathBuf,
    /// Also write the JSON report here.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
}

/// One cell of the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    mode: &'static str,
    ring: &'static str,
    iothread: bool,
    iodepth: u16,
    /// 0: the guest's default.
    queue_size: u16,
}

impl Cell {
    fn iothread_name(&self) -> &'static str {
        if self.iothread {
            "on"
        } else {
            "off"
        }
    }

    /// The ring size, or `default`.
    fn size_name(&self) -> String {
        if self.queue_size > 0 {
            self.queue_size.to_string()
        } else {
            "default".into()
        }
    }

    /// One line: `poll packed iothread=on qd=1 qsize=default`.
    fn describe(&self) -> String {
        format!(
            "{} {} iothread={} qd={} qsize={}",
            self.mode,
            self.ring,
            self.iothread_name(),
            self.iodepth,
            self.size_name()
        )
    }
}

/// How one run ended, read from the guest's console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Every check passed.
    Passed,
    /// Requests stayed in flight past the drain timeout; the stall report's
    /// verdict (`lost kick`, `device stopped`, ...).
    Stalled(String),
    /// Anything else, with the first line that says why.
    Failed(String),
}

/// What the soak keeps of one run.
struct RunRecord {
    cell: Cell,
    ending: Ending,
    /// Doorbells the driver rang again by itself (the `rekicks` statistic,
    /// when the driver reports one).
    rekicks: Option<u64>,
    iops: Option<f64>,
    seconds: f64,
    log: Option<PathBuf>,
}

/// Counts of one cell.
#[derive(Default)]
struct Tally {
    runs: u32,
    passed: u32,
    stalls: u32,
    lost_kick: u32,
    stopped: u32,
    other_stall: u32,
    /// Runs that passed and whose driver rang a doorbell again by itself
    /// (a re-kick: not necessarily a lost kick, it may only have waited long).
    rekicked: u32,
    errors: u32,
}

impl Tally {
    fn add(&mut self, record: &RunRecord) {
        self.runs += 1;
        match &record.ending {
            Ending::Passed => {
                self.passed += 1;
                if record.rekicks.unwrap_or(0) > 0 {
                    self.rekicked += 1;
                }
            }
            Ending::Stalled(verdict) => {
                self.stalls += 1;
                match verdict.as_str() {
                    "lost kick" => self.lost_kick += 1,
                    "device stopped" => self.stopped += 1,
                    _ => self.other_stall += 1,
                }
            }
            Ending::Failed(_) => self.errors += 1,
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "runs": self.runs, "passed": self.passed, "stalls": self.stalls,
            "stall_lost_kick": self.lost_kick, "stall_device_stopped": self.stopped,
            "stall_other": self.other_stall, "passed_after_driver_rekick": self.rekicked,
            "errors": self.errors,
        })
    }
}

/// Reads how a run ended from its console (the guest's stall report and
/// problem lines) and the runner's outcome.
pub fn classify(outcome: &Outcome, lines: &[String]) -> Ending {
    if let Some(verdict) = lines.iter().find_map(|line| stall_verdict(line)) {
        return Ending::Stalled(verdict);
    }
    if matches!(outcome, Outcome::Passed) {
        return Ending::Passed;
    }
    let why = lines
        .iter()
        .find(|l| {
            l.starts_with("vblk-guest: error:")
                || l.starts_with("vblk-guest: panic:")
                || (l.starts_with("vblk-guest: queue ") && !l.contains("verdict"))
                || l.starts_with("vblk-guest: the device set DEVICE_NEEDS_RESET")
        })
        .cloned()
        .unwrap_or_else(|| match outcome {
            Outcome::Broken => {
                "the guest could not run, crashed or hung (no reason printed)".into()
            }
            _ => "failed without a reason on the console".into(),
        });
    Ending::Failed(why)
}

/// The driver's re-kicks, from the guest's
/// `vblk-guest: doorbells rung again by the driver (re-kicks): N` line.
fn rekicks(lines: &[String]) -> Option<u64> {
    lines.iter().find_map(|line| {
        line.strip_prefix("vblk-guest: doorbells rung again by the driver (re-kicks): ")?
            .trim()
            .parse()
            .ok()
    })
}

/// The verdict of a `vblk-guest: stall: queue N: verdict: ... (...)` line.
fn stall_verdict(line: &str) -> Option<String> {
    let rest = line.strip_prefix("vblk-guest: stall: queue ")?;
    let verdict = rest.split_once("verdict: ")?.1;
    let verdict = verdict.split(" (").next().unwrap_or(verdict);
    Some(verdict.trim().to_string())
}

fn cells(args: &SoakArgs) -> Result<Vec<Cell>, String> {
    if args.iodepths.contains(&0) || args.queue_sizes.contains(&0) {
        return Err("--iodepths and --queue-sizes take positive numbers".into());
    }
    let sizes: Vec<u16> = if args.queue_sizes.is_empty() {
        vec![0]
    } else {
        args.queue_sizes.clone()
    };
    let mut cells = Vec::new();
    for &mode in &args.modes {
        for &ring in &args.rings {
            for &iothread in &args.iothreads {
                for &iodepth in &args.iodepths {
                    for &queue_size in &sizes {
                        cells.push(Cell {
                            mode: mode_name(mode),
                            ring: match ring {
                                Ring::Split => "split",
                                Ring::Packed => "packed",
                            },
                            iothread: iothread == OnOff::On,
                            iodepth,
                            queue_size,
                        });
                    }
                }
            }
        }
    }
    cells.sort();
    cells.dedup();
    if cells.is_empty() {
        return Err("the matrix is empty".into());
    }
    Ok(cells)
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Irq => "irq",
        Mode::Hybrid => "hybrid",
        Mode::Poll => "poll",
    }
}

/// The guest's flags for one cell.
fn cell_args(base: &GuestArgs, cell: Cell, accel: Accel) -> GuestArgs {
    let mut args = base.clone();
    args.mode = match cell.mode {
        "irq" => Mode::Irq,
        "hybrid" => Mode::Hybrid,
        _ => Mode::Poll,
    };
    args.ring = if cell.ring == "split" {
        Ring::Split
    } else {
        Ring::Packed
    };
    args.iothread = cell.iothread;
    args.iodepth = cell.iodepth;
    args.queue_size = (cell.queue_size > 0).then_some(cell.queue_size);
    args.accel = accel;
    args
}

/// A small deterministic shuffle (xorshift), so a seed repeats an order.
fn shuffle<T>(items: &mut [T], state: &mut u64) {
    for i in (1..items.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        items.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}

/// `cargo xtask soak`.
pub fn run(args: &SoakArgs) -> Result<Outcome, String> {
    let cells = cells(args)?;
    for &cell in &cells {
        Machine::new(&cell_args(&args.guest, cell, Accel::Tcg))?;
    }
    let kernel = qemu::build_guest()?;
    let mut probe = Machine::new(&cell_args(&args.guest, cells[0], args.guest.accel))?;
    probe.choose_accel(&kernel);
    let accel = if probe.kvm { Accel::Kvm } else { Accel::Tcg };
    drop(probe);
    let total = cells.len() as u32 * args.runs_per_cell;
    let load_before = load_average();
    eprintln!(
        "xtask soak: {} cells x {} runs = {total} runs of {} s, {}, one QEMU at a time; load average {load_before}",
        cells.len(),
        args.runs_per_cell,
        args.guest.runtime,
        if accel == Accel::Kvm { "KVM" } else { "TCG" },
    );
    std::fs::create_dir_all(&args.log_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.log_dir.display()))?;
    let started = Instant::now();
    let mut records = Vec::with_capacity(total as usize);
    let mut order = cells.clone();
    let mut state = args.seed.max(1);
    for round in 0..args.runs_per_cell {
        shuffle(&mut order, &mut state);
        for &cell in &order {
            let number = records.len() + 1;
            let record = run_one(args, cell, accel, &kernel, number)?;
            eprintln!(
                "xtask soak: [{number}/{total}] round {} {}: {} ({:.0} s){}",
                round + 1,
                cell.describe(),
                match &record.ending {
                    Ending::Passed => "passed".to_string(),
                    Ending::Stalled(verdict) => format!("STALL, {verdict}"),
                    Ending::Failed(why) => format!("FAILED: {why}"),
                },
                record.seconds,
                record
                    .log
                    .as_ref()
                    .map(|p| format!(", log {}", p.display()))
                    .unwrap_or_default()
            );
            records.push(record);
        }
    }
    let load_after = load_average();
    let mut tallies: BTreeMap<Cell, Tally> = BTreeMap::new();
    let mut totals = Tally::default();
    for record in &records {
        tallies.entry(record.cell).or_default().add(record);
        totals.add(record);
    }
    println!(
        "{}",
        table(&tallies, &totals, accel, &load_before, &load_after, started)
    );
    if let Some(path) = &args.json_out {
        let report = report_json(
            args,
            &records,
            &tallies,
            &totals,
            accel,
            &load_before,
            &load_after,
        );
        std::fs::write(
            path,
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(if totals.passed == totals.runs {
        Outcome::Passed
    } else {
        Outcome::Failed
    })
}

fn run_one(
    args: &SoakArgs,
    cell: Cell,
    accel: Accel,
    kernel: &std::path::Path,
    number: usize,
) -> Result<RunRecord, String> {
    let flags = cell_args(&args.guest, cell, accel);
    let mut machine = Machine::new(&flags)?;
    machine.choose_accel(kernel);
    let started = Instant::now();
    let (outcome, run) = qemu::run_guest_capture(&flags, &machine, kernel, false)?;
    let seconds = started.elapsed().as_secs_f64();
    let ending = classify(&outcome, &run.lines);
    let json: Option<serde_json::Value> =
        qemu::report_line(&run.lines).and_then(|l| serde_json::from_str(l).ok());
    let rekicks = rekicks(&run.lines);
    let iops = json
        .as_ref()
        .and_then(|j| j["jobs"][0]["read"]["iops"].as_f64());
    let log = if ending == Ending::Passed {
        None
    } else {
        let path = args.log_dir.join(format!("run-{number:04}.log"));
        std::fs::write(&path, log_text(cell, &machine, &run))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Some(path)
    };
    Ok(RunRecord {
        cell,
        ending,
        rekicks,
        iops,
        seconds,
        log,
    })
}

fn log_text(cell: Cell, machine: &Machine, run: &Run) -> String {
    let mut text = format!(
        "{} on {}\nexit code {:?}, timed out: {}\n--- console ---\n",
        cell.describe(),
        machine.describe(),
        run.code,
        run.timed_out
    );
    for line in &run.lines {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("--- QEMU stderr ---\n");
    for line in &run.stderr {
        text.push_str(line);
        text.push('\n');
    }
    text
}

fn table(
    tallies: &BTreeMap<Cell, Tally>,
    totals: &Tally,
    accel: Accel,
    load_before: &str,
    load_after: &str,
    started: Instant,
) -> String {
    let mut out = format!(
        "{}, {}; load average {load_before} before, {load_after} after; {:.0} min\n\n",
        qemu_version(),
        if accel == Accel::Kvm { "KVM" } else { "TCG" },
        started.elapsed().as_secs_f64() / 60.0
    );
    out.push_str(
        "| mode | ring | iothread | QD | ring size | runs | passed | stalls | lost kick (extra doorbell rescued) | device stopped | other stall | passed, driver re-kicked | errors |\n\
         |---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    let mut row = |label: String, t: &Tally| {
        out.push_str(&format!(
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            t.runs, t.passed, t.stalls, t.lost_kick, t.stopped, t.other_stall, t.rekicked, t.errors
        ));
    };
    for (cell, tally) in tallies {
        row(
            format!(
                "{} | {} | {} | {} | {}",
                cell.mode,
                cell.ring,
                cell.iothread_name(),
                cell.iodepth,
                cell.size_name()
            ),
            tally,
        );
    }
    row("**all** | | | | ".into(), totals);
    out
}

fn report_json(
    args: &SoakArgs,
    records: &[RunRecord],
    tallies: &BTreeMap<Cell, Tally>,
    totals: &Tally,
    accel: Accel,
    load_before: &str,
    load_after: &str,
) -> serde_json::Value {
    let cell_json = |cell: &Cell| {
        json!({
            "mode": cell.mode, "ring": cell.ring, "iothread": cell.iothread,
            "iodepth": cell.iodepth,
            "queue_size": (cell.queue_size > 0).then_some(cell.queue_size),
        })
    };
    json!({
        "qemu": qemu_version(),
        "accel": if accel == Accel::Kvm { "kvm" } else { "tcg" },
        "runtime": args.guest.runtime,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "totals": totals.json(),
        "cells": tallies.iter().map(|(cell, t)| {
            let mut value = cell_json(cell);
            value["counts"] = t.json();
            value
        }).collect::<Vec<_>>(),
        "runs": records.iter().map(|r| {
            let mut value = cell_json(&r.cell);
            let (ending, detail) = match &r.ending {
                Ending::Passed => ("passed", None),
                Ending::Stalled(v) => ("stalled", Some(v.clone())),
                Ending::Failed(why) => ("failed", Some(why.clone())),
            };
            value["ending"] = json!(ending);
            value["detail"] = json!(detail);
            value["rekicks"] = json!(r.rekicks);
            value["iops"] = json!(r.iops);
            value["seconds"] = json!(r.seconds);
            value["log"] = json!(r.log.as_ref().map(|p| p.display().to_string()));
            value
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(String::from).collect()
    }

    #[test]
    fn a_stall_report_is_read_for_its_verdict() {
        let console = lines(
            "vblk-guest: queue 0: 1 requests never completed\n\
             vblk-guest: stall: queue 0: 1 requests in flight after the drain timeout\n\
             vblk-guest: stall: queue 0: verdict: lost kick (the extra doorbell brought back 1 of 1)\n",
        );
        assert_eq!(
            classify(&Outcome::Failed, &console),
            Ending::Stalled("lost kick".into())
        );
        let stopped = lines("vblk-guest: stall: queue 1: verdict: device stopped (the extra doorbell brought back 0 of 32)");
        assert_eq!(
            classify(&Outcome::Failed, &stopped),
            Ending::Stalled("device stopped".into())
        );
    }

    #[test]
    fn the_driver_s_re_kicks_are_read() {
        let console = lines("vblk-guest: doorbells rung again by the driver (re-kicks): 3\n");
        assert_eq!(rekicks(&console), Some(3));
        assert_eq!(rekicks(&lines("vblk-guest: 1 CPUs")), None);
    }

    #[test]
    fn other_failures_keep_their_first_reason() {
        let console = lines(
            "vblk-guest: 2 CPUs\n\
             vblk-guest: the device set DEVICE_NEEDS_RESET (status 0x4f) after 1 ...\n\
             vblk-guest: queue 0: Read at sector 8 failed: device broke the virtio protocol\n",
        );
        match classify(&Outcome::Failed, &console) {
            Ending::Failed(why) => assert!(why.contains("DEVICE_NEEDS_RESET"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify(&Outcome::Broken, &[]),
            Ending::Failed(why) if why.contains("hung")
        ));
        assert_eq!(
            classify(&Outcome::Passed, &lines("{\"fio version\"")),
            Ending::Passed
        );
    }

    #[test]
    fn every_cell_of_the_matrix_once() {
        use clap::Parser;
        let cli = crate::args::Cli::parse_from([
            "xtask",
            "soak",
            "--modes",
            "poll,irq",
            "--rings",
            "packed",
            "--iodepths",
            "1,1,32",
            "--queue-sizes",
            "2,256",
        ]);
        let crate::args::Task::Soak(args) = cli.task else {
            panic!("not the soak task");
        };
        let cells = cells(&args).unwrap();
        // 2 modes x 1 ring x 2 iothread settings x 2 depths x 2 sizes.
        assert_eq!(cells.len(), 16);
        assert_eq!(args.guest.runtime, "1", "soak runs are short by default");
    }

    #[test]
    fn the_shuffle_keeps_every_item_and_repeats_with_its_seed() {
        let mut a: Vec<u32> = (0..50).collect();
        let mut b = a.clone();
        let (mut s1, mut s2) = (7, 7);
        shuffle(&mut a, &mut s1);
        shuffle(&mut b, &mut s2);
        assert_eq!(a, b);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, (0..50).collect::<Vec<_>>());
    }
}
