//! The PostgreSQL (tokio-postgres) and MySQL/MariaDB (mysql_async) session stores: one table,
//! `hfs_upload_sessions`, created and migrated by the server itself from the versioned files
//! in `migrations/<dialect>/`. Every operation is one statement (two for a creation), so no
//! transaction spans a round trip; the unique `active_key` (the path's SHA-256 while the
//! upload is unfinished) is what makes "one unfinished upload per path" hold across nodes.
//! Locks are a lease in the row (`lock_owner`, `lock_until` in Unix milliseconds: the nodes'
//! clocks must agree to well under the 30 s lease, as NTP keeps them).

use std::time::Duration;

use sha2::{Digest, Sha256};

mod mysql;
mod postgres;

pub use mysql::Mysql;
pub use postgres::Postgres;

use super::{Session, StoreError, StoreResult};

/// A statement that gets no answer within this is an unavailable store (never a hang).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(3);
/// The database gives up on a statement (one waiting for a row lock, say) a little before
/// the client does, so a statement the client gave up on can never take effect later.
const SERVER_TIMEOUT_MS: u64 = 2500;

const MIGRATIONS_PG: &[(i32, &str)] = &[
    (1, include_str!("../../../migrations/postgres/0001_upload_sessions.sql")),
    (2, include_str!("../../../migrations/postgres/0002_lock_owner_node.sql")),
];
const MIGRATIONS_MYSQL: &[(i32, &str)] = &[
    (1, include_str!("../../../migrations/mysql/0001_upload_sessions.sql")),
    (2, include_str!("../../../migrations/mysql/0002_lock_owner_node.sql")),
];

const COLUMNS: &str = "id, path, length, upload_offset, content_type, metadata, expires";
/// Each statement uses each parameter once, in order, so MySQL's `?` can stand for `$n`.
const CLEAR_ACTIVE: &str =
    "UPDATE hfs_upload_sessions SET active_key = NULL WHERE active_key = $1 AND (expires <= $2 OR upload_offset = length)";
const INSERT: &str = "INSERT INTO hfs_upload_sessions (id, path, length, upload_offset, content_type, metadata, expires, active_key) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
/// Free, expired, ours already, or held by an earlier generation of our own node.
const LOCK: &str = "UPDATE hfs_upload_sessions SET lock_owner = $1, lock_node = $2, lock_gen = $3, lock_until = $4 WHERE id = $5 AND (lock_owner IS NULL OR lock_owner = $6 OR lock_until < $7 OR (lock_node = $8 AND lock_gen < $9))";
const RENEW: &str = "UPDATE hfs_upload_sessions SET lock_until = $1 WHERE id = $2 AND lock_owner = $3";
const UNLOCK: &str = "UPDATE hfs_upload_sessions SET lock_owner = NULL, lock_node = NULL, lock_gen = 0, lock_until = 0 WHERE id = $1 AND lock_owner = $2";
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

/// How a database shows in logs and errors: `user@host:port/name`, never the password.
fn describe(db: &crate::config::DbConfig) -> String {
    format!("{}@{}:{}/{}", db.user, db.host, db.port, db.name)
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
