//! Data integrity on devices that keep data, and failures injected on
//! purpose: `--verify` on a raw file exported by qemu-storage-daemon (a
//! clean run, then a block corrupted on the host and caught), and I/O errors
//! from the sim's `--inject-ioerr` and from QEMU's blkdebug driver
//! (`--blkdebug-error`), which must fail exactly the requests they target
//! while the run goes on.
//!
//! Every job here is bounded by `--number-ios` (sequential jobs touch each
//! block a known number of times), never by time: `--runtime` is only a cap.
//! The daemon tests fail, never skip, without qemu-storage-daemon.

mod common;

use common::{json_report, stderr, u64_at, Image};
use serde_json::Value;
use vblk_report::verify;
use virtio_blk_mq::transport::vhost_user::{DaemonBackend, DaemonConfig, StorageDaemon};

const BLOCK: usize = 4096;
const SECTORS_PER_BLOCK: u64 = (BLOCK / 512) as u64;
/// The image every daemon test uses: 256 blocks, 128 per queue on 2 queues.
const IMAGE_BYTES: u64 = 1 << 20;
const BLOCKS_PER_QUEUE: u64 = IMAGE_BYTES / BLOCK as u64 / 2;

/// Runs a job bounded by `--number-ios` (the runtime is a generous cap).
fn bounded(args: &[&str]) -> (std::process::Output, Value) {
    json_report(&[&["--runtime", "120", "--iodepth", "8"][..], args].concat())
}

/// The same job on the spawned daemon, exporting `image` on 2 queues.
fn on_daemon(image: &Image, args: &[&str]) -> (std::process::Output, Value) {
    let disk = image.disk();
    let daemon = [
        "--target",
        "vhost-user",
        "--spawn-daemon",
        "--disk",
        &disk,
        "--queues",
        "2",
    ];
    bounded(&[&daemon[..], args].concat())
}

/// The flags of a verifying job: `rw`, `number_ios` per queue, then `more`.
fn verifying<'a>(rw: &'a str, number_ios: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    [
        &["--rw", rw, "--verify", "--number-ios", number_ios][..],
        more,
    ]
    .concat()
}

/// Runs `args` on the daemon exporting `image`; the run must fail (exit
/// status 1, the report complete). Returns the report.
fn failing_on_daemon(image: &Image, args: &[&str]) -> Value {
    let (output, report) = on_daemon(image, args);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    report
}

/// The report's bad requests as `QUEUE OP SECTOR: WHAT`, sorted.
fn bad_requests(report: &Value) -> Vec<String> {
    let list = report["vblk"]["bad_requests"].as_array().expect("a list");
    let mut bad: Vec<String> = list
        .iter()
        .map(|r| {
            assert_eq!(r["sectors"], SECTORS_PER_BLOCK, "{r}");
            let what = r["error"].as_str().or(r["verify"].as_str()).unwrap_or("");
            format!(
                "{} {} {}: {what}",
                r["queue"],
                r["op"].as_str().unwrap(),
                r["sector"]
            )
        })
        .collect();
    bad.sort();
    bad
}

/// How [`bad_requests`] shows a request that failed with an I/O error.
fn eio(queue: u64, op: &str, sector: u64) -> String {
    format!("{queue} {op} {sector}: device reported an I/O error")
}

/// `list`, sorted.
fn sorted<const N: usize>(mut list: [String; N]) -> [String; N] {
    list.sort();
    list
}

/// Asserts the run completed every request it issued, with `errors` failed.
fn assert_all_accounted(report: &Value, issued: u64, errors: u64) {
    let ok = u64_at(report, "/jobs/0/read/total_ios") + u64_at(report, "/jobs/0/write/total_ios");
    assert_eq!(u64_at(report, "/vblk/submitted"), issued, "{report}");
    assert_eq!(u64_at(report, "/vblk/completed"), issued, "nothing lost");
    assert_eq!(ok + errors, issued, "every other request succeeded");
    assert_eq!(u64_at(report, "/vblk/errors"), errors);
}

/// Checks the image from the host: every block carries a stamp for its own
/// sectors, except `zeroed` blocks, which hold zeros.
fn assert_image_stamped_except(image: &Image, zeroed: &[u64]) {
    for (block, data) in image.bytes().chunks(BLOCK).enumerate() {
        let block = block as u64;
        if zeroed.contains(&block) {
            assert!(data.iter().all(|&b| b == 0), "block {block} changed");
        } else {
            let sector = block * SECTORS_PER_BLOCK;
            if let Err(m) = verify::check_stamped(data, sector) {
                panic!("block {block} on disk: sector {}: {}", m.sector, m.what);
            }
        }
    }
}

#[test]
fn sim_injected_errors_fail_only_their_requests_and_the_run_goes_on() {
    // 256 blocks read once each; the one holding sectors 80..88 fails.
    let args = [
        "--rw",
        "read",
        "--verify",
        "--disk",
        "ram",
        "--size",
        "1m",
        "--number-ios",
        "256",
        "--inject-ioerr",
        "80..88",
    ];
    let (output, report) = bounded(&args);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_all_accounted(&report, 256, 1);
    assert_eq!(bad_requests(&report), [eio(0, "read", 80)]);
    assert_eq!(u64_at(&report, "/vblk/verify_errors"), 0);
    // The normal report lists it too.
    let output = common::vblk_bench(&[&["--runtime", "120"][..], &args].concat());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "  bad request: queue 0: read of 8 sectors at sector 80 failed: \
             device reported an I/O error"
        ),
        "{text}"
    );
}

