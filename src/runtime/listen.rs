//! Where the workers accept: a TCP address each worker binds with SO_REUSEPORT (the kernel
//! spreads connections), or one Unix socket bound here whose fd every worker shares.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use monoio::net::{ListenerOpts, TcpListener, UnixListener};

use super::StartError;
use crate::config::Config;

pub enum Listen {
    Tcp(SocketAddr),
    Unix(std::os::unix::net::UnixListener),
}

impl Listen {
    /// From `ListenPort` (and `UnixSocket`): an address in use, or a live Unix socket at the
    /// path, fails the start.
    pub fn bind(config: &Config) -> Result<Listen, StartError> {
        if config.unix_socket {
            return bind_unix(config).map(Listen::Unix);
        }
        let addr = config.listen_addr().map_err(|e| StartError::Worker(e.to_string()))?;
        // SO_REUSEPORT would let us silently share the port with another running server;
        // a plain bind first makes "address in use" an error, as users expect.
        drop(bind_when_free(addr).map_err(|source| StartError::Bind { addr, source })?);
        Ok(Listen::Tcp(addr))
    }

    pub fn try_clone(&self) -> std::io::Result<Listen> {
        Ok(match self {
            Listen::Tcp(a) => Listen::Tcp(*a),
            Listen::Unix(l) => Listen::Unix(l.try_clone()?),
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Listen::Tcp(a) => a.to_string(),
            Listen::Unix(l) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| format!("unix:{}", p.display())))
                .unwrap_or_else(|| "unix".into()),
        }
    }

    /// A worker's own listener on this address (inside its runtime).
    pub fn listener(self) -> Result<Listener, StartError> {
        match self {
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
        }
    }
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

pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

pub enum Accepted {
    Tcp(monoio::net::TcpStream, SocketAddr),
    Unix(monoio::net::UnixStream),
}

impl Listener {
    pub async fn accept(&self) -> std::io::Result<Accepted> {
        match self {
            Listener::Tcp(l) => l.accept().await.map(|(s, peer)| Accepted::Tcp(s, peer)),
            Listener::Unix(l) => l.accept().await.map(|(s, _)| Accepted::Unix(s)),
        }
    }
}
