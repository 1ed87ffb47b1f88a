//! `log` records (the driver's and the kext's) on the console, at Info and
//! above. Nothing logs from interrupt handlers, so the console lock is safe.

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::println;

struct Console;

impl Log for Console {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= Level::Info
    }

    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            println!("vblk-guest: [{}] {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

static CONSOLE: Console = Console;

/// Installs the console logger (once; a second call changes nothing).
pub fn init() {
    if log::set_logger(&CONSOLE).is_ok() {
        log::set_max_level(LevelFilter::Info);
    }
}
