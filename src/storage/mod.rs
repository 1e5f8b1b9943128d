//! Files under `StoreDir`: uploads go to a temporary file (`temp`), are preallocated, written
//! through io_uring, made durable and published at their path without replacing anything
//! (`upload`); downloads open beneath `StoreDir` without following symlinks (`read`). The
//! guarantees are in docs/protocol.md, "Storage".
//!
//! `linkat` of an `O_TMPFILE` fails with EEXIST if the path exists: the same guarantee as
//! `renameat2(RENAME_NOREPLACE)`, which the fallback (a named temporary) uses.

mod cache;
mod commit;
mod delete;
mod dirsync;
mod failures;
mod fsops;
mod meta;
mod parents;
mod read;
mod temp;
mod upload;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

pub use delete::Removed;
pub use meta::{read as read_meta, FileMeta};
pub use read::{read_exact_at, OpenFileCache, Stored};
pub use upload::Upload;

use crate::error::{Error, Result};
use crate::path::{StorePath, RESERVED_DIR};
use crate::sync::lock;
use fsops::{open_beneath, open_dir};

/// Longest Content-Type we store (ext4 keeps xattr values within one block).
pub const MAX_CONTENT_TYPE: usize = 1024;

/// Permissions of what the store creates (`FileMode`, `DirMode`), further narrowed by the
/// process umask as usual.
#[derive(Debug, Clone, Copy)]
pub struct Modes {
    pub file: u32,
    pub dir: u32,
}

pub struct Store {
    root_path: PathBuf,
    modes: Modes,
    root: OwnedFd,
    tmp: OwnedFd,
    /// Temporaries of this node start with this prefix, so a restart cleans only its own
    /// leftovers when several nodes share one `StoreDir`.
    tmp_prefix: String,
    /// The filesystem supports O_TMPFILE (and linking it via /proc/self/fd).
    tmpfile: bool,
    sync: bool,
    /// Present when `sync`: the shared syncfs rounds for small uploads.
    commit: Option<commit::GroupCommit>,
    /// Write errors any flush of the store reported: an upload in flight when one comes is
    /// refused, whoever's flush it came to (failures.rs).
    failures: Arc<failures::Failures>,
    counter: AtomicU64,
    /// Files this process deleted (`delete`), for the open-file caches.
    deletions: AtomicU64,
    /// Paths with an upload under way on this node: a second PUT gets 409 at once instead of
    /// streaming a whole body that would lose the final link anyway.
    in_progress: Mutex<HashSet<String>>,
}

