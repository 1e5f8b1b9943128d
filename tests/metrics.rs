//! Prometheus metrics on MetricsPort: real uploads and downloads move each metric by exactly
//! what was done (read back by the reference exposition parser, in both formats), promtool
//! parses the exposition, and a real Prometheus server scrapes it.
mod common;

use common::*;
use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn scrape_raw(metrics: SocketAddr, openmetrics: bool) -> (String, String) {
    let accept = if openmetrics {
        "Accept: application/openmetrics-text; version=1.0.0\r\n"
    } else {
        ""
    };
    let r = raw(
        metrics,
        format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{accept}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    let ct = r.header("content-type").unwrap_or("").to_owned();
    (ct, String::from_utf8(r.body).expect("UTF-8 exposition"))
}

fn installed() -> bool {
    require(
        "prometheus-client (PyPI)",
        runs("python3", &["-c", "import prometheus_client"]),
    )
}

/// Every sample, parsed by prometheus_client's parser for the format served.
fn scrape(metrics: SocketAddr, openmetrics: bool) -> HashMap<String, f64> {
    let (ct, text) = scrape_raw(metrics, openmetrics);
    let fmt = if openmetrics {
        assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
        "openmetrics"
    } else {
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        "text"
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/parse_metrics.py");
    let mut child = Command::new("python3")
        .args([script, fmt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["samples"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_f64().unwrap()))
        .collect()
}

fn get_sample(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or(&0.0)
}

#[test]
fn every_metric_moves_by_exactly_what_was_done() {
    if !installed() {
        return;
    }
    let (s, metrics) = Server::with_metrics("", &[]);
    let before = scrape(metrics, false);
    let mut stored = Vec::new();
    for (i, size) in [10usize, 100_000, 2 << 20].into_iter().enumerate() {
        let path = unique(&format!("m{i}.bin"));
        let body = pattern(size, i as u64);
        assert_eq!(
            put(&s, &s.put_target(&path, size as u64, None, Proto::V), &body, None),
            201
        );
        stored.push((path, size));
    }
    // A refused upload and a refused download.
    let forged = s
        .put_target(&unique("forged.bin"), 4, None, Proto::V)
        .replace("?v=", "?v=0");
    assert_eq!(put(&s, &forged, b"data", None), 403);
    assert_eq!(get(&s, "/upload/no/such/file").0, 404);
    // Downloads: two whole, one range; a HEAD is a request but not a download.
    let url = |p: &str| format!("/upload/{}", encode_path(p));
    assert_eq!(get(&s, &url(&stored[0].0)).0, 200);
    assert_eq!(get(&s, &url(&stored[2].0)).0, 200);
    let mut c = connect(s.addr);
    c.write_all(
        format!(
            "GET {} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n",
            url(&stored[1].0)
        )
        .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 206);
    c.write_all(format!("HEAD {} HTTP/1.1\r\nHost: x\r\n\r\n", url(&stored[1].0)).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut c, true).unwrap().status, 200);
    // Connections held open while scraping.
    let held: Vec<_> = (0..3).map(|_| connect(s.addr)).collect();
    // Until the workers have accepted them (a moment on a loaded machine).
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_sample(&scrape(metrics, false), "hmac_active_connections_total") < 4.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }

    for openmetrics in [false, true] {
        let after = scrape(metrics, openmetrics);
        let moved = |k: &str| get_sample(&after, k) - get_sample(&before, k);
        let total: f64 = stored.iter().map(|(_, n)| *n as f64).sum();
        assert_eq!(
            moved("hmac_file_server_uploads_total"),
            3.0,
            "openmetrics={openmetrics}"
        );
        assert_eq!(moved("hmac_file_server_upload_errors_total"), 1.0);
        assert_eq!(moved("hmac_file_server_downloads_total"), 3.0);
        assert_eq!(moved("hmac_file_server_download_errors_total"), 1.0);
        assert_eq!(moved("hmac_file_server_received_bytes_total"), total);
        assert_eq!(
            moved("hmac_file_server_sent_bytes_total"),
            10.0 + (2 << 20) as f64 + 100.0
        );
        assert_eq!(moved("hmac_file_server_upload_duration_seconds_count"), 3.0);
        assert!(moved("hmac_file_server_upload_duration_seconds_sum") > 0.0);
        assert_eq!(moved("hmac_file_server_download_duration_seconds_count"), 3.0);
        assert_eq!(moved("hmac_file_server_upload_size_bytes_count"), 3.0);
        assert_eq!(moved("hmac_file_server_upload_size_bytes_sum"), total);
        // Buckets (cumulative): 10 B <= 1 KiB, 100000 B <= 256 KiB, 2 MiB <= 4 MiB.
        assert_eq!(moved("hmac_file_server_upload_size_bytes_bucket{le=1024.0}"), 1.0);
        assert_eq!(moved("hmac_file_server_upload_size_bytes_bucket{le=65536.0}"), 1.0);
        assert_eq!(moved("hmac_file_server_upload_size_bytes_bucket{le=262144.0}"), 2.0);
        assert_eq!(moved("hmac_file_server_upload_size_bytes_bucket{le=1048576.0}"), 2.0);
        assert_eq!(moved("hmac_file_server_upload_size_bytes_bucket{le=4194304.0}"), 3.0);
        assert_eq!(moved("hmac_file_server_upload_size_bytes_bucket{le=+Inf}"), 3.0);
        assert_eq!(moved("hmac_file_server_download_size_bytes_count"), 3.0);
        assert_eq!(moved("hmac_http_requests_total{method=PUT,status=201}"), 3.0);
        assert_eq!(moved("hmac_http_requests_total{method=PUT,status=403}"), 1.0);
        assert_eq!(moved("hmac_http_requests_total{method=GET,status=404}"), 1.0);
        assert_eq!(moved("hmac_http_requests_total{method=GET,status=200}"), 2.0);
        assert_eq!(moved("hmac_http_requests_total{method=GET,status=206}"), 1.0);
        assert_eq!(moved("hmac_http_requests_total{method=HEAD,status=200}"), 1.0);
        assert_eq!(moved("hmac_file_server_errors_total{reason=forbidden}"), 1.0);
        assert_eq!(moved("hmac_file_server_errors_total{reason=not_found}"), 1.0);
        assert_eq!(moved("hmac_file_server_errors_total{reason=conflict}"), 0.0);
        assert!(
            get_sample(&after, "hmac_active_connections_total") >= 4.0,
            "3 held + the HEAD one"
        );
        assert!(get_sample(&after, "hmac_goroutines_count") >= 2.0, "two workers");
        assert_eq!(get_sample(&after, "hmac_file_server_uploads_in_flight"), 0.0);
        assert_eq!(get_sample(&after, "hmac_file_server_io_driver{driver=io_uring}"), 1.0);
        assert_eq!(get_sample(&after, "hmac_file_server_workers"), 2.0);
        let version = format!("hmac_file_server_build_info{{version={}}}", env!("CARGO_PKG_VERSION"));
        assert_eq!(get_sample(&after, &version), 1.0);
        assert!(get_sample(&after, "hmac_memory_usage_bytes") > 1e6);
        assert!(get_sample(&after, "hmac_cpu_usage_percent") >= 0.0);
        // Counted in 10 ms clock ticks: this little work may still read 0.
        assert!(after.get("process_cpu_seconds_total").is_some_and(|v| *v >= 0.0));
        assert!(get_sample(&after, "process_resident_memory_bytes") > 1e6);
        assert!(get_sample(&after, "process_open_fds") >= 5.0);
        assert!(get_sample(&after, "process_threads") >= 4.0);
        assert!(get_sample(&after, "process_start_time_seconds") > 1.7e9);
    }
    drop(held);
}

#[test]
fn an_upload_in_flight_is_counted() {
    if !installed() {
        return;
    }
    let (s, metrics) = Server::with_metrics("", &[]);
    let target = s.put_target(&unique("slow.bin"), 10, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, 10, None, "").as_bytes()).unwrap();
    c.write_all(b"12345").unwrap();
    // The server may take a moment to read the head on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(10);
    let during = loop {
        let m = scrape(metrics, true);
        if get_sample(&m, "hmac_file_server_uploads_in_flight") == 1.0 || Instant::now() > deadline {
            break m;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(get_sample(&during, "hmac_file_server_uploads_in_flight"), 1.0);
    assert_eq!(
        get_sample(&during, "hmac_goroutines_count"),
        3.0,
        "2 workers + 1 request"
    );
    c.write_all(b"67890").unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 201);
    let after = scrape(metrics, true);
    assert_eq!(get_sample(&after, "hmac_file_server_uploads_in_flight"), 0.0);
    assert_eq!(get_sample(&after, "hmac_goroutines_count"), 2.0);
}

/// CPU seconds the process has used, from /proc (clock-tick resolution).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let f: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..].split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn cpu_usage_follows_the_work_between_scrapes() {
    if !installed() {
        return;
    }
    let (s, metrics) = Server::with_metrics("", &[]);
    let path = unique("cpu.bin");
    assert_eq!(put(&s, &s.put_target(&path, 3, None, Proto::V), b"cpu", None), 201);
    let target = format!("/upload/{}", encode_path(&path));
    scrape(metrics, true);
    // Work until the kernel has charged the server at least one clock tick (bounded).
    let start = cpu_ticks(s.pid());
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut c = connect(s.addr);
    while cpu_ticks(s.pid()) <= start + 1 {
        assert!(Instant::now() < deadline, "the server used no CPU");
        for _ in 0..200 {
            c.write_all(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            assert_eq!(read_response(&mut c, false).unwrap().status, 200);
        }
    }
    assert!(get_sample(&scrape(metrics, true), "hmac_cpu_usage_percent") > 0.0);
}

/// The two names promtool's linter objects to are the Go server's, kept for its dashboards.
const GO_COMPAT_LINT: [&str; 2] = [
    "hmac_active_connections_total non-counter metrics should not have \"_total\" suffix",
    "hmac_goroutines_count non-histogram and non-summary metrics should not have \"_count\" suffix",
];

#[test]
fn promtool_accepts_the_exposition() {
    if !require("promtool (Debian prometheus)", on_path("promtool")) {
        return;
    }
    let (s, metrics) = Server::with_metrics("", &[]);
    assert_eq!(
        put(&s, &s.put_target(&unique("p.bin"), 1, None, Proto::V), b"x", None),
        201
    );
    let (_, text) = scrape_raw(metrics, false);
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 1 would be a parse error; 3 is lint findings, which must be only the known two.
    assert!(matches!(out.status.code(), Some(0) | Some(3)), "{report}");
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        assert!(GO_COMPAT_LINT.contains(&line.trim()), "promtool: {line}\n{text}");
    }
}

