//! The operator's port (`MetricsPort`, when `MetricsEnabled`): `GET /metrics` (Prometheus),
//! `GET /health` (liveness) and `GET /ready` (readiness: an upload could start now, JSON). It
//! is served on the side thread (`runtime::side`), so a slow scraper or probe never touches a
//! worker. Uploads and downloads are never served here, and this port's paths are never served
//! on the upload port.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::App;

const JSON: &str = "application/json";
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\nConnection: close\r\n\r\n";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A probe's request head must fit here and arrive within the timeout.
const MAX_HEAD: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are answered 503 and closed without being read. Scrapers
/// and probes need a handful: the cap keeps a flood from costing more than a few KiB each.
pub const MAX_CONNECTIONS: usize = 64;

pub async fn serve_port(app: Arc<App>, addr: std::net::SocketAddr, listener: std::net::TcpListener, started: Instant) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "metrics port: cannot serve");
            return;
        }
    };
    tracing::info!(%addr, "metrics port listening (/metrics, /health, /ready)");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Without waiting: a client that does not read gets nothing more.
                    let _ = stream.try_write(BUSY);
                    continue;
                };
                let app = app.clone();
                tokio::spawn(async move {
                    serve(&app, stream, started).await;
                    drop(slot);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics port: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One request per connection: probes and scrapers open a fresh one each time anyway.
async fn serve(app: &App, mut stream: tokio::net::TcpStream, started: Instant) {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(READ_TIMEOUT, async {
        loop {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => {
                    let accept = req
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("accept"))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned())
                        .unwrap_or_default();
                    return Some((req.method?.to_owned(), req.path?.to_owned(), accept));
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => return None,
            }
        }
    })
    .await;
    let (status, content_type, body) = match head {
        Ok(Some((method, path, accept))) if path.split('?').next() == Some("/metrics") && method == "GET" => {
            app.metrics.set_unverified_bytes(app.unverified.used());
            // Prometheus asks for OpenMetrics; promtool and older scrapers get the text format.
            if accept.contains("application/openmetrics-text") {
                (200, OPENMETRICS, app.metrics.render(false))
            } else {
                (200, PROMETHEUS_TEXT, app.metrics.render(true))
            }
        }
        Ok(Some((method, path, _))) => {
            let (status, body) = respond(app, &method, &path, started).await;
            (status, JSON, body.to_string())
        }
        _ => (400, JSON, serde_json::json!({"error": "bad request"}).to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        crate::http::status::reason(status),
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn respond(app: &App, method: &str, path: &str, started: Instant) -> (u16, serde_json::Value) {
    if method != "GET" && method != "HEAD" {
        return (405, serde_json::json!({"error": "method not allowed"}));
    }
    match path.split('?').next().unwrap_or("") {
        "/health" => (
            200,
            serde_json::json!({
                "status": "ok",
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_seconds": started.elapsed().as_secs(),
            }),
        ),
        "/ready" => ready(app).await,
        _ => (
            404,
            serde_json::json!({"error": "not found", "paths": ["/health", "/ready"]}),
        ),
    }
}

/// Ready when an upload could start now: StoreDir takes a new file, and the session store of
/// resumable uploads (when switched on) answers.
async fn ready(app: &App) -> (u16, serde_json::Value) {
    let mut ok = true;
    let storage = match app.store.probe_writable() {
        Ok(()) => "ok".to_owned(),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: StoreDir is not writable");
            ok = false;
            format!("StoreDir is not writable: {e}")
        }
    };
    let mut checks = serde_json::json!({ "storage": storage });
    if app.config.resumable_uploads {
        let (backend, state) = match &app.sessions {
            Some(s) => {
                let up = s.store().ping().await;
                app.metrics.set_session_store(s.backend(), up.is_ok());
                match up {
                    Ok(()) => (s.backend(), "ok".to_owned()),
                    Err(e) => {
                        tracing::warn!(error = %e, "not ready: session store");
                        ok = false;
                        (s.backend(), e.to_string())
                    }
                }
            }
            None => {
                ok = false;
                ("none", "the session store could not be opened".to_owned())
            }
        };
        checks["sessions"] = serde_json::json!({ "backend": backend, "status": state });
    }
    if ok {
        (200, serde_json::json!({"status": "ready", "checks": checks}))
    } else {
        (503, serde_json::json!({"status": "not ready", "checks": checks}))
    }
}
