//! The JSON report: fio's field names for the fields fio has, driver figures
//! under a top-level `vblk` object. Written by hand (no serializer without
//! `std` is worth its weight here), on one line.

use alloc::format;
use alloc::string::String;
use core::fmt::Write;

use crate::job::{BadRequest, Problem};
use crate::math;
use crate::summary::{DirSummary, Summary};

/// A value in the document.
enum Value<'a> {
    Int(u64),
    Float(f64),
    Str(&'a str),
}

/// Builds one JSON object, field by field.
struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Object { out, first: true }
    }

    fn key(&mut self, key: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        string(self.out, key);
        self.out.push(':');
    }

    fn field(&mut self, key: &str, value: Value<'_>) -> &mut Self {
        self.key(key);
        match value {
            Value::Int(n) => {
                let _ = write!(self.out, "{n}");
            }
            Value::Float(x) => float(self.out, x),
            Value::Str(s) => string(self.out, s),
        }
        self
    }

    /// A nested object, filled by `fill`.
    fn object(&mut self, key: &str, fill: impl FnOnce(&mut Object<'_>)) -> &mut Self {
        self.key(key);
        let mut inner = Object::open(self.out);
        fill(&mut inner);
        inner.close();
        self
    }

    /// An array of objects, one per item, each filled by `fill`.
    fn objects<T>(
        &mut self,
        key: &str,
        items: &[T],
        mut fill: impl FnMut(&mut Object<'_>, &T),
    ) -> &mut Self {
        self.key(key);
        self.out.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            let mut inner = Object::open(self.out);
            fill(&mut inner, item);
            inner.close();
        }
        self.out.push(']');
        self
    }

    fn close(self) {
        self.out.push('}');
    }
}

fn float(out: &mut String, x: f64) {
    if x.is_finite() {
        // Rust prints the shortest form that reads back exactly, never in
        // exponent notation: valid JSON as it stands.
        let _ = write!(out, "{x}");
    } else {
        out.push_str("null");
    }
}

fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn direction(object: &mut Object<'_>, key: &str, dir: &DirSummary, runtime_ms: u64) {
    object.object(key, |o| {
        o.field("io_bytes", Value::Int(dir.bytes))
            .field("io_kbytes", Value::Int(dir.bytes / 1024))
            .field("bw_bytes", Value::Int(math::round(dir.bw_bytes) as u64))
            .field("bw", Value::Int(math::round(dir.bw_bytes / 1024.0) as u64))
            .field("iops", Value::Float(dir.iops))
            // fio reports 0 for a direction the job did not do.
            .field(
                "runtime",
                Value::Int(if dir.ios > 0 { runtime_ms } else { 0 }),
            )
            .field("total_ios", Value::Int(dir.ios))
            .object("clat_ns", |c| {
                c.field("min", Value::Int(dir.clat.min))
                    .field("max", Value::Int(dir.clat.max))
                    .field("mean", Value::Float(dir.clat.mean))
                    .field("stddev", Value::Float(dir.clat.stddev))
                    .field("N", Value::Int(dir.clat.samples))
                    .object("percentile", |p| {
                        for &(percentile, value) in &dir.clat.percentiles {
                            p.field(&format!("{percentile:.6}"), Value::Int(value));
                        }
                    });
            });
    });
}

/// One bad request: where it was and what went wrong (`error`, or
/// `verify` with the first sector that differed).
fn bad_request(o: &mut Object<'_>, request: &BadRequest) {
    o.field("queue", Value::Int(request.queue as u64))
        .field("op", Value::Str(request.dir.name()))
        .field("sector", Value::Int(request.sector))
        .field("sectors", Value::Int(request.sectors));
    match &request.problem {
        Problem::Failed(error) => o.field("error", Value::Str(&format!("{error}"))),
        Problem::Mismatch(m) => o
            .field("verify_sector", Value::Int(m.sector))
            .field("verify", Value::Str(&m.what)),
    };
}