impl Store {
    /// Create `StoreDir` and the reserved directory if needed, remove this node's leftover
    /// temporaries from a crash, and check that files and xattrs can be written.
    pub fn open(root_path: &Path, sync: bool, modes: Modes) -> io::Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(modes.dir)
            .create(root_path)?;
        let tmp_path = root_path.join(RESERVED_DIR).join("tmp");
        // The server's own state: nobody else's business, whatever DirMode says.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750 & modes.dir)
            .create(&tmp_path)?;
        let root = open_dir(None, root_path)?;
        let tmp = open_dir(None, &tmp_path)?;
        let dev = nix::sys::stat::fstat(root.as_raw_fd()).map_err(io::Error::from)?.st_dev;
        let host = crate::node::host_name();
        let mut store = Store {
            root_path: root_path.to_owned(),
            modes,
            root,
            tmp,
            tmp_prefix: format!("{host}."),
            tmpfile: true,
            sync,
            commit: None,
            failures: Arc::new(failures::Failures::new(dev)),
            counter: AtomicU64::new(0),
            deletions: AtomicU64::new(0),
            in_progress: Mutex::new(HashSet::new()),
        };
        let removed = store.remove_leftovers(&tmp_path)?;
        if removed > 0 {
            tracing::warn!(removed, dir = %tmp_path.display(), "removed temporary files left by an earlier run");
        }
        // The fallback can be forced, to test it or to sidestep a filesystem whose O_TMPFILE misbehaves.
        store.tmpfile = std::env::var_os("HMAC_FILE_SERVER_NO_TMPFILE").is_none() && store.probe_tmpfile();
        store.probe()?;
        if sync {
            let quiet = open_dir(None, &root_path.join(RESERVED_DIR))?;
            store.commit = Some(commit::GroupCommit::start(
                open_dir(None, root_path)?,
                quiet,
                store.failures.clone(),
            )?);
        }
        let temporaries = if store.tmpfile {
            "O_TMPFILE"
        } else {
            "named, in the reserved directory"
        };
        tracing::info!(temporaries, "store opened");
        Ok(store)
    }

    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    fn tmp_path(&self) -> PathBuf {
        self.root_path.join(RESERVED_DIR).join("tmp")
    }

    /// This host's named temporaries (the fallback mode) at shutdown; uploads in flight are over.
    pub fn remove_own_temporaries(&self) {
        if let Err(e) = self.remove_leftovers(&self.tmp_path()) {
            tracing::warn!(error = %e, "could not remove temporaries at shutdown");
        }
    }

    /// A start-up write test, so a read-only StoreDir or a filesystem without user xattrs
    /// fails loudly at start instead of on the first upload.
    fn probe(&self) -> io::Result<()> {
        let (fd, name) = self.create_temp()?;
        let res = FileMeta::typed(crate::http::media_type::OCTET_STREAM).write(&fs::File::from(fd));
        let _ = self.discard_temp(name.as_deref());
        res.map_err(|e| meta::xattr_error(e, &self.root_path))
    }

    /// Whether an upload could start now: create a temporary and throw it away.
    pub fn probe_writable(&self) -> io::Result<()> {
        let (fd, name) = self.create_temp()?;
        drop(fd);
        self.discard_temp(name.as_deref())
    }

    /// Start a signed upload to `path`, to be stored with `meta`: 409 if it exists or
    /// is being uploaded, 507 if `size` bytes cannot be preallocated (`size` is None for
    /// chunked bodies). `check_exists`: answer 409 now rather than after the body (needed
    /// before a 100 Continue and worth it for large bodies; a small body is cheaper to read
    /// than to look up twice, since the final link refuses an existing name anyway).
    pub fn begin(
        &self,
        path: &StorePath,
        size: Option<u64>,
        check_exists: bool,
        meta: &FileMeta,
    ) -> Result<Upload<'_>> {
        if check_exists && self.exists(path)? {
            return Err(Error::Conflict);
        }
        let claim = Claim::new(self, path)?;
        self.start(Some(claim), size, meta)
    }

    /// Start an upload whose signature can only be checked once its body is in (chunked):
    /// it claims nothing, so a signed upload to the same path is never held up by it (the
    /// no-replace publication decides between them). It is refused (409) if the path exists
    /// or a signed upload to it is in progress.
    pub fn begin_unverified(&self, path: &StorePath, meta: &FileMeta) -> Result<Upload<'_>> {
        if self.is_claimed(path) || self.exists(path)? {
            return Err(Error::Conflict);
        }
        self.start(None, None, meta)
    }

    /// Whether an upload to `path` is in progress on this node.
    pub fn is_claimed(&self, path: &StorePath) -> bool {
        lock(&self.in_progress).contains(path.as_str())
    }

    pub fn exists(&self, path: &StorePath) -> Result<bool> {
        match open_beneath(self.root.as_raw_fd(), path.as_str(), OFlag::O_PATH, Mode::empty()) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            // A parent is a file, or a symlink is in the way: the path cannot be created.
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) | Err(Errno::EXDEV) => Ok(true),
            Err(e) => Err(Error::Io(e.into())),
        }
    }
}

/// Marks a path as being uploaded on this node for as long as it lives.
struct Claim<'a> {
    store: &'a Store,
    key: String,
}

impl<'a> Claim<'a> {
    fn new(store: &'a Store, path: &StorePath) -> Result<Claim<'a>> {
        if !lock(&store.in_progress).insert(path.as_str().to_owned()) {
            return Err(Error::Conflict);
        }
        Ok(Claim {
            store,
            key: path.as_str().to_owned(),
        })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.store.in_progress).remove(&self.key);
    }
}
