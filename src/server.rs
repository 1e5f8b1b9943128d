//! Thread-per-core serving: each worker thread runs its own monoio runtime (io_uring, or
//! epoll when the kernel refuses io_uring) with its own SO_REUSEPORT listener, so the kernel
//! spreads connections and no request ever crosses threads.
//!
//! Request flow: `worker` accepts → `serve_conn` reads heads → `dispatch` → `upload::put` or
//! `download::get`, which stream through `conn::Conn` into `storage`.

use std::net::{IpAddr, SocketAddr};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener, UnixListener};

use crate::config::Config;
use crate::conn::{Conn, Outcome, Socket, LINGER_TIME};
use crate::error::Error;
use crate::http::{response, Body, Head, Limits, Method};
use crate::logging::access;
use crate::shutdown::{self, Shutdown};
use crate::storage::{OpenFileCache, Store};
use crate::throttle::{ClientKey, ConnectionCap, PerIp};
use crate::{download, tus, upload};

/// What every worker shares, read-only apart from the store's in-progress set.
pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub prefix: String,
    pub limits: Limits,
    pub file_cache: OpenFileCache,
    pub shutdown: Shutdown,
    pub per_ip: PerIp,
    pub connections: ConnectionCap,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The session store of resumable uploads (None: switched off, or it failed to open).
    pub sessions: Option<crate::session::Sessions>,
    /// `Cache-Control` of downloads without an expiry of their own.
    pub cache_control: String,
    /// Bytes held by upload bodies whose signature is not checked yet.
    pub unverified: crate::budget::Budget,
}

