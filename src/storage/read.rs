//! Stored files opened for downloads: beneath StoreDir, never through a symlink, never a
//! directory or special file, through each worker's open-file cache.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{self, OFlag};
use nix::sys::stat::Mode;

use super::fsops::open_beneath;
use super::{cache, meta, Store};
use crate::error::{Error, Result};
use crate::http::media_type;
use crate::path::StorePath;

/// Open-file cache settings (`OpenFileCacheSeconds`, `OpenFileCacheEntries`).
#[derive(Debug, Clone, Copy)]
pub struct OpenFileCache {
    pub ttl: Duration,
    pub entries: usize,
}

impl OpenFileCache {
    /// Close this worker's expired entries (each worker calls it once per TTL).
    pub fn sweep(&self) {
        cache::sweep(Instant::now());
    }
}

/// A stored file opened for a download.
pub struct Stored {
    pub file: monoio::fs::File,
    pub size: u64,
    /// Strong validator: size and modification time in nanoseconds.
    pub etag: String,
    pub last_modified: String,
    /// The type it is served with: its stored one if that is exactly one media type, else
    /// `application/octet-stream`. Parsed once per open, not per request: the xattr may hold
    /// what an older version or a local user put there.
    pub content_type: Vec<u8>,
    /// Whether a browser may show it in place (`Content-Disposition: inline`).
    pub inline: bool,
    /// Unix seconds from which the file is no longer served (docs/protocol.md, "Bearer tokens").
    pub expires: Option<u64>,
    /// Unix seconds of its last modification: when it was uploaded.
    pub uploaded: u64,
    /// The whole file, once read, if it is small and this worker's body budget allows
    /// (see `cache::BODY_MAX`): a repeated GET then needs no file read.
    body: std::cell::OnceCell<Box<[u8]>>,
    /// Which file this is and its state when opened: the cache keeps it past its time only
    /// while its path still names the same inode with the same change time (a link, unlink
    /// or xattr change moves that).
    identity: Identity,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

impl Identity {
    fn of(st: &libc::stat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

impl Stored {
    /// When the file stops being served: its own expiry, or its upload plus `ttl` (`FileTTL`,
    /// 0 = none), whichever comes first.
    pub fn expiry(&self, ttl: u64) -> Option<u64> {
        let by_age = (ttl > 0).then(|| self.uploaded.saturating_add(ttl));
        match (self.expires, by_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Append the file's bytes `[pos, pos + want)` to `out`.
    pub async fn read_into(&self, out: &mut Vec<u8>, pos: u64, want: usize) -> Result<()> {
        read_exact_at(&self.file, out, pos, want).await
    }

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

/// Append exactly `want` bytes of `file` read at `pos` to `out`, through the ring.
pub async fn read_exact_at(file: &monoio::fs::File, out: &mut Vec<u8>, mut pos: u64, want: usize) -> Result<()> {
    use monoio::buf::IoBufMut;
    let target = out.len() + want;
    out.reserve(want);
    let mut buf = std::mem::take(out);
    let result = loop {
        if buf.len() >= target {
            break Ok(());
        }
        let have = buf.len();
        let (res, slice) = file.read_at(buf.slice_mut(have..target), pos).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                break Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while being served",
                )))
            }
            Ok(n) => pos += n as u64,
            Err(e) => break Err(Error::Io(e)),
        }
    };
    *out = buf;
    result
}

impl Store {
    /// Open a stored file for reading, through the per-worker open-file cache. Directories,
    /// symlinks, special files and anything outside StoreDir are 404.
    pub fn open_cached(&self, path: &StorePath, cache: &OpenFileCache) -> Result<Rc<Stored>> {
        if cache.ttl.is_zero() {
            return self.open_read(path).map(Rc::new);
        }
        let now = Instant::now();
        let deletions = self.deletions();
        let unchanged = |s: &Stored| self.still_names(path, s);
        if let Some(hit) = cache::get(path.as_str(), now, deletions, cache.ttl, unchanged) {
            return Ok(hit);
        }
        let stored = Rc::new(self.open_read(path)?);
        cache::put(path.as_str(), stored.clone(), now, cache.ttl, cache.entries, deletions);
        Ok(stored)
    }

    /// Whether `path` still names `stored`, unchanged since it was opened. A symlink swapped
    /// in on the way cannot make this serve anything new: it only ever confirms the inode
    /// already open, which was checked when it was opened.
    fn still_names(&self, path: &StorePath, stored: &Stored) -> bool {
        use nix::fcntl::AtFlags;
        let now = nix::sys::stat::fstatat(Some(self.root.as_raw_fd()), path.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW);
        now.is_ok_and(|st| Identity::of(&st) == stored.identity)
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
        let file = fs::File::from(fd);
        let (stored_type, expires) = meta::for_download(&file);
        let (content_type, inline) = match stored_type.as_deref().and_then(media_type::parse) {
            Some(t) => (t.value.to_vec(), t.is_inline()),
            None => (media_type::OCTET_STREAM.to_vec(), false),
        };
        let file = monoio::fs::File::from_std(file)?;
        let mtime = UNIX_EPOCH + Duration::new(st.st_mtime.max(0) as u64, st.st_mtime_nsec as u32);
        let mtime_ns = mtime.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Ok(Stored {
            file,
            size: st.st_size as u64,
            etag: format!("\"{:x}-{:x}\"", st.st_size, mtime_ns),
            last_modified: httpdate::fmt_http_date(mtime),
            content_type,
            inline,
            expires,
            uploaded: st.st_mtime.max(0) as u64,
            body: std::cell::OnceCell::new(),
            identity: Identity::of(&st),
        })
    }
}
