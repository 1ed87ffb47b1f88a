//! Running `vblk-bench` as a user does, and reading its JSON report.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Runs `vblk-bench ARGS`.
pub fn vblk_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vblk-bench"))
        .args(args)
        .output()
        .expect("vblk-bench starts")
}

/// What the run printed on stderr.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs `vblk-bench --output-format json ARGS` and returns the report.
pub fn json_report(args: &[&str]) -> (Output, Value) {
    let mut all = vec!["--output-format", "json"];
    all.extend_from_slice(args);
    let output = vblk_bench(&all);
    let report = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            stderr(&output)
        )
    });
    (output, report)
}

/// An integer field of the report, by JSON pointer.
pub fn u64_at(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing or not an integer in {report}"))
}

/// A number field of the report, by JSON pointer.
pub fn f64_at(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{pointer} missing or not a number in {report}"))
}

/// A sparse raw image of zeros in the temporary directory, removed when dropped.
pub struct Image {
    path: PathBuf,
}

impl Image {
    /// A new image of `size` bytes; `name` keeps concurrent tests apart.
    pub fn new(name: &str, size: u64) -> Image {
        let path = std::env::temp_dir().join(format!("vblk-cli-{name}-{}.raw", std::process::id()));
        let file = std::fs::File::create(&path).expect("create the image");
        file.set_len(size).expect("size the image");
        Image { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `--disk file:PATH`'s value.
    pub fn disk(&self) -> String {
        format!("file:{}", self.path.display())
    }

    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).expect("read the image")
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
