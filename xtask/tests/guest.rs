//! The guest kernel under QEMU (TCG where KVM does not work): each test runs
//! `cargo xtask guest` with a short job and checks the exit status and the
//! guest's JSON report. QEMU must be installed (`scripts/test.sh` installs
//! it); if it cannot run, these tests fail, never skip.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Once;

use vblk_report::verify;

const QEMU: &str = "qemu-system-x86_64";

/// Fails loudly, once, when QEMU is missing.
fn require_qemu() {
    static CHECK: Once = Once::new();
    CHECK.call_once(|| {
        let ok = Command::new(QEMU)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{QEMU} cannot run: the guest tests need it (apt-get install qemu-system-x86; \
             ./scripts/test.sh installs it)"
        );
    });
}

/// Runs `cargo xtask guest ARGS` (through the built runner).
fn guest(args: &[&str]) -> Output {
    require_qemu();
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.arg("guest");
    if !args.contains(&"--runtime") {
        command.args(["--runtime", "1"]);
    }
    // One test lets the runner probe KVM; the rest save the probe's time.
    if !args.contains(&"--accel") {
        command.args(["--accel", "tcg"]);
    }
    let output = command.args(args).output().expect("the xtask binary runs");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    output
}

/// The guest's JSON report line.
fn report(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.starts_with("{\"fio version\""))
        .unwrap_or_else(|| panic!("no JSON report in the guest's output:\n{stdout}"));
    serde_json::from_str(line).expect("the report is valid JSON")
}

/// Asserts the run passed and returns its report.
fn passed(args: &[&str]) -> serde_json::Value {
    let output = guest(args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the guest run failed ({}):\n{stdout}",
        output.status
    );
    assert!(
        stdout.contains("Run status group 0 (all jobs):"),
        "{stdout}"
    );
    let json = report(&output);
    assert_eq!(json["jobs"][0]["error"], 0);
    assert_eq!(json["vblk"]["errors"], 0);
    assert_eq!(json["vblk"]["verify_errors"], 0);
    json
}

fn total_ios(json: &serde_json::Value) -> u64 {
    let job = &json["jobs"][0];
    job["read"]["total_ios"].as_u64().unwrap() + job["write"]["total_ios"].as_u64().unwrap()
}

#[test]
fn packed_two_queues_on_two_vcpus_verify() {
    let json = passed(&[
        "--ring", "packed", "--queues", "2", "--smp", "2", "--rw", "randrw", "--verify", "--disk",
        "ram", "--size", "64m",
    ]);
    assert_eq!(json["vblk"]["ring"], "packed");
    assert_eq!(json["vblk"]["queues"], 2);
    let job = &json["jobs"][0];
    assert!(job["read"]["total_ios"].as_u64().unwrap() > 0);
    assert!(job["write"]["total_ios"].as_u64().unwrap() > 0);
}

#[test]
fn split_one_queue() {
    let json = passed(&["--ring", "split", "--queues", "1"]);
    assert_eq!(json["vblk"]["ring"], "split");
    assert_eq!(json["jobs"][0]["job options"]["numjobs"], "1");
    assert!(total_ios(&json) > 0);
}

#[test]
fn interrupt_mode_with_msix_per_queue() {
    let json = passed(&["--mode", "irq", "--queues", "2", "--smp", "2"]);
    assert_eq!(json["vblk"]["mode"], "irq");
    assert!(json["vblk"]["interrupts"].as_u64().unwrap() > 0);
    assert!(json["vblk"]["used_notifications"].as_u64().unwrap() > 0);
}

#[test]
fn hybrid_mode_with_intx() {
    let json = passed(&[
        "--mode",
        "hybrid",
        "--irq",
        "intx",
        "--ring",
        "split",
        "--iodepth",
        "4",
    ]);
    assert_eq!(json["vblk"]["mode"], "hybrid");
    assert!(total_ios(&json) > 0);
}

#[test]
fn virtio_mmio_on_microvm() {
    let json = passed(&[
        "--transport",
        "mmio",
        "--queues",
        "2",
        "--smp",
        "2",
        "--mode",
        "irq",
        "--rw",
        "randrw",
        "--verify",
        "--disk",
        "ram",
        "--size",
        "16m",
    ]);
    assert!(total_ios(&json) > 0);
    assert!(json["vblk"]["interrupts"].as_u64().unwrap() > 0);
}

