//! Files under `StoreDir`: uploads go to a temporary file, are preallocated, written through
//! io_uring, fsynced and published at their path without replacing anything (DESIGN.md §4).
//! Reads open beneath `StoreDir` without following symlinks.
//!
//! The temporary is an unnamed `O_TMPFILE` inode where the filesystem supports it: it has no
//! directory entry, so no URL can reach it, a crash leaves nothing behind, and creating it
//! takes no directory lock. `linkat` publishes it and fails with EEXIST if the path exists,
//! the same guarantee as `renameat2(RENAME_NOREPLACE)`, which the fallback (a named temporary
//! in the reserved directory) uses.

mod cache;
mod commit;
mod dirsync;
mod parents;

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag, OpenHow, RenameFlags, ResolveFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};
use crate::path::{StorePath, RESERVED_DIR};

/// Where the uploaded Content-Type lives: the shared-mime-info convention, so `getfattr`
/// and file managers understand it, and it is renamed atomically together with the data.
const TYPE_XATTR: &str = "user.mime_type";
/// Longest Content-Type we store (ext4 keeps xattr values within one block).
pub const MAX_CONTENT_TYPE: usize = 1024;
/// Bodies up to this size are not preallocated: the block is allocated by the first write
/// anyway, and a fallocate call per small upload is pure overhead.
const PREALLOCATE_ABOVE: u64 = 64 * 1024;
/// Uploads up to this size are made durable by the shared group commit; larger ones fsync
/// their own file, so a small upload never waits for someone's gigabyte to reach the disk.
const GROUP_COMMIT_MAX: u64 = 1 << 20;

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
    counter: AtomicU64,
    /// Paths with an upload under way on this node: a second PUT gets 409 at once instead of
    /// streaming a whole body that would lose the final rename anyway.
    in_progress: Mutex<HashSet<String>>,
}

