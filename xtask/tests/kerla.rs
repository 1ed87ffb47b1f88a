//! `cargo xtask kerla` must fail when it should. `scripts/test.sh` runs
//! the passing case itself (`cargo xtask kerla`, every boot); here the
//! script is shown a Kerla whose patch series skips the kext's `init()`,
//! and a source that does not exist. Both must end in a failure that says
//! why, never in a skip. The build reuses `target/kerla` (only the kernel
//! crate is rebuilt).

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

#[test]
fn a_kerla_that_never_loads_the_kext_fails_the_run() {
    let patch = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kerla-skip-kext-init.patch"
    );
    let (passed, output) = xtask_kerla(&["--boots", "pci-packed", "--extra-patch", patch]);
    assert!(!passed, "the run passed without the kext's init:\n{output}");
    assert!(output.contains("xtask kerla: FAIL"), "{output}");
    assert!(
        output.contains("the kext took no virtio-blk device"),
        "{output}"
    );
    assert!(output.contains("no `vblk-selftest: PASS` line"), "{output}");
    assert!(
        output.contains("disk image: sector 0"),
        "the host check must see the missing writes:\n{output}"
    );
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
