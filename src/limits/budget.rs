//! The bytes of request bodies that no signature has vouched for yet. A chunked PUT can only
//! be verified after its last chunk (its size is part of what is signed), so until then its
//! temporary file is disk space an anonymous client holds. Those bytes are capped, in total
//! (`MaxUnverifiedBytes`, default 2 × `UploadMaxSize`) and per client (`MaxUnverifiedBytesPerIP`,
//! default 1 × `UploadMaxSize`); a body that would go beyond is refused before more of it is
//! read (503 or 429, with Retry-After) and its temporary removed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::ClientKey;
use crate::error::Error;
use crate::sync::lock;

/// Reservations grow in steps of at least this much, so a body costs a few bookings, not
/// one per read.
const STEP: u64 = 256 << 10;

pub struct Budget {
    /// 0: no cap.
    total_max: u64,
    per_client_max: u64,
    used: AtomicU64,
    /// Only clients holding something are present.
    per_client: Mutex<HashMap<ClientKey, u64>>,
}

impl Budget {
    pub fn new(total_max: u64, per_client_max: u64) -> Budget {
        Budget {
            total_max,
            per_client_max,
            used: AtomicU64::new(0),
            per_client: Mutex::new(HashMap::new()),
        }
    }

    /// A reservation of nothing yet, for one body from `client` (None: a Unix socket, where
    /// only the total applies).
    pub fn hold(&self, client: Option<ClientKey>) -> Hold<'_> {
        Hold {
            budget: self,
            client,
            held: 0,
        }
    }

    /// Bytes held by all bodies now (for tests and metrics).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn take(&self, client: Option<ClientKey>, n: u64) -> Result<(), Error> {
        let before = self.used.fetch_add(n, Ordering::AcqRel);
        if self.total_max > 0 && before + n > self.total_max {
            self.used.fetch_sub(n, Ordering::AcqRel);
            return Err(Error::Unavailable(format!(
                "MaxUnverifiedBytes ({}) held by uploads whose signature is not checked yet",
                self.total_max
            )));
        }
        if let Some(c) = client.filter(|_| self.per_client_max > 0) {
            let mut map = lock(&self.per_client);
            let mine = map.entry(c).or_insert(0);
            if *mine + n > self.per_client_max {
                if *mine == 0 {
                    map.remove(&c);
                }
                drop(map);
                self.used.fetch_sub(n, Ordering::AcqRel);
                return Err(Error::TooManyRequests {
                    why: "MaxUnverifiedBytesPerIP",
                    retry_after: 5,
                });
            }
            *mine += n;
        }
        Ok(())
    }

    fn give_back(&self, client: Option<ClientKey>, n: u64) {
        if n == 0 {
            return;
        }
        self.used.fetch_sub(n, Ordering::AcqRel);
        if let Some(c) = client.filter(|_| self.per_client_max > 0) {
            let mut map = lock(&self.per_client);
            if let Some(mine) = map.get_mut(&c) {
                *mine = mine.saturating_sub(n);
                if *mine == 0 {
                    map.remove(&c);
                }
            }
        }
    }
}

/// One body's share of the budget; given back when dropped.
pub struct Hold<'a> {
    budget: &'a Budget,
    client: Option<ClientKey>,
    held: u64,
}

impl Hold<'_> {
    /// Make sure `bytes` in all are covered, before reading that far.
    pub fn cover(&mut self, bytes: u64) -> Result<(), Error> {
        if bytes <= self.held {
            return Ok(());
        }
        // A step ahead when it fits, to book less often; exactly what is needed when not.
        let step = (bytes - self.held).max(STEP);
        let more = match self.budget.take(self.client, step) {
            Ok(()) => step,
            Err(_) if step > bytes - self.held => {
                self.budget.take(self.client, bytes - self.held)?;
                bytes - self.held
            }
            Err(e) => return Err(e),
        };
        self.held += more;
        Ok(())
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.budget.give_back(self.client, self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u8) -> Option<ClientKey> {
        Some(ClientKey::of(std::net::IpAddr::from([192, 0, 2, n])))
    }

    #[test]
    fn per_client_then_total() {
        let b = Budget::new(3 * STEP, 2 * STEP);
        let mut a = b.hold(client(1));
        a.cover(1).unwrap();
        assert_eq!(a.held, STEP, "booked a step ahead");
        a.cover(STEP).unwrap();
        a.cover(2 * STEP).unwrap();
        assert_eq!(a.cover(2 * STEP + 1).unwrap_err().status(), 429, "one client's share");
        let mut other = b.hold(client(2));
        other.cover(1).unwrap();
        assert_eq!(other.cover(STEP + 1).unwrap_err().status(), 503, "the total");
        drop(a);
        other.cover(2 * STEP).unwrap();
        drop(other);
        assert_eq!(b.used(), 0);
        assert!(b.per_client.lock().unwrap().is_empty(), "no entry outlives its holds");
    }

    #[test]
    fn the_last_step_is_exact() {
        let b = Budget::new(0, STEP + 10);
        let mut a = b.hold(client(1));
        a.cover(STEP + 10).unwrap();
        assert_eq!(a.held, STEP + 10);
        a.cover(STEP + 11).unwrap_err();
    }

    #[test]
    fn zero_is_no_cap_and_unix_sockets_count_in_the_total() {
        let b = Budget::new(0, 0);
        b.hold(client(1)).cover(u64::MAX / 4).unwrap();
        let b = Budget::new(STEP, STEP);
        let mut h = b.hold(None);
        h.cover(STEP).unwrap();
        assert_eq!(b.hold(client(1)).cover(1).unwrap_err().status(), 503);
    }
}
