//! Group commit for small uploads: one `syncfs` makes every change made before it started
//! durable, so concurrent uploads share one round of writeback and one device cache flush
//! instead of paying three fsyncs each. A dedicated thread runs the rounds back to back
//! (syncfs has no io_uring op and blocks); workers wait without blocking their thread.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};

#[derive(Default)]
struct State {
    /// Generation handed to the newest caller.
    requested: u64,
    /// Every caller up to this generation is covered by a finished round.
    done: u64,
    waiters: Vec<(u64, Waker)>,
    /// Recent failed rounds: (first, last generation covered, errno).
    failures: VecDeque<(u64, u64, i32)>,
}

struct Shared {
    state: Mutex<State>,
    wake_syncer: Condvar,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
}

impl GroupCommit {
    /// Start the commit thread for the filesystem holding `dir`.
    pub fn start(dir: OwnedFd) -> io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake_syncer: Condvar::new(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || run(&s, dir))?;
        Ok(GroupCommit { shared })
    }

    /// Wait until everything this thread changed before the call is durable.
    pub async fn commit(&self) -> io::Result<()> {
        let gen = {
            let mut st = lock(&self.shared);
            st.requested += 1;
            self.shared.wake_syncer.notify_one();
            st.requested
        };
        poll_fn(|cx| {
            let mut st = lock(&self.shared);
            if st.done >= gen {
                let failed = st.failures.iter().find(|(lo, hi, _)| (*lo..=*hi).contains(&gen));
                return Poll::Ready(failed.map_or(Ok(()), |(_, _, e)| Err(io::Error::from_raw_os_error(*e))));
            }
            st.waiters.push((gen, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    crate::sync::lock(&shared.state)
}

fn run(shared: &Shared, dir: OwnedFd) {
    let fd = dir.as_raw_fd();
    let mut st = lock(shared);
    loop {
        while st.requested == st.done {
            st = crate::sync::wait(&shared.wake_syncer, st);
        }
        let (first, target) = (st.done + 1, st.requested);
        drop(st);
        let started = std::time::Instant::now();
        let synced_fs = nix::unistd::syncfs(fd);
        let synced = started.elapsed();
        // ext4 without a journal can write metadata after syncfs' own cache flush; an fsync
        // always ends with one, so the round is durable on every filesystem.
        let result = synced_fs.and_then(|()| nix::unistd::fsync(fd));
        tracing::debug!(
            callers = target + 1 - first,
            syncfs_us = synced.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "group commit round"
        );
        let err = result.err().map(|e| e as i32);
        st = lock(shared);
        st.done = target;
        if let Some(e) = err {
            tracing::error!(errno = e, "syncfs of StoreDir failed: uploads waiting on it get 500");
            st.failures.push_back((first, target, e));
            if st.failures.len() > 64 {
                st.failures.pop_front();
            }
        }
        let mut i = 0;
        while i < st.waiters.len() {
            if st.waiters[i].0 <= target {
                st.waiters.swap_remove(i).1.wake();
            } else {
                i += 1;
            }
        }
    }
}
