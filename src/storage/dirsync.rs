//! Group commit for directory fsyncs. Every Prosody upload creates a directory in `StoreDir`,
//! so concurrent uploads all need the same directory made durable: one fsync that starts
//! after a caller's change covers every caller waiting at that moment, instead of one fsync
//! each, serialised on the directory's inode lock. The group is the whole process's, not a
//! worker's: two fsyncs of one directory at once are not safe on ext4 without a journal, where
//! the second returns without waiting for a block the first is still writing
//! (docs/protocol.md, "How an upload becomes durable").

use std::collections::HashMap;
use std::future::poll_fn;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::{LazyLock, Mutex};
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

static DIRS: LazyLock<Mutex<HashMap<Key, Dir>>> = LazyLock::new(Mutex::default);

/// Make the entries of directory `fd` (identified by `key`) durable,
/// sharing the fsync with concurrent callers on every worker. A failure is recorded in
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
    f(crate::sync::lock(&DIRS).entry(key).or_default())
}

/// Leaves the group on return or cancellation: hands the fsync on if it was ours, and drops
/// the directory's entry when nobody is left.
struct Caller {
    key: Key,
    running: bool,
}

impl Drop for Caller {
    fn drop(&mut self) {
        let mut d = crate::sync::lock(&DIRS);
        let Some(dir) = d.get_mut(&self.key) else { return };
        let mut woken = Vec::new();
        if self.running {
            dir.running = false;
            woken = std::mem::take(&mut dir.waiters);
        }
        dir.callers -= 1;
        if dir.callers == 0 {
            d.remove(&self.key);
        }
        drop(d);
        // Outside the lock: waking a task on another worker's ring is a syscall.
        for w in woken {
            w.wake();
        }
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
