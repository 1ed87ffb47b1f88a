//! The Kerla kext in the guest kernel (`cargo xtask guest --kext`): the
//! guest loads `virtio_blk_mq_kext` as Kerla's `boot_kernel` would, the
//! kext's prober takes the virtio-pci device (and, in another run, the
//! virtio-mmio one), its block driver round-trips data and refuses bad
//! requests without panicking, and the fio-style job runs on its native
//! per-CPU queues. QEMU must be installed (`scripts/test.sh` installs it);
//! without it these tests fail, never skip. Short TCG runs (1 s each).

use std::process::{Command, Output};

const QEMU: &str = "qemu-system-x86_64";

/// Runs `cargo xtask guest --kext --accel tcg --runtime 1 ARGS` and returns
/// its output once it passed, with the guest's JSON report.
fn kext_run(args: &[&str]) -> (String, serde_json::Value) {
    let qemu_runs = Command::new(QEMU)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        qemu_runs,
        "{QEMU} cannot run: the kext tests need it (apt-get install qemu-system-x86; \
         ./scripts/test.sh installs it)"
    );
    let output: Output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["guest", "--kext", "--accel", "tcg", "--runtime", "1"])
        .args(args)
        .output()
        .expect("the xtask binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the guest run failed ({}):\n{stdout}",
        output.status
    );
    let line = stdout
        .lines()
        .find(|line| line.starts_with("{\"fio version\""))
        .unwrap_or_else(|| panic!("no JSON report in the guest's output:\n{stdout}"));
    let json: serde_json::Value = serde_json::from_str(line).expect("the report is valid JSON");
    assert_eq!(json["jobs"][0]["error"], 0);
    assert_eq!(json["vblk"]["errors"], 0);
    assert_eq!(json["vblk"]["verify_errors"], 0);
    (stdout, json)
}

/// The lines every kext run prints: loaded through init, a prober that
/// took the device on `bus`, a block driver whose round trip passed.
fn assert_loaded_and_round_tripped(stdout: &str, bus: &str) {
    assert!(
        stdout.contains("vblk-guest: kext: loading virtio_blk_mq_kext: init"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("[INFO] virtio-blk-mq kext: {bus}")),
        "the prober did not take the {bus} device:\n{stdout}"
    );
    assert!(stdout.contains("1 block driver(s) registered"), "{stdout}");
    // 1 sector (PR #108's read_block/write_block), 3 sectors, 160 sectors
    // (more than one bounce buffer), compared byte for byte.
    assert!(
        stdout.contains(
            "block driver: 512, 1536 and 81920 bytes written and read back (data compared: ok)"
        ),
        "{stdout}"
    );
    // Bad requests come back as errors; PR #108's read_block logs one.
    assert!(
        stdout.contains(
            "100 and 700 bytes refused (Misaligned); past the end refused (OutOfRange); flush ok"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("read of 100 bytes at sector 0 failed"),
        "{stdout}"
    );
    assert!(!stdout.contains("panic"), "{stdout}");
}

fn total_ios(json: &serde_json::Value) -> u64 {
    let job = &json["jobs"][0];
    job["read"]["total_ios"].as_u64().unwrap() + job["write"]["total_ios"].as_u64().unwrap()
}

#[test]
fn the_kext_drives_virtio_pci_through_its_block_driver_and_per_cpu_queues() {
    let (stdout, json) = kext_run(&[
        "--disk", "ram", "--size", "16m", "--verify", "--rw", "randrw",
    ]);
    assert_loaded_and_round_tripped(&stdout, "virtio-blk-pci");
    // Default settings: the kext's init() itself, poll mode, one queue per
    // CPU plus the block driver's.
    assert!(
        stdout.contains("loading virtio_blk_mq_kext: init()"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 queues set up, 1 for the job"),
        "{stdout}"
    );
    assert_eq!(json["vblk"]["mode"], "poll");
    assert_eq!(json["vblk"]["ring"], "packed");
    assert!(json["jobs"][0]["write"]["total_ios"].as_u64().unwrap() > 0);
    assert!(json["jobs"][0]["read"]["total_ios"].as_u64().unwrap() > 0);
}

#[test]
fn the_kext_drives_virtio_mmio_on_microvm() {
    let (stdout, json) = kext_run(&[
        "--transport",
        "mmio",
        "--queues",
        "2",
        "--smp",
        "2",
        "--disk",
        "ram",
        "--size",
        "16m",
        "--verify",
        "--rw",
        "randrw",
    ]);
    assert_loaded_and_round_tripped(&stdout, "virtio-blk-mmio");
    assert!(
        stdout.contains("3 queues set up, 2 for the job"),
        "{stdout}"
    );
    assert_eq!(json["vblk"]["queues"], 2);
    assert!(total_ios(&json) > 0);
}

#[test]
fn the_kext_hybrid_fallback_is_woken_through_attach_irq() {
    let (stdout, json) = kext_run(&[
        "--mode",
        "hybrid",
        "--ring",
        "split",
        "--iodepth",
        "4",
        "--disk",
        "ram",
        "--size",
        "16m",
        "--verify",
        "--rw",
        "randrw",
    ]);
    assert_loaded_and_round_tripped(&stdout, "virtio-blk-pci");
    assert!(stdout.contains("interrupts: line"), "{stdout}");
    // The attach_irq handler's count, as the guest reports it.
    let handled: u64 = stdout
        .lines()
        .find_map(|line| {
            line.strip_prefix("vblk-guest: kext: ")?
                .strip_suffix(" sleeps timed out")?
                .split_once(" used-buffer interrupts through attach_irq")?
                .0
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no interrupt count in the output:\n{stdout}"));
    assert!(handled > 0, "no interrupt reached the kext:\n{stdout}");
    assert_eq!(json["vblk"]["used_notifications"].as_u64(), Some(handled));
    // Owners slept and were woken by a notification.
    assert!(json["vblk"]["interrupts"].as_u64().unwrap() > 0, "{stdout}");
    assert_eq!(json["vblk"]["mode"], "hybrid");
    assert!(total_ios(&json) > 0);
}
