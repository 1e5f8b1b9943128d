//! TOML configuration: the Go hmac-file-server's top-level keys, plus ours.
//!
//! Every key has a default; unknown or mistyped keys are errors that name the key,
//! because a silently ignored typo in a security setting is worse than a failed start.

use std::path::{Path, PathBuf};

use serde::Deserialize;

mod check;
mod duration;
mod size;

pub use check::EXAMPLE_SECRET;
pub use duration::{parse_duration, Seconds};
pub use size::{parse_size, ByteSize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    #[serde(rename = "ListenPort")]
    pub listen_port: String,
    #[serde(rename = "UnixSocket")]
    pub unix_socket: bool,
    #[serde(rename = "Secret")]
    pub secret: String,
    /// Earlier secrets that still verify (never sign): rotation without downtime.
    #[serde(rename = "PreviousSecrets")]
    pub previous_secrets: Vec<String>,
    /// Seconds a Bearer token's `exp` may lie in the past (the issuer's clock may run ahead).
    #[serde(rename = "JWTClockSkew")]
    pub jwt_clock_skew: u64,
    /// Files are deleted this long after their upload (and not served from then on); 0 = kept.
    #[serde(rename = "FileTTL")]
    pub file_ttl: Seconds,
    /// Bytes all stored files may take together; 0 = no limit.
    #[serde(rename = "StoreMaxSize")]
    pub store_max_size: ByteSize,
    /// Bytes the files of one known uploader may take; 0 = no limit.
    #[serde(rename = "UserQuota")]
    pub user_quota: ByteSize,
    /// Over `UserQuota`, delete the uploader's oldest files to make room instead of refusing.
    #[serde(rename = "UserQuotaEvictOldest")]
    pub user_quota_evict_oldest: bool,
    /// Take the first path segment as the uploader of signed URLs (ejabberd: `sha1(user@host)`).
    #[serde(rename = "UploaderFromPath")]
    pub uploader_from_path: bool,
    /// Where this node's index of stored files lives; empty = `StoreDir/.hmac-file-server/index`.
    #[serde(rename = "IndexDir")]
    pub index_dir: PathBuf,
    /// Metronome's signed deletion: `DELETE <path>?token=HMAC(Secret, path "\0" DeleteSecret)`;
    /// empty = off.
    #[serde(rename = "DeleteSecret")]
    pub delete_secret: String,
    #[serde(rename = "StoreDir")]
    pub store_dir: PathBuf,
    #[serde(rename = "UploadSubDir")]
    pub upload_sub_dir: String,
    #[serde(rename = "LogLevel")]
    pub log_level: String,
    #[serde(rename = "LogFile")]
    pub log_file: String,
    /// "text" (human-readable lines) or "json" (one object per line, for log shippers).
    #[serde(rename = "LogFormat")]
    pub log_format: String,
    #[serde(rename = "MaxRetries")]
    pub max_retries: u32,
    #[serde(rename = "RetryDelay")]
    pub retry_delay: u64,
    #[serde(rename = "MetricsEnabled")]
    pub metrics_enabled: bool,
    #[serde(rename = "MetricsPort")]
    pub metrics_port: String,
    #[serde(rename = "ChunkSize")]
    pub chunk_size: ByteSize,
    #[serde(rename = "UploadMaxSize")]
    pub upload_max_size: ByteSize,
    #[serde(rename = "MaxBytesPerSecond")]
    pub max_bytes_per_second: ByteSize,
    #[serde(rename = "RedisAddr")]
    pub redis_addr: String,
    #[serde(rename = "RedisPassword")]
    pub redis_password: String,
    #[serde(rename = "RedisDB")]
    pub redis_db: u32,
    #[serde(rename = "FallbackEnabled")]
    pub fallback_enabled: bool,
    #[serde(rename = "FallbackDBType")]
    pub fallback_db_type: String,
    #[serde(rename = "FallbackDBHost")]
    pub fallback_db_host: String,
    #[serde(rename = "FallbackDBUser")]
    pub fallback_db_user: String,
    #[serde(rename = "FallbackDBPassword")]
    pub fallback_db_password: String,
    #[serde(rename = "FallbackDBName")]
    pub fallback_db_name: String,
    #[serde(rename = "GracefulShutdownTimeout")]
    pub graceful_shutdown_timeout: u64,

    // ---- keys of our own ----
    /// Permissions of the Unix socket (with `UnixSocket = true`), e.g. 0o660.
    #[serde(rename = "UnixSocketMode")]
    pub unix_socket_mode: u32,
    /// Permissions of stored files and of the directories created for them.
    #[serde(rename = "FileMode")]
    pub file_mode: u32,
    #[serde(rename = "DirMode")]
    pub dir_mode: u32,
    /// This node's name among those sharing a session store, after its host name (for several
    /// servers on one host). One process at a time may run as a node.
    #[serde(rename = "NodeId")]
    pub node_id: String,
    /// Worker threads, each with its own io_uring runtime and listener; 0 = one per core.
    #[serde(rename = "Workers")]
    pub workers: usize,
    /// fsync file and directory before answering 201 (the durability promise).
    #[serde(rename = "SyncWrites")]
    pub sync_writes: bool,
    /// Largest request head (request line + headers) accepted; above it 431.
    #[serde(rename = "MaxHeaderBytes")]
    pub max_header_bytes: ByteSize,
    /// Longest request target accepted; above it 414.
    #[serde(rename = "MaxUrlBytes")]
    pub max_url_bytes: ByteSize,
    /// Seconds a client may take to send a complete request head (408 after).
    #[serde(rename = "HeaderTimeout")]
    pub header_timeout: u64,
    /// Seconds an upload body may stall without a single byte arriving (408 after).
    #[serde(rename = "BodyTimeout")]
    pub body_timeout: u64,
    /// Once an upload body has run `BodyTimeout` seconds, its average rate since its start must
    /// stay at or above this many bytes per second (else 408); 0 = off.
    #[serde(rename = "MinBodyRate")]
    pub min_body_rate: ByteSize,
    /// Seconds a response may wait for the client to accept a single byte before the
    /// connection is closed; absent = `BodyTimeout`.
    #[serde(rename = "SendTimeout")]
    pub send_timeout: Option<u64>,
    /// Bytes of upload bodies not yet vouched for by a signature (chunked PUTs, verified only
    /// after their last chunk) held at once, all clients together (absent: 2 × UploadMaxSize;
    /// 0 = no cap), and per client IP (absent: 1 × UploadMaxSize; 0 = no cap).
    #[serde(rename = "MaxUnverifiedBytes")]
    pub max_unverified_bytes: Option<ByteSize>,
    #[serde(rename = "MaxUnverifiedBytesPerIP")]
    pub max_unverified_bytes_per_ip: Option<ByteSize>,
    /// Seconds an idle keep-alive connection is kept open.
    #[serde(rename = "IdleTimeout")]
    pub idle_timeout: u64,
    /// Seconds a worker trusts an opened download before checking its path again; 0 disables the cache.
    #[serde(rename = "OpenFileCacheSeconds")]
    pub open_file_cache_seconds: u64,
    /// Most files each worker keeps open in that cache.
    #[serde(rename = "OpenFileCacheEntries")]
    pub open_file_cache_entries: usize,
    /// Seconds a client may keep a download without asking again (`Cache-Control: max-age`);
    /// never longer than the file itself lives. 0 = `no-cache`.
    #[serde(rename = "CacheMaxAge")]
    pub cache_max_age: u64,
    /// Let shared caches (proxies, CDNs) keep downloads too (`public` instead of `private`).
    #[serde(rename = "CachePublic")]
    pub cache_public: bool,
    /// Open connections at most, all workers together; above it new ones get 503.
    #[serde(rename = "MaxConnections")]
    pub max_connections: usize,
    /// Requests per second one client IP may make (burst: one second's worth); 0 = no limit.
    #[serde(rename = "MaxRequestsPerSecondPerIP")]
    pub max_requests_per_second_per_ip: u32,
    /// Uploads one client IP may have in progress at once; 0 = no limit.
    #[serde(rename = "MaxConcurrentUploadsPerIP")]
    pub max_concurrent_uploads_per_ip: u32,
    /// tus 1.0 resumable uploads under the upload prefix (docs/protocol.md, "Resumable uploads").
    #[serde(rename = "ResumableUploads")]
    pub resumable_uploads: bool,
    /// Seconds an unfinished resumable upload lives after its last progress; then it and its
    /// partial data are removed.
    #[serde(rename = "ResumableExpiration")]
    pub resumable_expiration: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_port: ":8080".into(),
            unix_socket: false,
            secret: String::new(),
            previous_secrets: Vec::new(),
            jwt_clock_skew: 5,
            file_ttl: Seconds(0),
            store_max_size: ByteSize(0),
            user_quota: ByteSize(0),
            user_quota_evict_oldest: false,
            uploader_from_path: false,
            delete_secret: String::new(),
            index_dir: PathBuf::new(),
            store_dir: PathBuf::from("/var/lib/hmac-file-server"),
            upload_sub_dir: "upload".into(),
            log_level: "info".into(),
            log_file: String::new(),
            log_format: "text".into(),
            max_retries: 3,
            retry_delay: 2,
            metrics_enabled: false,
            // Loopback unless the operator says otherwise (the Go server listens everywhere).
            metrics_port: "127.0.0.1:9090".into(),
            chunk_size: ByteSize(1 << 20),
            upload_max_size: ByteSize(1 << 30),
            max_bytes_per_second: ByteSize(0),
            redis_addr: String::new(),
            redis_password: String::new(),
            redis_db: 0,
            fallback_enabled: false,
            fallback_db_type: "postgres".into(),
            fallback_db_host: "127.0.0.1".into(),
            fallback_db_user: String::new(),
            fallback_db_password: String::new(),
            fallback_db_name: String::new(),
            graceful_shutdown_timeout: 10,
            unix_socket_mode: 0o660,
            file_mode: 0o640,
            node_id: String::new(),
            dir_mode: 0o750,
            workers: 0,
            sync_writes: true,
            max_header_bytes: ByteSize(16 << 10),
            max_url_bytes: ByteSize(8 << 10),
            header_timeout: 30,
            body_timeout: 60,
            min_body_rate: ByteSize(1024),
            send_timeout: None,
            max_unverified_bytes: None,
            max_unverified_bytes_per_ip: None,
            idle_timeout: 75,
            open_file_cache_seconds: 1,
            open_file_cache_entries: 4096,
            cache_max_age: 86_400,
            cache_public: false,
            max_connections: 10_000,
            max_requests_per_second_per_ip: 0,
            max_concurrent_uploads_per_ip: 0,
            resumable_uploads: true,
            resumable_expiration: 86_400,
        }
    }
}

