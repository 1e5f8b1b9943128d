//! One connection's life: read a head, admit it past the limits, route and handle it, answer
//! (or answer the error), log and count it; again, until the connection ends. Requests are
//! answered in order, pipelining included.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::io::Canceller;

use super::{Conn, Socket, LINGER_TIME};
use crate::app::App;
use crate::error::Error;
use crate::handlers::tus::{self, headers::is_tus};
use crate::handlers::Exchange;
use crate::http::{response, status, Body, Head, Method};
use crate::limits::{ClientKey, Refused, UploadGuard};
use crate::logging::access;
use crate::router::{self, Route};

/// Serve requests on one connection until it closes. `peer` is the client's address (None on
/// a Unix socket, where the proxy in front does the per-IP limits' job). The connection is
/// built before the task, so its stream is stored once in the task (docs/architecture.md,
/// "Memory").
pub fn serve<S: Socket>(app: Arc<App>, worker: usize, stream: S, peer: Option<SocketAddr>) -> impl Future<Output = ()> {
    let mut conn = Conn::new(app, stream, peer.map(|p| ClientKey::of(p.ip())));
    let peer = PeerName(peer);
    // A block, not an `async fn`: an async fn's task would store its arguments twice.
    async move {
        let app = conn.app.clone();
        let app = &*app;
        // With MetricsEnabled off nothing is counted at all (the "off" of the metrics benchmark).
        let shard = app.config.metrics_enabled.then(|| app.metrics.shard(worker));
        let Some(_open) = app.connections.open() else {
            return Box::pin(refuse(conn, &peer)).await;
        };
        let _counted = shard.map(|shard| {
            shard.connection_opened();
            ConnectionCounted(shard)
        });
        loop {
            if app.shutdown.is_requested() {
                return;
            }
            // The idle wait holds no buffer, and what a request needs (the handlers' state, its
            // buffers) lives on the heap only while the client is busy, so an idle keep-alive
            // connection costs its socket and this small task.
            match conn.wait_idle().await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
            match Box::pin(busy(app, worker, &mut conn, shard, &peer)).await {
                After::Next => {}
                After::Stop => return,
                After::Close => return Box::pin(conn.linger_close(LINGER_TIME)).await,
            }
        }
    }
}

/// The requests of a busy client, and the short waits between them (`Conn::wait_hot`), in one
/// future: it is boxed once per busy spell, not once per request. After::Next: the client
/// went quiet, and the connection waits idle.
async fn busy<S: Socket>(
    app: &App,
    worker: usize,
    conn: &mut Conn<S>,
    shard: Option<&crate::metrics::Shard>,
    peer: &PeerName,
) -> After {
    let mut canceller = Canceller::new();
    loop {
        match request(app, worker, conn, shard, peer).await {
            After::Next => {}
            end => return end,
        }
        if app.shutdown.is_requested() {
            return After::Stop;
        }
        match conn.wait_hot(&mut canceller).await {
            Ok(Some(true)) => {}
            Ok(Some(false)) | Err(_) => return After::Stop,
            Ok(None) => return After::Next,
        }
    }
}

/// What the logs call the client: its address, or "unix".
struct PeerName(Option<SocketAddr>);

impl std::fmt::Display for PeerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("unix"),
        }
    }
}

/// Over `MaxConnections`: say so, and close soon.
async fn refuse<S: Socket>(mut conn: Conn<S>, peer: &PeerName) {
    let e = Error::Unavailable(format!("MaxConnections ({}) reached", conn.app.config.max_connections));
    tracing::warn!(%peer, status = e.status(), error = %e, "connection refused");
    error_response(&mut conn.wbuf, &e, true, false, false);
    // Briefly: this connection is not counted against the cap, so it must not stay long.
    conn.linger_close(Duration::from_secs(1)).await;
}

/// What the connection does after a request.
enum After {
    /// Wait for the next request.
    Next,
    /// Close now: the client can no longer be answered.
    Stop,
    /// Close after a lingering read, so the client reads our answer.
    Close,
}

