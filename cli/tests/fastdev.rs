//! `--spawn-backend fast`: the CLI against vblk-fastdev, the busy-polling
//! vhost-user-blk backend it runs in its own process.
//!
//! Every job is bounded by `--number-ios` or a short `--runtime`; the tests
//! check correctness (verified data, no errors) and that the figures are
//! there (IOPS > 0), never how fast anything is.

mod common;

use common::{f64_at, json_report, refused, stderr, u64_at, vblk_bench};
use serde_json::Value;

const FAST: [&str; 4] = ["--target", "vhost-user", "--spawn-backend", "fast"];

fn fast(args: &[&str]) -> Vec<String> {
    FAST.iter().chain(args).map(|s| s.to_string()).collect()
}

fn run_json(args: &[&str]) -> (std::process::Output, Value) {
    let all = fast(args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    json_report(&all)
}

#[test]
fn a_verified_random_read_write_run_on_a_ram_disk_passes_on_two_queues() {
    let (output, report) = run_json(&[
        "--disk",
        "ram",
        "--size",
        "16m",
        "--verify",
        "--verify-initial",
        "zeros",
        "--rw",
        "randrw",
        "--queues",
        "2",
        "--iodepth",
        "16",
        "--number-ios",
        "4000",
        "--runtime",
        "60",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(u64_at(&report, "/vblk/errors"), 0);
    assert_eq!(u64_at(&report, "/vblk/verify_errors"), 0);
    let reads = u64_at(&report, "/jobs/0/read/total_ios");
    let writes = u64_at(&report, "/jobs/0/write/total_ios");
    assert_eq!(reads + writes, 2 * 4000, "every request completed");
    assert!(reads > 0 && writes > 0);
    assert!(f64_at(&report, "/jobs/0/read/iops") > 0.0);
    assert!(f64_at(&report, "/jobs/0/write/iops") > 0.0);
    assert_eq!(
        report.pointer("/vblk/ring").and_then(Value::as_str),
        Some("split"),
        "vblk-fastdev offers split rings only"
    );
}

#[test]
fn every_block_written_once_then_read_back_verifies() {
    // 4 MiB on one queue = 1024 blocks: a sequential write pass over all of
    // them, then reads that must find this run's stamps.
    let (output, report) = run_json(&[
        "--disk",
        "ram",
        "--size",
        "4m",
        "--verify",
        "--rw",
        "write",
        "--number-ios",
        "1024",
        "--runtime",
        "60",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_eq!(u64_at(&report, "/jobs/0/write/total_ios"), 1024);
    assert_eq!(u64_at(&report, "/vblk/verify_errors"), 0);
}

#[test]
fn interrupt_and_hybrid_modes_are_woken_by_the_backend() {
    for mode in ["irq", "hybrid"] {
        let (output, report) = run_json(&[
            "--mode",
            mode,
            "--iodepth",
            "4",
            "--number-ios",
            "2000",
            "--runtime",
            "60",
        ]);
        assert!(output.status.success(), "{mode}: {}", stderr(&output));
        assert_eq!(u64_at(&report, "/jobs/0/read/total_ios"), 2000, "{mode}");
        assert_eq!(u64_at(&report, "/vblk/errors"), 0, "{mode}");
    }
}

#[test]
fn the_peer_comparison_runs_both_drivers_against_one_fast_backend() {
    let args = fast(&[
        "--peer",
        "libblkio",
        "--compare-iodepths",
        "1,8",
        "--compare-queues",
        "1,2",
        "--runtime",
        "0.2",
        "--repeat",
        "2",
        "--output-format",
        "json",
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = vblk_bench(&args);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert!(report["backend"]
        .as_str()
        .is_some_and(|b| b.starts_with("vblk-fastdev")));
    let points = report["points"].as_array().expect("points");
    assert_eq!(points.len(), 4, "q1 and q2 at qd1 and qd8");
    for point in points {
        for driver in ["ours", "libblkio"] {
            let runs = point[driver].as_array().expect("runs");
            assert_eq!(runs.len(), 2, "{driver}: --repeat 2");
            for run in runs {
                assert!(run["iops"].as_f64().unwrap() > 0.0, "{driver}: {point}");
                assert_eq!(run["errors"].as_u64(), Some(0), "{driver}: {point}");
            }
        }
        let ratio = &point["iops_ratio"];
        let (min, median, max) = (
            ratio["min"].as_f64().unwrap(),
            ratio["median"].as_f64().unwrap(),
            ratio["max"].as_f64().unwrap(),
        );
        assert!(0.0 < min && min <= median && median <= max, "{ratio}");
    }
}

#[test]
fn fast_backend_flag_mistakes_exit_2() {
    for args in [
        &["--spawn-backend", "fast"][..],
        &[
            "--target",
            "vhost-user:/tmp/x.sock",
            "--spawn-backend",
            "fast",
        ],
        &[
            "--target",
            "vhost-user",
            "--spawn-backend",
            "fast",
            "--spawn-daemon",
        ],
        &[
            "--target",
            "vhost-user",
            "--spawn-backend",
            "fast",
            "--disk",
            "file:/tmp/x.img",
        ],
        &[
            "--target",
            "vhost-user",
            "--spawn-backend",
            "fast",
            "--verify",
        ],
        &[
            "--target",
            "vhost-user",
            "--spawn-backend",
            "fast",
            "--blkdebug-error",
            "read:8",
        ],
        &["--target", "vhost-user", "--spawn-daemon", "--disk", "ram"],
    ] {
        refused(args);
    }
}
