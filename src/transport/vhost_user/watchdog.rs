//! A bound on every control request: a backend that keeps its socket open
//! but never answers must not hang the driver.
//!
//! The `vhost` crate's frontend blocks in `recvmsg` until the reply comes
//! (and retries on EAGAIN, so a socket receive timeout would only turn the
//! wait into a spin). Instead, a watchdog thread shuts the socket down when a
//! request outlives its deadline: the blocked receive then sees end-of-file,
//! the request fails, and the transport counts the backend as gone.

use std::os::fd::RawFd;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    /// The running request's deadline.
    deadline: Option<Instant>,
    /// The socket was shut down because a request ran out of time.
    fired: bool,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Shuts `socket` down when a request runs longer than `timeout`.
pub(super) struct Watchdog {
    shared: Arc<Shared>,
    timeout: Duration,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts the watchdog thread for `socket`.
    pub(super) fn start(socket: RawFd, timeout: Duration) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let watched = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vhost-user-watchdog".into())
            .spawn(move || watch(&watched, socket))?;
        Ok(Watchdog {
            shared,
            timeout,
            thread: Some(thread),
        })
    }

    /// The bound on one request.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `f` (one control request) under the deadline. Returns `f`'s
    /// result and whether the watchdog had to cut the socket.
    pub(super) fn guard<R>(&self, f: impl FnOnce() -> R) -> (R, bool) {
        {
            let mut state = self.shared.lock();
            state.deadline = Some(Instant::now() + self.timeout);
        }
        self.shared.wake.notify_one();
        let result = f();
        let mut state = self.shared.lock();
        state.deadline = None;
        (result, state.fired)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(shared: &Shared, socket: RawFd) {
    let mut state = shared.lock();
    loop {
        if state.stop {
            return;
        }
        match state.deadline {
            None => {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    log::error!("vhost-user: the backend did not answer in time; disconnecting");
                    // SAFETY: `socket` stays open while the watchdog lives (the
                    // transport drops the watchdog before the frontend that owns
                    // the socket); shutdown only changes the connection's state.
                    unsafe { libc::shutdown(socket, libc::SHUT_RDWR) };
                    state.fired = true;
                    state.deadline = None;
                } else {
                    state = shared
                        .wake
                        .wait_timeout(state, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}
