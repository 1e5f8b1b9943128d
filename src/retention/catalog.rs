//! The catalog: this node's index of stored files, owned by one thread (`thread`) that also
//! deletes — expired files as they fall due, evicted ones, requested ones — and the totals
//! quotas are decided on, which workers consult and reserve against without waiting for it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::index::{Entry, Filter, Index};
use super::thread::{self, Op, Why};
use super::totals::{Limits, Refusal, Totals, Usage};
use crate::metrics::Metrics;
use crate::node::Hold;
use crate::path::StorePath;
use crate::storage::{Removed, Store};
use crate::sync::lock;

/// How the catalog is configured.
#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: Limits,
    /// `FileTTL` in seconds; 0 = files are kept until their own expiry, if any.
    pub ttl: u64,
    /// This node's name (its index is its own).
    pub node: String,
    /// Where the index lives (`IndexDir`).
    pub dir: PathBuf,
}

impl Settings {
    /// What `config` asks of the node named `node`.
    pub fn of(config: &crate::config::Config, node: &str) -> Settings {
        Settings {
            limits: Limits {
                store: config.store_max_size.0,
                user: config.user_quota.0,
                evict: config.user_quota_evict_oldest,
            },
            ttl: config.file_ttl.0,
            node: node.to_owned(),
            dir: config.index_dir(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the file index {0} is in use by another process (a running server, or the files command)")]
    InUse(PathBuf),
    #[error("cannot open the file index {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub struct Catalog {
    tx: Sender<Op>,
    totals: Arc<Mutex<Totals>>,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Where the control socket of the `files` command lives.
    pub socket: PathBuf,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Bytes reserved for an upload in progress, given back when dropped (an upload that failed)
/// or turned into a stored file by `Catalog::record`.
pub struct Reservation {
    totals: Arc<Mutex<Totals>>,
    uploader: Option<String>,
    bytes: u64,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        lock(&self.totals).release(self.uploader.as_deref(), self.bytes);
    }
}

/// A node name as a file name (':' is not welcome everywhere).
fn file_stem(node: &str) -> String {
    node.replace(':', "@")
}

/// The control socket of the `files` command for `settings`' node.
pub fn socket_of(settings: &Settings) -> PathBuf {
    settings.dir.join(format!("{}.sock", file_stem(&settings.node)))
}

impl Catalog {
    /// Open this node's index (creating it, or setting a damaged one aside), take it for this
    /// process, and start the thread that owns it. A new index, or one a power cut may have
    /// left behind, is rebuilt from the files by a walk that runs while the server serves.
    pub fn start(store: Arc<Store>, metrics: Arc<Metrics>, settings: Settings) -> Result<Catalog, StartError> {
        let dir = settings.dir.clone();
        let stem = file_stem(&settings.node);
        let db = dir.join(format!("{stem}.sqlite"));
        let io_err = |source| StartError::Io {
            path: db.clone(),
            source,
        };
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(io_err)?;
        }
        let hold: Hold =
            crate::node::hold_exclusive(&dir.join(format!("{stem}.lock")), std::time::Duration::from_secs(2))
                .map_err(io_err)?
                .ok_or_else(|| StartError::InUse(db.clone()))?;
        let index = open_or_set_aside(&db).map_err(io_err)?;
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let boot = boot.trim();
        let fresh = index.state("scanned").ok().flatten().is_none();
        let clean = index.state("clean").ok().flatten().as_deref() == Some("1");
        let same_boot = index.state("boot").ok().flatten().as_deref() == Some(boot);
        // A process that was killed lost nothing (its commits are in the page cache); a
        // machine that went down uncleanly may have lost the last ones.
        let rebuild = fresh || (!clean && !same_boot);
        let sqlite = |e: rusqlite::Error| io_err(io::Error::other(e));
        index.set_state("clean", "0").map_err(sqlite)?;
        index.set_state("boot", boot).map_err(sqlite)?;
        let mut totals = Totals::default();
        for (uploader, u) in index.usage().map_err(sqlite)? {
            totals.stored.files += u.files;
            totals.stored.bytes += u.bytes;
            totals.users.insert(uploader, u);
        }
        totals.complete = !rebuild;
        let totals = Arc::new(Mutex::new(totals));
        // Unfinished resumable uploads hold their whole size, as when they were created.
        let mut parts = std::collections::HashMap::new();
        for (id, _) in store.parts() {
            if let Some((meta, size)) = store.part_meta(&id) {
                let r = Reservation {
                    totals: totals.clone(),
                    uploader: meta.uploader.clone(),
                    bytes: 0,
                };
                parts.insert(id, grow_unchecked(r, size));
            }
        }
        let (tx, rx) = mpsc::channel();
        let socket = socket_of(&settings);
        let state = thread::State {
            index,
            store,
            totals: totals.clone(),
            metrics: metrics.clone(),
            settings: settings.clone(),
            parts,
            scan: None,
            next_due: None,
            hold,
        }
        .prepared(rebuild.then_some(fresh));
        let handle = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || thread::run(state, rx))
            .map_err(io_err)?;
        let catalog = Catalog {
            tx,
            totals,
            settings,
            metrics,
            socket,
            thread: Mutex::new(Some(handle)),
        };
        catalog.publish_gauges();
        Ok(catalog)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether any quota is set (uploads must then be admitted).
    pub fn limited(&self) -> bool {
        self.settings.limits.store > 0 || self.settings.limits.user > 0
    }

    /// Reserve `bytes` for an upload by `uploader`: at once, without waiting for the thread.
    pub fn admit(&self, uploader: Option<&str>, bytes: u64) -> Result<Reservation, Refusal> {
        let mut t = lock(&self.totals);
        if !t.complete && self.limited() {
            return Err(Refusal::Counting);
        }
        match t.reserve(&self.settings.limits, uploader, bytes) {
            Ok(()) => Ok(Reservation {
                totals: self.totals.clone(),
                uploader: uploader.map(str::to_owned),
                bytes,
            }),
            Err(r) => {
                self.count_refusal(&r);
                Err(r)
            }
        }
    }

    /// Reserve `more` bytes for the upload holding `r` (a chunked body growing).
    pub fn grow(&self, r: &mut Reservation, more: u64) -> Result<(), Refusal> {
        let mut t = lock(&self.totals);
        match t.reserve(&self.settings.limits, r.uploader.as_deref(), more) {
            Ok(()) => {
                r.bytes += more;
                Ok(())
            }
            // A body cannot wait for an eviction halfway through: it is simply over.
            Err(Refusal::Evict { uploader, bytes }) => {
                let e = Refusal::User {
                    uploader,
                    used: 0,
                    max: self.settings.limits.user,
                    wanted: bytes,
                };
                self.count_refusal(&e);
                Err(e)
            }
            Err(e) => {
                self.count_refusal(&e);
                Err(e)
            }
        }
    }

    fn count_refusal(&self, r: &Refusal) {
        use std::sync::atomic::Ordering::Relaxed;
        match r {
            Refusal::Store { .. } => self.metrics.retention.refused_store.fetch_add(1, Relaxed),
            Refusal::User { .. } => self.metrics.retention.refused_user.fetch_add(1, Relaxed),
            Refusal::Evict { .. } | Refusal::Counting => 0,
        };
    }

    /// Delete `uploader`'s oldest files until `bytes` are free (`UserQuotaEvictOldest`).
    pub async fn evict(&self, uploader: &str, bytes: u64) -> io::Result<u64> {
        self.ask(|reply| Op::Evict {
            uploader: uploader.to_owned(),
            bytes,
            reply,
        })
        .await?
    }

    /// Record a stored file, turning its reservation into stored bytes.
    pub async fn record(&self, entry: Entry, reservation: Option<Reservation>) -> io::Result<()> {
        self.ask(|reply| Op::Record {
            entry,
            reservation,
            reply,
        })
        .await?
    }

    /// Delete the file at `path` (and forget it), durably.
    pub async fn delete(&self, path: StorePath, why: Why) -> io::Result<Removed> {
        self.ask(|reply| Op::Delete { path, why, reply }).await?
    }

    /// Files and bytes in all, and per uploader.
    pub fn stats(&self) -> (Usage, Vec<(String, Usage)>) {
        let t = lock(&self.totals);
        let mut users: Vec<_> = t.users.iter().map(|(k, v)| (k.clone(), *v)).collect();
        users.sort_by(|a, b| a.0.cmp(&b.0));
        (t.stored, users)
    }

    /// The files `filter` means, oldest first, after `after` (paging), at most `limit`.
    pub async fn list(&self, filter: Filter, after: Option<(u64, String)>, limit: usize) -> io::Result<Vec<Entry>> {
        self.ask(|reply| Op::List {
            filter,
            after,
            limit,
            reply,
        })
        .await?
    }

    /// Delete every file `filter` means: (files, bytes) deleted.
    pub async fn purge(&self, filter: Filter) -> io::Result<(u64, u64)> {
        self.ask(|reply| Op::Purge { filter, reply }).await?
    }

    /// Keep `reservation` for the resumable upload `id` until it completes or goes.
    pub fn hold_part(&self, id: &str, reservation: Reservation) {
        let _ = self.tx.send(Op::HoldPart {
            id: id.to_owned(),
            reservation,
        });
    }

    /// The reservation of resumable upload `id`, for its completion.
    pub async fn take_part(&self, id: &str) -> Option<Reservation> {
        self.ask(|reply| Op::TakePart {
            id: id.to_owned(),
            reply,
        })
        .await
        .ok()
        .flatten()
    }

    /// Give up the reservation of resumable upload `id` (removed, expired, failed).
    pub fn release_part(&self, id: &str) {
        let _ = self.tx.send(Op::ReleasePart { id: id.to_owned() });
    }

    /// Once the totals are known (a rebuild of the index has finished).
    pub async fn complete(&self) {
        while !lock(&self.totals).complete {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Stop the thread, marking the index cleanly closed. Waits for it.
    pub fn stop(&self) {
        let (reply, _) = oneshot::channel();
        if self.tx.send(Op::Stop(reply)).is_ok() {
            if let Some(h) = lock(&self.thread).take() {
                let _ = h.join();
            }
        }
    }

    fn publish_gauges(&self) {
        thread::publish_gauges(&self.metrics, &lock(&self.totals));
    }

    async fn ask<T>(&self, op: impl FnOnce(oneshot::Sender<T>) -> Op) -> io::Result<T> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(op(reply))
            .map_err(|_| io::Error::other("the retention thread has stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("the retention thread has stopped"))
    }
}

/// `r` grown by `bytes` without looking at the limits (what is already on disk is a fact).
fn grow_unchecked(mut r: Reservation, bytes: u64) -> Reservation {
    let none = Limits::default();
    let _ = lock(&r.totals).reserve(&none, r.uploader.as_deref(), bytes);
    r.bytes += bytes;
    r
}

/// Open the index at `db`; one that cannot be opened (damaged) is renamed aside and a fresh
/// one started, to be rebuilt from the files.
fn open_or_set_aside(db: &Path) -> io::Result<Index> {
    match Index::open(db).and_then(|i| i.state("scanned").map(|_| i)) {
        Ok(i) => Ok(i),
        Err(e) => {
            let aside = db.with_extension(format!("damaged-{}", crate::session::unix_now()));
            tracing::error!(error = %e, index = %db.display(), aside = %aside.display(), "the file index cannot be read: set aside, rebuilding it from the files");
            let _ = std::fs::rename(db, &aside);
            let _ = std::fs::remove_file(db.with_extension("sqlite-wal"));
            let _ = std::fs::remove_file(db.with_extension("sqlite-shm"));
            Index::open(db).map_err(io::Error::other)
        }
    }
}
