//! Abuse limits: pacing an upload body to `MaxBytesPerSecond`, per-client-IP request rates and
//! concurrent uploads (429 with Retry-After), and the global cap on open connections. A client
//! is an IPv4 address or an IPv6 /64 (`ClientKey`).
//!
//! All of it costs nothing while off (the defaults, apart from the connection cap, which is one
//! atomic add per connection, never per request). The per-IP tables are sharded maps behind
//! mutexes: consulted once per request only when an administrator switches a per-IP limit on.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Below this, a pacing delay is not worth a timer.
const MIN_DELAY: Duration = Duration::from_millis(5);

/// How long to wait so that `bytes` received since the body started, `elapsed` ago, do not
/// exceed `rate` bytes per second. None: on or behind schedule.
pub fn pace_delay(rate: u64, bytes: u64, elapsed: Duration) -> Option<Duration> {
    if rate == 0 {
        return None;
    }
    // try_: a schedule beyond what Duration holds is no reason to panic (rates come from config).
    let due = Duration::try_from_secs_f64(bytes as f64 / rate as f64).ok()?;
    let wait = due.checked_sub(elapsed)?;
    (wait >= MIN_DELAY).then_some(wait)
}

/// One upload body's schedule. Reads are capped at about a tenth of a second's budget
/// (`read_size`); after each read that put the body ahead of its schedule, the upload sleeps
/// once until the schedule catches up, so a paced upload costs one timer per read at most and
/// nothing while it is slower than the limit.
pub struct Pace {
    rate: u64,
    start: Instant,
    bytes: u64,
}

impl Pace {
    /// None when `rate` is 0 (unlimited).
    pub fn new(rate: u64) -> Option<Pace> {
        (rate > 0).then(|| Pace {
            rate,
            start: Instant::now(),
            bytes: 0,
        })
    }

    /// Account `n` more bytes; sleep if they came too fast.
    pub async fn received(&mut self, n: usize) {
        self.bytes += n as u64;
        if let Some(wait) = pace_delay(self.rate, self.bytes, self.start.elapsed()) {
            monoio::time::sleep(wait).await;
        }
    }

    /// A read size that keeps one read within about a tenth of a second of the budget, so the
    /// pacing stays smooth with large chunk buffers.
    pub fn read_size(&self, max: usize) -> usize {
        max.min((self.rate / 10).max(4096) as usize)
    }
}

/// When a body read must give up, and why: `idle` after the last byte arrived, or, once the
/// body has run `idle` since `start`, as soon as its average rate would fall below `min_rate`
/// bytes per second (0: no such floor). A client that drips a byte now and then would
/// otherwise hold its connection and temporary file for ever.
pub fn body_deadline(
    start: Instant,
    last: Instant,
    received: u64,
    idle: Duration,
    min_rate: u64,
) -> (Instant, &'static str) {
    let stalled = last + idle;
    if min_rate == 0 {
        return (stalled, "request body");
    }
    let allowed = Duration::try_from_secs_f64(received as f64 / min_rate as f64).unwrap_or(Duration::MAX);
    match start.checked_add(allowed.max(idle)) {
        Some(slow) if slow < stalled => (slow, "request body slower than MinBodyRate"),
        _ => (stalled, "request body"),
    }
}

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
        let mut map = self.shard(&ip).lock().unwrap_or_else(|p| p.into_inner());
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

/// The global cap on open connections (`MaxConnections`).
pub struct ConnectionCap {
    max: usize,
    open: AtomicUsize,
}

impl ConnectionCap {
    pub fn new(max: usize) -> ConnectionCap {
        ConnectionCap {
            max,
            open: AtomicUsize::new(0),
        }
    }

    /// Count a new connection; None when the cap is reached (the caller answers 503).
    pub fn open(&self) -> Option<ConnectionGuard<'_>> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionGuard(self))
    }
}

pub struct ConnectionGuard<'a>(&'a ConnectionCap);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_waits_only_when_ahead() {
        assert_eq!(pace_delay(0, 1 << 30, Duration::ZERO), None, "0 is unlimited");
        // 1000 B/s, 500 B after 0.1 s: due at 0.5 s.
        assert_eq!(
            pace_delay(1000, 500, Duration::from_millis(100)),
            Some(Duration::from_millis(400))
        );
        assert_eq!(
            pace_delay(1000, 500, Duration::from_millis(600)),
            None,
            "behind schedule"
        );
        assert_eq!(
            pace_delay(1000, 500, Duration::from_millis(498)),
            None,
            "too small to wait"
        );
        assert_eq!(
            pace_delay(u64::MAX, u64::MAX, Duration::ZERO),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn body_deadlines() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        // No floor: idle time after the last byte.
        assert_eq!(body_deadline(t0, t0 + s(5), 10, s(60), 0), (t0 + s(65), "request body"));
        // 1 KiB/s floor, 10 KiB in: allowed 60 s (the idle time is the minimum) ...
        assert_eq!(body_deadline(t0, t0 + s(1), 10 << 10, s(60), 1024).0, t0 + s(60));
        // ... 600 KiB in: allowed 600 s, but a stall still ends it 60 s after the last byte.
        assert_eq!(
            body_deadline(t0, t0 + s(100), 600 << 10, s(60), 1024),
            (t0 + s(160), "request body")
        );
        // A drip: one byte a second keeps resetting the idle timer, not the rate floor.
        let (at, why) = body_deadline(t0, t0 + s(119), 119, s(60), 1024);
        assert_eq!((at, why), (t0 + s(60), "request body slower than MinBodyRate"));
        assert!(body_deadline(t0, t0, u64::MAX, s(60), 1).0 >= t0 + s(60));
    }

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

    #[test]
    fn connection_cap() {
        let cap = ConnectionCap::new(2);
        let a = cap.open().unwrap();
        let _b = cap.open().unwrap();
        assert!(cap.open().is_none());
        drop(a);
        assert!(cap.open().is_some());
    }
}