impl Shared {
    pub fn new(config: Config, store: Store) -> Shared {
        Shared {
            prefix: config.url_prefix(),
            limits: Limits {
                max_head: config.max_header_bytes.0 as usize,
                max_url: config.max_url_bytes.0 as usize,
            },
            shutdown: Shutdown::new(config.worker_count()),
            file_cache: OpenFileCache {
                ttl: std::time::Duration::from_secs(config.open_file_cache_seconds),
                entries: config.open_file_cache_entries,
            },
            per_ip: PerIp::new(
                config.max_requests_per_second_per_ip,
                config.max_concurrent_uploads_per_ip,
            ),
            connections: ConnectionCap::new(config.max_connections),
            metrics: Arc::new(crate::metrics::Metrics::new(config.worker_count())),
            sessions: None,
            cache_control: crate::download::cache_control(config.cache_max_age, config.cache_public, None, 0),
            unverified: {
                let (total, per_ip) = config.unverified_caps();
                crate::budget::Budget::new(total, per_ip)
            },
            config,
            store,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} (ListenPort): {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot listen on Unix socket {path} (ListenPort): {source}")]
    UnixBind { path: String, source: std::io::Error },
    #[error("Unix socket {path} (ListenPort) is in use by a running server")]
    UnixInUse { path: String },
    #[error("cannot listen on {addr} (MetricsPort): {source}")]
    MetricsBind { addr: SocketAddr, source: std::io::Error },
    #[error("worker thread failed to start: {0}")]
    Worker(String),
    #[error("{0}")]
    Sessions(String),
}

/// Start the workers, serve until SIGINT/SIGTERM, drain, and return (the caller exits).
/// The caller must have blocked `shutdown::signal_set()` before starting any thread.
pub fn run(mut shared: Shared) -> Result<(), StartError> {
    let listen = if shared.config.unix_socket {
        Listen::Unix(bind_unix(&shared.config)?)
    } else {
        let addr = shared
            .config
            .listen_addr()
            .map_err(|e| StartError::Worker(e.to_string()))?;
        // SO_REUSEPORT would let us silently share the port with another running server;
        // a plain bind first makes "address in use" an error, as users expect.
        drop(bind_when_free(addr).map_err(|source| StartError::Bind { addr, source })?);
        Listen::Tcp(addr)
    };
    let fds = raise_fd_limit();
    // Each connection may hold a socket, a temporary and a cached download.
    if shared.config.max_connections as u64 > fds / 2 {
        tracing::warn!(
            max_connections = shared.config.max_connections,
            open_files = fds,
            "MaxConnections is above half the open-file limit: under load, accepts may fail with EMFILE \
             before the cap answers 503; raise LimitNOFILE or lower MaxConnections"
        );
    }
    let side = crate::admin::runtime()?;
    if shared.config.resumable_uploads {
        shared.sessions = open_sessions(&shared, &side)?;
    }
    let shared = Arc::new(shared);
    let _side = crate::admin::start(shared.clone(), side)?;
    let workers = shared.config.worker_count();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<&'static str, StartError>>();
    let mut handles = Vec::new();
    for id in 0..workers {
        let shared = shared.clone();
        let ready = ready_tx.clone();
        let listen = listen.try_clone().map_err(|e| StartError::Worker(e.to_string()))?;
        let handle = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || worker(id, shared, listen, ready))
            .map_err(|e| StartError::Worker(e.to_string()))?;
        handles.push(handle);
    }
    drop(ready_tx);
    let mut driver = "io_uring";
    for _ in 0..workers {
        match ready_rx.recv() {
            Ok(Ok(d)) => driver = d,
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(StartError::Worker("a worker exited during start-up".into())),
        }
    }
    if driver == "epoll" {
        tracing::warn!(
            "io_uring is unavailable (seccomp, io_uring_disabled or an old kernel): running on the \
             epoll fallback, where file I/O blocks the worker threads"
        );
    }
    shared.metrics.set_driver(driver);
    let addr = listen.describe();
    tracing::info!(%addr, workers, driver, store = %shared.store.root_path().display(), prefix = %shared.prefix, "listening");
    drop(handles); // workers run until the process exits
    drain_on_signal(&shared);
    if let Listen::Unix(_) = listen {
        let _ = std::fs::remove_file(&shared.config.listen_port);
    }
    Ok(())
}

/// Bind `addr`, waiting briefly while it is in use: a predecessor killed a moment ago (a
/// crash, then a restart by systemd) can hold its listener for a while after its death,
/// until the kernel has torn down its io_uring with the accepts still queued on it.
fn bind_when_free(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match std::net::TcpListener::bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Open the session store of resumable uploads. One that another process holds leaves
/// resumable uploads answering 503 on this node (plain uploads are unaffected); one that
/// cannot be read stops the start.
fn open_sessions(
    shared: &Shared,
    side: &tokio::runtime::Runtime,
) -> Result<Option<crate::session::Sessions>, StartError> {
    use crate::session::embedded::{Embedded, OpenError};
    use crate::session::Sessions;
    let handle = side.handle().clone();
    if let Some(store) = side
        .block_on(crate::session::open_shared(&shared.config))
        .map_err(StartError::Sessions)?
    {
        tracing::info!(backend = store.backend(), "session store");
        return Ok(Some(Sessions::new(handle, store)));
    }
    let dir = shared
        .store
        .root_path()
        .join(crate::path::RESERVED_DIR)
        .join("sessions");
    match Embedded::open(&dir) {
        Ok(store) => Ok(Some(Sessions::new(handle, Arc::new(store)))),
        Err(e @ OpenError::InUse { .. }) => {
            tracing::error!(error = %e, "resumable uploads are unavailable on this node (503): give each server its own StoreDir or a shared session store");
            Ok(None)
        }
        Err(e) => Err(StartError::Sessions(e.to_string())),
    }
}

/// Where the workers accept: a TCP address each worker binds with SO_REUSEPORT, or one Unix
/// socket bound here whose fd every worker shares.
enum Listen {
    Tcp(SocketAddr),
    Unix(std::os::unix::net::UnixListener),
}

impl Listen {
    fn try_clone(&self) -> std::io::Result<Listen> {
        Ok(match self {
            Listen::Tcp(a) => Listen::Tcp(*a),
            Listen::Unix(l) => Listen::Unix(l.try_clone()?),
        })
    }

    fn describe(&self) -> String {
        match self {
            Listen::Tcp(a) => a.to_string(),
            Listen::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".into()),
        }
    }
}

/// Bind the Unix socket at ListenPort: a stale socket file left by a crash (nobody accepts on
/// it) is replaced, a live one is an error, and anything else at that path is left alone.
fn bind_unix(config: &Config) -> Result<std::os::unix::net::UnixListener, StartError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = config.listen_port.trim().to_owned();
    let err = |source| StartError::UnixBind {
        path: path.clone(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(&path) {
        if !meta.file_type().is_socket() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )));
        }
        match std::os::unix::net::UnixStream::connect(&path) {
            Ok(_) => return Err(StartError::UnixInUse { path }),
            Err(_) => {
                tracing::warn!(path = %path, "replacing a stale Unix socket left by an earlier run");
                std::fs::remove_file(&path).map_err(err)?;
            }
        }
    }
    let listener = std::os::unix::net::UnixListener::bind(&path).map_err(err)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(config.unix_socket_mode)).map_err(err)?;
    Ok(listener)
}

