//! Prometheus metrics under the Go server's names (docs/operations.md, "Metrics"), plus our
//! own.
//!
//! Counting never contends: each worker owns one cache-line-aligned shard and is its only
//! writer (relaxed loads and stores, no read-modify-write, no lock); the side thread sums the
//! shards when `/metrics` is scraped (`export`). Process metrics are read from /proc at
//! scrape time (`process`).

mod export;
mod process;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::error::Kind;
use crate::http::{status, Method};
use crate::sync::lock;

pub use export::openmetrics_to_prometheus_text;

/// Seconds: a 1 KiB upload takes about a millisecond, a 1 GiB one tens of seconds.
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0,
];
/// Bytes: powers of four from 1 KiB to 4 GiB.
pub const SIZE_BUCKETS: [f64; 12] = [
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
];

const METHODS: [&str; 8] = ["GET", "HEAD", "PUT", "OPTIONS", "POST", "PATCH", "DELETE", "OTHER"];
/// One slot per status of `http::status::ALL`, and one for any other.
const STATUS_SLOTS: usize = status::ALL.len() + 1;

fn method_index(m: Method) -> usize {
    match m {
        Method::Get => 0,
        Method::Head => 1,
        Method::Put => 2,
        Method::Options => 3,
        Method::Post => 4,
        Method::Patch => 5,
        Method::Delete => 6,
        Method::Other => 7,
    }
}

/// One writer only (its worker): add without a locked instruction.
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

fn shift(c: &AtomicI64, n: i64) {
    c.store(c.load(Ordering::Relaxed) + n, Ordering::Relaxed);
}

struct Histogram<const N: usize> {
    /// Per bucket (not cumulative), plus one for +Inf.
    buckets: [AtomicU64; N],
    over: AtomicU64,
    count: AtomicU64,
    /// f64 bits.
    sum: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn observe(&self, bounds: &[f64; N], v: f64) {
        match bounds.iter().position(|&b| v <= b) {
            Some(i) => bump(&self.buckets[i], 1),
            None => bump(&self.over, 1),
        }
        bump(&self.count, 1);
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed)) + v;
        self.sum.store(sum.to_bits(), Ordering::Relaxed);
    }
}

/// Sums of several shards' histograms, ready to encode.
struct HistogramSum {
    buckets: Vec<(f64, u64)>,
    count: u64,
    sum: f64,
}

fn sum_histograms<const N: usize>(bounds: &[f64; N], hs: impl Iterator<Item = &'static Histogram<N>>) -> HistogramSum {
    let mut out = HistogramSum {
        // prometheus-client writes the f64::MAX bound as +Inf.
        buckets: bounds.iter().map(|&b| (b, 0)).chain([(f64::MAX, 0)]).collect(),
        count: 0,
        sum: 0.0,
    };
    for h in hs {
        for (i, b) in h.buckets.iter().enumerate() {
            out.buckets[i].1 += b.load(Ordering::Relaxed);
        }
        out.buckets[N].1 += h.over.load(Ordering::Relaxed);
        out.count += h.count.load(Ordering::Relaxed);
        out.sum += f64::from_bits(h.sum.load(Ordering::Relaxed));
    }
    out
}

/// One worker's counters. Aligned so two workers never share a cache line.
#[repr(align(128))]
pub struct Shard {
    uploads: AtomicU64,
    upload_errors: AtomicU64,
    downloads: AtomicU64,
    download_errors: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    connections: AtomicI64,
    uploads_in_flight: AtomicI64,
    requests_in_flight: AtomicI64,
    requests: [[AtomicU64; STATUS_SLOTS]; METHODS.len()],
    errors: [AtomicU64; Kind::ALL.len()],
    upload_duration: Histogram<16>,
    download_duration: Histogram<16>,
    upload_size: Histogram<12>,
    download_size: Histogram<12>,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            uploads: AtomicU64::new(0),
            upload_errors: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
            download_errors: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            uploads_in_flight: AtomicI64::new(0),
            requests_in_flight: AtomicI64::new(0),
            requests: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            upload_duration: Histogram::new(),
            download_duration: Histogram::new(),
            upload_size: Histogram::new(),
            download_size: Histogram::new(),
        }
    }

    pub fn connection_opened(&self) {
        shift(&self.connections, 1);
    }

    pub fn connection_closed(&self) {
        shift(&self.connections, -1);
    }

    /// A request starts; `upload` for PUTs.
    pub fn request_started(&self, upload: bool) {
        shift(&self.requests_in_flight, 1);
        if upload {
            shift(&self.uploads_in_flight, 1);
        }
    }

    /// A request was answered: `bytes` stored (uploads) or sent (GET), `published` the size
    /// of the file it made visible (a PUT, or the last piece of a resumable upload), `error`
    /// the kind of a refusal.
    pub fn request_done(
        &self,
        method: Method,
        status: u16,
        took: Duration,
        bytes: u64,
        published: Option<u64>,
        error: Option<Kind>,
    ) {
        shift(&self.requests_in_flight, -1);
        bump(&self.requests[method_index(method)][status::index(status)], 1);
        if let Some(kind) = error {
            bump(&self.errors[kind.index()], 1);
        }
        let secs = took.as_secs_f64();
        match method {
            Method::Put | Method::Post | Method::Patch => {
                shift(&self.uploads_in_flight, -1);
                bump(&self.bytes_in, bytes);
                if let Some(size) = published {
                    bump(&self.uploads, 1);
                    self.upload_duration.observe(&DURATION_BUCKETS, secs);
                    self.upload_size.observe(&SIZE_BUCKETS, size as f64);
                } else if error.is_some() {
                    bump(&self.upload_errors, 1);
                }
            }
            // A 304 is neither a download nor an error.
            Method::Get if status == 304 => {}
            Method::Get => {
                if error.is_none() {
                    bump(&self.downloads, 1);
                    bump(&self.bytes_out, bytes);
                    self.download_duration.observe(&DURATION_BUCKETS, secs);
                    self.download_size.observe(&SIZE_BUCKETS, bytes as f64);
                } else {
                    bump(&self.download_errors, 1);
                }
            }
            _ => {}
        }
    }
}

