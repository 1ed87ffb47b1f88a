//! `cargo xtask kerla --bench`: the in-kernel job in Kerla beside the
//! bare-metal guest, on the same QEMU line, alternating, in one run.
//!
//! Both kernels run the same code on the same device: the kext's native
//! per-CPU queue driven by `vblk_report`'s job engine, 4 KiB random reads
//! on a null disk. The machine is the guest runner's (`pc`, the same
//! accelerator, vCPUs, memory and virtio-blk-pci line), with `-cpu max`
//! for both (Kerla wants XSAVE, which TCG's default CPU lacks); Kerla's
//! boot adds what Kerla needs and the guest does not: a virtio-net device
//! (Kerla panics without one) and an isa-debug-exit port at 0x501 (where
//! Kerla's halt writes).

use std::path::Path;
use std::time::Duration;

use clap::Parser;

use crate::args::GuestArgs;
use crate::linux::fio::Figures;
use crate::qemu::{self, Boot, Machine, Outcome};

use super::boot::strip_ansi;

/// Flags of the comparison.
#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Queue depths to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pub bench_iodepths: Vec<u16>,
    /// Seconds each job runs.
    #[arg(long, default_value = "2")]
    pub bench_runtime: String,
    /// Pairs of runs per depth (alternating which kernel goes first); the
    /// table shows medians.
    #[arg(long, default_value_t = 3)]
    pub bench_repeat: u32,
}

#[derive(Parser)]
struct GuestFlags {
    #[command(flatten)]
    guest: GuestArgs,
}

/// The guest's flags for one depth: the kext path on one queue.
fn guest_args(iodepth: u16, runtime: &str) -> Result<GuestArgs, String> {
    let depth = iodepth.to_string();
    let flags = [
        "guest",
        "--kext",
        "--accel",
        "tcg",
        "--queues",
        "1",
        "--ring",
        "packed",
        "--rw",
        "randread",
        "--bs",
        "4k",
        "--disk",
        "null",
        "--size",
        "1g",
        "--iodepth",
        &depth,
        "--runtime",
        runtime,
    ];
    GuestFlags::try_parse_from(flags)
        .map(|f| f.guest)
        .map_err(|e| e.to_string())
}

/// One Kerla run of the job on `machine`.
fn run_kerla(machine: &Machine, kerla: &Path, args: &GuestArgs) -> Result<Figures, String> {
    let append = format!(
        "dhcp=off vblk.job=randread vblk.bs=4k vblk.iodepth={} vblk.runtime={}",
        args.iodepth, args.runtime
    );
    let boot = Boot {
        kernel: kerla,
        initrd: None,
        append: &append,
    };
    let mut qemu = machine.qemu_args(&boot);
    qemu.extend(
        [
            "-device",
            "isa-debug-exit,iobase=0x501,iosize=2",
            "-netdev",
            "user,id=net0",
            "-device",
            "virtio-net-pci,netdev=net0,disable-legacy=on",
        ]
        .map(String::from),
    );
    let timeout = Duration::from_secs(machine.runtime.ceil() as u64 + 120);
    let run = qemu::run_qemu_until(&qemu, timeout, false, |line| {
        line.contains("booting boot2dump")
    })?;
    let json = run
        .lines
        .iter()
        .find_map(|line| {
            let line = strip_ansi(line);
            line.find("vblk-job-json: ")
                .map(|at| line[at + "vblk-job-json: ".len()..].trim().to_string())
        })
        .ok_or_else(|| {
            let tail: Vec<String> = run
                .lines
                .iter()
                .rev()
                .take(30)
                .rev()
                .map(|l| strip_ansi(l))
                .collect();
            format!(
                "Kerla printed no job report; its console ended:\n{}",
                tail.join("\n")
            )
        })?;
    super::job_figures(&json)
}

/// One guest run of the job on `machine`.
fn run_guest(machine: &Machine, guest: &Path, args: &GuestArgs) -> Result<Figures, String> {
    let (outcome, lines) = qemu::run_guest(args, machine, guest, false)?;
    let json = qemu::report_line(&lines).ok_or("the guest printed no report")?;
    if !matches!(outcome, Outcome::Passed) {
        return Err("the guest's job failed".into());
    }
    super::job_figures(json)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the comparison with the built Kerla; prints the table.
pub fn run(bench: &BenchArgs, kerla: &Path) -> Result<Outcome, String> {
    let guest = qemu::build_guest()?;
    println!(
        "xtask kerla --bench: 4 KiB random reads on a null disk, one queue, the kext's native path \
         in both kernels; {} pairs per depth, alternating; load average {}",
        bench.bench_repeat,
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    );
    println!(
        "{:>7}  {:>12} {:>9} {:>9}  {:>12} {:>9} {:>9}  {:>12}",
        "iodepth",
        "Kerla IOPS",
        "p50 us",
        "p99 us",
        "guest IOPS",
        "p50 us",
        "p99 us",
        "Kerla/guest"
    );
    for &iodepth in &bench.bench_iodepths {
        let args = guest_args(iodepth, &bench.bench_runtime)?;
        let mut machine = Machine::new(&args)?;
        machine.extra_args = vec!["-cpu".into(), "max".into()];
        let (mut kerla_runs, mut guest_runs) = (Vec::new(), Vec::new());
        for pair in 0..bench.bench_repeat {
            let kerla_first = pair % 2 == 0;
            for side in 0..2 {
                if (side == 0) == kerla_first {
                    kerla_runs.push(run_kerla(&machine, kerla, &args)?);
                } else {
                    guest_runs.push(run_guest(&machine, &guest, &args)?);
                }
            }
        }
        let iops = |runs: &[Figures]| median(runs.iter().map(|f| f.iops).collect());
        let p50 = |runs: &[Figures]| median(runs.iter().map(|f| f.clat_p50_ns / 1e3).collect());
        let p99 = |runs: &[Figures]| median(runs.iter().map(|f| f.clat_p99_ns / 1e3).collect());
        let ratios: Vec<f64> = kerla_runs
            .iter()
            .zip(&guest_runs)
            .map(|(k, g)| k.iops / g.iops)
            .collect();
        println!(
            "{:>7}  {:>12.0} {:>9.1} {:>9.1}  {:>12.0} {:>9.1} {:>9.1}  {:>12.2}",
            iodepth,
            iops(&kerla_runs),
            p50(&kerla_runs),
            p99(&kerla_runs),
            iops(&guest_runs),
            p50(&guest_runs),
            p99(&guest_runs),
            median(ratios)
        );
    }
    Ok(Outcome::Passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_runs_the_kext_path_on_one_queue() {
        let args = guest_args(32, "2").unwrap();
        assert!(args.kext);
        assert_eq!((args.queues, args.iodepth), (1, 32));
        assert_eq!(args.rw, "randread");
    }

    #[test]
    fn the_median_is_the_middle_value() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert!(median(Vec::new()).is_nan());
    }
}
