//! `cargo xtask kerla` must fail when it should. `scripts/test.sh` runs
//! the passing case itself (`cargo xtask kerla`, every boot); here the
//! script is shown a Kerla whose patch series skips the kext's `init()`, one
//! whose block device file corrupts what it reads, and a source that does
//! not exist. Each must end in a failure that says why, never in a skip.
//! The builds reuse `target/kerla` (only the kernel crate is rebuilt), one
//! at a time (the tests share the scratch tree).

use std::process::Command;

fn xtask_kerla(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("kerla")
        .args(args)
        .output()
        .expect("the xtask binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The scratch tree is shared: one broken build at a time.
static ONE_BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn with_extra_patch(name: &str) -> (bool, String) {
    let _one = ONE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let patch = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    xtask_kerla(&["--boots", "pci-packed", "--extra-patch", &patch])
}

#[test]
fn a_kerla_that_never_loads_the_kext_fails_the_run() {
    let (passed, output) = with_extra_patch("kerla-skip-kext-init.patch");
    assert!(!passed, "the run passed without the kext's init:\n{output}");
    assert!(output.contains("xtask kerla: FAIL"), "{output}");
    assert!(
        output.contains("the kext took no virtio-blk device"),
        "{output}"
    );
    assert!(output.contains("no `vblk-selftest: PASS` line"), "{output}");
    assert!(
        output.contains("disk image: the kext's self-test: sector 0"),
        "the host check must see the missing writes:\n{output}"
    );
}

#[test]
fn a_block_device_file_that_corrupts_reads_fails_the_run() {
    let (passed, output) = with_extra_patch("kerla-corrupt-reads.patch");
    assert!(!passed, "the run passed with corrupted reads:\n{output}");
    assert!(output.contains("xtask kerla: FAIL"), "{output}");
    // The writes reached the disk intact; every dd read-back and blkcheck's
    // comparisons see the flipped bytes.
    assert!(
        output.contains("user space: FAIL 4k: 4096 bytes at 1048576 read back different"),
        "{output}"
    );
    assert!(
        output.contains("blkcheck: FAIL unaligned read returns the right bytes"),
        "{output}"
    );
    assert!(output.contains("no `vblk-user: PASS` line"), "{output}");
}

#[test]
fn a_missing_kerla_source_is_an_error_not_a_skip() {
    let (passed, output) = xtask_kerla(&["--kerla-src", "/nonexistent/kerla.tar.gz"]);
    assert!(!passed, "{output}");
    assert!(
        output.contains("no Kerla source at /nonexistent/kerla.tar.gz"),
        "{output}"
    );
}