#[test]
fn a_real_prometheus_scrapes_the_uploads_counter() {
    if !require("prometheus (Debian)", on_path("prometheus")) {
        return;
    }
    let (s, metrics) = Server::with_metrics("", &[]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hmac-file-server\n    static_configs:\n      - targets: ['{metrics}']\n"
        ),
    )
    .unwrap();
    let web = free_port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("start prometheus");
    assert_eq!(
        put(
            &s,
            &s.put_target(&unique("scraped.bin"), 3, None, Proto::V),
            b"abc",
            None
        ),
        201
    );
    let query = format!("http://127.0.0.1:{web}/api/v1/query?query=hmac_file_server_uploads_total");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    let value = loop {
        if let Ok(r) = ureq::get(&query).call() {
            last = r.into_string().unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            if let Some(sample) = v["data"]["result"].get(0) {
                break sample["value"][1].as_str().unwrap_or("").to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no sample reached Prometheus: {last}\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    assert_eq!(value, "1", "{last}");
}

/// Metric names a PromQL expression uses (identifiers of ours or the process metrics).
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut word = String::new();
    for c in expr.chars().chain([' ']) {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            if word.starts_with("hmac_") || word.starts_with("process_") {
                names.push(std::mem::take(&mut word));
            }
            word.clear();
        }
    }
    names
}

#[test]
fn the_grafana_dashboard_uses_only_exported_metrics() {
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana-dashboard.json")).unwrap(),
    )
    .expect("dashboard JSON");
    let mut used = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            used.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["query"].as_str() {
            used.extend(metric_names(q));
        }
    }
    assert!(used.len() >= 15, "{used:?}");
    let (s, metrics) = Server::with_metrics("", &[]);
    // Traffic, so every labelled family has a sample.
    assert_eq!(
        put(&s, &s.put_target(&unique("g.bin"), 1, None, Proto::V), b"x", None),
        201
    );
    assert_eq!(get(&s, "/upload/none").0, 404);
    let (_, text) = scrape_raw(metrics, false);
    let exported: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in &used {
        assert!(
            exported.contains(name.as_str()),
            "the dashboard uses {name}, which is not exported"
        );
    }
}