fn open_dir(dirfd: Option<RawFd>, path: &Path) -> io::Result<OwnedFd> {
    let fd = fcntl::openat(
        dirfd,
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: openat just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2 confined to `dirfd`: no `..` escape, no symlink anywhere on the way.
fn open_beneath(dirfd: RawFd, path: &str, flags: OFlag, mode: Mode) -> std::result::Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .mode(mode)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = fcntl::openat2(dirfd, path, how)?;
    // SAFETY: openat2 just returned this fd and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "host".into());
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let mut store = Store {
            root_path: root_path.to_owned(),
            modes,
            root,
            tmp,
            tmp_prefix: format!("{host}."),
            tmpfile: true,
            sync,
            commit: None,
            counter: AtomicU64::new(0),
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
            store.commit = Some(commit::GroupCommit::start(open_dir(None, root_path)?)?);
        }
        tracing::info!(
            temporaries = if store.tmpfile {
                "O_TMPFILE"
            } else {
                "named, in the reserved directory"
            },
            "store opened"
        );
        Ok(store)
    }

    pub fn root_path(&self) -> &Path {
        &self.root_path
    }

    /// This host's named temporaries (the fallback mode) at shutdown; uploads in flight are over.
    pub fn remove_own_temporaries(&self) {
        let tmp_path = self.root_path.join(RESERVED_DIR).join("tmp");
        if let Err(e) = self.remove_leftovers(&tmp_path) {
            tracing::warn!(error = %e, "could not remove temporaries at shutdown");
        }
    }

    fn remove_leftovers(&self, tmp_path: &Path) -> io::Result<usize> {
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

    /// A start-up write test, so a read-only StoreDir or a filesystem without user xattrs
    /// fails loudly at start instead of on the first upload.
    fn probe(&self) -> io::Result<()> {
        let (fd, name) = self.create_temp()?;
        let res = set_content_type(fd.as_raw_fd(), b"application/octet-stream");
        if let Some(name) = name {
            let _ = nix::unistd::unlinkat(
                Some(self.tmp.as_raw_fd()),
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        res.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot store the content type as xattr {TYPE_XATTR} in {}: {e}",
                    self.root_path.display()
                ),
            )
        })
    }

    /// Can we create an O_TMPFILE here and give it a name? (Not on NFS, for one.)
    fn probe_tmpfile(&self) -> bool {
        let Ok(fd) = self.open_tmpfile() else { return false };
        let probe = format!("{}probe-{}", self.tmp_prefix, std::process::id());
        let linked = link_tmpfile(fd.as_raw_fd(), self.tmp.as_raw_fd(), &probe).is_ok();
        let _ = nix::unistd::unlinkat(
            Some(self.tmp.as_raw_fd()),
            probe.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        linked
    }

    fn open_tmpfile(&self) -> io::Result<OwnedFd> {
        let fd = fcntl::openat(
            Some(self.tmp.as_raw_fd()),
            ".",
            OFlag::O_TMPFILE | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(self.modes.file),
        )?;
        // SAFETY: openat just returned this fd and nothing else owns it.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Whether an upload could start now: create a temporary and throw it away.
    pub fn probe_writable(&self) -> io::Result<()> {
        let (fd, name) = self.create_temp()?;
        drop(fd);
        if let Some(name) = name {
            nix::unistd::unlinkat(
                Some(self.tmp.as_raw_fd()),
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )?;
        }
        Ok(())
    }

    /// A new temporary file: unnamed (O_TMPFILE) where possible, else named in the reserved dir.
    fn create_temp(&self) -> io::Result<(OwnedFd, Option<String>)> {
        if self.tmpfile {
            return Ok((self.open_tmpfile()?, None));
        }
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        loop {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}{}.{:x}.{:x}.part", self.tmp_prefix, std::process::id(), nanos, n);
            match fcntl::openat(
                Some(self.tmp.as_raw_fd()),
                name.as_str(),
                OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(self.modes.file),
            ) {
                // SAFETY: openat just returned this fd and nothing else owns it.
                Ok(fd) => return Ok((unsafe { OwnedFd::from_raw_fd(fd) }, Some(name))),
                Err(Errno::EEXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Start an upload to `path`: 409 if it exists or is being uploaded, 507 if `size` bytes
    /// cannot be preallocated. `size` is None for chunked bodies.
    /// `check_exists`: answer 409 now rather than after the body (needed before a 100 Continue
    /// and worth it for large bodies; a small body is cheaper to read than to look up twice,
    /// since the final link refuses an existing name anyway).
    pub fn begin(&self, path: &StorePath, size: Option<u64>, check_exists: bool) -> Result<Upload<'_>> {
        if check_exists && self.exists(path)? {
            return Err(Error::Conflict);
        }
        let claim = Claim::new(self, path)?;
        self.start(Some(claim), size)
    }

    /// Start an upload whose signature can only be checked once its body is in (chunked):
    /// it claims nothing, so a signed upload to the same path is never held up by it (the
    /// no-replace publication decides between them). It is refused (409) if the path exists
    /// or a signed upload to it is in progress.
    pub fn begin_unverified(&self, path: &StorePath) -> Result<Upload<'_>> {
        if self.is_claimed(path) || self.exists(path)? {
            return Err(Error::Conflict);
        }
        self.start(None, None)
    }

    /// Whether an upload to `path` is in progress on this node.
    pub fn is_claimed(&self, path: &StorePath) -> bool {
        let set = self.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        set.contains(path.as_str())
    }

    fn start<'a>(&'a self, claim: Option<Claim<'a>>, size: Option<u64>) -> Result<Upload<'a>> {
        let (fd, name) = self.create_temp().map_err(temp_error)?;
        let file = monoio::fs::File::from_std(fs::File::from(fd))?;
        let upload = Upload {
            store: self,
            file: Some(file),
            name,
            _claim: claim,
            published: false,
            persistent: false,
            writeback_from: std::cell::Cell::new(0),
        };
        if let Some(size) = size.filter(|&s| s > PREALLOCATE_ABOVE) {
            preallocate(upload.raw_fd(), size)?;
        }
        Ok(upload)
    }

    /// Create the partial file of a resumable upload, preallocated to its signed size and
    /// named after its session (named, unlike a PUT's temporary: it must outlive this
    /// request, a restart, and be reachable from every node sharing StoreDir).
    pub async fn create_part(&self, id: &str, size: u64) -> Result<()> {
        let name = part_name(id);
        let fd = fcntl::openat(
            Some(self.tmp.as_raw_fd()),
            name.as_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(self.modes.file),
        )
        .map_err(|e| temp_error(e.into()))?;
        // SAFETY: openat just returned this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if size > 0 {
            if let Err(e) = preallocate(fd.as_raw_fd(), size) {
                self.remove_part(id);
                return Err(e);
            }
        }
        // The name durable before the session that points at it is recorded.
        let st = nix::sys::stat::fstat(self.tmp.as_raw_fd()).map_err(io::Error::from)?;
        dirsync::sync_dir((st.st_dev, st.st_ino), self.tmp.as_raw_fd()).await?;
        Ok(())
    }

    /// Open a resumable upload's partial file to write more of it. Claims `path` on this node
    /// for as long as the returned upload lives, like a PUT. `Error::Gone` if the file is gone.
    pub fn open_part(&self, id: &str, path: &StorePath) -> Result<Upload<'_>> {
        let name = part_name(id);
        let fd = match open_beneath(self.tmp.as_raw_fd(), &name, OFlag::O_WRONLY, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Err(Error::Gone),
            Err(e) => return Err(temp_error(e.into())),
        };
        let claim = Claim::new(self, path)?;
        let file = monoio::fs::File::from_std(fs::File::from(fd))?;
        Ok(Upload {
            store: self,
            file: Some(file),
            name: Some(name),
            _claim: Some(claim),
            published: false,
            persistent: true,
            writeback_from: std::cell::Cell::new(0),
        })
    }

    pub fn part_exists(&self, id: &str) -> bool {
        open_beneath(self.tmp.as_raw_fd(), &part_name(id), OFlag::O_PATH, Mode::empty()).is_ok()
    }

    /// Remove a resumable upload's partial file, if it is still there.
    pub fn remove_part(&self, id: &str) {
        let _ = nix::unistd::unlinkat(
            Some(self.tmp.as_raw_fd()),
            part_name(id).as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    }

    /// Partial files of resumable uploads with their last modification: (session id, mtime).
    pub fn parts(&self) -> Vec<(String, SystemTime)> {
        let dir = self.root_path.join(RESERVED_DIR).join("tmp");
        let Ok(entries) = fs::read_dir(dir) else {
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

    pub fn exists(&self, path: &StorePath) -> Result<bool> {
        match open_beneath(self.root.as_raw_fd(), path.as_str(), OFlag::O_PATH, Mode::empty()) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            // A parent is a file, or a symlink is in the way: the path cannot be created.
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) | Err(Errno::EXDEV) => Ok(true),
            Err(e) => Err(Error::Io(e.into())),
        }
    }

    /// Open a stored file for reading. Directories, symlinks and anything outside are 404.
    /// Open a stored file for reading, through the per-worker open-file cache.
    pub fn open_cached(&self, path: &StorePath, cache: &OpenFileCache) -> Result<std::rc::Rc<Stored>> {
        if cache.ttl.is_zero() {
            return self.open_read(path).map(std::rc::Rc::new);
        }
        let now = std::time::Instant::now();
        if let Some(hit) = cache::get(path.as_str(), now) {
            return Ok(hit);
        }
        let stored = std::rc::Rc::new(self.open_read(path)?);
        cache::put(path.as_str(), stored.clone(), now, cache.ttl, cache.entries);
        Ok(stored)
    }

    fn open_read(&self, path: &StorePath) -> Result<Stored> {
        // O_NONBLOCK: a FIFO someone planted in StoreDir would otherwise block the worker in
        // open until a writer came; it is refused by type below instead.
        let how = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = match open_beneath(self.root.as_raw_fd(), path.as_str(), how, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV | Errno::EISDIR | Errno::ENXIO) => {
                return Err(Error::NotFound)
            }
            Err(e) => return Err(Error::Io(e.into())),
        };
        let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(io::Error::from)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::NotFound);
        }
        // io_uring answers EAGAIN instead of reading a non-blocking file that is not cached.
        fcntl::fcntl(fd.as_raw_fd(), fcntl::FcntlArg::F_SETFL(OFlag::empty())).map_err(io::Error::from)?;
        let content_type = get_content_type(fd.as_raw_fd());
        let file = monoio::fs::File::from_std(fs::File::from(fd))?;
        let mtime = UNIX_EPOCH + std::time::Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
        let mtime_ns = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(Stored {
            file,
            size: st.st_size as u64,
            etag: format!("\"{:x}-{:x}\"", st.st_size, mtime_ns),
            last_modified: httpdate::fmt_http_date(mtime),
            content_type,
            body: std::cell::OnceCell::new(),
        })
    }
}

