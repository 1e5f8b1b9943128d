//! The retention thread: the one owner of the index. It records stored files (a batch of them
//! per transaction), deletes files (expired, evicted, requested), answers the `files`
//! command's questions, rebuilds the index by a walk when it must, and otherwise sleeps until
//! the next file falls due: a store of files that expire in a week costs nothing meanwhile.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::catalog::{Reservation, Settings};
use super::index::{Entry, Filter, Index};
use super::scan::Scan;
use super::totals::Totals;
use crate::logging::Escaped;
use crate::metrics::Metrics;
use crate::node::Hold;
use crate::path::StorePath;
use crate::storage::{Removed, Store};
use crate::sync::lock;

/// Why a file is deleted (the metrics' `reason`, `DELETED_BY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Expired = 0,
    Request = 1,
    Evicted = 2,
    Admin = 3,
}

type Reply<T> = oneshot::Sender<io::Result<T>>;

pub enum Op {
    Record {
        entry: Entry,
        reservation: Option<Reservation>,
        reply: Reply<()>,
    },
    Delete {
        path: StorePath,
        why: Why,
        reply: Reply<Removed>,
    },
    Evict {
        uploader: String,
        bytes: u64,
        reply: Reply<u64>,
    },
    List {
        filter: Filter,
        after: Option<(u64, String)>,
        limit: usize,
        reply: Reply<Vec<Entry>>,
    },
    Purge {
        filter: Filter,
        reply: Reply<(u64, u64)>,
    },
    HoldPart {
        id: String,
        reservation: Reservation,
    },
    TakePart {
        id: String,
        reply: oneshot::Sender<Option<Reservation>>,
    },
    ReleasePart {
        id: String,
    },
    Stop(oneshot::Sender<()>),
}

/// Files a sweep deletes before it looks at its queue again.
const SWEEP_BATCH: usize = 256;
/// How long a rebuild may walk before the server starts listening.
const SCAN_AT_START: Duration = Duration::from_millis(200);
/// Files a rebuild reads per step between two looks at the queue.
const SCAN_STEP: usize = 500;

/// What the thread owns. Built by `Catalog::start`; `prepared` before the thread runs.
pub struct State {
    pub index: Index,
    pub store: Arc<Store>,
    pub totals: Arc<Mutex<Totals>>,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Reservations of unfinished resumable uploads, by upload id.
    pub parts: HashMap<String, Reservation>,
    pub scan: Option<Scan>,
    /// When the next file falls due (Unix seconds), as far as the index knows.
    pub next_due: Option<u64>,
    pub hold: Hold,
}

impl State {
    /// Start the rebuild walk if `rebuild` (Some(true) for a new index), and find the next due.
    pub fn prepared(mut self, rebuild: Option<bool>) -> State {
        if let Some(fresh) = rebuild {
            self.begin_scan(fresh);
            // A store walked in a moment (a new install, a small one) is indexed before the
            // server listens, so quotas never answer 503 for it; a big one goes on in the thread.
            let started = std::time::Instant::now();
            while self.scan.is_some() && started.elapsed() < SCAN_AT_START {
                self.scan_step();
            }
        }
        self.next_due = self.index.next_due(self.settings.ttl).unwrap_or(None);
        self
    }

    fn begin_scan(&mut self, fresh: bool) {
        match (self.index.begin_scan(), Scan::new(self.store.root_path())) {
            (Ok(()), Ok(scan)) if fresh => {
                tracing::info!("indexing the files in StoreDir (a new index; quotas wait for it)");
                self.scan = Some(scan);
            }
            (Ok(()), Ok(scan)) => {
                tracing::warn!(
                    "rebuilding the file index from StoreDir after an unclean shutdown (quotas wait for it)"
                );
                self.scan = Some(scan);
            }
            (Err(e), _) => tracing::error!(error = %e, "cannot start rebuilding the file index"),
            (_, Err(e)) => tracing::error!(error = %e, "cannot read StoreDir to rebuild the file index"),
        }
    }

