//! Upload sessions of resumable (tus) uploads: what the server remembers between the requests
//! of one upload. The store behind them is a `SessionStore`; the embedded one (a journal under
//! StoreDir) is the default, and the shared stores of a cluster implement the same trait.
//!
//! Stores run on the side tokio thread, never on a worker: a worker hands a request to the
//! side runtime's task queue and awaits the reply on a oneshot channel, so a slow store
//! delays only the resumable request that asked, and plain PUT/GET never touch it.

pub mod conformance;
pub mod embedded;
pub mod failover;
pub mod redis;
pub mod sql;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::node::Node;

/// One resumable upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// The capability in the upload URL (also names the partial file).
    pub id: String,
    /// The signed store path the file is published at.
    pub path: String,
    /// The signed size.
    pub length: u64,
    /// Bytes received and durable; equal to `length` once the file is complete.
    pub offset: u64,
    /// The signed content type, stored with the file at publication.
    pub content_type: String,
    /// The client's Upload-Metadata header, echoed back on HEAD.
    pub metadata: String,
    /// Unix seconds after which an unfinished session is removed with its partial data.
    pub expires: u64,
}

impl Session {
    pub fn complete(&self) -> bool {
        self.offset == self.length
    }

    pub fn expired(&self, now: u64) -> bool {
        self.expires <= now
    }
}

/// Who holds an upload's write lock: a node (its host name, plus `NodeId` when set), the start
/// of that node's process (`generation`, Unix milliseconds) and one request of it (`token`).
/// A node that restarts takes over the locks of its own earlier generations at once: their
/// process is gone, since one process at a time runs as a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub generation: u64,
    pub token: String,
}

impl Owner {
    /// `node|generation|token`, how the stores keep it (a node name never holds `|`).
    pub fn encode(&self) -> String {
        format!("{}|{}|{}", self.node, self.generation, self.token)
    }

    pub fn decode(s: &str) -> Option<Owner> {
        let mut parts = s.splitn(3, '|');
        let node = parts.next()?.to_owned();
        let generation = parts.next()?.parse().ok()?;
        let token = parts.next()?.to_owned();
        Some(Owner {
            node,
            generation,
            token,
        })
    }

    /// A fresh owner for one request of this node.
    pub fn of(node: &Node) -> std::io::Result<Owner> {
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(std::io::Error::from)?;
        Ok(Owner {
            node: node.name.clone(),
            generation: node.generation,
            token: hex::encode(token),
        })
    }

    /// Whether this owner may take a lock `holder` holds unexpired: only from an earlier
    /// generation of the same node (a process of ours that has died).
    pub fn supersedes(&self, holder: &Owner) -> bool {
        self.node == holder.node && self.generation > holder.generation
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// An unexpired session already targets this path.
    #[error("an upload to this path is in progress")]
    PathBusy,
    #[error("session store ({backend}) unavailable: {reason}")]
    Unavailable { backend: &'static str, reason: String },
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What every session store provides. Each call is atomic on its own; `lock` serialises the
/// writers of one session across workers (and, for shared stores, across nodes).
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Name for logs, `/ready` and the metrics ("embedded", "redis", …).
    fn backend(&self) -> &'static str;
    /// Record a new session; `PathBusy` if an unexpired one already targets its path.
    async fn create(&self, session: &Session, now: u64) -> StoreResult<()>;
    async fn get(&self, id: &str) -> StoreResult<Option<Session>>;
    /// Take the session's write lock for `owner` for `lease`: when nobody holds it, its lease
    /// ran out, `owner` holds it already, or `owner` supersedes the holder (an earlier
    /// generation of its own node). False otherwise.
    async fn lock(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool>;
    /// Extend `owner`'s lease to `lease` from now, only while the lock is still `owner`'s (its
    /// lease may have run out if nobody took it meanwhile): a writer whose lock was taken, or
    /// released, learns it here before it writes again.
    async fn renew(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool>;
    /// Release the lock if `owner` still holds it.
    async fn unlock(&self, id: &str, owner: &Owner) -> StoreResult<()>;
    /// Move the offset from `from` to `to` and set the expiry, durably, only if the offset is
    /// still `from`; false (and nothing changed) otherwise.
    async fn advance(&self, id: &str, from: u64, to: u64, expires: u64) -> StoreResult<bool>;
    async fn remove(&self, id: &str) -> StoreResult<()>;
    /// Sessions whose expiry has passed.
    async fn expired(&self, now: u64) -> StoreResult<Vec<Session>>;
    /// Whether the store answers (for `/ready`).
    async fn ping(&self) -> StoreResult<()>;
}

/// The workers' handle on the session store: each call runs on the side runtime.
#[derive(Clone)]
pub struct Sessions {
    side: tokio::runtime::Handle,
    store: Arc<dyn SessionStore>,
    node: Arc<Node>,
    /// Requests of this process that are about to write to an upload (id → how many), counted
    /// from the moment their head is parsed: before they reach the store's lock.
    writers: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// The node's claim on its name in a shared StoreDir, held as long as the sessions are.
    _claim: Option<Arc<crate::node::Hold>>,
}

/// A request counted among an upload's writers for as long as it lives.
pub struct Writer {
    writers: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    id: String,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let mut w = crate::sync::lock(&self.writers);
        if let Some(n) = w.get_mut(&self.id) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.id);
            }
        }
    }
}

impl Sessions {
    pub fn new(side: tokio::runtime::Handle, store: Arc<dyn SessionStore>, node: Node) -> Sessions {
        Sessions {
            side,
            store,
            node: Arc::new(node),
            writers: Default::default(),
            _claim: None,
        }
    }

