//! The state of a graceful shutdown, shared by the workers and the draining main thread
//! (`runtime::drain`): whether one was asked for, and how many requests are still in flight.

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
        let mut wakers = crate::sync::lock(&self.accept_wakers);
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
            let mut wakers = crate::sync::lock(&self.accept_wakers);
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
