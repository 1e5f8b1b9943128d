//! Group commit for small uploads: one `syncfs` makes every change made before it started
//! durable, so concurrent uploads share one round of writeback and one device cache flush
//! instead of paying three fsyncs each. A dedicated thread runs the rounds back to back
//! (syncfs has no io_uring op and blocks); workers wait without blocking their thread. A failed
//! round is recorded in the store's `Failures`, which is where its callers learn of it: the
//! error may belong to uploads of a later round (see failures.rs).

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Poll, Waker};

use super::failures::Failures;

#[derive(Default)]
struct State {
    /// Generation handed to the newest caller.
    requested: u64,
    /// Every caller up to this generation is covered by a finished round.
    done: u64,
    waiters: Vec<(u64, Waker)>,
    /// The commit thread is waiting for a request: only then does one need to wake it (a
    /// notify is a futex call whether anyone waits or not, and rounds run back to back under
    /// load).
    idle: bool,
}

struct Shared {
    state: Mutex<State>,
    wake_syncer: Condvar,
    failures: Arc<Failures>,
}

pub struct GroupCommit {
    shared: Arc<Shared>,
}

/// A place in the queue of commit rounds, taken before the work it must cover is finished so
/// that the work overlaps the round in progress (`GroupCommit::request`).
pub struct Ticket(u64);

impl GroupCommit {
    /// Start the commit thread for the filesystem holding `dir`. `quiet` is a directory on it
    /// that uploads never change (the reserved directory): where a round needs a device flush
    /// of its own, it is an fsync of that one, which has nothing to write.
    pub fn start(dir: OwnedFd, quiet: OwnedFd, failures: Arc<Failures>) -> io::Result<GroupCommit> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake_syncer: Condvar::new(),
            failures,
        });
        let journaled = syncfs_is_enough(&dir);
        tracing::info!(
            syncfs_only = journaled,
            "group commit: {}",
            if journaled {
                "syncfs per round (the filesystem's journal commit ends with a device flush)"
            } else {
                "syncfs and fsync per round (no journal known to cover metadata)"
            }
        );
        let s = shared.clone();
        std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || run(&s, dir, quiet, journaled))?;
        Ok(GroupCommit { shared })
    }

    /// Wait until a round has written everything this thread changed before the call; whether
    /// it is durable, `Failures` tells.
    pub async fn commit(&self) {
        let ticket = self.request();
        self.wait(ticket).await
    }

    /// Ask for a round: it will cover everything this thread changes before the round starts,
    /// which is no earlier than this call. `wait` for it once the work is done.
    pub fn request(&self) -> Ticket {
        let mut st = lock(&self.shared);
        st.requested += 1;
        if st.idle {
            st.idle = false;
            self.shared.wake_syncer.notify_one();
        }
        Ticket(st.requested)
    }

    /// Wait for the round of `ticket`. Only what was changed before the round started is
    /// covered: a caller that changes more after `request` must `request` again.
    pub async fn wait(&self, ticket: Ticket) {
        let gen = ticket.0;
        poll_fn(|cx| {
            let mut st = lock(&self.shared);
            if st.done >= gen {
                return Poll::Ready(());
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

/// Whether `syncfs` alone makes metadata durable on the filesystem holding `dir`: where metadata
/// goes through a journal or log whose commit ends with a device flush (ext4 with a journal,
/// XFS, btrfs). ext4 without a journal (and ext2) writes its metadata buffers after syncfs'
/// own flush, so elsewhere every round ends with an fsync too (docs/protocol.md, "Storage").
fn syncfs_is_enough(dir: &OwnedFd) -> bool {
    use nix::sys::statfs::{fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, XFS_SUPER_MAGIC};
    let Ok(fs) = fstatfs(dir) else { return false };
    let kind = fs.filesystem_type();
    if kind == XFS_SUPER_MAGIC || kind == BTRFS_SUPER_MAGIC {
        return true;
    }
    if kind != EXT4_SUPER_MAGIC {
        return false;
    }
    let Ok(st) = nix::sys::stat::fstat(dir.as_raw_fd()) else {
        return false;
    };
    ext4_has_journal(st.st_dev)
}

/// jbd2 lists each journal it runs as /proc/fs/jbd2/<device>-<inode>.
fn ext4_has_journal(dev: libc::dev_t) -> bool {
    let Some(name) = super::fsops::block_device_name(dev) else {
        return false;
    };
    let prefix = format!("{name}-");
    std::fs::read_dir("/proc/fs/jbd2").is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)))
    })
}

fn run(shared: &Shared, dir: OwnedFd, quiet: OwnedFd, syncfs_only: bool) {
    let fd = dir.as_raw_fd();
    let mut st = lock(shared);
    loop {
        while st.requested == st.done {
            st.idle = true;
            st = crate::sync::wait(&shared.wake_syncer, st);
        }
        st.idle = false;
        let (first, target) = (st.done + 1, st.requested);
        drop(st);
        let started = std::time::Instant::now();
        let synced_fs = nix::unistd::syncfs(fd);
        let synced = started.elapsed();
        // ext4 without a journal writes metadata after syncfs' own cache flush; its fsync
        // always ends with one, dirty or not, so the round is durable there too. An fsync of
        // StoreDir would first write its block again (the next uploads' mkdirs have dirtied
        // it since syncfs began) and wait for it; the quiet directory has nothing to write.
        // With a journal that fsync would only add a second device flush.
        let result = if syncfs_only {
            synced_fs
        } else {
            synced_fs.and_then(|()| nix::unistd::fsync(quiet.as_raw_fd()))
        };
        tracing::debug!(
            callers = target + 1 - first,
            syncfs_us = synced.as_micros() as u64,
            total_us = started.elapsed().as_micros() as u64,
            "group commit round"
        );
        // Recorded before `done` moves, so every caller of this round sees it.
        if let Err(e) = shared.failures.note(result.map_err(io::Error::from)) {
            tracing::error!(error = %e, "syncfs of StoreDir failed: uploads in flight get 500");
        }
        st = lock(shared);
        st.done = target;
        // Woken outside the lock: waking a task on another worker's ring is a syscall, and
        // the workers asking for the next round must not wait for all of them.
        let mut covered = Vec::new();
        let mut i = 0;
        while i < st.waiters.len() {
            if st.waiters[i].0 <= target {
                covered.push(st.waiters.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        drop(st);
        for waker in covered {
            waker.wake();
        }
        st = lock(shared);
    }
}
