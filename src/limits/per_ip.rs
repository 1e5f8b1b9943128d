//! Per-client limits (`MaxRequestsPerSecondPerIP`, `MaxConcurrentUploadsPerIP`; 429 with
//! Retry-After). A client is an IPv4 address or an IPv6 /64 (`ClientKey`). The tables are
//! sharded maps behind mutexes, consulted once per request only when a limit is switched on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::sync::lock;

/// A token bucket holding up to `rate` tokens (one second of burst), refilled at `rate` per
/// second. Returns the new state and, when empty, the whole seconds until the next token.
pub fn take_token(tokens: f64, last: Instant, now: Instant, rate: u32) -> (f64, Result<(), u64>) {
    let rate = f64::from(rate);
    let refilled = (tokens + now.saturating_duration_since(last).as_secs_f64() * rate).min(rate);
    if refilled >= 1.0 {
        (refilled - 1.0, Ok(()))
    } else {
        let secs = ((1.0 - refilled) / rate).ceil().max(1.0) as u64;
        (refilled, Err(secs))
    }
}

/// Who a per-client limit counts: an IPv4 address, or the /64 of an IPv6 one (one subscriber
/// gets a whole /64, and could otherwise take a fresh address per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey([u8; 16]);

impl ClientKey {
    pub fn of(ip: IpAddr) -> ClientKey {
        let mut key = [0u8; 16];
        match ip {
            IpAddr::V4(a) => key[..4].copy_from_slice(&a.octets()),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => key[..4].copy_from_slice(&v4.octets()),
                None => {
                    key[..8].copy_from_slice(&a.octets()[..8]);
                    // Marks the key as IPv6, so no /64 collides with an IPv4 address.
                    key[15] = 6;
                }
            },
        }
        ClientKey(key)
    }
}

#[derive(Clone, Copy)]
struct Entry {
    tokens: f64,
    last: Instant,
    uploads: u32,
}

const SHARDS: usize = 16;
/// A shard sweeps out idle entries when it grows past this many clients.
const SWEEP_AT: usize = 4096;

/// Per-client-IP limits (keys `MaxRequestsPerSecondPerIP`, `MaxConcurrentUploadsPerIP`; 0 = off).
pub struct PerIp {
    requests_per_second: u32,
    concurrent_uploads: u32,
    shards: Vec<Mutex<HashMap<ClientKey, Entry>>>,
}

/// Refusal by a per-IP limit: which one, and the Retry-After seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub why: &'static str,
    pub retry_after: u64,
}

impl PerIp {
    pub fn new(requests_per_second: u32, concurrent_uploads: u32) -> PerIp {
        PerIp {
            requests_per_second,
            concurrent_uploads,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.requests_per_second > 0 || self.concurrent_uploads > 0
    }

    fn shard(&self, key: &ClientKey) -> &Mutex<HashMap<ClientKey, Entry>> {
        // FNV-1a over the key bytes: fixed, cheap, and spreads neighbouring addresses.
        let h = key.0.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.shards[(h % SHARDS as u64) as usize]
    }

    fn with_entry<T>(&self, ip: IpAddr, now: Instant, f: impl FnOnce(&mut Entry) -> T) -> T {
        let ip = ClientKey::of(ip);
        // A poisoned shard only means another thread panicked mid-update of plain numbers.
        let mut map = lock(self.shard(&ip));
        if map.len() >= SWEEP_AT && !map.contains_key(&ip) {
            map.retain(|_, e| e.uploads > 0 || now.saturating_duration_since(e.last) < Duration::from_secs(10));
        }
        let rate = f64::from(self.requests_per_second);
        let entry = map.entry(ip).or_insert(Entry {
            tokens: rate,
            last: now,
            uploads: 0,
        });
        f(entry)
    }

    /// Count one request from `ip`.
    pub fn admit_request(&self, ip: IpAddr) -> Result<(), Refused> {
        if self.requests_per_second == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let rate = self.requests_per_second;
        self.with_entry(ip, now, |e| {
            let (tokens, verdict) = take_token(e.tokens, e.last, now, rate);
            e.tokens = tokens;
            e.last = now;
            verdict.map_err(|retry_after| Refused {
                why: "MaxRequestsPerSecondPerIP",
                retry_after,
            })
        })
    }

    /// Start an upload from `ip`; the guard ends it.
    pub fn begin_upload(&self, ip: IpAddr) -> Result<UploadGuard<'_>, Refused> {
        if self.concurrent_uploads == 0 {
            return Ok(UploadGuard { per_ip: None, ip });
        }
        let limit = self.concurrent_uploads;
        self.with_entry(ip, Instant::now(), |e| {
            if e.uploads >= limit {
                return Err(Refused {
                    why: "MaxConcurrentUploadsPerIP",
                    retry_after: 1,
                });
            }
            e.uploads += 1;
            Ok(())
        })?;
        Ok(UploadGuard { per_ip: Some(self), ip })
    }
}

pub struct UploadGuard<'a> {
    per_ip: Option<&'a PerIp>,
    ip: IpAddr,
}

impl Drop for UploadGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.per_ip {
            p.with_entry(self.ip, Instant::now(), |e| e.uploads = e.uploads.saturating_sub(1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refills_and_says_when() {
        let t0 = Instant::now();
        let (tokens, ok) = take_token(2.0, t0, t0, 2);
        assert_eq!((tokens, ok), (1.0, Ok(())));
        let (tokens, ok) = take_token(tokens, t0, t0, 2);
        assert_eq!((tokens, ok), (0.0, Ok(())));
        let (tokens, refused) = take_token(tokens, t0, t0, 2);
        assert_eq!(refused, Err(1));
        // Half a second at 2/s refills one token.
        let (_, ok) = take_token(tokens, t0, t0 + Duration::from_millis(500), 2);
        assert_eq!(ok, Ok(()));
        // Never more than one second of burst.
        let (tokens, _) = take_token(0.0, t0, t0 + Duration::from_secs(100), 3);
        assert_eq!(tokens, 2.0);
    }

    #[test]
    fn per_ip_limits_count_each_address() {
        let p = PerIp::new(2, 1);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(p.admit_request(a).is_ok());
        assert!(p.admit_request(a).is_ok());
        assert_eq!(p.admit_request(a).unwrap_err().why, "MaxRequestsPerSecondPerIP");
        assert!(p.admit_request(b).is_ok(), "another client is not affected");
        let g = p.begin_upload(a).unwrap();
        assert_eq!(p.begin_upload(a).err().map(|r| r.retry_after), Some(1));
        assert!(p.begin_upload(b).is_ok());
        drop(g);
        assert!(p.begin_upload(a).is_ok(), "the slot is released");
        let off = PerIp::new(0, 0);
        assert!(!off.enabled());
        for _ in 0..100 {
            assert!(off.admit_request(a).is_ok());
        }
    }

    #[test]
    fn ipv6_clients_are_their_64() {
        let key = |s: &str| ClientKey::of(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff:1:2:3"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_ne!(key("c000:0201::"), key("192.0.2.1"));
    }
}