/// Block until a stop signal, then stop accepting and wait for requests in flight, for up to
/// GracefulShutdownTimeout or until a second signal.
fn drain_on_signal(shared: &Shared) {
    let set = shutdown::signal_set();
    let signal = loop {
        match shutdown::wait_signal(&set, Duration::from_secs(3600)) {
            Some(libc::SIGHUP) => crate::logging::reopen(),
            Some(sig) => break sig,
            None => {}
        }
    };
    let timeout = Duration::from_secs(shared.config.graceful_shutdown_timeout);
    tracing::info!(
        signal,
        in_flight = shared.shutdown.in_flight(),
        timeout_s = timeout.as_secs(),
        "stopping: no new connections, waiting for requests in flight"
    );
    shared.shutdown.trigger();
    let deadline = Instant::now() + timeout;
    loop {
        let in_flight = shared.shutdown.in_flight();
        if in_flight == 0 {
            tracing::info!("stopped: every request in flight finished");
            break;
        }
        if Instant::now() >= deadline {
            tracing::warn!(in_flight, "stopped: GracefulShutdownTimeout reached, aborting the rest");
            break;
        }
        match shutdown::wait_signal(&set, Duration::from_millis(20)) {
            Some(libc::SIGHUP) => crate::logging::reopen(),
            Some(sig) => {
                tracing::warn!(signal = sig, in_flight, "stopped at once on a second signal");
                break;
            }
            None => {}
        }
    }
    // Unnamed temporaries vanish with the process; named ones (the fallback) are removed here.
    shared.store.remove_own_temporaries();
}

/// Every connection and cached file is an fd: lift the soft limit to the hard one, as
/// nginx's worker_rlimit_nofile would, instead of failing accepts at 1024.
/// Raise the soft fd limit to the hard one; returns the limit in force.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    tracing::debug!(open_files = lim.rlim_cur, "fd limit");
    lim.rlim_cur
}

/// A worker's runtime. The ring is asked for cooperative task running (Linux 5.19+): a
/// completion's task work then waits for our next system call instead of interrupting the
/// worker with an IPI. Under a 64-connection GET load this cut the server's CPU per request
/// by 14 % (wakeups are costly on a VM). A kernel that refuses the flag gets a plain ring.
fn build_runtime() -> std::io::Result<
    monoio::FusionRuntime<
        monoio::time::TimeDriver<monoio::IoUringDriver>,
        monoio::time::TimeDriver<monoio::LegacyDriver>,
    >,
> {
    let build = |ring: io_uring::Builder| {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new()
            .with_entries(1024)
            .uring_builder(ring)
            .enable_timer()
            .build()
    };
    let mut coop = io_uring::IoUring::builder();
    coop.setup_coop_taskrun().setup_taskrun_flag();
    build(coop).or_else(|e| {
        tracing::debug!(error = %e, "io_uring without COOP_TASKRUN");
        build(io_uring::IoUring::builder())
    })
}

