//! The Redis session store (fred). Every change is one Lua script, so it is atomic however
//! many nodes share the Redis. Keys, under `hmac-file-server:`:
//! `session:<id>` (hash of the session's fields), `path:<path>` (id of the newest session
//! targeting the path), `lock:<id>` (writer, with a lease), `expires` (sorted set by expiry).
//!
//! Durability is Redis's own: with `appendonly yes` and `appendfsync always` an acknowledged
//! offset survives a Redis crash; with the defaults up to a second of progress may be lost
//! there (clients then resume from the earlier offset: the bytes are still in the file).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;

use super::{Owner, Session, SessionStore, StoreError, StoreResult};

const BACKEND: &str = "redis";
const PREFIX: &str = "hmac-file-server:";
const EXPIRES: &str = "hmac-file-server:expires";
/// A command that gets no answer within this is an unavailable store (never a hang).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

const CREATE: &str = r#"
local cur = redis.call('GET', KEYS[2])
if cur then
  local h = redis.call('HMGET', ARGV[9] .. cur, 'offset', 'length', 'expires')
  if h[1] and h[1] ~= h[2] and tonumber(h[3]) > tonumber(ARGV[8]) then return 0 end
end
redis.call('SET', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'path', ARGV[2], 'length', ARGV[3], 'offset', ARGV[4],
  'content_type', ARGV[5], 'metadata', ARGV[6], 'expires', ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
return 1
"#;

/// The lock's value is `<owner> <lease end, Unix ms by Redis's clock>`; the key itself expires
/// only twenty leases later, so that the holder can still renew a lease that ran
/// out while nobody took it. ARGV: owner, lease ms, owner's node, owner's generation.
const LOCK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('GET', KEYS[1])
if cur then
  local holder, till = string.match(cur, '^(.*) (%d+)$')
  if holder ~= ARGV[1] and tonumber(till) >= now then
    local node, gen = string.match(holder, '^(.*)|(%d+)|[^|]*$')
    if not (node == ARGV[3] and tonumber(gen) < tonumber(ARGV[4])) then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])), 'PX', tonumber(ARGV[2]) * 20)
return 1
"#;

/// ARGV: owner, lease ms.
const RENEW: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur or string.match(cur, '^(.*) %d+$') ~= ARGV[1] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. (now + tonumber(ARGV[2])), 'PX', tonumber(ARGV[2]) * 20)
return 1
"#;

const UNLOCK: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(.*) %d+$') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

const ADVANCE: &str = r#"
if redis.call('HGET', KEYS[1], 'offset') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'offset', ARGV[2], 'expires', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
"#;

const REMOVE: &str = r#"
local path = redis.call('HGET', KEYS[1], 'path')
if path and redis.call('GET', ARGV[2] .. path) == ARGV[1] then redis.call('DEL', ARGV[2] .. path) end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#;

pub struct Redis {
    client: Client,
    addr: String,
}

fn session_key(id: &str) -> String {
    format!("{PREFIX}session:{id}")
}

fn lock_key(id: &str) -> String {
    format!("{PREFIX}lock:{id}")
}

impl Redis {
    /// Connect to `addr` ("host:port"), trying `retries` more times `delay` apart. The client
    /// keeps reconnecting in the background after a later loss, `delay` apart.
    pub async fn connect(addr: &str, password: &str, db: u32, retries: u32, delay: Duration) -> StoreResult<Redis> {
        let unavailable = |e: &dyn std::fmt::Display| StoreError::Unavailable {
            backend: BACKEND,
            reason: format!("{addr}: {e}"),
        };
        let mut config = Config::from_url(&format!("redis://{addr}/{db}")).map_err(|e| unavailable(&e))?;
        if !password.is_empty() {
            config.password = Some(password.to_owned());
        }
        let delay_ms = u32::try_from(delay.as_millis()).unwrap_or(u32::MAX).max(100);
        let client = Builder::from_config(config)
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(3);
                c.internal_command_timeout = Duration::from_secs(3);
                c.max_command_attempts = 1;
            })
            .with_performance_config(|c| c.default_command_timeout = COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_constant(0, delay_ms))
            .build()
            .map_err(|e| unavailable(&e))?;
        let store = Redis {
            client,
            addr: addr.to_owned(),
        };
        store.log_connection_changes();
        let _task = store.client.connect();
        let mut last = String::new();
        for attempt in 0..=retries {
            match tokio::time::timeout(delay.max(Duration::from_secs(1)), store.client.wait_for_connect()).await {
                Ok(Ok(())) => match store.ping().await {
                    Ok(()) => return Ok(store),
                    Err(e) => last = e.to_string(),
                },
                Ok(Err(e)) => last = e.to_string(),
                Err(_) => last = "no connection".into(),
            }
            tracing::warn!(addr, attempt = attempt + 1, retries, error = %last, "Redis (RedisAddr) not reachable yet");
        }
        // The client goes on reconnecting in the background: the store answers "unavailable"
        // until Redis is back, then works again by itself.
        tracing::error!(addr, error = %last, "Redis session store unavailable at start; resumable uploads get 503 (or use the fallback) until it answers");
        Ok(store)
    }

    /// One line when an established connection is lost and one when it is back: the client
    /// reconnects by itself, `RetryDelay` apart, and commands meanwhile wait up to their timeout.
    fn log_connection_changes(&self) {
        const NEVER: u8 = 0;
        const UP: u8 = 1;
        const LOST: u8 = 2;
        let state = Arc::new(AtomicU8::new(NEVER));
        let (on_error, addr) = (state.clone(), self.addr.clone());
        // The listeners run as long as the client: their handles are not needed.
        drop(self.client.on_error(move |(e, _)| {
            if on_error
                .compare_exchange(UP, LOST, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                tracing::warn!(addr = %addr, error = %e, "Redis session store connection lost; reconnecting");
            }
            async { Ok(()) }
        }));
        let addr = self.addr.clone();
        drop(self.client.on_reconnect(move |_| {
            if state.swap(UP, Ordering::AcqRel) == LOST {
                tracing::info!(addr = %addr, "Redis session store reconnected");
            }
            async { Ok(()) }
        }));
    }

    fn err(&self, e: fred::error::Error) -> StoreError {
        StoreError::Unavailable {
            backend: BACKEND,
            reason: format!("{}: {e}", self.addr),
        }
    }

    async fn script(&self, script: &str, keys: Vec<String>, args: Vec<String>) -> StoreResult<bool> {
        let n: i64 = self.client.eval(script, keys, args).await.map_err(|e| self.err(e))?;
        Ok(n == 1)
    }
}

