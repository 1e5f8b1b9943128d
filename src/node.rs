//! This process among the servers that share a session store and a StoreDir: its name (the
//! host name, then `:NodeId` when set) and its generation (when it started). Locks name their
//! owner by both, so a restarted node can take over its own dead process's locks at once;
//! that is safe only while one process at a time runs as a node, which `claim` enforces on
//! the StoreDir the nodes share.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

/// An exclusive hold on a file, released when the process dies (however it dies).
pub type Hold = Flock<File>;

/// This machine's host name as its letters, digits and `-` (anything else, `.` too, is
/// dropped): safe in file names, as the `host.` prefix of temporaries, and in the stores'
/// `node|generation|token` owners.
pub fn host_name() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    if host.is_empty() {
        "host".into()
    } else {
        host
    }
}

/// Hold `path` (created 0600 if missing) exclusively, waiting up to `wait` for a predecessor
/// killed a moment ago to go away. None: another live process holds it.
pub fn hold_exclusive(path: &Path, wait: Duration) -> io::Result<Option<Hold>> {
    if !path.exists() {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
    }
    // Held open read-only: a file open for writing would keep the filesystem from being
    // remounted read-only (the store answers 503 then, and recovers).
    let mut file = File::open(path)?;
    let deadline = Instant::now() + wait;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(hold) => return Ok(Some(hold)),
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(_) => return Ok(None),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    /// Unix milliseconds at start.
    pub generation: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("another running process is node {name} on this StoreDir: give each server its own NodeId")]
    Taken { name: String },
    #[error("cannot claim node {name} in {dir}: {source}")]
    Io {
        name: String,
        dir: String,
        source: io::Error,
    },
}

impl Node {
    pub fn this(node_id: &str) -> Node {
        let host = host_name();
        let name = if node_id.is_empty() {
            host
        } else {
            format!("{host}:{node_id}")
        };
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Node { name, generation }
    }

    /// Hold this node's name in `dir` (the shared StoreDir's reserved directory) for as long as
    /// the process lives: a second live process with the same name would take over the first
    /// one's write locks as if it had died.
    pub fn claim(&self, dir: &Path) -> Result<Hold, ClaimError> {
        let io_err = |source| ClaimError::Io {
            name: self.name.clone(),
            dir: dir.display().to_string(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        // A node name holds letters, digits, '-', ':' and the NodeId's '_' and '.'.
        let file = dir.join(format!("{}.lock", self.name.replace(':', "@")));
        hold_exclusive(&file, Duration::from_secs(2))
            .map_err(io_err)?
            .ok_or_else(|| ClaimError::Taken {
                name: self.name.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_claims() {
        let node = Node::this("b");
        assert!(node.name.ends_with(":b"));
        assert!(node
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'));
        let dir = tempfile::tempdir().unwrap();
        let held = node.claim(dir.path()).expect("a free name is claimed");
        // flock is per open file description: a second claim in this process stands in for a
        // second process.
        assert!(matches!(
            Node::this("b").claim(dir.path()),
            Err(ClaimError::Taken { .. })
        ));
        assert!(Node::this("c").claim(dir.path()).is_ok(), "another NodeId");
        drop(held);
        assert!(node.claim(dir.path()).is_ok(), "released with its holder");
    }
}