fn worker(id: usize, shared: Arc<Shared>, listen: Listen, ready: mpsc::Sender<Result<&'static str, StartError>>) {
    let runtime = build_runtime();
    let mut runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StartError::Worker(format!("runtime: {e}"))));
            return;
        }
    };
    runtime.block_on(async move {
        let driver = if monoio::utils::is_legacy() {
            "epoll"
        } else {
            "io_uring"
        };
        let listener = match listen {
            Listen::Tcp(addr) => {
                let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
                TcpListener::bind_with_config(addr, &opts)
                    .map(Listener::Tcp)
                    .map_err(|source| StartError::Bind { addr, source })
            }
            Listen::Unix(l) => {
                let path = l
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                    .unwrap_or_default();
                let _ = l.set_nonblocking(true);
                UnixListener::from_std(l)
                    .map(Listener::Unix)
                    .map_err(|source| StartError::UnixBind { path, source })
            }
        };
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(driver));
        drop(ready);
        tracing::debug!(worker = id, driver, "worker accepting");
        if !shared.file_cache.ttl.is_zero() {
            let cache = shared.file_cache;
            monoio::spawn(async move {
                loop {
                    monoio::time::sleep(cache.ttl).await;
                    cache.sweep();
                }
            });
        }
        loop {
            let accepted = monoio::select! {
                r = listener.accept() => Some(r),
                _ = shared.shutdown.requested(id) => None,
            };
            let Some(accepted) = accepted else { break };
            let shared = shared.clone();
            match accepted {
                Ok(Accepted::Tcp(stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(async move { serve_conn(&shared, id, stream, &peer, Some(peer.ip())).await });
                }
                Ok(Accepted::Unix(stream)) => {
                    monoio::spawn(async move { serve_conn(&shared, id, stream, &"unix", None).await });
                }
                Err(e) => {
                    // EMFILE/ENFILE: back off instead of spinning on the accept queue.
                    tracing::warn!(error = %e, "accept failed");
                    monoio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
        // Closing the listener refuses new connections; the connections already open keep
        // being served by this runtime until the process exits.
        drop(listener);
        std::future::pending::<()>().await;
    });
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

enum Accepted {
    Tcp(monoio::net::TcpStream, SocketAddr),
    Unix(monoio::net::UnixStream),
}

impl Listener {
    async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}

/// Serve requests on one connection until it closes, in order (pipelining included).
/// `peer` is what the logs call the client (its address, or "unix"); `ip` is what the per-IP
/// limits count (None on a Unix socket, where the proxy in front does that job).
pub async fn serve_conn<S: Socket>(
    shared: &Shared,
    worker: usize,
    stream: S,
    peer: &dyn std::fmt::Display,
    ip: Option<IpAddr>,
) {
    let mut conn = Conn::new(shared, stream, ip.map(ClientKey::of));
    // With MetricsEnabled off nothing is counted at all (the "off" of the metrics benchmark).
    let shard = shared.config.metrics_enabled.then(|| shared.metrics.shard(worker));
    let Some(_open) = shared.connections.open() else {
        let e = Error::Unavailable(format!("MaxConnections ({}) reached", shared.config.max_connections));
        tracing::warn!(%peer, status = e.status(), error = %e, "connection refused");
        error_response(&mut conn.wbuf, &e, true, false, false);
        // Briefly: this connection is not counted against the cap, so it must not stay long.
        conn.linger_close(Duration::from_secs(1)).await;
        return;
    };
    let _counted = shard.map(|shard| {
        shard.connection_opened();
        ConnectionCounted(shard)
    });
    loop {
        if shared.shutdown.is_requested() {
            return;
        }
        let head = match conn.read_head().await {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(%peer, status = e.status(), error = %e, "bad request head");
                if let Some(shard) = shard {
                    shard.request_started(false);
                    shard.request_done(Method::Other, e.status(), Duration::ZERO, 0, None, Some(e.reason()));
                }
                error_response(&mut conn.wbuf, &e, true, false, false);
                conn.linger_close(LINGER_TIME).await;
                return;
            }
        };
        let in_flight = shared.shutdown.request(worker);
        let started = Instant::now();
        if let Some(shard) = shard {
            shard.request_started(matches!(head.method, Method::Put | Method::Post | Method::Patch));
        }
        let result = match admit(shared, ip, &head) {
            Ok(upload_slot) => {
                let result = dispatch(&mut conn, &head).await;
                drop(upload_slot);
                result
            }
            Err(e) => Err(e),
        };
        let path = log_path(&head);
        let took = started.elapsed();
        let us = took.as_micros() as u64;
        if let Some(shard) = shard {
            match &result {
                Ok(o) => shard.request_done(head.method, o.status, took, o.bytes, o.published, None),
                Err(e) => shard.request_done(head.method, e.status(), took, 0, None, Some(e.reason())),
            }
        }
        let line = |status, bytes, error| access::Line {
            peer,
            method: &head.method_name,
            path,
            status,
            bytes,
            us,
            error,
        };
        let close = match result {
            Ok(o) => {
                access::record(&line(o.status, o.bytes, None));
                conn.closing(&head)
            }
            Err(e) => {
                let status = e.status();
                access::record(&line(status, 0, Some(&e)));
                if !conn.can_answer() {
                    // A response body was under way, or the client stopped taking bytes.
                    return;
                }
                // A refused upload may leave its body unread on the wire: close rather than parse it.
                let close = conn.closing(&head) || e.must_close() || head.body != Body::None;
                let tus = crate::tus::is_tus(&head);
                error_response(&mut conn.wbuf, &e, close, head.method == Method::Head, tus);
                close
            }
        };
        if close || shared.shutdown.is_requested() {
            let _ = conn.flush().await;
            drop(in_flight); // answered: the drain need not wait for the linger
            conn.linger_close(LINGER_TIME).await;
            return;
        }
        if conn.flush_if_idle().await.is_err() {
            return;
        }
    }
}

/// Counts a connection out of `hmac_active_connections_total` however serving ends.
struct ConnectionCounted<'a>(&'a crate::metrics::Shard);

impl Drop for ConnectionCounted<'_> {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// The per-IP limits, when switched on: a request token, and for an upload an upload slot held
/// until the upload ends.
fn admit<'a>(
    shared: &'a Shared,
    ip: Option<IpAddr>,
    head: &Head,
) -> Result<Option<crate::throttle::UploadGuard<'a>>, Error> {
    let Some(ip) = ip.filter(|_| shared.per_ip.enabled()) else {
        return Ok(None);
    };
    let refused = |r: crate::throttle::Refused| Error::TooManyRequests {
        why: r.why,
        retry_after: r.retry_after,
    };
    shared.per_ip.admit_request(ip).map_err(refused)?;
    // Every request that writes an upload body: PUT, and tus creations and PATCHes (also when
    // a PATCH comes as POST with X-HTTP-Method-Override).
    if matches!(tus::method(head), Method::Put | Method::Post | Method::Patch) {
        return shared.per_ip.begin_upload(ip).map(Some).map_err(refused);
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

async fn dispatch<S: Socket>(conn: &mut Conn<'_, S>, head: &Head) -> Result<Outcome, Error> {
    let shared = conn.shared;
    let method = tus::method(head);
    if shared.config.resumable_uploads {
        if let Some(id) = tus::resource_id(&shared.prefix, &head.target) {
            return tus::resource(conn, head, method, id).await;
        }
    }
    match method {
        Method::Put => upload::put(conn, head).await,
        Method::Get | Method::Head => download::get(conn, head).await,
        // A POST that does not speak tus is one of DESIGN.md's "other methods".
        Method::Post if tus::speaks_tus(head) => tus::create(conn, head).await,
        Method::Options => {
            let close = conn.closing(head);
            tus::options(shared, head, &mut conn.wbuf, close);
            Ok(Outcome::status(204))
        }
        Method::Post | Method::Patch | Method::Delete | Method::Other => Err(Error::MethodNotAllowed),
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
    if tus || status == 412 {
        extra.push(("Tus-Resumable", tus::VERSION));
        if status == 412 {
            extra.push(("Tus-Version", tus::VERSION));
        }
    }
    let body = format!("{} {}\n", status, response::reason(status));
    response::simple(out, status, &extra, &body, close);
    if head_only {
        // HEAD gets the same head as GET would, without the body.
        out.truncate(out.len() - body.len());
    }
}
