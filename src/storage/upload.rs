//! An upload in progress: written through the ring at any offset, made durable, and published
//! at its path without replacing anything (docs/protocol.md, "How an upload becomes durable").

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{self, RenameFlags};

use super::failures::Watch;
use super::fsops::{link_tmpfile, unlink_in};
use super::{dirsync, parents, Claim, Store};
use crate::error::{Error, Result};
use crate::path::StorePath;

/// Uploads up to this size are made durable by the shared group commit; larger ones fsync
/// their own file, so a small upload never waits for someone's gigabyte to reach the disk.
const GROUP_COMMIT_MAX: u64 = 1 << 20;

/// Durable uploads start writeback every this many bytes, so the disk writes while the
/// network still streams and the final fsync has little left to do. Measured on this
/// machine against dd conv=fsync (5 alternations each, median of our speed / dd's): no
/// early writeback 0.78x, an fdatasync through the ring per step 0.80x (a device flush
/// each time), sync_file_range(SYNC_FILE_RANGE_WRITE) 1.14x (starts writes, no flush).
const WRITEBACK_EVERY: u64 = 16 << 20;

/// Writes up to this size are a plain `pwrite` on the worker's thread. ext4 cannot take a
/// buffered write from io_uring without blocking, so the ring hands every one to a helper
/// thread and wakes the worker when it is done: for a small body that round trip costs more
/// CPU than copying 4 KiB into the page cache, which is no more blocking than the `mkdirat`
/// and `linkat` the worker makes for the same upload (docs/benchmarks.md, "A write without
/// the ring's helper").
const DIRECT_WRITE_MAX: usize = 64 * 1024;

/// `pwrite` all of `buf` at `pos`, now.
fn write_all_now(fd: RawFd, mut buf: &[u8], mut pos: u64) -> io::Result<()> {
    // SAFETY: the fd is the upload's open temporary, which outlives this call.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    while !buf.is_empty() {
        let at = i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        match nix::sys::uio::pwrite(fd, buf, at) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                buf = &buf[n..];
                pos += n as u64;
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// An upload in progress. Dropped without `publish`, its temporary file is removed.
pub struct Upload<'a> {
    store: &'a Store,
    file: Option<monoio::fs::File>,
    /// The temporary's name in the reserved directory; None for an unnamed O_TMPFILE.
    name: Option<String>,
    /// The path, claimed on this node while a signed upload to it runs.
    _claim: Option<Claim<'a>>,
    published: bool,
    /// A resumable upload's partial file: kept when this request ends unpublished.
    persistent: bool,
    /// Bytes from 0 whose writeback has been started (durable uploads only).
    writeback_from: std::cell::Cell<u64>,
    /// The store's write failures when this upload began: one reported since refuses it.
    watch: Watch,
}

fn closed() -> Error {
    Error::Io(io::Error::other("upload already closed"))
}

impl<'a> Upload<'a> {
    pub(super) fn new(
        store: &'a Store,
        file: monoio::fs::File,
        name: Option<String>,
        claim: Option<Claim<'a>>,
        persistent: bool,
    ) -> Upload<'a> {
        Upload {
            store,
            file: Some(file),
            name,
            _claim: claim,
            published: false,
            persistent,
            writeback_from: std::cell::Cell::new(0),
            watch: store.failures.watch(),
        }
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.file.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Write all of `buf` at `pos` (through the ring unless it is small); the buffer comes
    /// back for reuse.
    pub async fn write_at(&self, buf: Vec<u8>, pos: u64) -> (Result<()>, Vec<u8>) {
        let Some(file) = self.file.as_ref() else {
            return (Err(closed()), buf);
        };
        let (res, buf) = if buf.len() <= DIRECT_WRITE_MAX {
            (write_all_now(file.as_raw_fd(), &buf, pos), buf)
        } else {
            file.write_all_at(buf, pos).await
        };
        let end = pos + buf.len() as u64;
        let from = self.writeback_from.get();
        if res.is_ok() && self.store.sync && end - from >= WRITEBACK_EVERY {
            // Only starts the writes; errors surface at the final fsync.
            // SAFETY: plain syscall on the open temporary's fd.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    from as i64,
                    (end - from) as i64,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            self.writeback_from.set(end);
        }
        // Past preallocation, ENOSPC/EIO is a server failure (500): the 507 promise is only
        // made before the body is read.
        (res.map_err(Error::Io), buf)
    }