/// Where and as whom to connect to the session database (FallbackDBHost, -User, -Password,
/// -Name).
#[derive(Debug, Clone)]
pub struct DbConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub name: String,
}

/// When set (and not empty), this environment variable supplies `Secret` in place of the file's
/// value: a secret that never touches the config file (a container's, a quick start's).
pub const SECRET_ENV: &str = "HMAC_FILE_SERVER_SECRET";

impl Config {
    /// Read, parse and validate the file at `path`; `HMAC_FILE_SERVER_SECRET` overrides `Secret`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let secret = match std::env::var(SECRET_ENV) {
            Ok(s) if !s.is_empty() => Some(s),
            Ok(_) | Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(ConfigError::Invalid {
                    key: "Secret",
                    message: format!("{SECRET_ENV} is not valid UTF-8"),
                })
            }
        };
        let config = Config::parse_with_secret(&text, secret).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Parse and validate TOML text (the path in errors is left empty).
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with_secret(text, None)
    }

    /// `parse`, with `secret` (when given) in place of the text's `Secret`.
    pub fn parse_with_secret(text: &str, secret: Option<String>) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        if let Some(secret) = secret {
            config.secret = secret;
        }
        config.validate()?;
        Ok(config)
    }

    /// Where the session database is (`FallbackDBHost` as "host" or "host:port", the port
    /// defaulting to the database's own), as whom, and which database.
    pub fn fallback_db(&self) -> Result<DbConfig, ConfigError> {
        let invalid = |key, message: &str| ConfigError::Invalid {
            key,
            message: message.to_owned(),
        };
        let default_port = if self.fallback_db_type == "mysql" { 3306 } else { 5432 };
        let host = self.fallback_db_host.trim();
        let (host, port) = match host.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse()
                    .map_err(|_| invalid("FallbackDBHost", "port must be a number: \"host\" or \"host:port\""))?,
            ),
            _ => (host, default_port),
        };
        if host.is_empty() {
            return Err(invalid("FallbackDBHost", "must name the database host"));
        }
        if self.fallback_db_user.is_empty() {
            return Err(invalid("FallbackDBUser", "must be set when FallbackEnabled = true"));
        }
        if self.fallback_db_name.is_empty() {
            return Err(invalid("FallbackDBName", "must be set when FallbackEnabled = true"));
        }
        Ok(DbConfig {
            host: host.to_owned(),
            port,
            user: self.fallback_db_user.clone(),
            password: self.fallback_db_password.clone(),
            name: self.fallback_db_name.clone(),
        })
    }

    /// `ListenPort` as a socket address: ":8080" means every IPv4 address (the Go convention),
    /// "8080" likewise, "host:port" and "[::1]:8080" as written.
    pub fn listen_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        parse_listen(&self.listen_port).ok_or_else(|| ConfigError::Invalid {
            key: "ListenPort",
            message: format!("{:?} is not \":port\" or \"host:port\"", self.listen_port),
        })
    }

    pub fn metrics_addr(&self) -> Result<std::net::SocketAddr, ConfigError> {
        parse_listen(&self.metrics_port).ok_or_else(|| ConfigError::Invalid {
            key: "MetricsPort",
            message: format!("{:?} is not \":port\" or \"host:port\"", self.metrics_port),
        })
    }

    /// Where this node's index of stored files lives (`IndexDir`).
    pub fn index_dir(&self) -> PathBuf {
        if self.index_dir.as_os_str().is_empty() {
            self.store_dir.join(crate::path::RESERVED_DIR).join("index")
        } else {
            self.index_dir.clone()
        }
    }

    /// The URL prefix uploads and downloads live under, with leading and trailing slash.
    pub fn url_prefix(&self) -> String {
        let trimmed = self.upload_sub_dir.trim_matches('/');
        if trimmed.is_empty() {
            "/".to_owned()
        } else {
            format!("/{trimmed}/")
        }
    }

    pub fn send_timeout(&self) -> u64 {
        self.send_timeout.unwrap_or(self.body_timeout)
    }

    /// (`MaxUnverifiedBytes`, `MaxUnverifiedBytesPerIP`) with their defaults applied; 0 = no cap.
    pub fn unverified_caps(&self) -> (u64, u64) {
        let max = self.upload_max_size.0;
        (
            self.max_unverified_bytes.map_or(max.saturating_mul(2), |b| b.0),
            self.max_unverified_bytes_per_ip.map_or(max, |b| b.0),
        )
    }

    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }
}

