//! The side thread: one tokio runtime for everything off the hot path. It runs the session
//! stores of resumable uploads (workers hand it their calls), the expiry sweeper and the
//! store probe, and the operator's port (`ops`) when `MetricsEnabled`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::StartError;
use crate::app::App;
use crate::config::Config;
use crate::handlers::tus;
use crate::session::embedded::{Embedded, OpenError};
use crate::session::{self, Node, Sessions};
use crate::storage::Store;

/// The side thread's runtime, built before the workers so the session store can be opened
/// on it and handed to them.
pub fn runtime() -> Result<tokio::runtime::Runtime, StartError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .thread_name("side")
        .build()
        .map_err(|e| StartError::Worker(format!("side runtime: {e}")))
}

/// Open the session store of resumable uploads. One that another process holds leaves
/// resumable uploads answering 503 on this node (plain uploads are unaffected); one that
/// cannot be read stops the start.
pub fn open_sessions(
    config: &Config,
    store: &Store,
    side: &tokio::runtime::Runtime,
) -> Result<Option<Sessions>, StartError> {
    let handle = side.handle().clone();
    let node = Node::this(&config.node_id);
    if let Some(shared) = side
        .block_on(session::open_shared(config))
        .map_err(StartError::Sessions)?
    {
        // The nodes share StoreDir: no second live process may run under this node's name.
        let claim = node
            .claim(&store.root_path().join(crate::path::RESERVED_DIR).join("nodes"))
            .map_err(|e| StartError::Sessions(e.to_string()))?;
        tracing::info!(backend = shared.backend(), node = %node.name, generation = node.generation, "session store");
        return Ok(Some(Sessions::new(handle, shared, node).holding(claim)));
    }
    let dir = store.root_path().join(crate::path::RESERVED_DIR).join("sessions");
    match Embedded::open(&dir) {
        Ok(embedded) => Ok(Some(Sessions::new(handle, Arc::new(embedded), node))),
        Err(e @ OpenError::InUse { .. }) => {
            tracing::error!(error = %e, "resumable uploads are unavailable on this node (503): give each server its own StoreDir or a shared session store");
            Ok(None)
        }
        Err(e) => Err(StartError::Sessions(e.to_string())),
    }
}

/// Start the side thread on `runtime`: the sweeper, and the operator's port when
/// `MetricsEnabled` (bound now, so a taken port fails the start, naming the key).
pub fn start(app: Arc<App>, runtime: tokio::runtime::Runtime) -> Result<std::thread::JoinHandle<()>, StartError> {
    let listener = if app.config.metrics_enabled {
        let addr = app
            .config
            .metrics_addr()
            .map_err(|e| StartError::Worker(e.to_string()))?;
        let listener = std::net::TcpListener::bind(addr).map_err(|source| StartError::MetricsBind { addr, source })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| StartError::Worker(format!("metrics listener: {e}")))?;
        Some((addr, listener))
    } else {
        None
    };
    let started = Instant::now();
    let control = match crate::retention::control::bind(&app.retention.socket) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::error!(socket = %app.retention.socket.display(), error = %e, "the files command cannot reach this server (its control socket failed)");
            None
        }
    };
    std::thread::Builder::new()
        .name("side".into())
        .spawn(move || {
            runtime.block_on(async move {
                if let Some(control) = control {
                    let answering = app.clone();
                    tokio::spawn(async move { answer_files_commands(answering, control).await });
                }
                if let Some(sessions) = app.sessions.clone() {
                    let (probing, probed) = (app.clone(), sessions.clone());
                    tokio::spawn(async move { probe_forever(&probing, &probed).await });
                    let sweeping = app.clone();
                    tokio::spawn(async move { sweep_forever(&sweeping, &sessions).await });
                }
                match listener {
                    Some((addr, listener)) => crate::ops::serve_port(app, addr, listener, started).await,
                    None => std::future::pending().await,
                }
            })
        })
        .map_err(|e| StartError::Worker(e.to_string()))
}

/// Answer the `files` command on the control socket, one task per connection.
async fn answer_files_commands(app: Arc<App>, listener: std::os::unix::net::UnixListener) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!(error = %e, "the files command's control socket failed"),
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let app = app.clone();
                tokio::spawn(async move {
                    if let Err(e) = crate::retention::control::answer(&app.retention, stream).await {
                        tracing::warn!(error = %e, "files command: request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "files command: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The session store is asked every `PROBE_EVERY` whether it answers: for `/ready`, the metrics
/// and the log, and, after a failover, to bring the primary back (new sessions go to it again
/// within a probe of its return).
const PROBE_EVERY: Duration = Duration::from_secs(2);

async fn probe_forever(app: &App, sessions: &Sessions) {
    let mut was_up = true;
    loop {
        let ping = sessions.store().ping().await;
        let backend = sessions.backend();
        // Transitions only: a store that stays down is not worth a line per round.
        match &ping {
            Err(e) if was_up => {
                tracing::error!(backend, error = %e, "session store stopped answering; resumable uploads get 503 until it does")
            }
            Ok(()) if !was_up => tracing::info!(backend, "session store answers again"),
            _ => {}
        }
        was_up = ping.is_ok();
        app.metrics.set_session_store(backend, was_up);
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Expired resumable uploads go away within a tenth of ResumableExpiration (at most a minute).
async fn sweep_forever(app: &App, sessions: &Sessions) {
    let every = Duration::from_secs((app.config.resumable_expiration / 10).clamp(1, 60));
    loop {
        tus::sweep(app, sessions).await;
        tokio::time::sleep(every).await;
    }
}
