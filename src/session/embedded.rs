//! The embedded session store: sessions in memory, made durable by an append-only journal
//! (one JSON record per line, fdatasync before a change is reported done). At open the journal
//! is replayed and rewritten compactly; a torn last line (a write that never returned) is
//! dropped. Locks live in memory only: they die with the process, as the requests holding
//! them do.
//!
//! One process at a time: an exclusive flock on a lock file beside the journal. No file stays
//! open for writing between changes (the journal is opened per append), so StoreDir's
//! filesystem can still be remounted read-only under a running server.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Owner, Session, SessionStore, StoreError, StoreResult};

const BACKEND: &str = "embedded";
const JOURNAL: &str = "journal";

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Record {
    Put(Session),
    Offset { id: String, offset: u64, expires: u64 },
    Del { id: String },
}

pub struct Embedded {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    dir: PathBuf,
    /// Lines in the journal, to know when a rewrite pays.
    lines: usize,
    sessions: HashMap<String, Session>,
    /// Path → id of the newest session targeting it.
    by_path: HashMap<String, String>,
    /// id → (owner, lease end).
    locks: HashMap<String, (Owner, Instant)>,
    _flock: crate::node::Hold,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the session journal in {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("the embedded session store in {dir} is in use by another process")]
    InUse { dir: PathBuf },
}

impl Embedded {
    /// Open (creating) the store in `dir`, replay and compact its journal.
    pub fn open(dir: &Path) -> Result<Embedded, OpenError> {
        let io_err = |source| OpenError::Io {
            dir: dir.to_owned(),
            source,
        };
        // Upload ids in the journal are write capabilities: owner only.
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        // Also where an earlier version created it more open.
        fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700)).map_err(io_err)?;
        // A predecessor killed a moment ago may still be going away: give it a little time.
        let flock = crate::node::hold_exclusive(&dir.join("lock"), Duration::from_secs(2))
            .map_err(io_err)?
            .ok_or_else(|| OpenError::InUse { dir: dir.to_owned() })?;
        let sessions = replay(&dir.join(JOURNAL)).map_err(io_err)?;
        rewrite(dir, &sessions).map_err(io_err)?;
        let mut by_path = HashMap::new();
        for s in sessions.values() {
            by_path.insert(s.path.clone(), s.id.clone());
        }
        tracing::info!(sessions = sessions.len(), dir = %dir.display(), "embedded session store opened");
        Ok(Embedded {
            inner: Arc::new(Mutex::new(Inner {
                dir: dir.to_owned(),
                lines: sessions.len(),
                sessions,
                by_path,
                locks: HashMap::new(),
                _flock: flock,
            })),
        })
    }

    /// Run a journal write off the side thread's event loop: fdatasync blocks.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&inner)))
            .await
            .map_err(|e| unavailable(io::Error::other(e.to_string())))?
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    crate::sync::lock(inner)
}

fn unavailable(e: io::Error) -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        reason: e.to_string(),
    }
}

/// Read every session the journal describes. A line that does not parse ends the replay if
/// it is the last (a torn append whose sync never returned, so never acknowledged); in the
/// middle it is reported and skipped.
fn replay(path: &Path) -> io::Result<HashMap<String, Session>> {
    let mut sessions = HashMap::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(sessions),
        Err(e) => return Err(e),
    };
    let lines: Vec<Vec<u8>> = BufReader::new(file).split(b'\n').collect::<io::Result<_>>()?;
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => apply(&mut sessions, r),
            Err(e) if i == last => {
                tracing::warn!(error = %e, "session journal: dropping a torn last record");
            }
            Err(e) => tracing::error!(line = i + 1, error = %e, "session journal: skipping a corrupt record"),
        }
    }
    Ok(sessions)
}

fn apply(sessions: &mut HashMap<String, Session>, r: Record) {
    match r {
        Record::Put(s) => {
            sessions.insert(s.id.clone(), s);
        }
        Record::Offset { id, offset, expires } => {
            if let Some(s) = sessions.get_mut(&id) {
                s.offset = offset;
                s.expires = expires;
            }
        }
        Record::Del { id } => {
            sessions.remove(&id);
        }
    }
}

/// Write the live sessions to a fresh journal and put it in place atomically.
fn rewrite(dir: &Path, sessions: &HashMap<String, Session>) -> io::Result<()> {
    let tmp = dir.join("journal.new");
    let mut out = Vec::new();
    for s in sessions.values() {
        serde_json::to_writer(&mut out, &Record::Put(s.clone())).map_err(io::Error::other)?;
        out.push(b'\n');
    }
    let mut f = private_file(&tmp)?;
    f.write_all(&out)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(JOURNAL))?;
    File::open(dir)?.sync_all()
}

/// Create (truncating) a file only the server's user can read.
fn private_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

