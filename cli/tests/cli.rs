//! `vblk-bench` as a user runs it: flags in, report and exit status out.
//!
//! Runs are kept short (a fraction of a second): these tests check what the
//! CLI reports and how it exits, never how fast anything is.

mod common;

use common::{f64_at, json_report, stderr, u64_at, vblk_bench};
use serde_json::Value;

/// Runs a short job (0.3 s) with `--output-format json`; returns the report.
fn json_run(args: &[&str]) -> (std::process::Output, Value) {
    json_report(&[&["--runtime", "0.3"][..], args].concat())
}

/// Checks one direction's fio fields against each other.
fn assert_direction_consistent(report: &Value, dir: &str, block: u64) {
    let ios = u64_at(report, &format!("/jobs/0/{dir}/total_ios"));
    assert!(ios > 0, "{dir}: no I/O done");
    assert_eq!(
        u64_at(report, &format!("/jobs/0/{dir}/io_bytes")),
        ios * block
    );
    assert!(f64_at(report, &format!("/jobs/0/{dir}/iops")) > 0.0);
    assert!(u64_at(report, &format!("/jobs/0/{dir}/bw")) > 0);
    let mean = f64_at(report, &format!("/jobs/0/{dir}/clat_ns/mean"));
    let p99 = u64_at(
        report,
        &format!("/jobs/0/{dir}/clat_ns/percentile/99.000000"),
    );
    let min = u64_at(report, &format!("/jobs/0/{dir}/clat_ns/min"));
    let max = u64_at(report, &format!("/jobs/0/{dir}/clat_ns/max"));
    assert!(
        min as f64 <= mean && mean <= max as f64,
        "{dir}: mean outside min..max"
    );
    // The histogram keeps 3 significant digits, so p99 may sit a little above max.
    assert!(
        min <= p99 && p99 <= max + max / 100 + 1,
        "{dir}: p99 outside min..max"
    );
}

