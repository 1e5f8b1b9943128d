//! The directory an upload is published into, found or created one component at a time.
//! Each component is created with `mkdirat` and opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)` relative to the directory before it, and the file is linked by its
//! bare name into the last one: a directory swapped for a symlink between two steps (a local
//! user racing the server) makes the upload fail with 409, never land outside `StoreDir`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::open_beneath;
use crate::error::{Error, Result};

/// The opened directories of one file's path below `StoreDir`.
pub struct Parents {
    root: RawFd,
    /// From `StoreDir`'s child down to the file's own directory.
    dirs: Vec<OwnedFd>,
    /// Directories that gained an entry (a directory created in them), as raw fds of `root`
    /// or of `dirs`; the file's own directory gains one when the file is linked.
    changed: Vec<RawFd>,
}

impl Parents {
    /// The file's directory.
    pub fn leaf(&self) -> RawFd {
        self.dirs.last().map_or(self.root, AsRawFd::as_raw_fd)
    }

    /// Every directory whose entries the publication changes, the file's own included.
    pub fn changed(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.changed.iter().copied().chain(std::iter::once(self.leaf()))
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
pub fn open(root: RawFd, dirs: &[&str], mode: u32) -> Result<Parents> {
    let mut parents = Parents {
        root,
        dirs: Vec::with_capacity(dirs.len()),
        changed: Vec::new(),
    };
    if dirs.is_empty() {
        return Ok(parents);
    }
    // Usually the whole chain exists (ejabberd's per-user directory) or only its last part is
    // new (Prosody's per-upload one): one lookup of the full path, which refuses any symlink
    // on the way as well, before walking component by component.
    match open_dir_beneath(root, &dirs.join("/")) {
        Ok(fd) => {
            parents.dirs.push(fd);
            return Ok(parents);
        }
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(refused(e)),
    }
    for seg in dirs {
        let parent = parents.leaf();
        match nix::sys::stat::mkdirat(Some(parent), *seg, Mode::from_bits_truncate(mode)) {
            Ok(()) => parents.changed.push(parent),
            Err(Errno::EEXIST) => {}
            Err(e) => return Err(refused(e)),
        }
        let fd = open_dir_beneath(parent, seg).map_err(refused)?;
        parents.dirs.push(fd);
    }
    Ok(parents)
}
