//! fio's "normal" report, in fio's layout and units.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;

use crate::summary::{Clat, DirSummary, Summary};

/// `value` scaled by `base` (1000 or 1024) to at most four digits, with the
/// unit prefix fio uses (`k`, `M`, ... or `Ki`, `Mi`, ...) before `unit`.
pub fn scaled(value: f64, base: f64, unit: &str) -> String {
    const SI: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
    const IEC: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let prefixes = if base == 1024.0 { &IEC } else { &SI };
    let mut value = value.max(0.0);
    let mut index = 0;
    while value >= 9999.5 && index + 1 < prefixes.len() {
        value /= base;
        index += 1;
    }
    let number = if index == 0 || value >= 99.95 {
        format!("{value:.0}")
    } else if value >= 9.995 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    };
    format!("{number}{}{unit}", prefixes[index])
}

/// Latency unit and divisor for min/max/mean/stddev, chosen as fio does.
fn clat_unit(clat: &Clat) -> (&'static str, f64) {
    if clat.min > 2_000_000 && clat.max > 99_999_999 && clat.stddev > 1e6 {
        ("msec", 1e6)
    } else if clat.min > 2000 && clat.max > 99_999 && clat.stddev > 1000.0 {
        ("usec", 1e3)
    } else {
        ("nsec", 1.0)
    }
}

/// Unit and divisor for the percentile table, chosen from its range as fio does.
fn percentile_unit(clat: &Clat) -> (&'static str, u64) {
    let values = clat.percentiles.iter().map(|&(_, v)| v);
    let min = values.clone().min().unwrap_or(0);
    let max = values.max().unwrap_or(0);
    if min > 2_000_000 && max > 99_999_999 {
        ("msec", 1_000_000)
    } else if min > 2000 && max > 99_999 {
        ("usec", 1000)
    } else {
        ("nsec", 1)
    }
}

fn direction(out: &mut String, label: &str, dir: &DirSummary, runtime_ms: u64) {
    let _ = writeln!(
        out,
        "  {label}: IOPS={}, BW={} ({})({}/{runtime_ms}msec)",
        scaled(dir.iops, 1000.0, ""),
        scaled(dir.bw_bytes, 1024.0, "B/s"),
        scaled(dir.bw_bytes, 1000.0, "B/s"),
        scaled(dir.bytes as f64, 1024.0, "B"),
    );
    let clat = &dir.clat;
    let (unit, divisor) = clat_unit(clat);
    let _ = writeln!(
        out,
        "    clat ({unit}): min={}, max={}, avg={:.2}, stdev={:.2}",
        scaled(clat.min as f64 / divisor, 1000.0, ""),
        scaled(clat.max as f64 / divisor, 1000.0, ""),
        clat.mean / divisor,
        clat.stddev / divisor,
    );
    let (unit, divisor) = percentile_unit(clat);
    let _ = writeln!(out, "    clat percentiles ({unit}):");
    let width = clat
        .percentiles
        .iter()
        .map(|&(_, v)| (v / divisor).to_string().len())
        .max()
        .unwrap_or(1)
        .max(5);
    let entries: Vec<String> = clat
        .percentiles
        .iter()
        .map(|&(p, v)| format!("{p:5.2}th=[{:>width$}]", v / divisor))
        .collect();
    let rows: Vec<String> = entries.chunks(4).map(|row| row.join(", ")).collect();
    let _ = writeln!(out, "     | {}", rows.join(",\n     | "));
}

fn group_line(out: &mut String, label: &str, dir: &DirSummary, summary: &Summary) {
    let _ = writeln!(
        out,
        "{label:>7}: bw={} ({}), io={} ({}), run={}-{}msec",
        scaled(dir.bw_bytes, 1024.0, "B/s"),
        scaled(dir.bw_bytes, 1000.0, "B/s"),
        scaled(dir.bytes as f64, 1024.0, "B"),
        scaled(dir.bytes as f64, 1000.0, "B"),
        summary.min_runtime_ms,
        summary.runtime_ms,
    );
}