/// Every worker's shard and the process-wide facts, shared with the side thread.
pub struct Metrics {
    shards: &'static [Shard],
    workers: usize,
    started: SystemTime,
    driver: Mutex<&'static str>,
    /// The session store of resumable uploads and whether it answered last time it was asked.
    session_store: Mutex<Option<(&'static str, bool)>>,
    /// CPU seconds and wall time at the previous scrape, for `hmac_cpu_usage_percent`.
    last_cpu: Mutex<(Instant, f64)>,
    /// Bytes held by upload bodies whose signature is not checked yet, as of this scrape.
    unverified_bytes: AtomicU64,
    pub retention: Retention,
}

/// What the retention thread reports: the stored files, and files deleted or refused.
#[derive(Debug, Default)]
pub struct Retention {
    pub stored_files: AtomicU64,
    pub stored_bytes: AtomicU64,
    /// Files deleted, by why (`DELETED_BY`).
    pub deleted: [AtomicU64; 4],
    /// Uploads refused by `StoreMaxSize` and by `UserQuota`.
    pub refused_store: AtomicU64,
    pub refused_user: AtomicU64,
}

/// The reasons files are deleted, in the order of `Retention::deleted`.
pub const DELETED_BY: [&str; 4] = ["expired", "request", "evicted", "admin"];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("workers", &self.workers).finish()
    }
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        // Lives as long as the process: leaking once lets the collector borrow it 'static.
        let shards: &'static [Shard] = Box::leak((0..workers.max(1)).map(|_| Shard::new()).collect());
        Metrics {
            shards,
            workers,
            started: SystemTime::now(),
            driver: Mutex::new("io_uring"),
            session_store: Mutex::new(None),
            last_cpu: Mutex::new((Instant::now(), process::Sample::read().cpu_seconds)),
            unverified_bytes: AtomicU64::new(0),
            retention: Retention::default(),
        }
    }

    pub fn shard(&self, worker: usize) -> &Shard {
        &self.shards[worker % self.shards.len()]
    }

    pub fn set_driver(&self, driver: &'static str) {
        *lock(&self.driver) = driver;
    }

    pub fn set_unverified_bytes(&self, bytes: u64) {
        self.unverified_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn set_session_store(&self, backend: &'static str, up: bool) {
        *lock(&self.session_store) = Some((backend, up));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_sums() {
        let h: &'static Histogram<12> = Box::leak(Box::new(Histogram::new()));
        h.observe(&SIZE_BUCKETS, 1024.0);
        h.observe(&SIZE_BUCKETS, 1025.0);
        h.observe(&SIZE_BUCKETS, 1e12);
        let s = sum_histograms(&SIZE_BUCKETS, [h, h].into_iter());
        assert_eq!(s.count, 6);
        assert_eq!(s.buckets[0], (1024.0, 2), "le is inclusive");
        assert_eq!(s.buckets[1], (4096.0, 2));
        assert_eq!(s.buckets[12], (f64::MAX, 2));
        assert_eq!(s.sum, 2.0 * (1024.0 + 1025.0 + 1e12));
    }

    #[test]
    fn status_and_method_slots() {
        assert_eq!(status::ALL[status::index(201)].0, 201);
        assert_eq!(
            status::index(299),
            STATUS_SLOTS - 1,
            "unknown statuses share the last slot"
        );
        assert_eq!(METHODS[method_index(Method::Put)], "PUT");
    }
}
