//! Signals and the graceful stop: the first SIGINT/SIGTERM stops the listeners and lets the
//! requests in flight finish (closing their connections after the response) for up to
//! `GracefulShutdownTimeout`, then the process exits; a second signal exits at once. SIGHUP
//! reopens the log file. Idle keep-alive connections carry no request and are simply closed
//! by the exit.

use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use crate::app::App;

/// The signals we handle. Blocked in every thread (before any starts) so that only the main
/// thread's drain takes them, never a thread that would die of them.
pub fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    // Not a stop signal: reopen the log file (logrotate), see `logging::reopen`.
    set.add(Signal::SIGHUP);
    set
}

/// Wait up to `timeout` for one of `set`; the signal number, or None on timeout.
fn wait_signal(set: &SigSet, timeout: Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the set and timespec are valid for the call; no siginfo is requested.
    let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}

/// Block until a stop signal, then stop accepting and wait for requests in flight, for up to
/// GracefulShutdownTimeout or until a second signal.
pub fn on_signal(app: &App) {
    let set = signal_set();
    let signal = loop {
        match wait_signal(&set, Duration::from_secs(3600)) {
            Some(libc::SIGHUP) => crate::logging::reopen(),
            Some(sig) => break sig,
            None => {}
        }
    };
    let timeout = Duration::from_secs(app.config.graceful_shutdown_timeout);
    tracing::info!(
        signal,
        in_flight = app.shutdown.in_flight(),
        timeout_s = timeout.as_secs(),
        "stopping: no new connections, waiting for requests in flight"
    );
    app.shutdown.trigger();
    let deadline = Instant::now() + timeout;
    loop {
        let in_flight = app.shutdown.in_flight();
        if in_flight == 0 {
            tracing::info!("stopped: every request in flight finished");
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(in_flight, "stopped: GracefulShutdownTimeout reached, aborting the rest");
            break;
        }
        match wait_signal(&set, Duration::from_millis(20)) {
            Some(libc::SIGHUP) => crate::logging::reopen(),
            Some(sig) => {
                tracing::warn!(signal = sig, in_flight, "stopped at once on a second signal");
                break;
            }
            None => {}
        }
    }
    // Unnamed temporaries vanish with the process; named ones (the fallback) are removed here.
    app.store.remove_own_temporaries();
}

/// Every connection and cached file is an fd: lift the soft limit to the hard one, as
/// nginx's worker_rlimit_nofile would, instead of failing accepts at 1024. Returns the limit
/// in force.
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
    let limit = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    tracing::debug!(open_files = limit, "fd limit");
    limit
}
