//! The directory an upload is published into, found or created one component at a time.
//! Each component is created with `mkdirat` and opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` relative to the directory before it, and the file is linked by its
//! bare name into the last one: a directory swapped for a symlink between two steps (a local
//! user racing the server) makes the upload fail with 409, never land outside `StoreDir`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::fsops::open_beneath;
use crate::error::{Error, Result};

/// The opened directories of one file's path below `StoreDir`.
pub struct Parents<'a> {
    root: BorrowedFd<'a>,
    /// From `StoreDir`'s child down to the file's own directory (directories opened with one
    /// lookup of their path are one entry).
    dirs: Vec<OwnedFd>,
    /// Directories that gained an entry (a directory created in them): 0 is `root`, n is
    /// `dirs[n - 1]`. The file's own directory gains one when the file is linked.
    changed: Vec<usize>,
}

impl Parents<'_> {
    fn dir(&self, n: usize) -> BorrowedFd<'_> {
        match n.checked_sub(1) {
            Some(i) => self.dirs[i].as_fd(),
            None => self.root,
        }
    }

    /// The file's directory.
    pub fn leaf(&self) -> RawFd {
        self.dir(self.dirs.len()).as_raw_fd()
    }

    /// Every directory whose entries the publication changes, the file's own included.
    pub fn changed(&self) -> impl Iterator<Item = BorrowedFd<'_>> + '_ {
        self.changed
            .iter()
            .copied()
            .chain(std::iter::once(self.dirs.len()))
            .map(|n| self.dir(n))
    }
}

fn refused(e: Errno) -> Error {
    match e {
        // A file where a directory should be, or a symlink on the way.
        Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV | Errno::EEXIST => Error::Conflict,
        e => Error::Io(e.into()),
    }
}

fn open_dir_beneath(dirfd: RawFd, name: &str) -> std::result::Result<OwnedFd, Errno> {
    open_beneath(dirfd, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
}

/// Open (creating what is missing, with `mode`) the directories `dirs` below `root`.
pub fn open<'a>(root: BorrowedFd<'a>, dirs: &[&str], mode: u32) -> Result<Parents<'a>> {
    let mut parents = Parents {
        root,
        dirs: Vec::with_capacity(dirs.len()),
        changed: Vec::new(),
    };
    let Some((last, above)) = dirs.split_last() else {
        return Ok(parents);
    };
    // Usually only the last directory is new (Prosody's and ejabberd's per-upload one, below
    // nothing or an existing per-user one): open its parent with one lookup of that path
    // (which refuses any symlink on the way as well), then create the last directory and open
    // it. Only where the parent is missing too does the walk go component by component.
    if !above.is_empty() {
        match open_dir_beneath(root.as_raw_fd(), &above.join("/")) {
            Ok(fd) => parents.dirs.push(fd),
            Err(Errno::ENOENT) => {
                for seg in above {
                    parents.step(seg, mode)?;
                }
            }
            Err(e) => return Err(refused(e)),
        }
    }
    parents.step(last, mode)?;
    Ok(parents)
}

impl Parents<'_> {
    /// Create `seg` in the current leaf unless it is there, and descend into it.
    fn step(&mut self, seg: &str, mode: u32) -> Result<()> {
        let parent = self.leaf();
        match nix::sys::stat::mkdirat(Some(parent), seg, Mode::from_bits_truncate(mode)) {
            Ok(()) => self.changed.push(self.dirs.len()),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(refused(e)),
        }
        let fd = open_dir_beneath(parent, seg).map_err(refused)?;
        self.dirs.push(fd);
        Ok(())
    }
}
