//! Prometheus metrics under the Go server's names (DESIGN.md §6), plus our own.
//!
//! Counting never contends: each worker owns one cache-line-aligned shard and is its only
//! writer (relaxed loads and stores, no read-modify-write, no lock); the side thread sums the
//! shards when `/metrics` is scraped, through a prometheus-client `Collector`. Process metrics
//! are read from /proc at scrape time.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::http::Method;

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
const STATUSES: [u16; 30] = [
    200, 201, 204, 206, 304, 400, 403, 404, 405, 408, 409, 411, 413, 414, 416, 417, 429, 431, 500, 501, 503, 505, 507,
    100, 412, 415, 410, 423, 460, 0,
];

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

fn status_index(status: u16) -> usize {
    STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len() - 1)
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
    requests: [[AtomicU64; STATUSES.len()]; METHODS.len()],
    errors: [AtomicU64; crate::error::REASONS.len()],
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
    /// the reason of a refusal (an index into `error::REASONS`).
    pub fn request_done(
        &self,
        method: Method,
        status: u16,
        took: Duration,
        bytes: u64,
        published: Option<u64>,
        error: Option<usize>,
    ) {
        shift(&self.requests_in_flight, -1);
        bump(&self.requests[method_index(method)][status_index(status)], 1);
        if let Some(reason) = error {
            bump(&self.errors[reason], 1);
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
}

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
            last_cpu: Mutex::new((Instant::now(), process_cpu_seconds())),
            unverified_bytes: AtomicU64::new(0),
        }
    }

    pub fn shard(&self, worker: usize) -> &Shard {
        &self.shards[worker % self.shards.len()]
    }

    pub fn set_driver(&self, driver: &'static str) {
        *self.driver.lock().unwrap_or_else(|p| p.into_inner()) = driver;
    }

    pub fn set_unverified_bytes(&self, bytes: u64) {
        self.unverified_bytes.store(bytes, Ordering::Relaxed);
    }

    pub fn set_session_store(&self, backend: &'static str, up: bool) {
        *self.session_store.lock().unwrap_or_else(|p| p.into_inner()) = Some((backend, up));
    }

    /// The exposition: OpenMetrics (what Prometheus asks for), or with `prometheus_text` the
    /// Prometheus text format 0.0.4 (what `promtool check metrics` and older scrapers read).
    pub fn render(self: &std::sync::Arc<Self>, prometheus_text: bool) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Scrape(self.clone())));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
            return String::new();
        }
        if prometheus_text {
            openmetrics_to_prometheus_text(&out)
        } else {
            out
        }
    }
}

/// OpenMetrics names a counter family without `_total` and ends with `# EOF`; the Prometheus
/// text format wants the family named like its sample and no EOF marker. Nothing else differs
/// in what we export.
pub fn openmetrics_to_prometheus_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + 64);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