fn parse_listen(s: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let s = s.trim();
    let full = if let Some(port) = s.strip_prefix(':') {
        format!("0.0.0.0:{port}")
    } else if s.chars().all(|c| c.is_ascii_digit()) {
        format!("0.0.0.0:{s}")
    } else {
        s.to_owned()
    };
    full.to_socket_addrs().ok()?.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_only_a_secret() {
        let c = Config::parse("Secret = \"x\"").unwrap();
        assert_eq!(c.listen_addr().unwrap().port(), 8080);
        assert_eq!(c.url_prefix(), "/upload/");
        assert_eq!(c.metrics_addr().unwrap().to_string(), "127.0.0.1:9090");
        assert_eq!(c.chunk_size, ByteSize(1 << 20));
        assert!(c.sync_writes);
        assert_eq!(c.send_timeout(), c.body_timeout);
        assert_eq!(c.unverified_caps(), (2 << 30, 1 << 30));
        assert_eq!(c.min_body_rate, ByteSize(1024));
        let c =
            Config::parse("Secret = \"x\"\nMaxUnverifiedBytes = 0\nSendTimeout = 5\nUploadMaxSize = \"1MB\"").unwrap();
        assert_eq!(c.unverified_caps(), (0, 1 << 20));
        assert_eq!(c.send_timeout(), 5);
        assert!(Config::parse("Secret = \"x\"\nMaxBytesPerSecond = 100\nMinBodyRate = 200").is_err());
    }

    #[test]
    fn durations_too_long_for_the_clock_are_refused_by_name() {
        for key in [
            "HeaderTimeout",
            "BodyTimeout",
            "IdleTimeout",
            "SendTimeout",
            "OpenFileCacheSeconds",
            "GracefulShutdownTimeout",
            "ResumableExpiration",
            "RetryDelay",
        ] {
            let ten_years = format!("Secret = \"x\"\n{key} = 315360000");
            assert!(Config::parse(&ten_years).is_ok(), "{key}: ten years is allowed");
            let err = Config::parse(&format!("Secret = \"x\"\n{key} = 9223372036854775807"))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains(key) && err.contains("ten years"), "{key}: {err}");
        }
    }

    #[test]
    fn empty_secret_is_named() {
        let e = Config::parse("").unwrap_err().to_string();
        assert!(e.contains("Secret"), "{e}");
    }

    #[test]
    fn the_example_secret_is_refused_and_short_ones_warned() {
        let e = Config::parse(&format!("Secret = \"{EXAMPLE_SECRET}\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Secret") && e.contains("openssl rand"), "{e}");
        let c = Config::parse_with_secret(&format!("Secret = \"{EXAMPLE_SECRET}\""), Some("k".repeat(32))).unwrap();
        assert_eq!(c.secret, "k".repeat(32));
        assert!(c.warnings().is_empty());
        let c = Config::parse("Secret = \"short\"").unwrap();
        assert!(c.warnings()[0].contains("Secret"), "{:?}", c.warnings());
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example")).unwrap();
        assert!(Config::parse(&example).unwrap_err().to_string().contains("placeholder"));
    }

    #[test]
    fn every_key_is_documented_in_the_example() {
        let example = include_str!("../../config.toml.example");
        let keys: Vec<&str> = include_str!("mod.rs")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("#[serde(rename = \""))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert!(keys.len() > 40, "{keys:?}");
        for key in keys {
            let documented = example
                .lines()
                .any(|l| l.trim_start_matches(['#', ' ']).starts_with(&format!("{key} = ")));
            assert!(documented, "{key} is not in config.toml.example");
        }
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("Secret = \"x\"\nListenPortt = \":1\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ListenPortt"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = Config::parse("Secret = \"x\"\nUnixSocket = \"yes\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("UnixSocket"), "{e}");
    }

    #[test]
    fn sizes_accept_integers_and_units() {
        let c = Config::parse("Secret = \"x\"\nUploadMaxSize = \"10MB\"\nChunkSize = 65536").unwrap();
        assert_eq!(c.upload_max_size, ByteSize(10 << 20));
        assert_eq!(c.chunk_size, ByteSize(65536));
        let e = Config::parse("Secret = \"x\"\nUploadMaxSize = -5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("UploadMaxSize"), "{e}");
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen(":9000").unwrap().to_string(), "0.0.0.0:9000");
        assert_eq!(parse_listen("127.0.0.1:80").unwrap().to_string(), "127.0.0.1:80");
        assert_eq!(parse_listen("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert!(parse_listen("nonsense").is_none());
    }

    #[test]
    fn sub_dir_forms() {
        let c = Config::parse("Secret = \"x\"\nUploadSubDir = \"/files/\"").unwrap();
        assert_eq!(c.url_prefix(), "/files/");
        let c = Config::parse("Secret = \"x\"\nUploadSubDir = \"\"").unwrap();
        assert_eq!(c.url_prefix(), "/");
        assert!(Config::parse("Secret = \"x\"\nUploadSubDir = \"../x\"").is_err());
    }
}