/// The whole report as one line of JSON; `version` fills fio's
/// `"fio version"` field (e.g. `vblk-bench-0.1.0`).
pub fn report(summary: &Summary, version: &str) -> String {
    let mut out = String::new();
    let error = if summary.failed() { 5 } else { 0 };
    let mut top = Object::open(&mut out);
    top.field("fio version", Value::Str(version));
    top.key("jobs");
    top.out.push('[');
    let mut job = Object::open(top.out);
    job.field("jobname", Value::Str(&summary.name))
        .field("groupid", Value::Int(0))
        .field("error", Value::Int(error))
        .object("job options", |o| {
            o.field("rw", Value::Str(&summary.rw))
                .field("bs", Value::Str(&format!("{}", summary.block_size)))
                .field("iodepth", Value::Str(&format!("{}", summary.job_iodepth())))
                .field("numjobs", Value::Str(&format!("{}", summary.queues)));
        });
    direction(&mut job, "read", &summary.read, summary.runtime_ms);
    direction(&mut job, "write", &summary.write, summary.runtime_ms);
    job.field("job_runtime", Value::Int(summary.runtime_ms));
    job.close();
    top.out.push(']');
    let stats = &summary.stats;
    top.object("vblk", |v| {
        v.field("ring", Value::Str(&summary.ring))
            .field("queues", Value::Int(summary.queues.into()))
            .field("iodepth", Value::Int(summary.iodepth.into()))
            .field("mode", Value::Str(&summary.mode))
            .field("disk", Value::Str(&summary.disk))
            .field("submitted", Value::Int(stats.submitted))
            .field("completed", Value::Int(stats.completed))
            .field("commits", Value::Int(stats.commits))
            .field("publishes", Value::Int(stats.publishes))
            .field("kicks", Value::Int(stats.kicks))
            .field("kicks_per_io", Value::Float(summary.kicks_per_io()))
            .field("commits_per_io", Value::Float(summary.commits_per_io()))
            .field("publishes_per_io", Value::Float(summary.publishes_per_io()))
            .field("interrupts", Value::Int(stats.interrupts))
            .field("rekicks", Value::Int(stats.rekicks))
            .field("rekicks_declined", Value::Int(stats.rekicks_declined))
            .field("bad_lengths", Value::Int(stats.bad_lengths))
            .field("used_notifications", Value::Int(summary.used_notifications))
            .field("irq_timeouts", Value::Int(summary.irq_timeouts))
            .field("empty_polls", Value::Int(stats.empty_polls))
            .field(
                "empty_polls_per_io",
                Value::Float(summary.empty_polls_per_io()),
            )
            .field("errors", Value::Int(summary.errors))
            .field("verify_errors", Value::Int(summary.verify_errors))
            .objects("bad_requests", &summary.bad_requests, bad_request);
        if let Some(asked) = summary.iodepth_asked {
            // Only when capped: `iodepth` above is the depth that ran.
            v.field("iodepth_asked", Value::Int(asked.into()));
        }
    });
    top.close();
    out
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::histogram::DirStats;
    use crate::summary::Summary;

    #[test]
    fn the_report_parses_and_uses_fio_field_names() {
        let mut reads = DirStats::new();
        for i in 1..=500u64 {
            reads.record(4096, i * 1000);
        }
        let summary = Summary {
            name: "a \"quoted\" job".into(),
            rw: "randread".into(),
            block_size: 4096,
            ring: "split".into(),
            queues: 1,
            iodepth: 8,
            mode: "irq".into(),
            disk: "null".into(),
            runtime_ms: 500,
            min_runtime_ms: 500,
            read: DirSummary::new(&reads, 0.5),
            write: DirSummary::new(&DirStats::new(), 0.5),
            verify_errors: 1,
            bad_requests: alloc::vec![
                BadRequest {
                    queue: 1,
                    dir: crate::workload::Dir::Write,
                    sector: 2048,
                    sectors: 8,
                    problem: Problem::Failed(virtio_blk_mq::Error::IoError),
                },
                BadRequest {
                    queue: 0,
                    dir: crate::workload::Dir::Read,
                    sector: 16,
                    sectors: 8,
                    problem: Problem::Mismatch(crate::verify::Mismatch {
                        sector: 19,
                        what: "header checksum is wrong".into(),
                    }),
                },
            ],
            ..Summary::default()
        };
        let text = report(&summary, "vblk-guest-0.1.0");
        assert!(!text.contains('\n'));
        let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let job = &json["jobs"][0];
        assert_eq!(job["jobname"], "a \"quoted\" job");
        assert_eq!(job["error"], 5);
        assert_eq!(job["job options"]["iodepth"], "8");
        assert_eq!(job["read"]["total_ios"], 500);
        assert_eq!(job["read"]["iops"], 1000.0);
        assert_eq!(job["read"]["runtime"], 500);
        assert_eq!(job["write"]["runtime"], 0);
        assert_eq!(job["read"]["clat_ns"]["min"], 1000);
        let p50 = job["read"]["clat_ns"]["percentile"]["50.000000"]
            .as_u64()
            .unwrap();
        assert!((250_000..=252_000).contains(&p50), "{p50}");
        assert_eq!(job["read"]["clat_ns"]["N"], 500);
        assert_eq!(json["vblk"]["mode"], "irq");
        assert_eq!(json["vblk"]["verify_errors"], 1);
        let bad = &json["vblk"]["bad_requests"];
        assert_eq!(bad[0]["queue"], 1);
        assert_eq!(bad[0]["op"], "write");
        assert_eq!(bad[0]["sector"], 2048);
        assert_eq!(bad[0]["sectors"], 8);
        assert_eq!(bad[0]["error"], "device reported an I/O error");
        assert_eq!(bad[1]["op"], "read");
        assert_eq!(bad[1]["verify_sector"], 19);
        assert_eq!(bad[1]["verify"], "header checksum is wrong");
        assert_eq!(json["fio version"], "vblk-guest-0.1.0");
        assert_eq!(json["vblk"]["iodepth"], 8);
        assert!(json["vblk"].get("iodepth_asked").is_none());
    }

    #[test]
    fn a_capped_depth_shows_as_given_and_as_run() {
        let summary = Summary {
            iodepth: 1024,
            iodepth_asked: Some(4096),
            ..Summary::default()
        };
        let json: serde_json::Value =
            serde_json::from_str(&report(&summary, "v")).expect("valid JSON");
        assert_eq!(json["jobs"][0]["job options"]["iodepth"], "4096");
        assert_eq!(json["vblk"]["iodepth"], 1024);
        assert_eq!(json["vblk"]["iodepth_asked"], 4096);
    }

    #[test]
    fn re_kicks_and_bad_lengths_are_reported() {
        let mut summary = Summary::default();
        summary.stats.rekicks = 3;
        summary.stats.rekicks_declined = 5;
        summary.stats.bad_lengths = 2;
        let json: serde_json::Value =
            serde_json::from_str(&report(&summary, "v")).expect("valid JSON");
        assert_eq!(json["vblk"]["rekicks"], 3);
        assert_eq!(json["vblk"]["rekicks_declined"], 5);
        assert_eq!(json["vblk"]["bad_lengths"], 2);
        assert!(crate::normal::normal(&summary, 1).contains("re-kicks=3 (declined 5)"));
    }
}