/// Open-file cache settings (`OpenFileCacheSeconds`, `OpenFileCacheEntries`).
#[derive(Debug, Clone, Copy)]
pub struct OpenFileCache {
    pub ttl: std::time::Duration,
    pub entries: usize,
}

impl OpenFileCache {
    /// Close this worker's expired entries (each worker calls it once per TTL).
    pub fn sweep(&self) {
        cache::sweep(std::time::Instant::now());
    }
}

/// A stored file opened for a download.
pub struct Stored {
    pub file: monoio::fs::File,
    pub size: u64,
    /// Strong validator: size and modification time in nanoseconds.
    pub etag: String,
    pub last_modified: String,
    pub content_type: Option<Vec<u8>>,
    /// The whole file, once read, if it is small and this worker's body budget allows
    /// (see `cache::BODY_MAX`): a repeated GET then needs no file read.
    body: std::cell::OnceCell<Box<[u8]>>,
}

impl Stored {
    /// The file's bytes `[start, start+len)` if the whole file is held in memory.
    pub fn cached_body(&self, start: u64, len: u64) -> Option<&[u8]> {
        let body = self.body.get()?;
        body.get(usize::try_from(start).ok()?..usize::try_from(start + len).ok()?)
    }

    /// Keep `bytes`, the whole file just read, in memory for as long as this entry lives.
    pub fn remember_body(&self, bytes: &[u8]) {
        if bytes.len() as u64 == self.size && self.body.get().is_none() && cache::reserve_body(bytes.len()) {
            let _ = self.body.set(bytes.into());
        }
    }
}

