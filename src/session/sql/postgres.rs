//! The PostgreSQL session store (tokio-postgres).

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::config::DbConfig;
use crate::session::{Owner, SessionStore};

pub struct Postgres {
    config: tokio_postgres::Config,
    describe: String,
    client: tokio::sync::Mutex<Option<Arc<tokio_postgres::Client>>>,
    migrated: std::sync::atomic::AtomicBool,
}

impl Postgres {
    pub async fn connect(db: &DbConfig, retries: u32, delay: Duration) -> StoreResult<Postgres> {
        let mut config = tokio_postgres::Config::new();
        config
            .host(&db.host)
            .port(db.port)
            .user(&db.user)
            .password(&db.password)
            .dbname(&db.name)
            .application_name("hmac-file-server")
            .options(format!(
                "-c statement_timeout={SERVER_TIMEOUT_MS} -c lock_timeout={SERVER_TIMEOUT_MS}"
            ))
            .connect_timeout(STATEMENT_TIMEOUT);
        let store = Postgres {
            config,
            describe: describe(db),
            client: tokio::sync::Mutex::new(None),
            migrated: std::sync::atomic::AtomicBool::new(false),
        };
        // Unreachable after the retries: the store still comes up, answers "unavailable" and
        // connects (and migrates) on first use once the database is back.
        if let Err(e) = retry("postgres", &store.describe, retries, delay, || store.migrate()).await {
            tracing::error!(error = %e, "PostgreSQL session store unavailable at start; resumable uploads get 503 until it answers");
        }
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            backend: "postgres",
            reason: format!("{}: {e}", self.describe),
        }
    }

    /// The connection, opened again if it was lost (once per call: the caller's retry is the
    /// client's own).
    async fn client(&self) -> StoreResult<Arc<tokio_postgres::Client>> {
        let client = self.connection().await?;
        if !self.migrated.load(std::sync::atomic::Ordering::Acquire) {
            self.migrate().await?;
        }
        Ok(client)
    }

    async fn connection(&self) -> StoreResult<Arc<tokio_postgres::Client>> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let (client, connection) = tokio::time::timeout(STATEMENT_TIMEOUT, self.config.connect(tokio_postgres::NoTls))
            .await
            .map_err(|_| self.err("connect timed out"))?
            .map_err(|e| self.err(e))?;
        let describe = self.describe.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(db = %describe, error = %e, "PostgreSQL session store connection lost");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn timed<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        match tokio::time::timeout(STATEMENT_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(self.err("statement timed out")),
        }
    }

    async fn migrate(&self) -> StoreResult<()> {
        let c = self.connection().await?;
        // One node at a time; the lock goes with the connection if we die.
        self.timed(c.batch_execute(
            "SELECT pg_advisory_lock(7283611); CREATE TABLE IF NOT EXISTS hfs_schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
        ))
        .await?;
        let result = async {
            for (version, sql) in MIGRATIONS_PG {
                let done = self
                    .timed(c.query_opt("SELECT 1 FROM hfs_schema_migrations WHERE version = $1", &[version]))
                    .await?;
                if done.is_none() {
                    self.timed(c.batch_execute(sql)).await?;
                    self.timed(c.execute(
                        "INSERT INTO hfs_schema_migrations (version, applied_at) VALUES ($1, $2)",
                        &[version, &(now_ms() / 1000)],
                    ))
                    .await?;
                    tracing::info!(version, db = %self.describe, "session store schema migrated");
                }
            }
            Ok(())
        }
        .await;
        let _ = self.timed(c.batch_execute("SELECT pg_advisory_unlock(7283611)")).await;
        if result.is_ok() {
            self.migrated.store(true, std::sync::atomic::Ordering::Release);
        }
        result
    }
}

#[async_trait::async_trait]
impl SessionStore for Postgres {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn create(&self, s: &Session, now: u64) -> StoreResult<()> {
        let c = self.client().await?;
        let key = active_key(&s.path);
        self.timed(c.execute(CLEAR_ACTIVE, &[&key, &int(now)])).await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &s.id,
            &s.path,
            &int(s.length),
            &int(s.offset),
            &s.content_type,
            &s.metadata,
            &int(s.expires),
            &key,
        ];
        match tokio::time::timeout(STATEMENT_TIMEOUT, c.execute(INSERT, &params)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                Err(StoreError::PathBusy)
            }
            Ok(Err(e)) => Err(self.err(e)),
            Err(_) => Err(self.err("statement timed out")),
        }
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let c = self.client().await?;
        let row = self.timed(c.query_opt(&select_by_id(), &[&id])).await?;
        Ok(row.map(|r| session((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))))
    }

    async fn lock(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let c = self.client().await?;
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let (who, node, generation) = (owner.encode(), &owner.node, int(owner.generation));
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
            [&who, node, &generation, &until, &id, &who, &now, node, &generation];
        let n = self.timed(c.execute(LOCK, &params)).await?;
        Ok(n == 1)
    }

    async fn renew(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let c = self.client().await?;
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let n = self.timed(c.execute(RENEW, &[&until, &id, &owner.encode()])).await?;
        Ok(n == 1)
    }

    async fn unlock(&self, id: &str, owner: &Owner) -> StoreResult<()> {
        let c = self.client().await?;
        self.timed(c.execute(UNLOCK, &[&id, &owner.encode()])).await.map(|_| ())
    }

    async fn advance(&self, id: &str, from: u64, to: u64, expires: u64) -> StoreResult<bool> {
        let c = self.client().await?;
        let n = self
            .timed(c.execute(ADVANCE, &[&int(to), &int(expires), &int(to), &id, &int(from)]))
            .await?;
        Ok(n == 1)
    }

    async fn remove(&self, id: &str) -> StoreResult<()> {
        let c = self.client().await?;
        self.timed(c.execute(REMOVE, &[&id])).await.map(|_| ())
    }

    async fn expired(&self, now: u64) -> StoreResult<Vec<Session>> {
        let c = self.client().await?;
        let rows = self.timed(c.query(&select_expired(), &[&int(now)])).await?;
        Ok(rows
            .into_iter()
            .map(|r| session((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6))))
            .collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        let c = self.client().await?;
        self.timed(c.batch_execute("SELECT 1")).await
    }
}

// ---------------- MySQL / MariaDB ----------------
