//! Group commit for directory fsyncs. Every Prosody upload creates a directory in `StoreDir`,
//! so concurrent uploads all need the same directory made durable: one fsync that starts
//! after a caller's change covers every caller waiting at that moment, instead of one fsync
//! each, serialised on the directory's inode lock.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::os::fd::BorrowedFd;
use std::task::{Poll, Waker};

use super::failures::Failures;

/// A directory: (device, inode).
pub type Key = (u64, u64);

#[derive(Default)]
struct Dir {
    /// Generation handed to the newest caller.
    requested: u64,
    /// Every caller up to this generation is covered by a finished fsync.
    done: u64,
    /// Result of the fsync that covered up to `done` (errno on failure).
    last_error: Option<i32>,
    running: bool,
    /// Callers that have not returned yet; the entry goes when this reaches 0.
    callers: usize,
    waiters: Vec<Waker>,
}

thread_local! {
    // Per worker thread: monoio tasks on one thread never run concurrently, so RefCell suffices.
    static DIRS: RefCell<HashMap<Key, Dir>> = RefCell::new(HashMap::new());
}

/// Make the entries of directory `fd` (identified by `key`) durable,
/// sharing the fsync with concurrent callers on this worker. A failure is recorded in
/// `failures` too: the block it lost may hold entries of callers on other workers.
pub async fn sync_dir(key: Key, fd: BorrowedFd<'_>, failures: &Failures) -> io::Result<()> {
    let mut caller = Caller { key, running: false };
    let gen = with_dir(key, |dir| {
        dir.requested += 1;
        dir.callers += 1;
        dir.requested
    });
    // Wait until a finished fsync covers us, or until nobody runs one (then we run it).
    let covered = poll_fn(|cx| {
        with_dir(key, |dir| {
            if dir.done >= gen {
                return Poll::Ready(Some(dir.last_error));
            }
            if !dir.running {
                dir.running = true;
                return Poll::Ready(None);
            }
            dir.waiters.push(cx.waker().clone());
            Poll::Pending
        })
    })
    .await;
    if let Some(err) = covered {
        return err.map_or(Ok(()), |e| Err(io::Error::from_raw_os_error(e)));
    }
    caller.running = true;
    // It covers everyone who asked before it started.
    let target = with_dir(key, |dir| dir.requested);
    let res = failures.note(fsync_via_ring(fd).await);
    with_dir(key, |dir| {
        dir.done = target;
        dir.last_error = res.as_ref().err().map(|e| e.raw_os_error().unwrap_or(libc::EIO));
    });
    res
}

fn with_dir<R>(key: Key, f: impl FnOnce(&mut Dir) -> R) -> R {
    DIRS.with(|d| f(d.borrow_mut().entry(key).or_default()))
}

/// Leaves the group on return or cancellation: hands the fsync on if it was ours, and drops
/// the directory's entry when nobody is left.
struct Caller {
    key: Key,
    running: bool,
}

impl Drop for Caller {
    fn drop(&mut self) {
        DIRS.with(|d| {
            let mut d = d.borrow_mut();
            let Some(dir) = d.get_mut(&self.key) else { return };
            if self.running {
                dir.running = false;
                for w in dir.waiters.drain(..) {
                    w.wake();
                }
            }
            dir.callers -= 1;
            if dir.callers == 0 {
                d.remove(&self.key);
            }
        });
    }
}

/// fsync through the ring without giving up ownership of `fd`.
async fn fsync_via_ring(fd: BorrowedFd<'_>) -> io::Result<()> {
    // Our own copy for monoio to close when done.
    let file = monoio::fs::File::from_std(std::fs::File::from(fd.try_clone_to_owned()?))?;
    let res = file.sync_all().await;
    let _ = file.close().await;
    res
}
