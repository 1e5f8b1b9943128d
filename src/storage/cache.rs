//! Per-worker cache of open stored files and their response metadata. Uploads are immutable
//! once published (never replaced in place), so an open fd stays a correct view of its path
//! until the file is deleted by someone else; entries live `OpenFileCacheSeconds` (default 1 s),
//! which bounds how long a deleted file can still be served. The same idea as nginx's
//! open_file_cache, on by default because a shared file in a group chat is fetched by every
//! member within seconds.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Stored;

struct Entry {
    stored: Rc<Stored>,
    expires: Instant,
    /// The store's deletion count when this entry was last known to be linked.
    deletions: Cell<u64>,
}

#[derive(Default)]
struct Cache {
    map: HashMap<String, Entry>,
}

/// Files up to this size are kept in memory with their entry after the first full read, so a
/// repeated GET of a small file (a chat's photo thumbnails, voice notes) is one socket write and
/// no file read. Larger files gain little from it: their send dominates.
pub const BODY_MAX: u64 = 16 * 1024;
/// Bytes of such bodies one worker holds at most: with two workers well inside the 32 MiB RSS
/// budget, and enough for a few hundred small files fetched within a TTL.
const BODY_BUDGET: usize = 4 << 20;

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    static BODY_BYTES: Cell<usize> = const { Cell::new(0) };
}

/// Account for a body of `len` bytes; false when it would exceed the budget.
pub fn reserve_body(len: usize) -> bool {
    if len as u64 > BODY_MAX {
        return false;
    }
    BODY_BYTES.with(|b| {
        let used = b.get() + len;
        (used <= BODY_BUDGET).then(|| b.set(used)).is_some()
    })
}

pub fn release_body(len: usize) {
    BODY_BYTES.with(|b| b.set(b.get().saturating_sub(len)));
}

/// The cached file of `path`, unless its entry expired, or the server deleted files since it
/// was last checked (`deletions`, the store's count) and this one is among them.
pub fn get(path: &str, now: Instant, deletions: u64) -> Option<Rc<Stored>> {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let hit = match c.map.get(path) {
            Some(e) if e.expires > now && (e.deletions.get() == deletions || still_linked(&e.stored)) => {
                e.deletions.set(deletions);
                Some(e.stored.clone())
            }
            Some(_) => None,
            None => return None,
        };
        if hit.is_none() {
            c.map.remove(path);
        }
        hit
    })
}

/// Whether the cached file still has a name (a deleted one has none, while its fd lives).
fn still_linked(stored: &Stored) -> bool {
    use std::os::fd::AsRawFd;
    nix::sys::stat::fstat(stored.file.as_raw_fd()).is_ok_and(|st| st.st_nlink > 0)
}

/// Remember `stored` for `ttl`. At `capacity`, expired entries go first, then everything:
/// cheaper than LRU bookkeeping per hit, and a full flush once per `capacity` misses is rare.
pub fn put(path: &str, stored: Rc<Stored>, now: Instant, ttl: Duration, capacity: usize, deletions: u64) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.map.len() >= capacity {
            c.map.retain(|_, e| e.expires > now);
            if c.map.len() >= capacity {
                c.map.clear();
            }
        }
        c.map.insert(
            path.to_owned(),
            Entry {
                stored,
                expires: now + ttl,
                deletions: Cell::new(deletions),
            },
        );
    });
}

/// Close every expired entry. Run by each worker once per TTL, so a file deleted behind the
/// server's back (a retention job) has its disk space released within about two TTLs, not
/// whenever the cache happens to fill up.
pub fn sweep(now: Instant) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.map.retain(|_, e| e.expires > now);
        if c.map.is_empty() && c.map.capacity() > 64 {
            c.map.shrink_to(64);
        }
    });
}