    fn scan_step(&mut self) {
        let Some(scan) = self.scan.as_mut() else { return };
        let found = scan.step(SCAN_STEP);
        if !found.is_empty() {
            let result = self.index.batch(|i| found.iter().try_for_each(|e| i.seen(e)));
            if let Err(e) = result {
                tracing::error!(error = %e, "rebuilding the file index failed");
                self.scan = None;
            }
            for e in &found {
                self.note_due(e);
            }
            return;
        }
        let files = scan.found;
        self.scan = None;
        let done = self.index.finish_scan().and_then(|gone| {
            self.index
                .set_state("scanned", &crate::session::unix_now().to_string())?;
            Ok(gone)
        });
        match done.and_then(|gone| Ok((gone, self.index.usage()?))) {
            Ok((gone, usage)) => {
                let mut t = lock(&self.totals);
                t.stored = Default::default();
                t.users.clear();
                for (uploader, u) in usage {
                    t.stored.files += u.files;
                    t.stored.bytes += u.bytes;
                    t.users.insert(uploader, u);
                }
                t.complete = true;
                publish_gauges(&self.metrics, &t);
                tracing::info!(files, gone, bytes = t.stored.bytes, "file index rebuilt");
            }
            Err(e) => tracing::error!(error = %e, "finishing the rebuilt file index failed"),
        }
        self.next_due = self.index.next_due(self.settings.ttl).unwrap_or(None);
    }