/// The report as fio would print it, plus a `vblk:` line of driver figures.
/// `pid` fills fio's pid field (a process id, or whatever the runner has).
pub fn normal(summary: &Summary, pid: u32) -> String {
    let mut out = String::new();
    let bs = summary.block_size;
    if let Some(asked) = summary.iodepth_asked {
        let _ = writeln!(
            out,
            "note: iodepth={asked} is more than a ring holds; {} requests in flight per queue",
            summary.iodepth
        );
    }
    let _ = writeln!(
        out,
        "{}: (g=0): rw={}, bs=(R) {bs}B-{bs}B, (W) {bs}B-{bs}B, (T) {bs}B-{bs}B, \
         ioengine=virtio-blk-mq, iodepth={}",
        summary.name,
        summary.rw,
        summary.job_iodepth()
    );
    let err = if summary.failed() { 5 } else { 0 };
    let _ = writeln!(
        out,
        "{}: (groupid=0, jobs={}): err={err:>2}: pid={pid}",
        summary.name, summary.queues,
    );
    let directions = [("read", &summary.read), ("write", &summary.write)];
    // fio prints the directions the job does; a job with no I/O at all still
    // shows its main one.
    let shown: Vec<_> = directions
        .iter()
        .filter(|(label, dir)| dir.ios > 0 || (*label == "read" && summary.write.ios == 0))
        .collect();
    for (label, dir) in &shown {
        direction(&mut out, label, dir, summary.runtime_ms);
    }
    let _ = writeln!(
        out,
        "  vblk: ring={}, queues={}, iodepth={}, mode={}, disk={}, kicks/IO={:.4}, \
         commits/IO={:.4}, publishes/IO={:.4}, interrupts={}, re-kicks={} (declined {}), \
         empty polls/IO={:.3}, errors={}, \
         verify errors={}",
        summary.ring,
        summary.queues,
        summary.iodepth,
        summary.mode,
        summary.disk,
        summary.kicks_per_io(),
        summary.commits_per_io(),
        summary.publishes_per_io(),
        summary.stats.interrupts,
        summary.stats.rekicks,
        summary.stats.rekicks_declined,
        summary.empty_polls_per_io(),
        summary.errors,
        summary.verify_errors,
    );
    for request in &summary.bad_requests {
        let _ = writeln!(out, "  bad request: {request}");
    }
    let _ = writeln!(out, "\nRun status group 0 (all jobs):");
    for (label, dir) in &shown {
        group_line(&mut out, &label.to_ascii_uppercase(), dir, summary);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::DirStats;

    #[test]
    fn numbers_scale_to_four_digits_as_fio_prints_them() {
        assert_eq!(scaled(950.0, 1000.0, ""), "950");
        assert_eq!(scaled(9999.0, 1000.0, ""), "9999");
        assert_eq!(scaled(95_234.0, 1000.0, ""), "95.2k");
        assert_eq!(scaled(1_234_567.0, 1000.0, ""), "1235k");
        assert_eq!(scaled(12_345_678.0, 1000.0, ""), "12.3M");
        assert_eq!(scaled(4821.0 * 1048576.0, 1024.0, "B/s"), "4821MiB/s");
        assert_eq!(scaled(390.0e6, 1000.0, "B/s"), "390MB/s");
        assert_eq!(scaled(524_000.0, 1000.0, "B/s"), "524kB/s");
        assert_eq!(scaled(14.1 * 1073741824.0, 1024.0, "B"), "14.1GiB");
    }

    #[test]
    fn latency_units_follow_the_range() {
        let clat = |min, max, stddev| Clat {
            min,
            max,
            stddev,
            ..Clat::default()
        };
        assert_eq!(clat_unit(&clat(300, 90_000, 200.0)).0, "nsec");
        assert_eq!(clat_unit(&clat(3000, 200_000, 5000.0)).0, "usec");
        assert_eq!(clat_unit(&clat(3_000_000, 200_000_000, 5e6)).0, "msec");
    }

    #[test]
    fn a_mixed_job_shows_both_directions_in_fio_layout() {
        let mut reads = DirStats::new();
        let mut writes = DirStats::new();
        for i in 0..1000 {
            reads.record(4096, 10_000 + i * 100);
            writes.record(4096, 20_000 + i * 150);
        }
        let summary = Summary {
            name: "vblk".into(),
            rw: "randrw".into(),
            block_size: 4096,
            ring: "packed".into(),
            queues: 2,
            iodepth: 32,
            mode: "poll".into(),
            disk: "null".into(),
            runtime_ms: 1000,
            min_runtime_ms: 999,
            read: DirSummary::new(&reads, 1.0),
            write: DirSummary::new(&writes, 1.0),
            ..Summary::default()
        };
        let text = normal(&summary, 7);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("vblk: (g=0): rw=randrw, bs=(R) 4096B-4096B"));
        assert_eq!(lines[1], "vblk: (groupid=0, jobs=2): err= 0: pid=7");
        assert_eq!(
            lines[2],
            "  read: IOPS=1000, BW=4000KiB/s (4096kB/s)(4000KiB/1000msec)"
        );
        assert!(
            lines[3].starts_with("    clat (usec): min=10, max=110"),
            "{}",
            lines[3]
        );
        assert!(text.contains("  write: IOPS=1000"));
        assert!(text.contains("     |  1.00th=[") && text.contains(", 50.00th=["));
        assert!(text.contains("\nRun status group 0 (all jobs):\n   READ: bw="));
        assert!(text
            .contains("  WRITE: bw=4000KiB/s (4096kB/s), io=4000KiB (4096kB), run=999-1000msec"));
    }

    #[test]
    fn a_capped_depth_gets_a_note_and_the_vblk_line_shows_what_ran() {
        let summary = Summary {
            name: "vblk".into(),
            iodepth: 1024,
            iodepth_asked: Some(4096),
            ..Summary::default()
        };
        let text = normal(&summary, 7);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "note: iodepth=4096 is more than a ring holds; 1024 requests in flight per queue"
        );
        assert!(lines[1].ends_with(", iodepth=4096"), "{}", lines[1]);
        assert!(
            text.contains("  vblk: ring=, queues=0, iodepth=1024, "),
            "{text}"
        );
        let uncapped = normal(&Summary::default(), 7);
        assert!(!uncapped.contains("note:"));
    }

    #[test]
    fn bad_requests_are_listed_under_the_vblk_line() {
        use crate::job::{BadRequest, Problem};
        let summary = Summary {
            name: "vblk".into(),
            errors: 1,
            bad_requests: alloc::vec![
                BadRequest {
                    queue: 1,
                    dir: crate::workload::Dir::Read,
                    sector: 2048,
                    sectors: 8,
                    problem: Problem::Failed(virtio_blk_mq::Error::IoError),
                },
                BadRequest {
                    queue: 0,
                    dir: crate::workload::Dir::Read,
                    sector: 616,
                    sectors: 8,
                    problem: Problem::Mismatch(crate::verify::Mismatch {
                        sector: 619,
                        what: "byte 100 differs from the pattern".into(),
                    }),
                },
            ],
            ..Summary::default()
        };
        let text = normal(&summary, 7);
        let vblk = text.lines().position(|l| l.starts_with("  vblk:")).unwrap();
        assert_eq!(
            text.lines().nth(vblk + 1),
            Some(
                "  bad request: queue 1: read of 8 sectors at sector 2048 failed: \
                 device reported an I/O error"
            )
        );
        assert_eq!(
            text.lines().nth(vblk + 2),
            Some(
                "  bad request: queue 0: read of 8 sectors at sector 616 returned wrong data: \
                 sector 619: byte 100 differs from the pattern"
            )
        );
        assert!(text.contains("err= 5"));
    }
}
