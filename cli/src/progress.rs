//! One progress line on stderr while a long run is going (only on a terminal).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::args::Args;
use vblk_report::normal::scaled;

/// Runs shorter than this get no progress line.
const MIN_RUNTIME_SECS: f64 = 2.0;

/// How often the line is redrawn.
const TICK: Duration = Duration::from_millis(250);

/// The progress thread; [`Progress::finish`] stops it and clears the line.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Progress {
    /// Starts the line when stderr is a terminal and the run is long enough.
    /// `completed` holds each queue's count of completed requests.
    pub fn start(args: &Args, completed: Arc<[AtomicU64]>) -> Option<Progress> {
        if args.runtime <= MIN_RUNTIME_SECS || !std::io::stderr().is_terminal() {
            return None;
        }
        let runtime_ms = (args.runtime * 1000.0) as u64;
        let bar = ProgressBar::with_draw_target(Some(runtime_ms), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix}: [{elapsed_precise}] {bar:30} {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(args.name.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("vblk-progress".into())
            .spawn(move || {
                let start = Instant::now();
                let (mut last_time, mut last_count) = (start, 0u64);
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(TICK);
                    let now = Instant::now();
                    let count: u64 = completed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
                    let secs = now.duration_since(last_time).as_secs_f64();
                    let iops = (count - last_count.min(count)) as f64 / secs.max(1e-9);
                    bar.set_position(
                        (now.duration_since(start).as_millis() as u64).min(runtime_ms),
                    );
                    bar.set_message(format!("IOPS={}", scaled(iops, 1000.0, "")));
                    (last_time, last_count) = (now, count);
                }
                bar.finish_and_clear();
            })
            .ok()?;
        Some(Progress { stop, thread })
    }

    /// Stops the thread and clears the line.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        // A panicking progress thread loses only the progress line.
        let _ = self.thread.join();
    }
}
