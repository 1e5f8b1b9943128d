//! The operator's port: /health and /ready as JSON on MetricsPort only, readiness following
//! the state of StoreDir.
mod common;

use common::*;
use std::net::SocketAddr;

fn probe(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let r = raw(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(r.header("content-type"), Some("application/json"));
    (r.status, serde_json::from_slice(&r.body).expect("JSON body"))
}

#[test]
fn health_and_ready_on_the_metrics_port_only() {
    let (s, metrics) = Server::with_metrics("", &[]);
    let (status, health) = probe(metrics, "/health");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    let (status, ready) = probe(metrics, "/ready");
    assert_eq!(
        (status, &ready["status"]),
        (200, &serde_json::json!("ready")),
        "{ready}"
    );
    assert_eq!(ready["checks"]["storage"], "ok");
    // Nothing else there; and none of it on the upload port.
    assert_eq!(probe(metrics, "/upload/x").0, 404);
    for path in ["/health", "/ready", "/metrics"] {
        let r = raw(s.addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.status, 404, "{path} on the upload port");
    }
    // A readiness probe leaves no temporary behind.
    for _ in 0..20 {
        assert_eq!(probe(metrics, "/ready").0, 200);
    }
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
}

#[test]
fn ready_fails_when_store_dir_vanishes() {
    let (s, metrics) = Server::with_metrics("", &[]);
    std::fs::remove_dir_all(s.store()).unwrap();
    let (status, ready) = probe(metrics, "/ready");
    assert_eq!(status, 503);
    assert_eq!(ready["status"], "not ready");
    let why = ready["checks"]["storage"].as_str().unwrap();
    assert!(why.starts_with("StoreDir is not writable"), "{why}");
    assert_eq!(probe(metrics, "/health").0, 200, "alive all the same");
}

#[test]
fn ready_with_named_temporaries_leaves_none() {
    let (s, metrics) = Server::with_metrics("", &[("HMAC_FILE_SERVER_NO_TMPFILE", "1")]);
    assert_eq!(probe(metrics, "/ready").0, 200);
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
}

#[test]
fn metrics_port_in_use_fails_the_start() {
    let (s, metrics) = Server::with_metrics("", &[]);
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "Secret = \"x\"\nStoreDir = \"{}\"\nListenPort = \"127.0.0.1:{}\"\nMetricsEnabled = true\nMetricsPort = \"{metrics}\"\n",
            d.path().join("s").display(),
            free_port()
        ),
    );
    let (code, _, err) = run(&["--config", &cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("MetricsPort"), "{err}");
    drop(s);
}
