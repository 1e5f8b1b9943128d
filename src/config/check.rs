//! What a configuration must satisfy to start (`validate`: an error naming the key) and what
//! is allowed but unwise (`warnings`).

use super::{Config, ConfigError};

/// The `Secret` of config.toml.example. Everyone can read it, so everyone could sign uploads
/// for a server that kept it: refused.
pub const EXAMPLE_SECRET: &str = "change-me-to-a-long-random-string";
/// Shorter secrets are accepted with a warning: an HMAC key is only as strong as its guessing.
const SHORT_SECRET: usize = 16;
/// The longest any duration key may be, in seconds: ten years.
const MAX_SECONDS: u64 = 10 * 365 * 24 * 3600;

impl Config {
    /// What is allowed but unwise, for the start-up log and `--check-config`.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.secret.len() < SHORT_SECRET {
            out.push(format!(
                "config key `Secret`: {} bytes is short for an HMAC key (anyone who guesses it can sign uploads); \
                 use at least {SHORT_SECRET}, e.g. `openssl rand -hex 32`",
                self.secret.len()
            ));
        }
        for (i, previous) in self.previous_secrets.iter().enumerate() {
            if previous.len() < SHORT_SECRET {
                out.push(format!(
                    "config key `PreviousSecrets`: entry {i} has {} bytes, short for an HMAC key",
                    previous.len()
                ));
            }
        }
        out
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.secret.is_empty() {
            return invalid(
                "Secret",
                "must not be empty: it is the HMAC key shared with the XMPP server (generate one with `openssl rand -hex 32`)",
            );
        }
        if self.secret == EXAMPLE_SECRET {
            return invalid(
                "Secret",
                "is the placeholder of config.toml.example, which anyone can read, so anyone could sign \
                 uploads: generate one with `openssl rand -hex 32`, put it here (or in HMAC_FILE_SERVER_SECRET) \
                 and give the same value to the XMPP server",
            );
        }
        for previous in &self.previous_secrets {
            if previous.is_empty() || *previous == EXAMPLE_SECRET {
                return invalid(
                    "PreviousSecrets",
                    "holds an empty secret or the placeholder of config.toml.example: list only secrets \
                     an XMPP server may still sign with",
                );
            }
        }
        if self.jwt_clock_skew > 300 {
            return invalid("JWTClockSkew", "must be at most 300 seconds");
        }
        if self.store_dir.as_os_str().is_empty() {
            return invalid("StoreDir", "must not be empty");
        }
        if self.upload_sub_dir.contains(['\\', '?', '#', '%']) || self.upload_sub_dir.split('/').any(|s| s == "..") {
            return invalid("UploadSubDir", "must be a plain URL path segment such as \"upload\"");
        }
        if !["debug", "info", "warn", "error"].contains(&self.log_level.to_ascii_lowercase().as_str()) {
            return invalid("LogLevel", "must be one of debug, info, warn, error");
        }
        if !["text", "json"].contains(&self.log_format.to_ascii_lowercase().as_str()) {
            return invalid("LogFormat", "must be \"text\" or \"json\"");
        }
        if self.chunk_size.0 < 4096 || self.chunk_size.0 > (64 << 20) {
            return invalid("ChunkSize", "must be between 4KB and 64MB");
        }
        if self.upload_max_size.0 == 0 {
            return invalid("UploadMaxSize", "must be above 0");
        }
        if self.max_header_bytes.0 < 1024 || self.max_header_bytes.0 > (1 << 20) {
            return invalid("MaxHeaderBytes", "must be between 1KB and 1MB");
        }
        if self.max_url_bytes.0 < 256 || self.max_url_bytes.0 > self.max_header_bytes.0 {
            return invalid("MaxUrlBytes", "must be at least 256 bytes and at most MaxHeaderBytes");
        }
        if !self.unix_socket {
            self.listen_addr()?;
        } else if self.listen_port.trim().is_empty() {
            return invalid("ListenPort", "with UnixSocket = true it must be the socket's path");
        }
        if self.unix_socket_mode > 0o777 {
            return invalid("UnixSocketMode", "must be a permission mode such as 0o660");
        }
        if self.node_id.len() > 64
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return invalid("NodeId", "must be at most 64 letters, digits, '-', '_' or '.'");
        }
        if self.file_mode > 0o777 || self.file_mode & 0o600 != 0o600 {
            return invalid(
                "FileMode",
                "must be a permission mode the server can read and write, such as 0o640",
            );
        }
        if self.dir_mode > 0o777 || self.dir_mode & 0o700 != 0o700 {
            return invalid(
                "DirMode",
                "must be a permission mode the server can enter and write, such as 0o750",
            );
        }
        if self.max_bytes_per_second.0 > 0 && self.min_body_rate.0 > self.max_bytes_per_second.0 {
            return invalid(
                "MinBodyRate",
                "must not be above MaxBytesPerSecond: paced uploads would be cut as too slow",
            );
        }
        for (key, value) in [
            ("HeaderTimeout", self.header_timeout),
            ("BodyTimeout", self.body_timeout),
            ("IdleTimeout", self.idle_timeout),
            ("SendTimeout", self.send_timeout()),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1 second");
            }
        }
        // Deadlines are instants: a number of seconds too large to add to the clock would panic
        // the worker that first adds it, so every such key has a ceiling.
        for (key, value) in [
            ("HeaderTimeout", self.header_timeout),
            ("BodyTimeout", self.body_timeout),
            ("IdleTimeout", self.idle_timeout),
            ("SendTimeout", self.send_timeout()),
            ("OpenFileCacheSeconds", self.open_file_cache_seconds),
            ("GracefulShutdownTimeout", self.graceful_shutdown_timeout),
            ("ResumableExpiration", self.resumable_expiration),
            ("RetryDelay", self.retry_delay),
        ] {
            if value > MAX_SECONDS {
                return invalid(key, "must be at most 315360000 seconds (ten years)");
            }
        }
        if self.open_file_cache_entries == 0 || self.open_file_cache_entries > 100_000 {
            return invalid("OpenFileCacheEntries", "must be between 1 and 100000");
        }
        if self.resumable_expiration == 0 {
            return invalid("ResumableExpiration", "must be at least 1 second");
        }
        if !["postgres", "mysql"].contains(&self.fallback_db_type.as_str()) {
            return invalid("FallbackDBType", "must be \"postgres\" or \"mysql\"");
        }
        if self.fallback_enabled {
            self.fallback_db()?;
        }
        Ok(())
    }
}