fn field<T: std::str::FromStr>(h: &HashMap<String, String>, name: &str) -> Option<T> {
    h.get(name)?.parse().ok()
}

#[async_trait::async_trait]
impl SessionStore for Redis {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create(&self, s: &Session, now: u64) -> StoreResult<()> {
        let keys = vec![
            session_key(&s.id),
            format!("{PREFIX}path:{}", s.path),
            EXPIRES.to_owned(),
        ];
        let args = vec![
            s.id.clone(),
            s.path.clone(),
            s.length.to_string(),
            s.offset.to_string(),
            s.content_type.clone(),
            s.metadata.clone(),
            s.expires.to_string(),
            now.to_string(),
            format!("{PREFIX}session:"),
        ];
        if self.script(CREATE, keys, args).await? {
            Ok(())
        } else {
            Err(StoreError::PathBusy)
        }
    }

    async fn get(&self, id: &str) -> StoreResult<Option<Session>> {
        let h: HashMap<String, String> = self.client.hgetall(session_key(id)).await.map_err(|e| self.err(e))?;
        if h.is_empty() {
            return Ok(None);
        }
        let parsed = (|| {
            Some(Session {
                id: h.get("id")?.clone(),
                path: h.get("path")?.clone(),
                length: field(&h, "length")?,
                offset: field(&h, "offset")?,
                content_type: h.get("content_type")?.clone(),
                metadata: h.get("metadata").cloned().unwrap_or_default(),
                expires: field(&h, "expires")?,
            })
        })();
        match parsed {
            Some(s) => Ok(Some(s)),
            None => Err(StoreError::Unavailable {
                backend: BACKEND,
                reason: format!("session {id} is malformed in Redis"),
            }),
        }
    }

    async fn lock(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let args = vec![
            owner.encode(),
            lease.as_millis().max(1).to_string(),
            owner.node.clone(),
            owner.generation.to_string(),
        ];
        self.script(LOCK, vec![lock_key(id)], args).await
    }

    async fn renew(&self, id: &str, owner: &Owner, lease: Duration) -> StoreResult<bool> {
        let args = vec![owner.encode(), lease.as_millis().max(1).to_string()];
        self.script(RENEW, vec![lock_key(id)], args).await
    }

    async fn unlock(&self, id: &str, owner: &Owner) -> StoreResult<()> {
        self.script(UNLOCK, vec![lock_key(id)], vec![owner.encode()])
            .await
            .map(|_| ())
    }

    async fn advance(&self, id: &str, from: u64, to: u64, expires: u64) -> StoreResult<bool> {
        let keys = vec![session_key(id), EXPIRES.to_owned()];
        let args = vec![from.to_string(), to.to_string(), expires.to_string(), id.to_owned()];
        self.script(ADVANCE, keys, args).await
    }

    async fn remove(&self, id: &str) -> StoreResult<()> {
        let keys = vec![session_key(id), EXPIRES.to_owned()];
        self.script(REMOVE, keys, vec![id.to_owned(), format!("{PREFIX}path:")])
            .await
            .map(|_| ())
    }

    async fn expired(&self, now: u64) -> StoreResult<Vec<Session>> {
        let ids: Vec<String> = self
            .client
            .zrangebyscore(EXPIRES, "-inf", now as f64, false, None)
            .await
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for id in ids {
            match self.get(&id).await? {
                Some(s) => out.push(s),
                // Left in the index by a removal that failed half-way: tidy it.
                None => {
                    let _: i64 = self.client.zrem(EXPIRES, id).await.map_err(|e| self.err(e))?;
                }
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> StoreResult<()> {
        let _: String = self.client.ping(None).await.map_err(|e| self.err(e))?;
        Ok(())
    }
}