    fn due_of(&self, e: &Entry) -> Option<u64> {
        let by_age = (self.settings.ttl > 0).then(|| e.uploaded.saturating_add(self.settings.ttl));
        match (e.expires, by_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn note_due(&mut self, e: &Entry) {
        if let Some(d) = self.due_of(e) {
            self.next_due = Some(self.next_due.map_or(d, |n| n.min(d)));
        }
    }

    /// Record a batch of stored files in one transaction.
    fn record(&mut self, batch: Vec<(Entry, Option<Reservation>, Reply<()>)>) {
        let entries: Vec<Entry> = batch.iter().map(|(e, _, _)| e.clone()).collect();
        match self.index.upsert(&entries) {
            Ok(replaced) => {
                let mut t = lock(&self.totals);
                for (old, e) in replaced.iter().zip(&entries) {
                    if let Some(old) = old {
                        t.remove(old.uploader.as_deref(), old.size);
                    }
                    t.add(e.uploader.as_deref(), e.size);
                }
                publish_gauges(&self.metrics, &t);
                drop(t);
                for e in &entries {
                    self.note_due(e);
                }
                for (_, reservation, reply) in batch {
                    drop(reservation);
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "recording stored files in the index failed");
                for (_, _, reply) in batch {
                    let _ = reply.send(Err(io::Error::other(e.to_string())));
                }
            }
        }
    }

    /// Delete the file at `path` and its index entry.
    fn delete(&mut self, path: &StorePath, why: Why) -> io::Result<Removed> {
        let removed = self.store.remove_file(path)?;
        let old = self.index.remove(path.as_str()).map_err(io::Error::other)?;
        let mut t = lock(&self.totals);
        if let Some(old) = &old {
            t.remove(old.uploader.as_deref(), old.size);
        }
        publish_gauges(&self.metrics, &t);
        drop(t);
        if let Removed::File(size) = removed {
            self.metrics.retention.deleted[why as usize].fetch_add(1, Ordering::Relaxed);
            tracing::info!(path = %Escaped(path.as_str()), size, reason = crate::metrics::DELETED_BY[why as usize], "file deleted");
        }
        Ok(removed)
    }

    fn delete_entry(&mut self, e: &Entry, why: Why) -> io::Result<Removed> {
        match StorePath::from_stored(&e.path) {
            Ok(p) => self.delete(&p, why),
            // Not a path any upload could have made: only forget it.
            Err(_) => {
                let old = self.index.remove(&e.path).map_err(io::Error::other)?;
                if let Some(old) = old {
                    lock(&self.totals).remove(old.uploader.as_deref(), old.size);
                }
                Ok(Removed::Nothing)
            }
        }
    }

    /// Delete what has fallen due, a batch at a time; whether more is due at once.
    fn sweep(&mut self) -> bool {
        let now = crate::session::unix_now();
        if self.next_due.is_none_or(|d| d > now) {
            return false;
        }
        let due = match self.index.due(now, self.settings.ttl, SWEEP_BATCH) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "reading due files from the index failed");
                self.next_due = Some(now + 60);
                return false;
            }
        };
        let full = due.len() == SWEEP_BATCH;
        for e in &due {
            if let Err(err) = self.delete_entry(e, Why::Expired) {
                tracing::error!(path = %Escaped(&e.path), error = %err, "deleting an expired file failed; retried in a minute");
                self.next_due = Some(now + 60);
                return false;
            }
        }
        self.next_due = self.index.next_due(self.settings.ttl).unwrap_or(None);
        full
    }

    fn evict(&mut self, uploader: &str, bytes: u64) -> io::Result<u64> {
        let mut freed = 0;
        while freed < bytes {
            let oldest = self.index.oldest_of(uploader, 64).map_err(io::Error::other)?;
            if oldest.is_empty() {
                break;
            }
            for e in &oldest {
                if freed >= bytes {
                    break;
                }
                if let Removed::File(n) = self.delete_entry(e, Why::Evicted)? {
                    freed += n;
                } else {
                    freed += e.size;
                }
            }
        }
        Ok(freed)
    }

    fn purge(&mut self, filter: &Filter) -> io::Result<(u64, u64)> {
        let (mut files, mut bytes) = (0, 0);
        loop {
            let batch = self.index.list(filter, None, 256).map_err(io::Error::other)?;
            if batch.is_empty() {
                return Ok((files, bytes));
            }
            for e in &batch {
                if let Removed::File(n) = self.delete_entry(e, Why::Admin)? {
                    files += 1;
                    bytes += n;
                }
            }
        }
    }

    fn handle(&mut self, op: Op, rx: &Receiver<Op>) -> Option<oneshot::Sender<()>> {
        match op {
            Op::Record {
                entry,
                reservation,
                reply,
            } => {
                // Every record already queued goes into the same transaction.
                let mut batch = vec![(entry, reservation, reply)];
                let mut next = None;
                while let Ok(op) = rx.try_recv() {
                    match op {
                        Op::Record {
                            entry,
                            reservation,
                            reply,
                        } => batch.push((entry, reservation, reply)),
                        other => {
                            next = Some(other);
                            break;
                        }
                    }
                }
                self.record(batch);
                if let Some(op) = next {
                    return self.handle(op, rx);
                }
            }
            Op::Delete { path, why, reply } => {
                let _ = reply.send(self.delete(&path, why));
            }
            Op::Evict { uploader, bytes, reply } => {
                let _ = reply.send(self.evict(&uploader, bytes));
            }
            Op::List {
                filter,
                after,
                limit,
                reply,
            } => {
                let after = after.as_ref().map(|(t, p)| (*t, p.as_str()));
                let _ = reply.send(self.index.list(&filter, after, limit).map_err(io::Error::other));
            }
            Op::Purge { filter, reply } => {
                let _ = reply.send(self.purge(&filter));
            }
            Op::HoldPart { id, reservation } => {
                self.parts.insert(id, reservation);
            }
            Op::TakePart { id, reply } => {
                let _ = reply.send(self.parts.remove(&id));
            }
            Op::ReleasePart { id } => {
                self.parts.remove(&id);
            }
            Op::Stop(reply) => return Some(reply),
        }
        None
    }
}

/// The stored files and bytes, for the metrics.
pub fn publish_gauges(metrics: &Metrics, t: &Totals) {
    metrics.retention.stored_files.store(t.stored.files, Ordering::Relaxed);
    metrics.retention.stored_bytes.store(t.stored.bytes, Ordering::Relaxed);
}

pub fn run(mut st: State, rx: Receiver<Op>) {
    let mut more_due = false;
    loop {
        let wait = if st.scan.is_some() || more_due {
            Duration::ZERO
        } else {
            let now = crate::session::unix_now();
            // At most a minute between looks, so a clock set forward is noticed.
            st.next_due.map_or(Duration::from_secs(60), |d| {
                Duration::from_secs(d.saturating_sub(now).min(60))
            })
        };
        match rx.recv_timeout(wait) {
            Ok(op) => {
                if let Some(stopped) = st.handle(op, &rx) {
                    if let Err(e) = st.index.set_state("clean", "1") {
                        tracing::warn!(error = %e, "could not mark the file index closed");
                    }
                    let _ = stopped.send(());
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Between any two requests, however busy: a rebuild's step, and one batch of what is due.
        st.scan_step();
        more_due = st.sweep();
    }
}