impl Drop for Stored {
    fn drop(&mut self) {
        if let Some(b) = self.body.get() {
            cache::release_body(b.len());
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
        let mut set = store.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(path.as_str().to_owned()) {
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
        let mut set = self.store.in_progress.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.key);
    }
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
}

/// Durable uploads start writeback every this many bytes, so the disk writes while the
/// network still streams and the final fsync has little left to do. Measured on this
/// machine against dd conv=fsync (5 alternations each, median of our speed / dd's): no
/// early writeback 0.78x, an fdatasync through the ring per step 0.80x (a device flush
/// each time), sync_file_range(SYNC_FILE_RANGE_WRITE) 1.14x (starts writes, no flush).
const WRITEBACK_EVERY: u64 = 16 << 20;

impl Upload<'_> {
    fn raw_fd(&self) -> RawFd {
        self.file.as_ref().map_or(-1, |f| f.as_raw_fd())
    }

    /// Write all of `buf` at `pos` through the ring; the buffer comes back for reuse.
    pub async fn write_at(&self, buf: Vec<u8>, pos: u64) -> (Result<()>, Vec<u8>) {
        let Some(file) = self.file.as_ref() else {
            return (Err(Error::Io(io::Error::other("upload already closed"))), buf);
        };
        let (res, buf) = file.write_all_at(buf, pos).await;
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

    /// Make what was written so far durable (a resumable upload's checkpoint).
    pub async fn sync_data(&self) -> Result<()> {
        match self.file.as_ref() {
            Some(file) if self.store.sync => Ok(file.sync_data().await?),
            Some(_) => Ok(()),
            None => Err(Error::Io(io::Error::other("upload already closed"))),
        }
    }

    /// Make the upload visible at `path`: content type, fsync, no-replace link (or rename),
    /// then fsync of every directory whose entries changed. The body must be complete:
    /// preallocation was exactly the declared size, so the file size is already right.
    /// `declared` is the uploader's content type: stored when it is exactly one media type,
    /// else the file is stored as `application/octet-stream`.
    pub async fn publish(mut self, path: &StorePath, size: u64, declared: &[u8]) -> Result<()> {
        let store = self.store;
        let Some(file) = self.file.take() else {
            return Err(Error::Io(io::Error::other("upload already closed")));
        };
        let fd = file.as_raw_fd();
        set_content_type(fd, crate::http::media_type::stored(Some(declared)))?;
        // Data and inode durable before the name appears (DESIGN.md §4).
        let group = store.commit.as_ref().filter(|_| size <= GROUP_COMMIT_MAX);
        let started = std::time::Instant::now();
        match (store.sync, group) {
            (false, _) => {}
            (true, Some(g)) => g.commit().await?,
            (true, None) => file.sync_all().await?,
        }
        tracing::debug!(
            size,
            sync_ms = started.elapsed().as_millis() as u64,
            "upload data durable"
        );
        let (dirs, name) = path.split();
        let parents = parents::open(store.root.as_raw_fd(), &dirs, store.modes.dir)?;
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
            g.commit().await?;
        } else if store.sync {
            for dir in parents.changed() {
                let st = nix::sys::stat::fstat(dir).map_err(io::Error::from)?;
                dirsync::sync_dir((st.st_dev, st.st_ino), dir).await?;
            }
        }
        Ok(())
    }
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        // An unnamed temporary vanishes with its last fd; a named one must be unlinked.
        if let (false, false, Some(name)) = (self.published, self.persistent, &self.name) {
            let _ = nix::unistd::unlinkat(
                Some(self.store.tmp.as_raw_fd()),
                name.as_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// Why a temporary could not be created, as the client should hear it.
fn temp_error(e: io::Error) -> Error {
    match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
        Errno::ENOSPC | Errno::EDQUOT => Error::InsufficientStorage,
        // Remounted read-only, permissions taken away, the directory deleted under us.
        Errno::EROFS | Errno::EACCES | Errno::EPERM | Errno::ENOENT | Errno::ESTALE => {
            Error::Unavailable(format!("StoreDir is not writable: {e}"))
        }
        _ => Error::Io(e),
    }
}

/// Reserve `size` bytes for a file: 507 now rather than ENOSPC in the middle of the body.
fn preallocate(fd: RawFd, size: u64) -> Result<()> {
    let len = i64::try_from(size).map_err(|_| Error::InsufficientStorage)?;
    match fcntl::fallocate(fd, fcntl::FallocateFlags::empty(), 0, len) {
        Ok(()) | Err(Errno::EOPNOTSUPP) => Ok(()),
        Err(Errno::ENOSPC) | Err(Errno::EFBIG) | Err(Errno::EDQUOT) => Err(Error::InsufficientStorage),
        Err(e) => Err(Error::Io(e.into())),
    }
}

/// Partial files of resumable uploads are `tus_<session id>` in the reserved temporary
/// directory: `_` never occurs in the host prefix of PUT temporaries, so the start-up
/// cleaning of those never touches them.
const PART_PREFIX: &str = "tus_";

fn part_name(id: &str) -> String {
    format!("{PART_PREFIX}{id}")
}

/// Give an O_TMPFILE a name; EEXIST if the name is taken (never replaces).
fn link_tmpfile(fd: RawFd, dirfd: RawFd, name: &str) -> std::result::Result<(), Errno> {
    let proc_path = format!("/proc/self/fd/{fd}");
    nix::unistd::linkat(
        None,
        proc_path.as_str(),
        Some(dirfd),
        name,
        nix::fcntl::AtFlags::AT_SYMLINK_FOLLOW,
    )
}

fn set_content_type(fd: RawFd, value: &[u8]) -> io::Result<()> {
    let name = CString::new(TYPE_XATTR).map_err(io::Error::other)?;
    // SAFETY: name is NUL-terminated, value points to value.len() readable bytes.
    let rc = unsafe { libc::fsetxattr(fd, name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get_content_type(fd: RawFd) -> Option<Vec<u8>> {
    let name = CString::new(TYPE_XATTR).ok()?;
    let mut buf = vec![0u8; MAX_CONTENT_TYPE];
    // SAFETY: buf has buf.len() writable bytes; name is NUL-terminated.
    let n = unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}
