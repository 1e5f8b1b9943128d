//! Graceful shutdown: the first SIGINT/SIGTERM stops the listeners, lets requests in flight
//! finish (closing their connections after the response) for up to `GracefulShutdownTimeout`,
//! then the process exits; a second signal exits at once. Idle keep-alive connections carry no
//! request and are simply closed by the exit.

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

pub struct Shutdown {
    requested: AtomicBool,
    /// One slot per worker's accept loop, replaced on every poll (no unbounded waker list).
    accept_wakers: Mutex<Vec<Option<Waker>>>,
    /// Requests in flight, one counter per worker on its own cache line: counting per request
    /// must not make the workers share a line. Only the draining main thread sums them.
    in_flight: Vec<PaddedCounter>,
}

#[repr(align(128))]
#[derive(Default)]
struct PaddedCounter(AtomicUsize);

impl Shutdown {
    pub fn new(workers: usize) -> Shutdown {
        Shutdown {
            requested: AtomicBool::new(false),
            accept_wakers: Mutex::new(vec![None; workers]),
            in_flight: (0..workers).map(|_| PaddedCounter::default()).collect(),
        }
    }

    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    pub fn trigger(&self) {
        self.requested.store(true, Ordering::Release);
        let mut wakers = self.accept_wakers.lock().unwrap_or_else(|p| p.into_inner());
        for w in wakers.iter_mut().filter_map(Option::take) {
            w.wake();
        }
    }

    /// Resolves once shutdown is requested; `worker` picks the waker slot.
    pub async fn requested(&self, worker: usize) {
        poll_fn(|cx| {
            if self.is_requested() {
                return Poll::Ready(());
            }
            let mut wakers = self.accept_wakers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = wakers.get_mut(worker) {
                *slot = Some(cx.waker().clone());
            }
            drop(wakers);
            // Re-check: a trigger between the first check and the registration must not be lost.
            if self.is_requested() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().map(|c| c.0.load(Ordering::Acquire)).sum()
    }

    /// Count a request on `worker` as in flight until the guard drops (once it is answered).
    pub fn request(&self, worker: usize) -> InFlight<'_> {
        let counter = &self.in_flight[worker % self.in_flight.len().max(1)].0;
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(counter)
    }
}

pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The signals we handle, blocked in every thread so the main thread can wait for them.
pub fn signal_set() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    // Not a stop signal: reopen the log file (logrotate), see `logging::reopen`.
    set.add(Signal::SIGHUP);
    set
}

/// Wait up to `timeout` for one of `set`; the signal number, or None on timeout.
pub fn wait_signal(set: &nix::sys::signal::SigSet, timeout: std::time::Duration) -> Option<i32> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the set and timespec are valid for the call; no siginfo is requested.
    let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
    (sig > 0).then_some(sig)
}
