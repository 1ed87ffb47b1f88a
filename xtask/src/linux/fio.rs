//! Our guest's job flags as fio options, and the figures the comparison
//! reads out of a fio-style JSON report (fio's own, or our guest's, which
//! uses fio's field names).

use crate::args::{parse_bytes, Disk, GuestArgs, Mode};

/// The fio command line for the job (the init script runs
/// `fio OPTIONS --output=FILE`). Our guest's job maps as: `--queues N`
/// (one queue per vCPU) -> `numjobs=N` pinned one per CPU, reported as one
/// group; `--mode poll` -> `hipri` (io_uring polled completions on
/// virtio_blk's poll queues); `--mode irq` -> interrupts.
pub fn options(args: &GuestArgs, runtime_s: f64) -> Result<Vec<String>, String> {
    let plain = |what: &str, text: &str| {
        if !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            Ok(())
        } else {
            Err(format!(
                "{what} {text:?}: only letters, digits, '-', '_' and '.' fit the Linux guest's \
                 command line"
            ))
        }
    };
    plain("--name", &args.name)?;
    parse_bytes(&args.bs)
        .filter(|b| *b >= 512 && b % 512 == 0)
        .ok_or_else(|| format!("--bs {}: a multiple of 512 bytes", args.bs))?;
    let jobs = args.queues;
    let mut options = vec![
        format!("--name={}", args.name),
        "--filename=/dev/vda".into(),
        "--ioengine=io_uring".into(),
        "--direct=1".into(),
        format!("--rw={}", args.rw),
        format!("--bs={}", args.bs.to_ascii_lowercase()),
        format!("--iodepth={}", args.iodepth),
        format!("--numjobs={jobs}"),
        "--group_reporting".into(),
        "--time_based".into(),
        format!("--runtime={}ms", (runtime_s * 1000.0).round() as u64),
        // Our guest draws offsets at random without a map of blocks done.
        "--norandommap".into(),
        "--randrepeat=0".into(),
        // Like our guest's queues: job i on CPU i.
        format!("--cpus_allowed=0-{}", jobs - 1),
        "--cpus_allowed_policy=split".into(),
        "--output-format=json".into(),
        // No progress lines on the console, between the markers.
        "--eta=never".into(),
    ];
    if args.rw == "randrw" {
        options.push(format!("--rwmixread={}", args.rwmixread));
    }
    if !matches!(args.disk, Disk::File(_)) {
        // Our guest's region: the first --size bytes (the whole disk).
        options.push(format!("--size={}", args.size.to_ascii_lowercase()));
    }
    if args.mode == Mode::Poll {
        options.push("--hipri".into());
    }
    Ok(options)
}

/// What the comparison shows of one run: all directions together for IOPS,
/// the busier direction's completion latencies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    /// Requests per second, reads and writes together.
    pub iops: f64,
    /// Completion latency, ns.
    pub clat_mean_ns: f64,
    /// Median completion latency, ns.
    pub clat_p50_ns: f64,
    /// 99th percentile, ns.
    pub clat_p99_ns: f64,
    /// fio's total latency (submission + completion), ns; our guest's
    /// report has none: its clat already starts before the submission.
    pub lat_mean_ns: Option<f64>,
    /// Requests completed.
    pub ios: u64,
}

impl Figures {
    /// From a fio-style report's first job; `None` when fields are missing.
    pub fn from_json(json: &serde_json::Value) -> Option<Figures> {
        let job = &json["jobs"][0];
        let (read, write) = (&job["read"], &job["write"]);
        let ios = |dir: &serde_json::Value| dir["total_ios"].as_u64().unwrap_or(0);
        let busier = if ios(read) >= ios(write) { read } else { write };
        let clat = &busier["clat_ns"];
        let percentile = |key: &str| clat["percentile"][key].as_f64();
        Some(Figures {
            iops: read["iops"].as_f64()? + write["iops"].as_f64().unwrap_or(0.0),
            clat_mean_ns: clat["mean"].as_f64()?,
            clat_p50_ns: percentile("50.000000")?,
            clat_p99_ns: percentile("99.000000")?,
            lat_mean_ns: busier["lat_ns"]["mean"].as_f64(),
            ios: ios(read) + ios(write),
        })
    }

    /// One line for the log.
    pub fn summary(&self) -> String {
        format!(
            "{:.0} IOPS, clat mean {:.1} us, p50 {:.1} us, p99 {:.1} us{} ({} requests)",
            self.iops,
            self.clat_mean_ns / 1e3,
            self.clat_p50_ns / 1e3,
            self.clat_p99_ns / 1e3,
            self.lat_mean_ns.map_or(String::new(), |lat| format!(
                ", lat mean {:.1} us",
                lat / 1e3
            )),
            self.ios
        )
    }

    /// The latency from the application's submission: fio's `lat`, or the
    /// clat of a report without one (our guest's).
    pub fn total_mean_ns(&self) -> f64 {
        self.lat_mean_ns.unwrap_or(self.clat_mean_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Task};
    use clap::Parser;

    fn job(flags: &[&str]) -> GuestArgs {
        let cli = Cli::try_parse_from(["xtask", "guest"].iter().chain(flags)).unwrap();
        let Task::Guest(args) = cli.task else {
            unreachable!()
        };
        args
    }

    #[test]
    fn the_job_maps_to_fio_options() {
        let options = options(
            &job(&["--queues", "2", "--iodepth", "1", "--mode", "poll"]),
            2.5,
        )
        .unwrap();
        for wanted in [
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randread",
            "--bs=4k",
            "--iodepth=1",
            "--numjobs=2",
            "--runtime=2500ms",
            "--cpus_allowed=0-1",
            "--size=1g",
            "--hipri",
            "--output-format=json",
        ] {
            assert!(options.iter().any(|o| o == wanted), "{wanted}: {options:?}");
        }
        let irq = options_for(&["--mode", "irq", "--rw", "randrw"]);
        assert!(!irq.iter().any(|o| o == "--hipri"));
        assert!(irq.iter().any(|o| o == "--rwmixread=50"));
        assert!(super::options(&job(&["--name", "a b"]), 1.0).is_err());
    }

    fn options_for(flags: &[&str]) -> Vec<String> {
        options(&job(flags), 1.0).unwrap()
    }

    #[test]
    fn figures_come_from_fio_field_names() {
        let json: serde_json::Value = serde_json::from_str(
            r#"{"jobs":[{"read":{"iops":1000.5,"total_ios":2001,"clat_ns":{"mean":30000.0,
                "percentile":{"50.000000":29000,"99.000000":81000}},"lat_ns":{"mean":31000.0}},
                "write":{"iops":0.0,"total_ios":0,"clat_ns":{"mean":0.0,"percentile":{}}}}]}"#,
        )
        .unwrap();
        let figures = Figures::from_json(&json).unwrap();
        assert_eq!(figures.iops, 1000.5);
        assert_eq!(figures.clat_p50_ns, 29000.0);
        assert_eq!(figures.clat_p99_ns, 81000.0);
        assert_eq!(figures.ios, 2001);
        assert_eq!(figures.lat_mean_ns, Some(31000.0));
        assert_eq!(figures.total_mean_ns(), 31000.0);
        assert!(Figures::from_json(&serde_json::json!({})).is_none());
    }
}