/// The guest writes every block of a raw file sequentially with the verify
/// stamp; the host then reads the file and checks each block's stamp.
#[test]
fn raw_file_written_by_the_guest_checks_on_the_host() {
    const SIZE: u64 = 2 << 20;
    const BS: usize = 4096;
    let path = std::env::temp_dir().join(format!("vblk-guest-test-{}.img", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(SIZE))
        .expect("create the image");
    let disk = format!("file:{}", path.display());
    let json = passed(&[
        "--rw", "write", "--verify", "--disk", &disk, "--queues", "2", "--smp", "2", "--bs", "4k",
    ]);
    let written = json["jobs"][0]["write"]["total_ios"].as_u64().unwrap();
    assert!(
        written >= SIZE / BS as u64,
        "only {written} writes: not every block was written"
    );
    let image = std::fs::read(Path::new(&path)).expect("read the image back");
    let _ = std::fs::remove_file(&path);
    assert_eq!(image.len() as u64, SIZE);
    for (block, data) in image.chunks_exact(BS).enumerate() {
        let sector = (block * BS / verify::SECTOR) as u64;
        if let Err(mismatch) = verify::check_stamped(data, sector) {
            panic!(
                "block {block}: sector {}: {}",
                mismatch.sector, mismatch.what
            );
        }
    }
}

#[test]
fn a_hung_guest_is_killed_and_reported_as_a_failure() {
    let output = guest(&["--runtime", "30", "--timeout", "2"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("did not finish within 2 s"), "{stderr}");
}

#[test]
fn bad_flags_are_refused_before_qemu_runs() {
    let output = guest(&["--verify"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--verify needs a disk"));
}

/// Runs a job the guest must run to the end and fail (errors counted, the
/// report printed); returns the report.
fn failed_job(args: &[&str]) -> serde_json::Value {
    let output = guest(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the job ran and failed"), "{stderr}");
    report(&output)
}

/// The report's bad requests as `OP SECTOR: ERROR`, in completion order.
fn bad_requests(json: &serde_json::Value) -> Vec<String> {
    let list = json["vblk"]["bad_requests"].as_array().expect("a list");
    let line = |r: &serde_json::Value| format!("{} {}: {}", r["op"], r["sector"], r["error"]);
    list.iter().map(line).collect()
}

/// How [`bad_requests`] shows a request that failed with an I/O error.
fn eio(op: &str, sector: u64) -> String {
    format!("{op:?} {sector}: \"device reported an I/O error\"")
}

/// A verifying job of `number_ios` requests on `disk`, at depth 8, with
/// these blkdebug rules (the runtime is only a cap).
fn verifying<'a>(
    disk: &'a str,
    rw: &'a str,
    number_ios: &'a str,
    rules: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "--disk",
        disk,
        "--rw",
        rw,
        "--verify",
        "--number-ios",
        number_ios,
    ];
    args.extend(["--iodepth", "8", "--runtime", "60"]);
    for rule in rules {
        args.extend(["--blkdebug-error", rule]);
    }
    args
}

/// QEMU's blkdebug under the guest's virtio-blk-pci device: the injected
/// EIOs fail exactly the requests on their sectors, the job runs on, every
/// other request completes and checks out, and a failed write never
/// reaches the file. Jobs are bounded by --number-ios (each block written
/// once, then read twice), so nothing depends on how fast the guest runs.
#[test]
fn blkdebug_errors_fail_exactly_their_requests_in_the_guest() {
    const SIZE: u64 = 1 << 20;
    const BS: usize = 4096;
    let path = std::env::temp_dir().join(format!("vblk-guest-eio-{}.img", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(SIZE))
        .expect("create the image");
    let disk = format!("file:{}", path.display());
    let json = failed_job(&verifying(&disk, "write", "256", &["write:83"]));
    assert_eq!(json["vblk"]["submitted"], 256);
    assert_eq!(json["vblk"]["completed"], 256);
    assert_eq!(json["vblk"]["errors"], 1);
    assert_eq!(json["jobs"][0]["write"]["total_ios"], 255);
    assert_eq!(bad_requests(&json), [eio("write", 80)]);
    let image = std::fs::read(&path).expect("read the image back");
    for (block, data) in image.chunks_exact(BS).enumerate() {
        if block == 10 {
            assert!(
                data.iter().all(|&b| b == 0),
                "the failed write reached the file"
            );
        } else if let Err(m) = verify::check_stamped(data, (block * BS / verify::SECTOR) as u64) {
            panic!("block {block}: sector {}: {}", m.sector, m.what);
        }
    }

    let rules = ["read:160:once", "read:1600"];
    let json = failed_job(&verifying(&disk, "read", "512", &rules));
    let _ = std::fs::remove_file(&path);
    assert_eq!(json["vblk"]["completed"], 512);
    assert_eq!(json["vblk"]["errors"], 3);
    assert_eq!(json["vblk"]["verify_errors"], 0);
    assert_eq!(json["jobs"][0]["read"]["total_ios"], 509);
    assert_eq!(
        bad_requests(&json),
        [eio("read", 160), eio("read", 1600), eio("read", 1600)]
    );
}

/// `--inject needs-reset` makes QEMU hit virtio_error() mid-job: the device
/// sets DEVICE_NEEDS_RESET and stops. The guest must notice (from the
/// configuration-change interrupt, or in poll mode from its periodic status
/// check), fail the queue's requests at once and say why; without the check
/// they read as "requests never completed" after the drain timeout. Split
/// ring: QEMU 7.2 spins forever in virtio_blk_handle_vq when a packed-ring
/// device breaks (virtio_queue_packed_empty ignores vdev->broken), so the
/// packed case cannot end at all (see the README).
fn needs_reset_fails_the_job_at_once(mode: &str) {
    let output = guest(&[
        "--ring",
        "split",
        "--mode",
        mode,
        "--inject",
        "needs-reset",
        "--runtime",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("the job ran and failed"), "{stderr}");
    assert!(
        stderr.contains("virtio: bogus descriptor"),
        "QEMU's reason is shown: {stderr}"
    );
    assert!(
        stdout.contains("the device set DEVICE_NEEDS_RESET"),
        "{stdout}"
    );
    assert!(
        stdout.contains("failed: device broke the virtio protocol"),
        "{stdout}"
    );
    assert!(!stdout.contains("never completed"), "{stdout}");
    assert!(!stdout.contains("vblk-guest: stall:"), "{stdout}");
    let json = report(&output);
    assert!(json["vblk"]["errors"].as_u64().unwrap() > 0);
}

#[test]
fn needs_reset_is_seen_on_the_configuration_interrupt() {
    needs_reset_fails_the_job_at_once("irq");
}

#[test]
fn needs_reset_is_seen_by_the_status_check_in_poll_mode() {
    needs_reset_fails_the_job_at_once("poll");
}

/// A small `cargo xtask soak`: every run of the matrix is run, counted once
/// and passes (the harness gives TCG maxcpus=2, so the guest's barriers are
/// real), and the JSON agrees with the table.
#[test]
fn a_short_soak_runs_and_counts_every_cell() {
    require_qemu();
    let json_path = std::env::temp_dir().join(format!("vblk-soak-{}.json", std::process::id()));
    let log_dir = std::env::temp_dir().join(format!("vblk-soak-logs-{}", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "soak",
            "--accel",
            "tcg",
            "--modes",
            "poll,irq",
            "--rings",
            "packed",
            "--iothreads",
            "on",
            "--iodepths",
            "1",
            "--runs-per-cell",
            "2",
            "--runtime",
            "0.5",
        ])
        .arg("--json-out")
        .arg(&json_path)
        .arg("--log-dir")
        .arg(&log_dir)
        .output()
        .expect("the xtask binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("| poll | packed | on | 1 | default | 2 | 2 | 0 |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| irq | packed | on | 1 | default | 2 | 2 | 0 |"),
        "{stdout}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("the JSON report"))
            .expect("valid JSON");
    let _ = std::fs::remove_file(&json_path);
    let _ = std::fs::remove_dir_all(&log_dir);
    assert_eq!(json["totals"]["runs"], 4);
    assert_eq!(json["totals"]["passed"], 4);
    assert_eq!(json["runs"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["accel"], "tcg");
    for run in json["runs"].as_array().unwrap() {
        assert_eq!(run["ending"], "passed", "{run}");
        assert!(
            run["rekicks"].is_u64(),
            "the guest reports its re-kicks: {run}"
        );
    }
}
