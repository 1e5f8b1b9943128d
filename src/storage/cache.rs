//! Per-worker cache of open stored files and their response metadata. Uploads are immutable
//! once published (never replaced in place), so an open fd stays a correct view of its path
//! until the file is deleted by someone else; an entry is trusted for at most
//! `OpenFileCacheSeconds` (default 1 s), which bounds how long a deleted file can still be
//! served, and then checked again: one `fstatat` of its path, and it is kept if the path still
//! names the same file unchanged, reopened only if not. Each entry's time is spread over the
//! last quarter of the TTL, so files cached together are not all checked in the same
//! millisecond. The same idea as nginx's open_file_cache, on by default because a shared file
//! in a group chat is fetched by every member within seconds.

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

/// The cached file of `path`, unless the server deleted files since it was last checked
/// (`deletions`, the store's count) and this one is among them, or its time is up and
/// `unchanged` finds that the path no longer names it; a checked entry gets another `ttl`.
pub fn get(
    path: &str,
    now: Instant,
    deletions: u64,
    ttl: Duration,
    unchanged: impl FnOnce(&Stored) -> bool,
) -> Option<Rc<Stored>> {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        let e = c.map.get_mut(path)?;
        // Past its time the path check covers a deletion too (an unlink moves the change time).
        let valid = if e.expires > now {
            e.deletions.get() == deletions || still_linked(&e.stored)
        } else if unchanged(&e.stored) {
            e.expires = now + spread(ttl);
            true
        } else {
            false
        };
        if valid {
            e.deletions.set(deletions);
            return Some(e.stored.clone());
        }
        c.map.remove(path);
        None
    })
}

/// A cached entry's time: `ttl` less up to a quarter of it, at random. Entries cached in the
/// same moment (the first requests after a start, a burst of downloads) then fall due spread
/// over a quarter of a TTL rather than together, where their checks would stall every request
/// queued behind them.
fn spread(ttl: Duration) -> Duration {
    thread_local! {
        static SEED: Cell<u64> = const { Cell::new(0x9E37_79B9_7F4A_7C15) };
    }
    // xorshift64: any cheap, well-mixed sequence will do; nothing depends on its quality.
    let r = SEED.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    });
    shorten(ttl, r)
}

/// `ttl` less `r`'s share of a quarter of it.
fn shorten(ttl: Duration, r: u64) -> Duration {
    let quarter = ttl.as_nanos() as u64 / 4;
    ttl - Duration::from_nanos(if quarter == 0 { 0 } else { r % quarter })
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
                expires: now + spread(ttl),
                deletions: Cell::new(deletions),
            },
        );
    });
}

/// Close every entry whose time is up. Run by each worker once per TTL, so a file deleted
/// behind the server's back (a retention job) has its disk space released within about two
/// TTLs, not whenever the cache happens to fill up.
pub fn sweep(now: Instant) {
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.map.retain(|_, e| e.expires > now);
        if c.map.is_empty() && c.map.capacity() > 64 {
            c.map.shrink_to(64);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entrys_time_is_within_the_last_quarter_of_the_ttl() {
        let ttl = Duration::from_secs(1);
        for r in [0, 1, 249_999_999, 250_000_000, u64::MAX, 0x9E37_79B9_7F4A_7C15] {
            let t = shorten(ttl, r);
            assert!(t > ttl * 3 / 4 && t <= ttl, "{r}: {t:?}");
        }
        assert_eq!(
            shorten(Duration::from_nanos(3), 7),
            Duration::from_nanos(3),
            "too short to spread"
        );
        let times: std::collections::HashSet<_> = (0..100).map(|_| spread(ttl)).collect();
        assert!(times.len() > 90, "spread, not one moment: {} distinct", times.len());
    }
}
