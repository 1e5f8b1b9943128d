//! Deleting a stored file for good: walked to by fd beneath `StoreDir` like any publication
//! (never through a symlink, never outside), only a regular file, the unlink made durable with
//! its directory's fsync, then every directory it leaves empty removed the same way, up to (not
//! including) `StoreDir`. Blocking: run on the retention thread, never on a worker.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::fsops::open_beneath;
use super::Store;
use crate::path::StorePath;

/// What a deletion found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// The file was there (this many bytes) and is gone.
    File(u64),
    /// Nothing (or no regular file) at the path.
    Nothing,
}

impl Store {
    /// Delete the file at `path` and the directories it leaves empty, durably.
    pub fn remove_file(&self, path: &StorePath) -> io::Result<Removed> {
        let (dirs, name) = path.split();
        let mut chain: Vec<OwnedFd> = Vec::with_capacity(dirs.len());
        for seg in &dirs {
            let parent = chain.last().map_or(self.root.as_raw_fd(), |d| d.as_raw_fd());
            match open_beneath(parent, seg, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()) {
                Ok(fd) => chain.push(fd),
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => return Ok(Removed::Nothing),
                Err(e) => return Err(e.into()),
            }
        }
        let leaf = chain.last().map_or(self.root.as_fd(), |d| d.as_fd());
        let st = match fstatat(Some(leaf.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(Removed::Nothing),
            Err(e) => return Err(e.into()),
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Ok(Removed::Nothing);
        }
        match unlinkat(Some(leaf.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(Removed::Nothing),
            Err(e) => return Err(e.into()),
        }
        self.deletions.fetch_add(1, Ordering::Release);
        self.sync_dir(leaf)?;
        // Empty directories go too, deepest first; one that still holds something (or that a
        // concurrent upload just filled) stops the climb.
        while let Some(dir) = chain.pop() {
            drop(dir);
            let parent = chain.last().map_or(self.root.as_fd(), |d| d.as_fd());
            let seg = dirs[chain.len()];
            match unlinkat(Some(parent.as_raw_fd()), seg, UnlinkatFlags::RemoveDir) {
                Ok(()) => self.sync_dir(parent)?,
                Err(Errno::ENOTEMPTY | Errno::EEXIST | Errno::ENOENT | Errno::EBUSY) => break,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Removed::File(st.st_size as u64))
    }

    fn sync_dir(&self, dir: BorrowedFd<'_>) -> io::Result<()> {
        if self.sync {
            super::dirsync::sync_dir_blocking(dir, &self.failures)?;
        }
        Ok(())
    }

    /// How many files this process has deleted: the open-file caches check a cached file is
    /// still linked when this moved since they opened it.
    pub fn deletions(&self) -> u64 {
        self.deletions.load(Ordering::Acquire)
    }
}
