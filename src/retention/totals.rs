//! What the stored files take, in all and per uploader, and what uploads in progress have
//! reserved: the numbers quotas are decided on. Pure bookkeeping, no I/O; the catalog keeps
//! it behind one lock, so an admission and the upload it admits see the same numbers.

use std::collections::HashMap;

/// Files and bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub files: u64,
    pub bytes: u64,
}

/// The limits (`StoreMaxSize`, `UserQuota`; 0 = none).
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub store: u64,
    pub user: u64,
    /// Over `user`, the uploader's oldest files make room (`UserQuotaEvictOldest`).
    pub evict: bool,
}

/// Why an upload cannot be admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("StoreMaxSize: {used} of {max} bytes used or reserved, {wanted} more wanted")]
    Store { used: u64, max: u64, wanted: u64 },
    #[error("UserQuota of {uploader}: {used} of {max} bytes used or reserved, {wanted} more wanted")]
    User {
        uploader: String,
        used: u64,
        max: u64,
        wanted: u64,
    },
    /// With eviction on: this many bytes of the uploader's files must go first.
    #[error("UserQuota of {uploader}: {bytes} bytes of older files to evict")]
    Evict { uploader: String, bytes: u64 },
    /// The index is being rebuilt: the totals are not known yet.
    #[error("the file index is being rebuilt; quotas cannot be checked yet")]
    Counting,
}

#[derive(Debug, Default)]
pub struct Totals {
    pub stored: Usage,
    pub users: HashMap<String, Usage>,
    reserved: u64,
    reserved_by: HashMap<String, u64>,
    /// Whether the numbers are complete (false while a first scan of StoreDir runs).
    pub complete: bool,
}

impl Totals {
    /// Reserve `bytes` more for an upload by `uploader` (None: unknown, only the store's limit
    /// applies), if the limits allow; `already`: what this upload holds so far.
    pub fn reserve(&mut self, limits: &Limits, uploader: Option<&str>, bytes: u64) -> Result<(), Refusal> {
        if limits.store > 0 {
            let used = self.stored.bytes + self.reserved;
            if used.saturating_add(bytes) > limits.store {
                return Err(Refusal::Store {
                    used,
                    max: limits.store,
                    wanted: bytes,
                });
            }
        }
        if let (Some(u), true) = (uploader, limits.user > 0) {
            let used = self.users.get(u).map_or(0, |x| x.bytes) + self.reserved_by.get(u).copied().unwrap_or(0);
            if used.saturating_add(bytes) > limits.user {
                let over = used.saturating_add(bytes) - limits.user;
                let stored = self.users.get(u).map_or(0, |x| x.bytes);
                // Only stored files can be evicted, and never to fit more than the quota itself.
                if limits.evict && bytes <= limits.user && over <= stored {
                    return Err(Refusal::Evict {
                        uploader: u.to_owned(),
                        bytes: over,
                    });
                }
                return Err(Refusal::User {
                    uploader: u.to_owned(),
                    used,
                    max: limits.user,
                    wanted: bytes,
                });
            }
        }
        self.reserved += bytes;
        if let Some(u) = uploader {
            *self.reserved_by.entry(u.to_owned()).or_insert(0) += bytes;
        }
        Ok(())
    }

    /// Give back `bytes` reserved for `uploader`.
    pub fn release(&mut self, uploader: Option<&str>, bytes: u64) {
        self.reserved = self.reserved.saturating_sub(bytes);
        if let Some(u) = uploader {
            if let Some(r) = self.reserved_by.get_mut(u) {
                *r = r.saturating_sub(bytes);
                if *r == 0 {
                    self.reserved_by.remove(u);
                }
            }
        }
    }

    /// A file of `bytes` by `uploader` was stored (or found by a scan).
    pub fn add(&mut self, uploader: Option<&str>, bytes: u64) {
        self.stored.files += 1;
        self.stored.bytes += bytes;
        let u = self.users.entry(uploader.unwrap_or("").to_owned()).or_default();
        u.files += 1;
        u.bytes += bytes;
    }

    /// A file of `bytes` by `uploader` was deleted.
    pub fn remove(&mut self, uploader: Option<&str>, bytes: u64) {
        self.stored.files = self.stored.files.saturating_sub(1);
        self.stored.bytes = self.stored.bytes.saturating_sub(bytes);
        let key = uploader.unwrap_or("");
        if let Some(u) = self.users.get_mut(key) {
            u.files = u.files.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(bytes);
            if u.files == 0 {
                self.users.remove(key);
            }
        }
    }

    pub fn reserved(&self) -> u64 {
        self.reserved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        store: 1000,
        user: 300,
        evict: false,
    };

    #[test]
    fn the_store_limit_counts_stored_and_reserved() {
        let mut t = Totals::default();
        t.add(None, 600);
        assert!(t.reserve(&LIMITS, None, 300).is_ok());
        assert!(matches!(
            t.reserve(&LIMITS, None, 101),
            Err(Refusal::Store { used: 900, .. })
        ));
        assert!(t.reserve(&LIMITS, None, 100).is_ok(), "exactly full is allowed");
        t.release(None, 300);
        assert_eq!(t.reserved(), 100);
        t.remove(None, 600);
        assert!(t.reserve(&LIMITS, None, 900).is_ok(), "a deletion frees the room");
        let none = Limits::default();
        assert!(t.reserve(&none, Some("a"), u64::MAX / 2).is_ok(), "no limits");
    }

    #[test]
    fn user_quotas_count_per_uploader() {
        let mut t = Totals::default();
        t.add(Some("alice"), 200);
        assert!(t.reserve(&LIMITS, Some("alice"), 100).is_ok());
        assert!(matches!(
            t.reserve(&LIMITS, Some("alice"), 1),
            Err(Refusal::User { used: 300, .. })
        ));
        assert!(t.reserve(&LIMITS, Some("bob"), 300).is_ok(), "another uploader");
        assert!(
            t.reserve(&LIMITS, None, 50).is_ok(),
            "unknown uploaders only count for the store"
        );
        t.release(Some("alice"), 100);
        assert!(t.reserve(&LIMITS, Some("alice"), 100).is_ok());
        assert_eq!(t.users["alice"], Usage { files: 1, bytes: 200 });
        t.remove(Some("alice"), 200);
        assert!(!t.users.contains_key("alice"));
    }

    #[test]
    fn eviction_asks_for_what_must_go() {
        let evict = Limits { evict: true, ..LIMITS };
        let mut t = Totals::default();
        t.add(Some("alice"), 100);
        t.add(Some("alice"), 150);
        assert_eq!(
            t.reserve(&evict, Some("alice"), 120),
            Err(Refusal::Evict {
                uploader: "alice".into(),
                bytes: 70
            })
        );
        // More than the quota itself cannot be made room for.
        assert!(matches!(
            t.reserve(&evict, Some("alice"), 301),
            Err(Refusal::User { .. })
        ));
        // Reserved bytes of uploads in progress cannot be evicted.
        let mut t = Totals::default();
        t.reserve(&evict, Some("bob"), 250).unwrap();
        assert!(matches!(t.reserve(&evict, Some("bob"), 100), Err(Refusal::User { .. })));
    }
}
