//! The exposition: every family is one row of `families`, its name, help and value read from
//! the summed shards and the process sample; encoding is the same loop for all of them.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::process::Sample as ProcSample;
use super::{sum_histograms, HistogramSum, Metrics, Shard, DURATION_BUCKETS, METHODS, SIZE_BUCKETS};
use crate::error::Kind;
use crate::http::status;
use crate::sync::lock;

/// A sample's value, in the type it is exported as (`3` or `3.5`).
#[derive(Clone, Copy)]
enum Num {
    U(u64),
    I(i64),
    F(f64),
}

enum Value {
    Counter(Num),
    Gauge(Num),
    Histogram(HistogramSum),
    /// One sample per label set, all of one type.
    Labeled(MetricType, Vec<(Vec<(&'static str, String)>, Num)>),
}

struct Family {
    name: &'static str,
    help: &'static str,
    value: Value,
}

fn family(name: &'static str, help: &'static str, value: Value) -> Family {
    Family { name, help, value }
}

/// Every family of one scrape.
fn families(m: &Metrics, p: &ProcSample) -> Vec<Family> {
    use Num::{F, I, U};
    use Value::{Counter, Gauge, Histogram, Labeled};
    let shards = m.shards;
    let total = |f: fn(&Shard) -> &AtomicU64| U(shards.iter().map(|s| f(s).load(Ordering::Relaxed)).sum());
    let level = |f: fn(&Shard) -> &AtomicI64| shards.iter().map(|s| f(s).load(Ordering::Relaxed)).sum::<i64>();
    let durations =
        |f: fn(&Shard) -> &super::Histogram<16>| Histogram(sum_histograms(&DURATION_BUCKETS, shards.iter().map(f)));
    let sizes = |f: fn(&Shard) -> &super::Histogram<12>| Histogram(sum_histograms(&SIZE_BUCKETS, shards.iter().map(f)));
    let mut requests = Vec::new();
    for (mi, method) in METHODS.iter().enumerate() {
        for si in 0..=status::ALL.len() {
            let n: u64 = shards.iter().map(|s| s.requests[mi][si].load(Ordering::Relaxed)).sum();
            let status = status::ALL.get(si).map_or("other".to_owned(), |r| r.0.to_string());
            if n > 0 {
                requests.push((vec![("method", (*method).to_owned()), ("status", status)], U(n)));
            }
        }
    }
    let errors = Kind::ALL
        .iter()
        .map(|k| {
            let n: u64 = shards.iter().map(|s| s.errors[k.index()].load(Ordering::Relaxed)).sum();
            (vec![("reason", k.label().to_owned())], U(n))
        })
        .collect();
    let r = &m.retention;
    let deleted = super::DELETED_BY
        .iter()
        .zip(&r.deleted)
        .map(|(why, n)| (vec![("reason", (*why).to_owned())], U(n.load(Ordering::Relaxed))))
        .collect();
    let refusals = vec![
        (
            vec![("quota", "store".to_owned())],
            U(r.refused_store.load(Ordering::Relaxed)),
        ),
        (
            vec![("quota", "user".to_owned())],
            U(r.refused_user.load(Ordering::Relaxed)),
        ),
    ];
    let driver = vec![(vec![("driver", (*lock(&m.driver)).to_owned())], I(1))];
    let build = vec![(vec![("version", env!("CARGO_PKG_VERSION").to_owned())], I(1))];
    let store: Vec<_> = lock(&m.session_store)
        .iter()
        .map(|(backend, up)| (vec![("backend", (*backend).to_owned())], I(i64::from(*up))))
        .collect();
    let start = m.started.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let mut out = vec![
        // The Go server's names: its dashboards keep working.
        family(
            "hmac_file_server_uploads",
            "Uploads stored (201).",
            Counter(total(|s| &s.uploads)),
        ),
        family(
            "hmac_file_server_upload_errors",
            "Uploads refused or failed.",
            Counter(total(|s| &s.upload_errors)),
        ),
        family(
            "hmac_file_server_downloads",
            "GET requests answered with file data.",
            Counter(total(|s| &s.downloads)),
        ),
        family(
            "hmac_file_server_download_errors",
            "GET requests refused or failed.",
            Counter(total(|s| &s.download_errors)),
        ),
        family(
            "hmac_file_server_upload_duration_seconds",
            "Time from request head to 201, body and durability included.",
            durations(|s| &s.upload_duration),
        ),
        family(
            "hmac_file_server_download_duration_seconds",
            "Time to answer a GET with file data.",
            durations(|s| &s.download_duration),
        ),
        family(
            "hmac_file_server_upload_size_bytes",
            "Sizes of stored uploads.",
            sizes(|s| &s.upload_size),
        ),
        family(
            "hmac_file_server_download_size_bytes",
            "Bytes sent per GET with file data.",
            sizes(|s| &s.download_size),
        ),
        family(
            "hmac_memory_usage_bytes",
            "Resident memory of the process.",
            Gauge(I(p.rss_bytes)),
        ),
        family(
            "hmac_cpu_usage_percent",
            "CPU use since the previous scrape, percent of one core.",
            Gauge(F(cpu_percent(m, p))),
        ),
        family(
            "hmac_active_connections_total",
            "Open client connections.",
            Gauge(I(level(|s| &s.connections))),
        ),
        family(
            "hmac_goroutines_count",
            "Worker threads plus requests in flight (the Go server counted goroutines).",
            Gauge(I(m.workers as i64 + level(|s| &s.requests_in_flight))),
        ),
        family(
            "hmac_http_requests",
            "Requests answered, by method and status.",
            Labeled(MetricType::Counter, requests),
        ),
        // Ours.
        family(
            "hmac_file_server_received_bytes",
            "Upload bytes stored.",
            Counter(total(|s| &s.bytes_in)),
        ),
        family(
            "hmac_file_server_sent_bytes",
            "Download bytes sent.",
            Counter(total(|s| &s.bytes_out)),
        ),
        family(
            "hmac_file_server_uploads_in_flight",
            "Uploads in progress.",
            Gauge(I(level(|s| &s.uploads_in_flight))),
        ),
        family(
            "hmac_file_server_errors",
            "Refused or failed requests, by reason.",
            Labeled(MetricType::Counter, errors),
        ),
        family(
            "hmac_file_server_io_driver",
            "The I/O driver in use (1).",
            Labeled(MetricType::Gauge, driver),
        ),
        family(
            "hmac_file_server_build_info",
            "Version of this build (1).",
            Labeled(MetricType::Gauge, build),
        ),
    ];
    if !store.is_empty() {
        out.push(family(
            "hmac_file_server_session_store_up",
            "Whether the active session store of resumable uploads answers (1) or not (0).",
            Labeled(MetricType::Gauge, store),
        ));
    }
    out.extend([
        family(
            "hmac_file_server_workers",
            "Worker threads.",
            Gauge(I(m.workers as i64)),
        ),
        family(
            "hmac_file_server_stored_files",
            "Files in the store (this node's index).",
            Gauge(U(m.retention.stored_files.load(Ordering::Relaxed))),
        ),
        family(
            "hmac_file_server_stored_bytes",
            "Bytes of the files in the store (this node's index).",
            Gauge(U(m.retention.stored_bytes.load(Ordering::Relaxed))),
        ),
        family(
            "hmac_file_server_files_deleted",
            "Files deleted: expired, on request (signed DELETE), evicted by UserQuotaEvictOldest, by the files command.",
            Labeled(MetricType::Counter, deleted),
        ),
        family(
            "hmac_file_server_quota_refusals",
            "Uploads refused by StoreMaxSize (quota=store) or UserQuota (quota=user).",
            Labeled(MetricType::Counter, refusals),
        ),
        family(
            "hmac_file_server_unverified_bytes",
            "Bytes of upload bodies held whose signature cannot be checked yet (chunked PUTs).",
            Gauge(I(m.unverified_bytes.load(Ordering::Relaxed) as i64)),
        ),
        // Process metrics, named as the Prometheus client libraries name them.
        family(
            "process_cpu_seconds",
            "User and system CPU time spent.",
            Counter(F(p.cpu_seconds)),
        ),
        family(
            "process_resident_memory_bytes",
            "Resident memory size.",
            Gauge(I(p.rss_bytes)),
        ),
        family(
            "process_virtual_memory_bytes",
            "Virtual memory size.",
            Gauge(I(p.vsize_bytes)),
        ),
        family("process_open_fds", "Open file descriptors.", Gauge(I(p.open_fds))),
        family(
            "process_max_fds",
            "Limit on open file descriptors.",
            Gauge(I(p.max_fds)),
        ),
        family("process_threads", "OS threads.", Gauge(I(p.threads))),
        family(
            "process_start_time_seconds",
            "Start time since the Unix epoch.",
            Gauge(F(start)),
        ),
    ]);
    out
}

/// CPU use since the previous scrape, in percent of one core.
fn cpu_percent(m: &Metrics, p: &ProcSample) -> f64 {
    let mut last = lock(&m.last_cpu);
    let now = Instant::now();
    let wall = now.duration_since(last.0).as_secs_f64();
    let pct = if wall > 0.0 {
        (p.cpu_seconds - last.1) / wall * 100.0
    } else {
        0.0
    };
    *last = (now, p.cpu_seconds);
    pct.max(0.0)
}

impl Metrics {
    /// The exposition: OpenMetrics (what Prometheus asks for), or with `prometheus_text` the
    /// Prometheus text format 0.0.4 (what `promtool check metrics` and older scrapers read).
    pub fn render(self: &Arc<Self>, prometheus_text: bool) -> String {
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

struct Scrape(Arc<Metrics>);

impl std::fmt::Debug for Scrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Scrape")
    }
}

type Encoded = Result<(), std::fmt::Error>;

fn encode_num(n: Num, counter: bool, enc: prometheus_client::encoding::MetricEncoder) -> Encoded {
    match (n, counter) {
        (Num::U(v), true) => ConstCounter::new(v).encode(enc),
        (Num::F(v), true) => ConstCounter::new(v).encode(enc),
        (Num::I(v), true) => ConstCounter::new(v.max(0) as u64).encode(enc),
        (Num::U(v), false) => ConstGauge::new(v as i64).encode(enc),
        (Num::I(v), false) => ConstGauge::new(v).encode(enc),
        (Num::F(v), false) => ConstGauge::new(v).encode(enc),
    }
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Encoded {
        for f in families(&self.0, &ProcSample::read()) {
            match f.value {
                Value::Counter(n) => encode_num(
                    n,
                    true,
                    enc.encode_descriptor(f.name, f.help, None, MetricType::Counter)?,
                )?,
                Value::Gauge(n) => encode_num(
                    n,
                    false,
                    enc.encode_descriptor(f.name, f.help, None, MetricType::Gauge)?,
                )?,
                Value::Histogram(h) => enc
                    .encode_descriptor(f.name, f.help, None, MetricType::Histogram)?
                    .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?,
                Value::Labeled(kind, samples) => {
                    let mut fam = enc.encode_descriptor(f.name, f.help, None, kind)?;
                    for (labels, n) in samples {
                        let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                        encode_num(n, matches!(kind, MetricType::Counter), fam.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_renamed_for_the_prometheus_text_format() {
        let om = "# HELP a_x Things.\n# TYPE a_x counter\na_x_total 3\n# HELP g Level.\n# TYPE g gauge\ng 1\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(om),
            "# HELP a_x_total Things.\n# TYPE a_x_total counter\na_x_total 3\n# HELP g Level.\n# TYPE g gauge\ng 1\n"
        );
    }

    #[test]
    fn every_family_is_exported_once() {
        let m = Arc::new(Metrics::new(2));
        m.shard(0).request_started(true);
        m.shard(0).request_done(
            crate::http::Method::Put,
            403,
            std::time::Duration::ZERO,
            0,
            None,
            Some(Kind::Forbidden),
        );
        let text = m.render(true);
        let mut seen = std::collections::HashSet::new();
        for name in text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        {
            assert!(seen.insert(name.to_owned()), "{name} twice");
        }
        assert!(
            text.contains("hmac_http_requests_total{method=\"PUT\",status=\"403\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hmac_file_server_errors_total{reason=\"forbidden\"} 1"),
            "{text}"
        );
        assert!(text.contains("hmac_file_server_uploads_total 0"), "{text}");
    }
}