    /// Make what was written so far durable (a resumable upload's checkpoint); refused like
    /// `publish` if a write error was reported meanwhile.
    pub async fn sync_data(&self) -> Result<()> {
        match self.file.as_ref() {
            Some(file) if self.store.sync => {
                let failures = &self.store.failures;
                let res = failures
                    .note(file.sync_data().await)
                    .and_then(|()| failures.check(self.watch));
                if res.is_err() {
                    // The client will send these bytes again. Pages whose writeback failed stay
                    // cached, and ext4 (seen without a journal, Linux 6.18) writes a rewrite of
                    // them without marking the preallocated blocks written, so the rewrite reads
                    // back as zeros; dropped, they are mapped afresh (docs/protocol.md,
                    // "How an upload becomes durable").
                    // SAFETY: plain syscall on the open partial file.
                    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                }
                Ok(res?)
            }
            Some(_) => Ok(()),
            None => Err(closed()),
        }
    }

    /// Make the upload visible at `path`: fsync, no-replace link (or rename), then fsync of
    /// every directory whose entries changed. The body must be complete: preallocation was
    /// exactly the declared size, so the file size is already right. Any write error the
    /// store's flushes reported meanwhile refuses it, before the link if it came by then.
    pub async fn publish(mut self, path: &StorePath, size: u64) -> Result<()> {
        let store = self.store;
        let file = self.file.take().ok_or_else(closed)?;
        let fd = file.as_raw_fd();
        // Data and inode durable before the name appears.
        let group = store.commit.as_ref().filter(|_| size <= GROUP_COMMIT_MAX);
        let started = std::time::Instant::now();
        let (dirs, name) = path.split();
        let parents = match (store.sync, group) {
            (false, _) => parents::open(store.root.as_fd(), &dirs, store.modes.dir)?,
            (true, Some(g)) => {
                // The directories are made while the round runs: they may become durable
                // before the data (an empty directory after a crash is harmless), the name
                // never does.
                let round = g.request();
                let parents = parents::open(store.root.as_fd(), &dirs, store.modes.dir);
                g.wait(round).await;
                parents?
            }
            (true, None) => {
                store.failures.note(file.sync_all().await)?;
                parents::open(store.root.as_fd(), &dirs, store.modes.dir)?
            }
        };
        store.failures.check(self.watch)?;
        tracing::debug!(
            size,
            sync_ms = started.elapsed().as_millis() as u64,
            "upload data durable"
        );
        let linked = match &self.name {
            None => link_tmpfile(fd, parents.leaf(), name),
            Some(tmp_name) => fcntl::renameat2(
                Some(store.tmp.as_raw_fd()),
                tmp_name.as_str(),
                Some(parents.leaf()),
                name,
                RenameFlags::RENAME_NOREPLACE,
            ),
        };
        match linked {
            Ok(()) => self.published = true,
            Err(Errno::EEXIST | Errno::ENOTDIR | Errno::EISDIR) => return Err(Error::Conflict),
            Err(e) => return Err(Error::Io(e.into())),
        }
        file.close().await?;
        // Then the new name (and any directory created for it) durable before the 201.
        if let Some(g) = group {
            g.commit().await;
        } else if store.sync {
            for dir in parents.changed() {
                dirsync::sync_dir(dir, &store.failures).await?;
            }
        }
        Ok(store.failures.check(self.watch)?)
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        // An unnamed temporary vanishes with its last fd; a named one must be unlinked.
        if let (false, false, Some(name)) = (self.published, self.persistent, &self.name) {
            let _ = unlink_in(self.store.tmp.as_raw_fd(), name);
        }
    }
}
