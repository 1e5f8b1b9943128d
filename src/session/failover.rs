//! Redis with a database behind it (`FallbackEnabled`). While Redis answers, every change is
//! made on Redis and then mirrored to the database, so the database always knows every
//! acknowledged offset. When a Redis call fails, that call and the ones after it go to the
//! database, and sessions continue there. The sweeper pings Redis every round; once it answers
//! again, new sessions and locks go back to it, and a session read from Redis that the
//! database knows further along (it progressed during the outage) is copied back to Redis
//! first. Reads while Redis is up consult both for that reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Owner, Session, SessionStore, StoreError, StoreResult};

pub struct Failover {
    primary: Arc<dyn SessionStore>,
    fallback: Arc<dyn SessionStore>,
    primary_down: AtomicBool,
}

impl Failover {
    pub fn new(primary: Arc<dyn SessionStore>, fallback: Arc<dyn SessionStore>) -> Failover {
        Failover {
            primary,
            fallback,
            primary_down: AtomicBool::new(false),
        }
    }

    fn down(&self) -> bool {
        self.primary_down.load(Ordering::Acquire)
    }

    fn mark_down(&self, e: &StoreError) {
        if !self.primary_down.swap(true, Ordering::AcqRel) {
            tracing::error!(error = %e, primary = self.primary.backend(), fallback = self.fallback.backend(),
                "session store failed over: resumable uploads continue on the fallback");
        }
    }

    /// Run `op` on the primary unless it is down; on an outage, on the fallback.
    async fn either<'a, T, F, Fut>(&'a self, op: F) -> StoreResult<T>
    where
        F: Fn(&'a dyn SessionStore) -> Fut,
        Fut: std::future::Future<Output = StoreResult<T>>,
    {
        if !self.down() {
            match op(&*self.primary).await {
                Err(e @ StoreError::Unavailable { .. }) => self.mark_down(&e),
                other => return other,
            }
        }
        op(&*self.fallback).await
    }

    /// Bring the fallback's copy of `id` in line with `session` (or remove it).
    async fn mirror(&self, id: &str, session: Option<Session>) {
        let result = async {
            self.fallback.remove(id).await?;
            if let Some(s) = session {
                self.fallback.create(&s, 0).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "session store: could not mirror a change to the fallback");
        }
    }
}

#[async_trait::async_trait]
impl SessionStore for Failover {
    /// The store in use now, for logs, `/ready` and the metrics.
    fn backend(&self) -> &'static str {
        if self.down() {
            self.fallback.backend()
        } else {
            self.primary.backend()
        }
    }

    async fn create(&self, s: &Session, now: u64) -> StoreResult<()> {
        if !self.down() {
            match self.primary.create(s, now).await {
                Ok(()) => {
                    self.mirror(&s.id, Some(s.clone())).await;
                    return Ok(());
                }
                Err(e @ StoreError::Unavailable { .. }) => self.mark_down(&e),
                Err(e) => return Err(e),
            }
        }
        self.fallback.create(s, now).await
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        if self.down() {
            return self.fallback.get(id).await;
        }
        let primary = match self.primary.get(id).await {
            Ok(p) => p,
            Err(e @ StoreError::Unavailable { .. }) => {
                self.mark_down(&e);
                return self.fallback.get(id).await;
            }
            Err(e) => return Err(e),
        };
        let fallback = self.fallback.get(id).await.unwrap_or(None);
        match (primary, fallback) {
            (Some(p), Some(f)) if f.offset > p.offset => {
                // It progressed on the fallback while the primary was away.
                let _ = self.primary.remove(id).await;
                self.primary.create(&f, 0).await?;
                Ok(Some(f))
            }
            (None, Some(f)) => {
                self.primary.create(&f, 0).await?;
                Ok(Some(f))
            }
            (p, _) => Ok(p),
        }
    }

    /// Taken on the primary and mirrored to the fallback, so that a writer is excluded on both:
    /// a lock taken on the fallback while the primary was away still holds once it is back,
    /// and a lock taken now still holds if the primary goes away again.
    async fn lock(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        if !self.down() {
            match self.primary.lock(id, owner, lease).await {
                Ok(true) => {
                    if let Ok(false) = self.fallback.lock(id, owner, lease).await {
                        let _ = self.primary.unlock(id, owner).await;
                        return Ok(false);
                    }
                    return Ok(true);
                }
                Err(e @ StoreError::Unavailable { .. }) => self.mark_down(&e),
                other => return other,
            }
        }
        self.fallback.lock(id, owner, lease).await
    }

    async fn renew(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        if !self.down() {
            match self.primary.renew(id, owner, lease).await {
                Ok(true) => {
                    // The mirror, so the lease also holds on the fallback should Redis go away.
                    let _ = self.fallback.renew(id, owner, lease).await;
                    return Ok(true);
                }
                Err(e @ StoreError::Unavailable { .. }) => self.mark_down(&e),
                other => return other,
            }
        }
        self.fallback.renew(id, owner, lease).await
    }

    async fn unlock(&self, id: &str, owner: &Owner) -> StoreResult<()> {
        // Wherever it was taken.
        let _ = self.fallback.unlock(id, owner).await;
        self.either(|s| s.unlock(id, owner)).await
    }

    async fn advance(&self, id: &str, from: u64, to: u64, expires: u64) -> StoreResult<bool> {
        if !self.down() {
            match self.primary.advance(id, from, to, expires).await {
                Ok(true) => {
                    if !matches!(self.fallback.advance(id, from, to, expires).await, Ok(true)) {
                        let now = self.primary.get(id).await.unwrap_or(None);
                        self.mirror(id, now).await;
                    }
                    return Ok(true);
                }
                Ok(false) => return Ok(false),
                Err(e @ StoreError::Unavailable { .. }) => self.mark_down(&e),
                Err(e) => return Err(e),
            }
        }
        self.fallback.advance(id, from, to, expires).await
    }

    async fn remove(&self, id: &str) -> StoreResult<()> {
        let fallback = self.fallback.remove(id).await;
        if !self.down() {
            match self.primary.remove(id).await {
                Err(e @ StoreError::Unavailable { .. }) => self.mark_down(&e),
                other => return other,
            }
        }
        fallback
    }

    async fn expired(&self, now: u64) -> StoreResult<Vec<Session>> {
        let mut all = self.fallback.expired(now).await.unwrap_or_default();
        if !self.down() {
            if let Ok(p) = self.primary.expired(now).await {
                for s in p {
                    if !all.iter().any(|f| f.id == s.id) {
                        all.push(s);
                    }
                }
            }
        }
        Ok(all)
    }

    /// Also the way back: a primary that answers again is used again.
    async fn ping(&self) -> StoreResult<()> {
        if self.down() && self.primary.ping().await.is_ok() {
            self.primary_down.store(false, Ordering::Release);
            tracing::info!(
                primary = self.primary.backend(),
                "session store: the primary answers again; new sessions go back to it"
            );
        }
        self.either(|s| s.ping()).await
    }
}
