//! Smoke test of `cargo xtask linux-fio`: one short polled fio job in the
//! Linux guest. Ignored by default, so `./scripts/test.sh` and CI skip it: the
//! first run downloads about 110 MB of Debian packages (apt-get on a Debian
//! host). Run it with
//!
//! ```sh
//! cargo test -p xtask --test linux -- --ignored
//! ```
//!
//! About 30 s under TCG once the packages are cached; the test fails if the
//! run takes over two minutes.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
#[ignore = "downloads ~110 MB of Debian packages; run with --ignored"]
fn polled_fio_runs_in_the_linux_guest_and_reports_io_poll() {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "linux-fio",
            "--accel",
            "tcg",
            "--mode",
            "poll",
            "--iodepth",
            "4",
            "--runtime",
            "1",
            "--timeout",
            "100",
        ])
        .output()
        .expect("the xtask binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "linux-fio failed ({}):\n{stderr}\n{stdout}",
        output.status
    );
    assert!(stdout.contains("@@vblk-linux io_poll 1"), "{stdout}");
    assert!(
        stdout.contains("@@vblk-linux queues 1/0/1 default/read/poll queues"),
        "{stdout}"
    );
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .expect("the one-line JSON report");
    let json: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
    let job = &json["jobs"][0];
    assert_eq!(job["error"], 0);
    assert_eq!(job["job options"]["ioengine"], "io_uring");
    assert!(job["read"]["total_ios"].as_u64().unwrap() > 0);
    let facts = &json["vblk_linux"]["facts"];
    assert_eq!(facts["io_poll"], "1");
    assert!(
        facts["fio"].as_str().unwrap().contains("--hipri"),
        "{facts}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}
