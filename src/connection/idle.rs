//! Deadlines of waiting keep-alive connections (the end of their hot moment, `IdleTimeout`),
//! kept by one timer per worker instead of one per connection: a monoio timer entry is
//! cache-padded to several hundred bytes, more than the whole of an idle connection may cost
//! (docs/architecture.md, "Memory"). The worker's timer sleeps until the earliest deadline and
//! is woken when an earlier one arrives.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

#[derive(Default)]
struct Deadlines {
    waiting: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// The worker's timer, and the deadline it sleeps until (None: it waits for a first one).
    timer: Option<Waker>,
    sleeping_until: Option<Instant>,
}

thread_local! {
    static DEADLINES: RefCell<Deadlines> = RefCell::new(Deadlines::default());
}

/// A future that resolves at `deadline` (to within the worker timer's precision).
pub fn at(deadline: Instant) -> Expiry {
    Expiry { deadline, id: None }
}

pub struct Expiry {
    deadline: Instant,
    /// Its key in the worker's table, once registered.
    id: Option<u64>,
}

impl Future for Expiry {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Not on the first poll: a deadline is hardly ever past when it is set, and the timer
        // wakes one that is at once, so a request's hot wait costs no clock read here.
        if self.id.is_some() && Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let id = DEADLINES.with(|d| {
            let mut d = d.borrow_mut();
            match self.id {
                Some(id) => {
                    if let Some(w) = d.waiting.get_mut(&(deadline, id)) {
                        w.clone_from(cx.waker());
                    }
                    id
                }
                None => {
                    let id = d.next_id;
                    d.next_id += 1;
                    d.waiting.insert((deadline, id), cx.waker().clone());
                    if d.sleeping_until.is_none_or(|t| deadline < t) {
                        if let Some(timer) = d.timer.take() {
                            timer.wake();
                        }
                    }
                    id
                }
            }
        });
        self.id = Some(id);
        Poll::Pending
    }
}

impl Drop for Expiry {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let key = (self.deadline, id);
            // Not during thread teardown: the table may be gone already.
            let _ = DEADLINES.try_with(|d| d.borrow_mut().waiting.remove(&key));
        }
    }
}

/// The worker's timer: sleeps until the earliest deadline (woken sooner when an earlier one
/// arrives), wakes every connection whose deadline has come, and waits, costing nothing, while
/// no connection waits.
pub async fn run_timer() {
    loop {
        let first = poll_fn(|cx| {
            DEADLINES.with(|d| {
                let mut d = d.borrow_mut();
                let first = d.waiting.keys().next().map(|&(at, _)| at);
                d.sleeping_until = first;
                d.timer = Some(cx.waker().clone());
                match first {
                    Some(at) => Poll::Ready(at),
                    None => Poll::Pending,
                }
            })
        })
        .await;
        // Woken early (an earlier deadline arrived) or at `first`: either way look again.
        let earlier = poll_fn(|cx| {
            DEADLINES.with(|d| {
                let mut d = d.borrow_mut();
                if d.timer.is_none() {
                    return Poll::Ready(());
                }
                d.timer = Some(cx.waker().clone());
                Poll::Pending
            })
        });
        monoio::select! {
            _ = monoio::time::sleep_until(first.into()) => {}
            _ = earlier => {}
        }
        wake_due(Instant::now());
    }
}

/// Wake (and forget) every waiter whose deadline is at or before `now`.
fn wake_due(now: Instant) {
    let due: Vec<Waker> = DEADLINES.with(|d| {
        let mut d = d.borrow_mut();
        let later = d.waiting.split_off(&(now, u64::MAX));
        std::mem::replace(&mut d.waiting, later).into_values().collect()
    });
    for w in due {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_deadline_resolves_once_it_has_passed_and_leaves_nothing_behind() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            monoio::spawn(run_timer());
            let start = Instant::now();
            let soon = at(start + Duration::from_millis(50));
            let later = at(start + Duration::from_secs(60));
            monoio::select! {
                _ = soon => {}
                _ = later => panic!("the later deadline fired first"),
            }
            let waited = start.elapsed();
            assert!(waited >= Duration::from_millis(50), "{waited:?}");
            assert!(waited < Duration::from_secs(5), "{waited:?}");
            // Both futures are dropped: the table is empty again.
            assert!(DEADLINES.with(|d| d.borrow().waiting.is_empty()));
            // An expired deadline resolves without the timer.
            at(Instant::now()).await;
        });
    }
}
