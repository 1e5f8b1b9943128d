//! The `files` command's requests (docs/operations.md, "The files command"): answered by the
//! running server over a Unix socket beside its index (owner only), or, when no server runs,
//! by the command itself on the same index. Either way one `execute` does the work, so a file
//! removed through a running server stops being served at once and its quotas follow.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::catalog::Catalog;
use super::index::{Entry, Filter};
use super::thread::Why;
use super::totals::Usage;
use crate::path::StorePath;
use crate::storage::Removed;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Stats,
    List {
        filter: Filter,
        after: Option<(u64, String)>,
        limit: usize,
    },
    Rm {
        paths: Vec<String>,
    },
    Purge {
        filter: Filter,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    Stats {
        total: Usage,
        users: Vec<(String, Usage)>,
    },
    Files(Vec<Entry>),
    /// Per path asked for: the bytes deleted, or None if there was no such file.
    Removed(Vec<(String, Option<u64>)>),
    Purged {
        files: u64,
        bytes: u64,
    },
    Error(String),
}

/// Carry out `req` on `catalog`.
pub async fn execute(catalog: &Catalog, req: Request) -> Reply {
    match req {
        Request::Stats => {
            let (total, users) = catalog.stats();
            Reply::Stats { total, users }
        }
        Request::List { filter, after, limit } => match catalog.list(filter, after, limit.min(10_000)).await {
            Ok(files) => Reply::Files(files),
            Err(e) => Reply::Error(e.to_string()),
        },
        Request::Rm { paths } => {
            let mut out = Vec::with_capacity(paths.len());
            for p in paths {
                let path = match StorePath::from_stored(&p) {
                    Ok(path) => path,
                    Err(e) => return Reply::Error(format!("{p:?}: {e}")),
                };
                match catalog.delete(path, Why::Admin).await {
                    Ok(Removed::File(n)) => out.push((p, Some(n))),
                    Ok(Removed::Nothing) => out.push((p, None)),
                    Err(e) => return Reply::Error(format!("{p:?}: {e}")),
                }
            }
            Reply::Removed(out)
        }
        Request::Purge { filter } => match catalog.purge(filter).await {
            Ok((files, bytes)) => Reply::Purged { files, bytes },
            Err(e) => Reply::Error(e.to_string()),
        },
    }
}

/// Longest request line accepted on the socket.
const MAX_REQUEST: u64 = 1 << 20;

/// The socket the `files` command reaches this server on, owner only (non-blocking, for the
/// side runtime).
pub fn bind(socket: &Path) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    // This process holds the index: a socket file left here is a dead predecessor's.
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Answer one request of the `files` command.
pub async fn answer(catalog: &Catalog, stream: tokio::net::UnixStream) -> io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    tokio::io::BufReader::new(read.take(MAX_REQUEST))
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => {
            tracing::info!(request = %crate::logging::Escaped(line.trim_end()), "files command");
            execute(catalog, req).await
        }
        Err(e) => Reply::Error(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    out.push(b'\n');
    write.write_all(&out).await
}

/// Ask the server listening on `socket`; None when none listens there.
pub fn call(socket: &Path, req: &Request) -> io::Result<Option<Reply>> {
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Purging many files takes a while; a server that does not answer at all is gone.
    stream.set_read_timeout(Some(Duration::from_secs(600)))?;
    let mut line = serde_json::to_vec(req).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    serde_json::from_str(&answer).map(Some).map_err(io::Error::other)
}