/// One request: read its head (its first bytes are in), admit it, route and handle it, answer,
/// log and count it.
async fn request<S: Socket>(
    app: &App,
    worker: usize,
    conn: &mut Conn<S>,
    shard: Option<&crate::metrics::Shard>,
    peer: &PeerName,
) -> After {
    let ip = peer.0.map(|p| p.ip());
    let head = match conn.read_head().await {
        Ok(Some(head)) => head,
        Ok(None) => return After::Stop,
        Err(e) => {
            tracing::info!(%peer, status = e.status(), error = %e, "bad request head");
            if let Some(shard) = shard {
                shard.request_started(false);
                shard.request_done(Method::Other, e.status(), Duration::ZERO, 0, None, Some(e.kind()));
            }
            error_response(&mut conn.wbuf, &e, true, false, false);
            return After::Close;
        }
    };
    let in_flight = app.shutdown.request(worker);
    let started = Instant::now();
    if let Some(shard) = shard {
        shard.request_started(matches!(head.method, Method::Put | Method::Post | Method::Patch));
    }
    let route = router::route(&head, &app.prefix, app.features);
    let result = match admit(app, ip, route) {
        Ok(upload_slot) => {
            let result = router::handle(app, &head, route, conn).await;
            drop(upload_slot);
            result
        }
        Err(e) => Err(e),
    };
    let took = started.elapsed();
    if let Some(shard) = shard {
        match &result {
            Ok(o) => shard.request_done(head.method, o.status, took, o.bytes, o.published, None),
            Err(e) => shard.request_done(head.method, e.status(), took, 0, None, Some(e.kind())),
        }
    }
    let line = |status, bytes, error| access::Line {
        peer: peer.0,
        method: &head.method_name,
        path: log_path(&head),
        status,
        bytes,
        us: took.as_micros() as u64,
        error,
    };
    let close = match result {
        Ok(o) => {
            access::record(&line(o.status, o.bytes, None));
            conn.closing(&head)
        }
        Err(e) => {
            access::record(&line(e.status(), 0, Some(&e)));
            if !conn.can_answer() {
                // A response body was under way, or the client stopped taking bytes.
                return After::Stop;
            }
            // A refused upload may leave its body unread on the wire: close rather than parse it.
            let close = conn.closing(&head) || e.must_close() || head.body != Body::None;
            error_response(&mut conn.wbuf, &e, close, head.method == Method::Head, is_tus(&head));
            close
        }
    };
    if close || app.shutdown.is_requested() {
        let _ = conn.flush().await;
        drop(in_flight); // answered: the drain need not wait for the linger
        return After::Close;
    }
    match conn.flush_if_idle().await {
        Ok(()) => After::Next,
        Err(_) => After::Stop,
    }
}

/// Counts a connection out of `hmac_active_connections_total` however serving ends.
struct ConnectionCounted<'a>(&'a crate::metrics::Shard);

impl Drop for ConnectionCounted<'_> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// The per-IP limits, when switched on: a request token, and for an upload a slot held until
/// the upload ends.
fn admit<'a>(app: &'a App, ip: Option<IpAddr>, route: Route<'_>) -> Result<Option<UploadGuard<'a>>, Error> {
    let Some(ip) = ip.filter(|_| app.per_ip.enabled()) else {
        return Ok(None);
    };
    let refused = |r: Refused| Error::TooManyRequests {
        why: r.why,
        retry_after: r.retry_after,
    };
    app.per_ip.admit_request(ip).map_err(refused)?;
    if route.uploads() {
        return app.per_ip.begin_upload(ip).map(Some).map_err(refused);
    }
    Ok(None)
}

/// The request path without its query: signatures never reach the logs, and of a resumable
/// upload's URL (a write capability) only the start of the id does.
fn log_path(head: &Head) -> &str {
    let path = crate::path::split_target(&head.target).0;
    // In any case, as the reserved name is matched.
    let dir = tus::RESOURCE_DIR.as_bytes();
    match path
        .as_bytes()
        .windows(dir.len())
        .position(|w| w.eq_ignore_ascii_case(dir))
    {
        Some(at) => path.get(..at + tus::RESOURCE_DIR.len() + 8).unwrap_or(path),
        None => path,
    }
}

/// The error's response. `tus`: the request speaks tus, whose clients expect Tus-Resumable
/// (and Tus-Version on a 412) on every answer.
fn error_response(out: &mut Vec<u8>, e: &Error, close: bool, head_only: bool, tus: bool) {
    let status = e.status();
    let retry = e.retry_after().map(|s| s.to_string());
    let mut extra: Vec<(&str, &str)> = Vec::new();
    match (status, &retry) {
        (405, _) => extra.push(("Allow", response::ALLOW)),
        (_, Some(secs)) => extra.push(("Retry-After", secs.as_str())),
        _ => {}
    }
    if let Some(challenge) = e.challenge() {
        extra.push(("WWW-Authenticate", challenge));
    }
    if tus || status == 412 {
        extra.push(("Tus-Resumable", tus::VERSION));
        if status == 412 {
            extra.push(("Tus-Version", tus::VERSION));
        }
    }
    let body = format!("{} {}\n", status, status::reason(status));
    response::simple(out, status, &extra, &body, close);
    if head_only {
        // HEAD gets the same head as GET would, without the body.
        out.truncate(out.len() - body.len());
    }
}