    /// Keep `claim` (the node's hold on its name) for as long as these sessions live.
    pub fn holding(mut self, claim: crate::node::Hold) -> Sessions {
        self._claim = Some(Arc::new(claim));
        self
    }

    /// Count this request among the writers of upload `id` (a PATCH, from its head on).
    pub fn writer(&self, id: &str) -> Writer {
        *crate::sync::lock(&self.writers).entry(id.to_owned()).or_insert(0) += 1;
        Writer {
            writers: self.writers.clone(),
            id: id.to_owned(),
        }
    }

    /// Whether a request of this process is writing, or about to write, to upload `id`.
    pub fn being_written(&self, id: &str) -> bool {
        crate::sync::lock(&self.writers).contains_key(id)
    }

    /// This process, as the owner of the locks it takes.
    pub fn node(&self) -> &Node {
        &self.node
    }

    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    pub fn store(&self) -> Arc<dyn SessionStore> {
        self.store.clone()
    }

    /// Run `op` against the store on the side thread and await its reply from a worker.
    async fn call<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Arc<dyn SessionStore>) -> Fut + Send + 'static,
        Fut: Future<Output = StoreResult<T>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let store = self.store.clone();
        self.side.spawn(async move {
            let _ = tx.send(op(store).await);
        });
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                backend: self.store.backend(),
                reason: "the side thread dropped the request".into(),
            })
        })
    }

    pub async fn create(&self, session: Session) -> StoreResult<()> {
        self.call(move |s| async move { s.create(&session, unix_now()).await })
            .await
    }

    pub async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let id = id.to_owned();
        self.call(move |s| async move { s.get(&id).await }).await
    }

    pub async fn lock(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let (id, owner) = (id.to_owned(), owner.clone());
        self.call(move |s| async move { s.lock(&id, &owner, lease).await })
            .await
    }

    pub async fn renew(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let (id, owner) = (id.to_owned(), owner.clone());
        self.call(move |s| async move { s.renew(&id, &owner, lease).await })
            .await
    }

    pub async fn unlock(&self, id: &str, owner: &Owner) -> StoreResult<()> {
        let (id, owner) = (id.to_owned(), owner.clone());
        self.call(move |s| async move { s.unlock(&id, &owner).await }).await
    }

    /// Release without waiting for the answer (from a Drop, or when the reply is of no use).
    pub fn unlock_later(&self, id: &str, owner: &Owner) {
        let (id, owner) = (id.to_owned(), owner.clone());
        let store = self.store.clone();
        self.side.spawn(async move {
            if let Err(e) = store.unlock(&id, &owner).await {
                tracing::warn!(error = %e, "could not release a resumable upload's lock; it expires with its lease");
            }
        });
    }

    pub async fn advance(&self, id: &str, from: u64, to: u64, expires: u64) -> StoreResult<bool> {
        let id = id.to_owned();
        self.call(move |s| async move { s.advance(&id, from, to, expires).await })
            .await
    }

    pub async fn remove(&self, id: &str) -> StoreResult<()> {
        let id = id.to_owned();
        self.call(move |s| async move { s.remove(&id).await }).await
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The shared session store the configuration asks for, if any: Redis when `RedisAddr` is
/// set (with the fallback database behind it when `FallbackEnabled`), the database alone when
/// only `FallbackEnabled` is set. None: the embedded store serves. Run on the side runtime.
/// A store that cannot be reached yet still comes back (it answers "unavailable" and recovers
/// by itself); only a configuration it cannot work with is an error.
pub async fn open_shared(config: &crate::config::Config) -> Result<Option<Arc<dyn SessionStore>>, String> {
    let retries = config.max_retries;
    let delay = Duration::from_secs(config.retry_delay);
    let database = || async {
        let db = config.fallback_db().map_err(|e| e.to_string())?;
        let store: Arc<dyn SessionStore> = match config.fallback_db_type.as_str() {
            "mysql" => Arc::new(
                sql::Mysql::connect(&db, retries, delay)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            _ => Arc::new(
                sql::Postgres::connect(&db, retries, delay)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        Ok::<_, String>(store)
    };
    if !config.redis_addr.trim().is_empty() {
        let redis = redis::Redis::connect(
            config.redis_addr.trim(),
            &config.redis_password,
            config.redis_db,
            retries,
            delay,
        )
        .await
        .map_err(|e| e.to_string())?;
        let redis: Arc<dyn SessionStore> = Arc::new(redis);
        if config.fallback_enabled {
            let fallback = database().await?;
            return Ok(Some(Arc::new(failover::Failover::new(redis, fallback))));
        }
        return Ok(Some(redis));
    }
    if config.fallback_enabled {
        return database().await.map(Some);
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_encode_and_supersede() {
        let old = Owner {
            node: "web1:a".into(),
            generation: 1000,
            token: "t1".into(),
        };
        assert_eq!(Owner::decode(&old.encode()), Some(old.clone()));
        let restarted = Owner {
            generation: 2000,
            token: "t2".into(),
            ..old.clone()
        };
        assert!(restarted.supersedes(&old), "a later start of the same node");
        assert!(!old.supersedes(&restarted));
        let sibling = Owner {
            token: "t3".into(),
            ..restarted.clone()
        };
        assert!(!sibling.supersedes(&restarted), "another request of the same process");
        let other = Owner {
            node: "web2".into(),
            generation: 9999,
            token: "t4".into(),
        };
        assert!(!other.supersedes(&old), "another node");
        assert_eq!(Owner::decode("no separators"), None);
        let node = Node::this("b");
        assert!(!node.name.contains('|'));
        assert_ne!(Owner::of(&node).unwrap().token, Owner::of(&node).unwrap().token);
    }
}
