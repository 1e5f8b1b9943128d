//! The process's life: bind the listeners, start the side thread (`side`) and one worker
//! thread per core (`worker`), serve until a stop signal, drain (`drain`). A request never
//! crosses threads: the kernel spreads connections over the workers' SO_REUSEPORT listeners
//! (`listen`), and each worker serves its connections start to end (`connection`).

pub mod drain;
mod listen;
mod side;
mod worker;
pub use worker::io_driver;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};

use crate::app::App;
use crate::config::Config;
use crate::retention::Catalog;
use crate::storage::Store;
use listen::Listen;

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
    #[error("{0}")]
    Retention(String),
}

/// Start everything, serve until SIGINT/SIGTERM, drain, and return (the caller exits).
/// The caller must have blocked `drain::signal_set()` before starting any thread.
pub fn run(config: Config, store: Store) -> Result<(), StartError> {
    let listen = Listen::bind(&config)?;
    let fds = drain::raise_fd_limit();
    // Each connection may hold a socket, a temporary and a cached download.
    if config.max_connections as u64 > fds / 2 {
        tracing::warn!(
            max_connections = config.max_connections,
            open_files = fds,
            "MaxConnections is above half the open-file limit: under load, accepts may fail with EMFILE \
             before the cap answers 503; raise LimitNOFILE or lower MaxConnections"
        );
    }
    let side_runtime = side::runtime()?;
    let sessions = match config.resumable_uploads {
        true => side::open_sessions(&config, &store, &side_runtime)?,
        false => None,
    };
    let store = Arc::new(store);
    let metrics = Arc::new(crate::metrics::Metrics::new(config.worker_count()));
    let node = crate::node::Node::this(&config.node_id);
    let retention = Catalog::start(
        store.clone(),
        metrics.clone(),
        crate::retention::Settings::of(&config, &node.name),
    )
    .map_err(|e| StartError::Retention(e.to_string()))?;
    let app = Arc::new(App::new(config, store, sessions, metrics, retention));
    let _side = side::start(app.clone(), side_runtime)?;
    let workers = app.config.worker_count();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<&'static str, StartError>>();
    let mut handles = Vec::new();
    for id in 0..workers {
        let app = app.clone();
        let ready = ready_tx.clone();
        let listen = listen.try_clone().map_err(|e| StartError::Worker(e.to_string()))?;
        let handle = std::thread::Builder::new()
            .name(format!("worker-{id}"))
            .spawn(move || worker::run(id, app, listen, ready))
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
    app.metrics.set_driver(driver);
    let addr = listen.describe();
    tracing::info!(%addr, workers, driver, store = %app.store.root_path().display(), prefix = %app.prefix, "listening");
    drop(handles); // workers run until the process exits
    drain::on_signal(&app);
    app.retention.stop();
    if let Listen::Unix(_) = listen {
        let _ = std::fs::remove_file(&app.config.listen_port);
    }
    Ok(())
}