#[test]
fn packed_verify_randrw_on_two_queues_passes_and_reports_fio_fields() {
    let (output, report) = json_run(&[
        "--ring",
        "packed",
        "--queues",
        "2",
        "--iodepth",
        "8",
        "--rw",
        "randrw",
        "--disk",
        "ram",
        "--size",
        "8m",
        "--verify",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_direction_consistent(&report, "read", 4096);
    assert_direction_consistent(&report, "write", 4096);
    assert_eq!(u64_at(&report, "/vblk/errors"), 0);
    assert_eq!(u64_at(&report, "/vblk/verify_errors"), 0);
    assert_eq!(u64_at(&report, "/vblk/queues"), 2);
    let completed = u64_at(&report, "/vblk/completed");
    let ios =
        u64_at(&report, "/jobs/0/read/total_ios") + u64_at(&report, "/jobs/0/write/total_ios");
    assert_eq!(completed, ios, "every completion is counted once");
    assert!(report.pointer("/vblk/kicks_per_io").is_some());
}

#[test]
fn split_sequential_write_then_modes_irq_and_hybrid_complete_without_errors() {
    for mode in ["poll", "irq", "hybrid"] {
        let (output, report) = json_run(&[
            "--ring",
            "split",
            "--rw",
            "write",
            "--mode",
            mode,
            "--iodepth",
            "4",
            "--bs",
            "64k",
        ]);
        assert!(output.status.success(), "{mode}: {}", stderr(&output));
        assert_direction_consistent(&report, "write", 65536);
        assert_eq!(u64_at(&report, "/jobs/0/read/total_ios"), 0);
        assert_eq!(u64_at(&report, "/vblk/errors"), 0, "{mode}");
        if mode == "irq" {
            // Every wait ended with a notification, none by the safety timeout.
            assert!(
                u64_at(&report, "/vblk/interrupts") > 0,
                "irq mode never slept"
            );
            // A lost notification would end nearly every wait by its 100 ms
            // slice; allow a couple for a device thread descheduled that long.
            assert!(u64_at(&report, "/vblk/irq_timeouts") <= 2);
        }
    }
}

#[test]
fn poll_mode_against_a_polling_device_almost_never_kicks() {
    let (output, report) = json_run(&["--ring", "packed", "--iodepth", "32"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    // The device's thread starts with kicks enabled and turns them off at
    // its first look at the ring: a commit or two before that may kick,
    // none after.
    let kicks = u64_at(&report, "/vblk/kicks");
    assert!(kicks <= 2, "{kicks} kicks against a polling device");
    assert!(u64_at(&report, "/vblk/completed") > 1000);
    assert_eq!(u64_at(&report, "/vblk/used_notifications"), 0);
}

#[test]
fn an_injected_io_error_fails_the_run() {
    let (output, report) = json_run(&[
        "--rw",
        "read",
        "--size",
        "1m",
        "--inject-ioerr",
        "0..2048",
        "--iodepth",
        "2",
    ]);
    assert!(!output.status.success(), "a run with I/O errors must fail");
    assert!(u64_at(&report, "/vblk/errors") > 0);
    assert!(
        stderr(&output).contains("I/O error"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn a_device_that_stops_answering_fails_the_run_by_request_timeout() {
    let output = vblk_bench(&[
        "--inject-stall",
        "--request-timeout",
        "0.3",
        "--runtime",
        "5",
        "--iodepth",
        "4",
    ]);
    assert!(
        !output.status.success(),
        "a stalled device must fail the run"
    );
    let stderr = stderr(&output);
    assert!(
        stderr.contains("in flight for over") && stderr.contains("stopped answering"),
        "the timeout names the overdue request: {stderr}"
    );
}

#[test]
fn normal_report_reads_like_fio() {
    let output = vblk_bench(&["--runtime", "0.2", "--name", "job1"]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in [
        "job1: (g=0): rw=randread, bs=(R) 4096B-4096B",
        "  read: IOPS=",
        "clat percentiles",
        "99.00th=[",
        "kicks/IO=",
        "Run status group 0 (all jobs):",
        "   READ: bw=",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
}

#[test]
fn bad_flags_get_a_message_and_status_2() {
    for (args, expected) in [
        (&["--bs", "3k"][..], "power of two"),
        (&["--verify"][..], "--disk ram"),
        (&["--blkdebug-error", "read:x"][..], "read:SECTOR"),
        (&["--disk", "tape"][..], "file:PATH"),
        (&["--iodepth", "0"][..], "iodepth"),
        (&["--rw", "sideways"][..], "sideways"),
        (&["--runtime=-1"][..], "positive"),
        (&["--target", "nbd"][..], "vhost-user:PATH"),
    ] {
        let output = vblk_bench(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: `{expected}` not in {}",
            stderr(&output)
        );
    }
}

// --target vhost-user: these start qemu-storage-daemon (scripts/test.sh
// installs it) and fail, never skip, without it.

#[test]
fn spawned_daemon_runs_randrw_on_two_queues_and_reports_a_split_ring() {
    let (output, report) = json_run(&[
        "--target",
        "vhost-user",
        "--spawn-daemon",
        "--size",
        "64m",
        "--queues",
        "2",
        "--iodepth",
        "8",
        "--rw",
        "randrw",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_direction_consistent(&report, "read", 4096);
    assert_direction_consistent(&report, "write", 4096);
    assert_eq!(u64_at(&report, "/vblk/errors"), 0);
    // qemu-storage-daemon offers no packed ring: the report says what ran.
    assert_eq!(
        report.pointer("/vblk/ring").and_then(Value::as_str),
        Some("split")
    );
}

#[test]
fn spawned_daemon_in_hybrid_mode_sleeps_on_the_call_eventfd() {
    let (output, report) = json_run(&[
        "--target",
        "vhost-user",
        "--spawn-daemon",
        "--size",
        "64m",
        "--mode",
        "hybrid",
        "--iodepth",
        "2",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    assert_direction_consistent(&report, "read", 4096);
}

#[test]
fn peer_comparison_prints_both_drivers_side_by_side() {
    let output = vblk_bench(&[
        "--target",
        "vhost-user",
        "--spawn-daemon",
        "--size",
        "64m",
        "--peer",
        "libblkio",
        "--compare-iodepths",
        "1,4",
        "--runtime",
        "0.2",
        "--repeat",
        "1",
    ]);
    assert!(output.status.success(), "stderr: {}", stderr(&output));
    let table = String::from_utf8_lossy(&output.stdout);
    for row in [
        "| 1 | 1 | virtio-blk-mq |",
        "| 1 | 1 | libblkio |",
        "| 1 | 4 | libblkio |",
    ] {
        assert!(table.contains(row), "missing {row} in\n{table}");
    }
    assert!(table.contains("IOPS ours/libblkio"));
}

#[test]
fn vhost_user_flag_mistakes_exit_2() {
    for args in [
        &["--target", "vhost-user"][..],
        &["--target", "vhost-user:/tmp/x.sock", "--spawn-daemon"],
        &["--spawn-daemon"],
        &["--peer", "libblkio"],
        &[
            "--target",
            "vhost-user",
            "--spawn-daemon",
            "--verify",
            "--disk",
            "ram",
        ],
        &["--target", "vhost-user", "--spawn-daemon", "--verify"],
        &["--blkdebug-error", "read:8"],
        &[
            "--target",
            "vhost-user:/tmp/x.sock",
            "--disk",
            "file:/tmp/x.img",
        ],
    ] {
        let output = vblk_bench(args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn an_unreachable_socket_is_a_clear_failure() {
    let output = vblk_bench(&[
        "--target",
        "vhost-user:/nonexistent/vblk.sock",
        "--runtime",
        "0.1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("cannot connect"),
        "{}",
        stderr(&output)
    );
}