impl Inner {
    /// Append `r` durably, then apply it.
    fn write(&mut self, r: Record) -> StoreResult<()> {
        let mut line = serde_json::to_vec(&r).map_err(|e| unavailable(io::Error::other(e)))?;
        line.push(b'\n');
        let mut journal = OpenOptions::new()
            .append(true)
            .open(self.dir.join(JOURNAL))
            .map_err(unavailable)?;
        let before = journal.metadata().map_err(unavailable)?.len();
        if let Err(e) = journal.write_all(&line).and_then(|()| journal.sync_data()) {
            // A torn line must not swallow the next record appended after it.
            let _ = journal.set_len(before);
            return Err(unavailable(e));
        }
        self.lines += 1;
        match &r {
            Record::Put(s) => {
                self.by_path.insert(s.path.clone(), s.id.clone());
            }
            Record::Del { id } => {
                if let Some(s) = self.sessions.get(id) {
                    if self.by_path.get(&s.path) == Some(id) {
                        self.by_path.remove(&s.path);
                    }
                }
                self.locks.remove(id);
            }
            Record::Offset { .. } => {}
        }
        apply(&mut self.sessions, r);
        if self.lines > 1024 + 4 * self.sessions.len() {
            match rewrite(&self.dir, &self.sessions) {
                Ok(()) => self.lines = self.sessions.len(),
                Err(e) => tracing::warn!(error = %e, "session journal: compaction failed, appending on"),
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl SessionStore for Embedded {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, session: &Session, now: u64) -> StoreResult<()> {
        let session = session.clone();
        self.blocking(move |inner| {
            let busy = inner
                .by_path
                .get(&session.path)
                .and_then(|id| inner.sessions.get(id))
                .is_some_and(|s| !s.expired(now) && !s.complete());
            if busy {
                return Err(StoreError::PathBusy);
            }
            inner.write(Record::Put(session))
        })
        .await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        Ok(lock(&self.inner).sessions.get(id).cloned())
    }

    async fn lock(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        if let Some((holder, until)) = inner.locks.get(id) {
            if holder != owner && *until > now && !owner.supersedes(holder) {
                return Ok(false);
            }
        }
        inner.locks.insert(id.to_owned(), (owner.clone(), now + lease));
        Ok(true)
    }

    async fn renew(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let mut inner = lock(&self.inner);
        let now = Instant::now();
        match inner.locks.get_mut(id) {
            Some((holder, until)) if holder == owner => {
                *until = now + lease;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn unlock(&self, id: &str, owner: &Owner) -> StoreResult<()> {
        let mut inner = lock(&self.inner);
        if inner.locks.get(id).is_some_and(|(holder, _)| holder == owner) {
            inner.locks.remove(id);
        }
        Ok(())
    }

    async fn advance(&self, id: &str, from: u64, to: u64, expires: u64) -> StoreResult<bool> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            if inner.sessions.get(&id).map(|s| s.offset) != Some(from) {
                return Ok(false);
            }
            inner.write(Record::Offset {
                id,
                offset: to,
                expires,
            })?;
            Ok(true)
        })
        .await
    }

    async fn remove(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            if !inner.sessions.contains_key(&id) {
                return Ok(());
            }
            inner.write(Record::Del { id })
        })
        .await
    }

    async fn expired(&self, now: u64) -> StoreResult<Vec<Session>> {
        let inner = lock(&self.inner);
        Ok(inner.sessions.values().filter(|s| s.expired(now)).cloned().collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        let inner = lock(&self.inner);
        // The journal's file must still be there to append to (StoreDir not deleted or unmounted).
        fs::metadata(inner.dir.join(JOURNAL)).map(|_| ()).map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, path: &str, offset: u64) -> Session {
        Session {
            id: id.into(),
            path: path.into(),
            length: 100,
            offset,
            content_type: "text/plain".into(),
            metadata: String::new(),
            expires: 1000,
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn survives_reopen_and_compacts() {
        let d = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let s = Embedded::open(d.path()).unwrap();
            s.create(&session("a", "p/a", 0), 10).await.unwrap();
            s.create(&session("b", "p/b", 0), 10).await.unwrap();
            assert!(s.advance("a", 0, 40, 2000).await.unwrap());
            assert!(
                !s.advance("a", 0, 50, 2000).await.unwrap(),
                "stale `from` must not move it"
            );
            s.remove("b").await.unwrap();
            drop(s);
            let s = Embedded::open(d.path()).unwrap();
            let a = s.get("a").await.unwrap().unwrap();
            assert_eq!((a.offset, a.expires), (40, 2000));
            assert!(s.get("b").await.unwrap().is_none());
            let text = fs::read_to_string(d.path().join(JOURNAL)).unwrap();
            assert_eq!(text.lines().count(), 1, "compacted to the live session: {text}");
        });
    }

    #[test]
    fn torn_last_line_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let s = Embedded::open(d.path()).unwrap();
            s.create(&session("a", "p/a", 0), 10).await.unwrap();
            drop(s);
            let mut f = OpenOptions::new().append(true).open(d.path().join(JOURNAL)).unwrap();
            f.write_all(br#"{"op":"offset","id":"a","off"#).unwrap();
            let s = Embedded::open(d.path()).unwrap();
            assert_eq!(s.get("a").await.unwrap().unwrap().offset, 0);
        });
    }

    #[test]
    fn one_live_session_per_path_and_locks() {
        let d = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let s = Embedded::open(d.path()).unwrap();
            s.create(&session("a", "p", 0), 10).await.unwrap();
            assert!(matches!(
                s.create(&session("b", "p", 0), 10).await,
                Err(StoreError::PathBusy)
            ));
            // Once the first has expired, the path is free again.
            s.create(&session("b", "p", 0), 1000).await.unwrap();
            super::super::conformance::locks(&s, "b").await;
            assert_eq!(s.expired(1001).await.unwrap().len(), 2);
        });
    }

    #[test]
    fn second_process_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let _s = Embedded::open(d.path()).unwrap();
        // flock is per open file description: a second open in this process stands in for a
        // second process.
        assert!(matches!(Embedded::open(d.path()), Err(OpenError::InUse { .. })));
    }
}