#[test]
fn verify_on_a_file_backed_export_passes_then_catches_a_corrupted_block() {
    let image = Image::new("verify", IMAGE_BYTES);
    let per_queue = BLOCKS_PER_QUEUE.to_string();

    // A mixed random job on the fresh file: every read is checked against
    // the generation this run last wrote there, or zeros.
    let zeros = ["--verify-initial", "zeros"];
    let (output, report) = on_daemon(&image, &verifying("randrw", "2000", &zeros));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_all_accounted(&report, 4000, 0);
    assert_eq!(u64_at(&report, "/vblk/verify_errors"), 0);
    assert!(u64_at(&report, "/jobs/0/read/total_ios") > 0);
    assert!(u64_at(&report, "/jobs/0/write/total_ios") > 0);
    assert_eq!(report["vblk"]["disk"], "file");

    // Stamp every block, then read them all back in a second run, which
    // knows nothing of the first: each block must carry a valid stamp.
    let (output, _) = on_daemon(&image, &verifying("write", &per_queue, &[]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_image_stamped_except(&image, &[]);
    let read_all = verifying("read", &per_queue, &["--verify-initial", "stamped"]);
    // This time through an export started outside the run (an existing socket).
    let daemon = StorageDaemon::spawn(&DaemonConfig {
        backend: DaemonBackend::File {
            path: image.path().into(),
        },
        num_queues: 2,
        writable: true,
        blkdebug: None,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let target = format!("vhost-user:{}", daemon.socket().display());
    let (output, report) =
        bounded(&[&["--target", &target, "--queues", "2"][..], &read_all].concat());
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(u64_at(&report, "/jobs/0/read/total_ios"), 256);
    assert_eq!(u64_at(&report, "/vblk/verify_errors"), 0);
    assert_eq!(report["vblk"]["disk"], "export");
    drop(daemon);

    // Flip one byte of block 77 (queue 0's region) on the host: the same
    // read-back now finds exactly that block, at that sector.
    let corrupt_at = 77 * BLOCK + 3 * 512 + 100;
    let mut bytes = image.bytes();
    bytes[corrupt_at] ^= 0x40;
    std::fs::write(image.path(), &bytes).expect("corrupt the image");
    let (output, report) = on_daemon(&image, &read_all);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_all_accounted(&report, 256, 0);
    assert_eq!(u64_at(&report, "/vblk/verify_errors"), 1);
    let bad = &report["vblk"]["bad_requests"];
    assert_eq!(bad.as_array().map(Vec::len), Some(1), "{bad}");
    assert_eq!(bad[0]["op"], "read");
    assert_eq!(bad[0]["sector"], 77 * SECTORS_PER_BLOCK);
    assert_eq!(bad[0]["verify_sector"], 77 * SECTORS_PER_BLOCK + 3);
    assert_eq!(bad[0]["verify"], "byte 100 differs from the pattern");
    assert!(
        stderr(&output).contains("verify: sector 619"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn blkdebug_errors_fail_exactly_their_requests_and_nothing_else_is_lost() {
    let image = Image::new("blkdebug", IMAGE_BYTES);
    let per_queue = BLOCKS_PER_QUEUE.to_string();
    // Queue 1's region starts at sector 1024 (block 128).
    let q1 = |block: u64| (128 + block) * SECTORS_PER_BLOCK;

    // Write every block once: writes including sector 83 (block 10) and
    // sector q1(9)+4 fail; all others reach the file.
    let q1_write = format!("write:{}", q1(9) + 4);
    let rules = [
        "--blkdebug-error",
        "write:83",
        "--blkdebug-error",
        &q1_write,
    ];
    let report = failing_on_daemon(&image, &verifying("write", &per_queue, &rules));
    assert_all_accounted(&report, 256, 2);
    assert_eq!(
        bad_requests(&report),
        sorted([eio(0, "write", 80), eio(1, "write", q1(9))])
    );
    assert_image_stamped_except(&image, &[10, 128 + 9]);

    // Read everything twice: the first read including sector 160 (block
    // 20) fails (`once`), both reads including sector q1(72) fail. Every
    // other read checks out, the two blocks whose writes failed included
    // (zeros, which `either` accepts).
    let q1_read = format!("read:{}", q1(72));
    let twice = (2 * BLOCKS_PER_QUEUE).to_string();
    let rules = [
        "--blkdebug-error",
        "read:160:once",
        "--blkdebug-error",
        &q1_read,
    ];
    let report = failing_on_daemon(&image, &verifying("read", &twice, &rules));
    assert_all_accounted(&report, 512, 3);
    assert_eq!(
        bad_requests(&report),
        sorted([
            eio(0, "read", 160),
            eio(1, "read", q1(72)),
            eio(1, "read", q1(72)),
        ])
    );
    assert_eq!(u64_at(&report, "/vblk/verify_errors"), 0);

    // Insisting on stamps finds exactly the two blocks whose writes failed.
    let stamped = ["--verify-initial", "stamped"];
    let report = failing_on_daemon(&image, &verifying("read", &per_queue, &stamped));
    assert_all_accounted(&report, 256, 0);
    let never_stamped =
        |queue, sector| format!("{queue} read {sector}: carries no stamp (never written?)");
    assert_eq!(
        bad_requests(&report),
        sorted([never_stamped(0, 80), never_stamped(1, q1(9))])
    );
}

#[test]
fn a_missing_image_file_is_a_clear_error() {
    let output = common::vblk_bench(&[
        "--target",
        "vhost-user",
        "--spawn-daemon",
        "--disk",
        "file:/nonexistent/vblk.img",
        "--runtime",
        "0.1",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("no such file"),
        "{}",
        stderr(&output)
    );
}