struct Scrape(std::sync::Arc<Metrics>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

fn gauge<V: prometheus_client::encoding::EncodeGaugeValue + Clone>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, h: HistogramSum) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        let shards = m.shards;
        let total = |f: fn(&Shard) -> &AtomicU64| shards.iter().map(|s| f(s).load(Ordering::Relaxed)).sum::<u64>();
        let level = |f: fn(&Shard) -> &AtomicI64| shards.iter().map(|s| f(s).load(Ordering::Relaxed)).sum::<i64>();

        // The Go server's names: its dashboards keep working.
        counter(
            &mut enc,
            "hmac_file_server_uploads",
            "Uploads stored (201).",
            total(|s| &s.uploads),
        )?;
        counter(
            &mut enc,
            "hmac_file_server_upload_errors",
            "Uploads refused or failed.",
            total(|s| &s.upload_errors),
        )?;
        counter(
            &mut enc,
            "hmac_file_server_downloads",
            "GET requests answered with file data.",
            total(|s| &s.downloads),
        )?;
        counter(
            &mut enc,
            "hmac_file_server_download_errors",
            "GET requests refused or failed.",
            total(|s| &s.download_errors),
        )?;
        histogram(
            &mut enc,
            "hmac_file_server_upload_duration_seconds",
            "Time from request head to 201, body and durability included.",
            sum_histograms(&DURATION_BUCKETS, shards.iter().map(|s| &s.upload_duration)),
        )?;
        histogram(
            &mut enc,
            "hmac_file_server_download_duration_seconds",
            "Time to answer a GET with file data.",
            sum_histograms(&DURATION_BUCKETS, shards.iter().map(|s| &s.download_duration)),
        )?;
        histogram(
            &mut enc,
            "hmac_file_server_upload_size_bytes",
            "Sizes of stored uploads.",
            sum_histograms(&SIZE_BUCKETS, shards.iter().map(|s| &s.upload_size)),
        )?;
        histogram(
            &mut enc,
            "hmac_file_server_download_size_bytes",
            "Bytes sent per GET with file data.",
            sum_histograms(&SIZE_BUCKETS, shards.iter().map(|s| &s.download_size)),
        )?;
        let proc_ = ProcSample::read();
        gauge(
            &mut enc,
            "hmac_memory_usage_bytes",
            "Resident memory of the process.",
            proc_.rss_bytes,
        )?;
        let cpu_percent = {
            let mut last = m.last_cpu.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let wall = now.duration_since(last.0).as_secs_f64();
            let pct = if wall > 0.0 {
                (proc_.cpu_seconds - last.1) / wall * 100.0
            } else {
                0.0
            };
            *last = (now, proc_.cpu_seconds);
            pct.max(0.0)
        };
        gauge(
            &mut enc,
            "hmac_cpu_usage_percent",
            "CPU use since the previous scrape, percent of one core.",
            cpu_percent,
        )?;
        gauge(
            &mut enc,
            "hmac_active_connections_total",
            "Open client connections.",
            level(|s| &s.connections),
        )?;
        gauge(
            &mut enc,
            "hmac_goroutines_count",
            "Worker threads plus requests in flight (the Go server counted goroutines).",
            m.workers as i64 + level(|s| &s.requests_in_flight),
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "hmac_http_requests",
                "Requests answered, by method and status.",
                None,
                MetricType::Counter,
            )?;
            for (mi, method) in METHODS.iter().enumerate() {
                for (si, status) in STATUSES.iter().enumerate() {
                    let n: u64 = shards.iter().map(|s| s.requests[mi][si].load(Ordering::Relaxed)).sum();
                    if n == 0 {
                        continue;
                    }
                    let status = if *status == 0 {
                        "other".to_owned()
                    } else {
                        status.to_string()
                    };
                    let labels = [("method", *method), ("status", status.as_str())];
                    ConstCounter::new(n).encode(fam.encode_family(&labels)?)?;
                }
            }
        }
        // Ours.
        counter(
            &mut enc,
            "hmac_file_server_received_bytes",
            "Upload bytes stored.",
            total(|s| &s.bytes_in),
        )?;
        counter(
            &mut enc,
            "hmac_file_server_sent_bytes",
            "Download bytes sent.",
            total(|s| &s.bytes_out),
        )?;
        gauge(
            &mut enc,
            "hmac_file_server_uploads_in_flight",
            "Uploads in progress.",
            level(|s| &s.uploads_in_flight),
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "hmac_file_server_errors",
                "Refused or failed requests, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (i, reason) in crate::error::REASONS.iter().enumerate() {
                let n: u64 = shards.iter().map(|s| s.errors[i].load(Ordering::Relaxed)).sum();
                ConstCounter::new(n).encode(fam.encode_family(&[("reason", *reason)])?)?;
            }
        }
        {
            let driver = *m.driver.lock().unwrap_or_else(|p| p.into_inner());
            let mut fam = enc.encode_descriptor(
                "hmac_file_server_io_driver",
                "The I/O driver in use (1).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(fam.encode_family(&[("driver", driver)])?)?;
            let mut fam = enc.encode_descriptor(
                "hmac_file_server_build_info",
                "Version of this build (1).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64).encode(fam.encode_family(&[("version", env!("CARGO_PKG_VERSION"))])?)?;
            let store = *m.session_store.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((backend, up)) = store {
                let mut fam = enc.encode_descriptor(
                    "hmac_file_server_session_store_up",
                    "Whether the active session store of resumable uploads answers (1) or not (0).",
                    None,
                    MetricType::Gauge,
                )?;
                ConstGauge::new(i64::from(up)).encode(fam.encode_family(&[("backend", backend)])?)?;
            }
        }
        gauge(
            &mut enc,
            "hmac_file_server_workers",
            "Worker threads.",
            m.workers as i64,
        )?;
        gauge(
            &mut enc,
            "hmac_file_server_unverified_bytes",
            "Bytes of upload bodies held whose signature cannot be checked yet (chunked PUTs).",
            m.unverified_bytes.load(Ordering::Relaxed) as i64,
        )?;
        // Process metrics, named as the Prometheus client libraries name them.
        counter_f64(
            &mut enc,
            "process_cpu_seconds",
            "User and system CPU time spent.",
            proc_.cpu_seconds,
        )?;
        gauge(
            &mut enc,
            "process_resident_memory_bytes",
            "Resident memory size.",
            proc_.rss_bytes,
        )?;
        gauge(
            &mut enc,
            "process_virtual_memory_bytes",
            "Virtual memory size.",
            proc_.vsize_bytes,
        )?;
        gauge(&mut enc, "process_open_fds", "Open file descriptors.", proc_.open_fds)?;
        gauge(
            &mut enc,
            "process_max_fds",
            "Limit on open file descriptors.",
            proc_.max_fds,
        )?;
        gauge(&mut enc, "process_threads", "OS threads.", proc_.threads)?;
        let start = m.started.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        gauge(
            &mut enc,
            "process_start_time_seconds",
            "Start time since the Unix epoch.",
            start,
        )?;
        Ok(())
    }
}

fn counter_f64(enc: &mut DescriptorEncoder, name: &str, help: &str, v: f64) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

#[derive(Default)]
struct ProcSample {
    cpu_seconds: f64,
    rss_bytes: i64,
    vsize_bytes: i64,
    open_fds: i64,
    max_fds: i64,
    threads: i64,
}

fn process_cpu_seconds() -> f64 {
    ProcSample::read().cpu_seconds
}

impl ProcSample {
    fn read() -> ProcSample {
        let mut p = ProcSample::default();
        // SAFETY: sysconf and getrlimit have no preconditions beyond valid pointers.
        let (tick, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name, which may contain spaces.
            if let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) {
                let f: Vec<&str> = rest.split(' ').collect();
                let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
                if tick > 0 {
                    p.cpu_seconds = (num(11) + num(12)) / tick as f64;
                }
                p.threads = num(17) as i64;
                p.vsize_bytes = num(20) as i64;
                p.rss_bytes = num(21) as i64 * page.max(0);
            }
        }
        p.open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the local struct.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
            p.max_fds = lim.rlim_cur.min(i64::MAX as u64) as i64;
        }
        p
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
    fn counters_renamed_for_the_prometheus_text_format() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total 3\n# HELP g Level.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total 3\n# HELP g Level.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn status_and_method_slots() {
        assert_eq!(STATUSES[status_index(201)], 201);
        assert_eq!(STATUSES[status_index(299)], 0, "unknown statuses share the last slot");
        assert_eq!(METHODS[method_index(Method::Put)], "PUT");
    }
}
