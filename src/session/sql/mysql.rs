//! The MySQL/MariaDB session store (mysql_async).

use std::time::Duration;

use super::*;
use crate::config::DbConfig;
use crate::session::{Owner, SessionStore};

pub struct Mysql {
    pool: mysql_async::Pool,
    describe: String,
    migrated: std::sync::atomic::AtomicBool,
}

impl Mysql {
    pub async fn connect(db: &DbConfig, retries: u32, delay: Duration) -> StoreResult<Mysql> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(db.host.clone())
            .tcp_port(db.port)
            .user(Some(db.user.clone()))
            .pass(Some(db.password.clone()))
            .db_name(Some(db.name.clone()))
            // Affected rows count matched rows: renewing a lock with the same values is a success.
            .client_found_rows(true)
            // InnoDB counts in whole seconds; 2 s stays under the client's 3 s.
            .init(vec![format!(
                "SET SESSION innodb_lock_wait_timeout = {}",
                SERVER_TIMEOUT_MS / 1000
            )]);
        let store = Mysql {
            pool: mysql_async::Pool::new(opts),
            describe: describe(db),
            migrated: std::sync::atomic::AtomicBool::new(false),
        };
        if let Err(e) = retry("mysql", &store.describe, retries, delay, || store.migrate()).await {
            tracing::error!(error = %e, "MySQL session store unavailable at start; resumable uploads get 503 until it answers");
        }
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable {
            backend: "mysql",
            reason: format!("{}: {e}", self.describe),
        }
    }

    async fn timed<T, F>(&self, f: F) -> StoreResult<T>
    where
        F: std::future::Future<Output = Result<T, mysql_async::Error>>,
    {
        match tokio::time::timeout(STATEMENT_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| self.err(e)),
            Err(_) => Err(self.err("statement timed out")),
        }
    }

    async fn conn(&self) -> StoreResult<mysql_async::Conn> {
        if !self.migrated.load(std::sync::atomic::Ordering::Acquire) {
            self.migrate().await?;
        }
        self.timed(self.pool.get_conn()).await
    }

    /// Run `statement` (written with `$n`) and return the affected rows.
    async fn exec(&self, statement: &str, params: mysql_async::Params) -> StoreResult<u64> {
        use mysql_async::prelude::Queryable;
        let mut c = self.conn().await?;
        self.timed(c.exec_drop(mysql(statement), params)).await?;
        Ok(c.affected_rows())
    }

    async fn rows(&self, statement: &str, params: mysql_async::Params) -> StoreResult<Vec<Session>> {
        use mysql_async::prelude::Queryable;
        let mut c = self.conn().await?;
        let rows: Vec<Row> = self.timed(c.exec(mysql(statement), params)).await?;
        Ok(rows.into_iter().map(session).collect())
    }

    async fn migrate(&self) -> StoreResult<()> {
        use mysql_async::prelude::Queryable;
        let mut c = self.timed(self.pool.get_conn()).await?;
        // Waits less than the client's timeout: a lock granted after we gave up would stay
        // with the pooled connection.
        let got: Option<Option<i64>> = self
            .timed(c.query_first("SELECT GET_LOCK('hmac-file-server-migrations', 2)"))
            .await?;
        if got.flatten() != Some(1) {
            return Err(self.err("another node is migrating the schema"));
        }
        let result = async {
            self.timed(c.query_drop(
                "CREATE TABLE IF NOT EXISTS hfs_schema_migrations (version INT NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL) ENGINE = InnoDB",
            ))
            .await?;
            for (version, sql) in MIGRATIONS_MYSQL {
                let done: Option<i32> = self
                    .timed(c.exec_first("SELECT version FROM hfs_schema_migrations WHERE version = ?", (version,)))
                    .await?;
                if done.is_none() {
                    self.timed(c.query_drop(*sql)).await?;
                    self.timed(c.exec_drop(
                        "INSERT INTO hfs_schema_migrations (version, applied_at) VALUES (?, ?)",
                        (version, now_ms() / 1000),
                    ))
                    .await?;
                    tracing::info!(version, db = %self.describe, "session store schema migrated");
                }
            }
            Ok(())
        }
        .await;
        let _ = self
            .timed(c.query_drop("SELECT RELEASE_LOCK('hmac-file-server-migrations')"))
            .await;
        if result.is_ok() {
            self.migrated.store(true, std::sync::atomic::Ordering::Release);
        }
        result
    }
}

#[async_trait::async_trait]
impl SessionStore for Mysql {
    fn backend(&self) -> &'static str {
        "mysql"
    }

    async fn create(&self, s: &Session, now: u64) -> StoreResult<()> {
        let key = active_key(&s.path);
        self.exec(CLEAR_ACTIVE, (key.clone(), int(now)).into()).await?;
        let params: mysql_async::Params = vec![
            mysql_async::Value::from(&s.id),
            mysql_async::Value::from(&s.path),
            mysql_async::Value::from(int(s.length)),
            mysql_async::Value::from(int(s.offset)),
            mysql_async::Value::from(&s.content_type),
            mysql_async::Value::from(&s.metadata),
            mysql_async::Value::from(int(s.expires)),
            mysql_async::Value::from(&key),
        ]
        .into();
        use mysql_async::prelude::Queryable;
        let mut c = self.conn().await?;
        match tokio::time::timeout(STATEMENT_TIMEOUT, c.exec_drop(mysql(INSERT), params)).await {
            Ok(Ok(())) => Ok(()),
            // ER_DUP_ENTRY: another unfinished upload holds the path.
            Ok(Err(mysql_async::Error::Server(e))) if e.code == 1062 => Err(StoreError::PathBusy),
            Ok(Err(e)) => Err(self.err(e)),
            Err(_) => Err(self.err("statement timed out")),
        }
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        Ok(self.rows(&select_by_id(), (id,).into()).await?.pop())
    }

    async fn lock(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let (who, node, generation) = (owner.encode(), &owner.node, int(owner.generation));
        let params = (&who, node, generation, until, id, &who, now, node, generation);
        let n = self.exec(LOCK, params.into()).await?;
        Ok(n == 1)
    }

    async fn renew(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let n = self.exec(RENEW, (until, id, owner.encode()).into()).await?;
        Ok(n == 1)
    }

    async fn unlock(&self, id: &str, owner: &Owner) -> StoreResult<()> {
        self.exec(UNLOCK, (id, owner.encode()).into()).await.map(|_| ())
    }

    async fn advance(&self, id: &str, from: u64, to: u64, expires: u64) -> StoreResult<bool> {
        let n = self
            .exec(ADVANCE, (int(to), int(expires), int(to), id, int(from)).into())
            .await?;
        Ok(n == 1)
    }

    async fn remove(&self, id: &str) -> StoreResult<()> {
        self.exec(REMOVE, (id,).into()).await.map(|_| ())
    }

    async fn expired(&self, now: u64) -> StoreResult<Vec<Session>> {
        self.rows(&select_expired(), (int(now),).into()).await
    }

    async fn ping(&self) -> StoreResult<()> {
        use mysql_async::prelude::Queryable;
        let mut c = self.conn().await?;
        self.timed(c.ping()).await
    }
}
