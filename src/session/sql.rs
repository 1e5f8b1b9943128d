//! The PostgreSQL (tokio-postgres) and MySQL/MariaDB (mysql_async) session stores: one table,
//! `hfs_upload_sessions`, created and migrated by the server itself from the versioned files
//! in `migrations/<dialect>/`. Every operation is one statement (two for a creation), so no
//! transaction spans a round trip; the unique `active_key` (the path's SHA-256 while the
//! upload is unfinished) is what makes "one unfinished upload per path" hold across nodes.
//! Locks are a lease in the row (`lock_owner`, `lock_until` in Unix milliseconds: the nodes'
//! clocks must agree to well under the 30 s lease, as NTP keeps them).

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Session, SessionStore, StoreError, StoreResult};

/// A statement that gets no answer within this is an unavailable store (never a hang).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The database gives up on a statement (one waiting for a row lock, say) a little before
/// the client does, so a statement the client gave up on can never take effect later.
const SERVER_TIMEOUT_MS: u64 = 2500;

const MIGRATIONS_PG: &[(i32, &str)] = &[(1, include_str!("../../migrations/postgres/0001_upload_sessions.sql"))];
const MIGRATIONS_MYSQL: &[(i32, &str)] = &[(1, include_str!("../../migrations/mysql/0001_upload_sessions.sql"))];

const COLUMNS: &str = "id, path, length, upload_offset, content_type, metadata, expires";
/// Each statement uses each parameter once, in order, so MySQL's `?` can stand for `$n`.
const CLEAR_ACTIVE: &str =
    "UPDATE hfs_upload_sessions SET active_key = NULL WHERE active_key = $1 AND (expires <= $2 OR upload_offset = length)";
const INSERT: &str = "INSERT INTO hfs_upload_sessions (id, path, length, upload_offset, content_type, metadata, expires, active_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const LOCK: &str = "UPDATE hfs_upload_sessions SET lock_owner = $1, lock_until = $2 WHERE id = $3 AND (lock_owner IS NULL OR lock_owner = $4 OR lock_until < $5)";
const UNLOCK: &str =
    "UPDATE hfs_upload_sessions SET lock_owner = NULL, lock_until = 0 WHERE id = $1 AND lock_owner = $2";
/// The new offset is passed twice ($1, $3): MySQL's `?` cannot name a parameter again.
const ADVANCE: &str = "UPDATE hfs_upload_sessions SET upload_offset = $1, expires = $2, active_key = CASE WHEN $3 = length THEN NULL ELSE active_key END WHERE id = $4 AND upload_offset = $5";
const REMOVE: &str = "DELETE FROM hfs_upload_sessions WHERE id = $1";

fn select_by_id() -> String {
    format!("SELECT {COLUMNS} FROM hfs_upload_sessions WHERE id = $1")
}

fn select_expired() -> String {
    format!("SELECT {COLUMNS} FROM hfs_upload_sessions WHERE expires <= $1")
}

fn mysql(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            while chars.peek().is_some_and(char::is_ascii_digit) {
                chars.next();
            }
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

fn active_key(path: &str) -> String {
    hex::encode(Sha256::digest(path.as_bytes()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Where and as whom to connect (FallbackDBHost, -User, -Password, -Name).
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub name: String,
}

impl DbConfig {
    fn describe(&self) -> String {
        format!("{}@{}:{}/{}", self.user, self.host, self.port, self.name)
    }
}

type Row = (String, String, i64, i64, String, String, i64);

fn session(r: Row) -> Session {
    Session {
        id: r.0,
        path: r.1,
        length: r.2.max(0) as u64,
        offset: r.3.max(0) as u64,
        content_type: r.4,
        metadata: r.5,
        expires: r.6.max(0) as u64,
    }
}

// ---------------- PostgreSQL ----------------

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
            describe: db.describe(),
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

    async fn lock(&self, id: &str, owner: &str, lease: Duration) -> StoreResult<bool> {
        let c = self.client().await?;
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let n = self
            .timed(c.execute(LOCK, &[&owner, &until, &id, &owner, &now]))
            .await?;
        Ok(n == 1)
    }

    async fn unlock(&self, id: &str, owner: &str) -> StoreResult<()> {
        let c = self.client().await?;
        self.timed(c.execute(UNLOCK, &[&id, &owner])).await.map(|_| ())
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
            describe: db.describe(),
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

    async fn lock(&self, id: &str, owner: &str, lease: Duration) -> StoreResult<bool> {
        let now = now_ms();
        let until = now + lease.as_millis() as i64;
        let n = self.exec(LOCK, (owner, until, id, owner, now).into()).await?;
        Ok(n == 1)
    }

    async fn unlock(&self, id: &str, owner: &str) -> StoreResult<()> {
        self.exec(UNLOCK, (id, owner).into()).await.map(|_| ())
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

/// Run `attempt` up to `retries + 1` times, `delay` apart, logging each failure.
async fn retry<F, Fut>(
    backend: &'static str,
    what: &str,
    retries: u32,
    delay: Duration,
    mut attempt: F,
) -> StoreResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<()>>,
{
    let mut n = 0;
    loop {
        match attempt().await {
            Ok(()) => return Ok(()),
            Err(e) if n < retries => {
                n += 1;
                tracing::warn!(backend, db = %what, attempt = n, retries, error = %e, "session store not reachable yet");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_for_mysql() {
        assert_eq!(
            mysql("UPDATE t SET a = $1 WHERE b = $2 AND c = $10"),
            "UPDATE t SET a = ? WHERE b = ? AND c = ?"
        );
        assert_eq!(active_key("a/b").len(), 64);
    }
}
