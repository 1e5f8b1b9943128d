//! Temporary files: a PUT's body goes to an unnamed `O_TMPFILE` where the filesystem has it
//! (no directory entry, so no URL reaches it, a crash leaves nothing, and creating one takes
//! no directory lock), else to a named file in the reserved directory, named after this host
//! so each node cleans only its own. A resumable upload's partial file is named after its
//! session (`tus_<id>`): it must outlive the request, a restart, and be reachable from every
//! node sharing StoreDir.

use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use super::fsops::{self, create_in, link_tmpfile, open_at, open_beneath, unlink_in};
use super::{dirsync, Claim, FileMeta, Store, Upload};
use crate::error::{Error, Result};
use crate::path::StorePath;

/// Bodies up to this size are not preallocated: the block is allocated by the first write
/// anyway, and a fallocate call per small upload is pure overhead.
const PREALLOCATE_ABOVE: u64 = 64 * 1024;

/// Partial files of resumable uploads are `tus_<session id>` in the reserved temporary
/// directory: `_` never occurs in the host prefix of PUT temporaries, so the start-up
/// cleaning of those never touches them.
const PART_PREFIX: &str = "tus_";

fn part_name(id: &str) -> String {
    format!("{PART_PREFIX}{id}")
}

/// A file opened for writing, with `meta` stored on it, ready for the ring.
fn ready(fd: OwnedFd, meta: &FileMeta) -> Result<monoio::fs::File> {
    let file = fs::File::from(fd);
    meta.write(&file)?;
    Ok(monoio::fs::File::from_std(file)?)
}

impl Store {
    pub(super) fn open_tmpfile(&self) -> io::Result<OwnedFd> {
        let flags = OFlag::O_TMPFILE | OFlag::O_WRONLY;
        Ok(open_at(
            Some(self.tmp.as_raw_fd()),
            Path::new("."),
            flags,
            self.modes.file,
        )?)
    }

    /// Can we create an O_TMPFILE here and give it a name? (Not on NFS, for one.)
    pub(super) fn probe_tmpfile(&self) -> bool {
        let Ok(fd) = self.open_tmpfile() else { return false };
        let probe = format!("{}probe-{}", self.tmp_prefix, std::process::id());
        let linked = link_tmpfile(fd.as_raw_fd(), self.tmp.as_raw_fd(), &probe).is_ok();
        let _ = unlink_in(self.tmp.as_raw_fd(), &probe);
        linked
    }

    /// A new temporary file: unnamed (O_TMPFILE) where possible, else named in the reserved dir.
    pub(super) fn create_temp(&self) -> io::Result<(OwnedFd, Option<String>)> {
        if self.tmpfile {
            return Ok((self.open_tmpfile()?, None));
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}{}.{:x}.{:x}.part", self.tmp_prefix, std::process::id(), nanos, n);
            match create_in(self.tmp.as_raw_fd(), &name, self.modes.file) {
                Ok(fd) => return Ok((fd, Some(name))),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Throw away a temporary `create_temp` made (a named one has to be unlinked).
    pub(super) fn discard_temp(&self, name: Option<&str>) -> io::Result<()> {
        match name {
            Some(name) => Ok(unlink_in(self.tmp.as_raw_fd(), name)?),
            None => Ok(()),
        }
    }

    /// This node's named temporaries left in the reserved directory; how many were removed.
    pub(super) fn remove_leftovers(&self, tmp_path: &Path) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(tmp_path)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with(&self.tmp_prefix) {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// An upload into a fresh temporary, `meta` stored on it, preallocated to `size` when
    /// that is known and worth it.
    pub(super) fn start<'a>(
        &'a self,
        claim: Option<Claim<'a>>,
        size: Option<u64>,
        meta: &FileMeta,
    ) -> Result<Upload<'a>> {
        let (fd, name) = self.create_temp().map_err(Error::storage)?;
        let upload = Upload::new(self, ready(fd, meta)?, name, claim, false);
        if let Some(size) = size.filter(|&s| s > PREALLOCATE_ABOVE) {
            fsops::preallocate(upload.raw_fd(), size)?;
        }
        Ok(upload)
    }

    /// Create the partial file of a resumable upload, preallocated to its signed size, with
    /// `meta` stored on it, and its name durable before the session that points at it is
    /// recorded.
    pub async fn create_part(&self, id: &str, size: u64, meta: &FileMeta) -> Result<()> {
        let name = part_name(id);
        let fd = create_in(self.tmp.as_raw_fd(), &name, self.modes.file).map_err(|e| Error::storage(e.into()))?;
        let file = fs::File::from(fd);
        let prepared = meta.write(&file).map_err(Error::Io).and_then(|()| match size {
            0 => Ok(()),
            _ => fsops::preallocate(file.as_raw_fd(), size),
        });
        if let Err(e) = prepared {
            self.remove_part(id);
            return Err(e);
        }
        dirsync::sync_dir(self.tmp.as_fd(), &self.failures).await?;
        Ok(())
    }

    /// Open a resumable upload's partial file to write more of it. Claims `path` on this node
    /// for as long as the returned upload lives, like a PUT. `Error::Gone` if the file is gone.
    /// The content type is stored again (a part an older version created may lack it); the
    /// rest of its attributes stay as `create_part` stored them.
    pub fn open_part(&self, id: &str, path: &StorePath, content_type: &[u8]) -> Result<Upload<'_>> {
        let name = part_name(id);
        let fd = match open_beneath(self.tmp.as_raw_fd(), &name, OFlag::O_WRONLY, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(Error::Gone),
            Err(e) => return Err(Error::storage(e.into())),
        };
        let claim = Claim::new(self, path)?;
        Ok(Upload::new(
            self,
            ready(fd, &FileMeta::typed(content_type))?,
            Some(name),
            Some(claim),
            true,
        ))
    }

    /// The attributes stored on a resumable upload's partial file, and its size (the whole
    /// upload's: it is preallocated).
    pub fn part_meta(&self, id: &str) -> Option<(FileMeta, u64)> {
        let fd = open_beneath(self.tmp.as_raw_fd(), &part_name(id), OFlag::O_RDONLY, Mode::empty()).ok()?;
        let file = fs::File::from(fd);
        let size = file.metadata().ok()?.len();
        Some((super::meta::read(&file), size))
    }

    pub fn part_exists(&self, id: &str) -> bool {
        open_beneath(self.tmp.as_raw_fd(), &part_name(id), OFlag::O_PATH, Mode::empty()).is_ok()
    }

    /// Remove a resumable upload's partial file, if it is still there.
    pub fn remove_part(&self, id: &str) {
        let _ = unlink_in(self.tmp.as_raw_fd(), &part_name(id));
    }

    /// Partial files of resumable uploads with their last modification: (session id, mtime).
    pub fn parts(&self) -> Vec<(String, SystemTime)> {
        let Ok(entries) = fs::read_dir(self.tmp_path()) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = name.strip_prefix(PART_PREFIX)?.to_owned();
                let mtime = e.metadata().ok()?.modified().ok()?;
                Some((id, mtime))
            })
            .collect()
    }
}
