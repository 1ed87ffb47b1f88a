//! The hostile-device harness under libFuzzer: any input decodes to a script
//! of driver calls, honest device steps and hostile acts; a broken promise
//! (see `virtio_blk_sim::harness`) is a crash.
//!
//! `cargo fuzz run -s none hostile_device` (from `fuzz/`) runs it on the
//! stable toolchain, coverage-guided without a sanitizer; with a nightly
//! toolchain, `cargo +nightly fuzz run hostile_device` adds AddressSanitizer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use virtio_blk_sim::harness::{run, Scenario};

fuzz_target!(|data: &[u8]| {
    let scenario = Scenario::from_bytes(data);
    if let Err(why) = run(&scenario) {
        panic!("{why}\nscenario: {scenario:?}");
    }
});
