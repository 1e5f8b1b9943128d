//! Group commit for directory fsyncs. Every Prosody upload creates a directory in `StoreDir`,
//! so concurrent uploads all need the same directory made durable: one fsync that starts
//! after a caller's change covers every caller waiting at that moment, instead of one fsync
//! each, serialised on the directory's inode lock. The group is the whole process's, not a
//! worker's: two fsyncs of one directory at once are not safe on ext4 without a journal, where
//! the second returns without waiting for a block the first is still writing
//! (docs/protocol.md, "How an upload becomes durable").

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};

use super::failures::Failures;

/// A directory: (device, inode).
type Key = (u64, u64);

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

/// Make the entries of directory `fd` durable, sharing the fsync with concurrent callers on
/// every worker. A failure is recorded in `failures` too: the block it lost may hold entries
/// of callers on other workers.
pub async fn sync_dir(fd: BorrowedFd<'_>, failures: &Failures) -> io::Result<()> {
    shared(key(fd)?, failures, || fsync_via_ring(fd)).await
}

/// `sync_dir` for a thread outside the runtime (the retention thread's deletions): the same
/// group, so a deletion's fsync never runs beside a worker's; the thread blocks meanwhile.
/// Never from a worker: the fsync it waits for may be one of its own tasks'.
pub fn sync_dir_blocking(fd: BorrowedFd<'_>, failures: &Failures) -> io::Result<()> {
    let fsync = || std::future::ready(nix::unistd::fsync(fd.as_raw_fd()).map_err(io::Error::from));
    block_on(shared(key(fd)?, failures, fsync))
}

/// The group a directory belongs to: its (device, inode).
fn key(fd: BorrowedFd<'_>) -> io::Result<Key> {
    let st = nix::sys::stat::fstat(fd.as_raw_fd())?;
    Ok((st.st_dev, st.st_ino))
}

/// Join the group of directory `key`; run `fsync` if nobody is running one that covers us.
async fn shared<F: Future<Output = io::Result<()>>>(
    key: Key,
    failures: &Failures,
    fsync: impl FnOnce() -> F,
) -> io::Result<()> {
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
    let res = failures.note(fsync().await);
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

/// Poll `f` on this thread, parking it until woken.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn blocking_callers_share_the_group_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        let key = (meta.dev(), meta.ino());
        let failures = Failures::new(meta.dev());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let fd = std::fs::File::open(dir.path()).unwrap();
                    for _ in 0..50 {
                        sync_dir_blocking(fd.as_fd(), &failures).unwrap();
                    }
                });
            }
        });
        assert!(!crate::sync::lock(&DIRS).contains_key(&key));
    }
}
