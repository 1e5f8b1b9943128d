//! The application's state: what every request may consult, built once at start and shared by
//! the workers and the side thread. Handlers receive it as an argument; nothing reaches for it.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Keys;
use crate::config::Config;
use crate::http::Limits;
use crate::limits::{Budget, ConnectionCap, PerIp};
use crate::metrics::Metrics;
use crate::retention::Catalog;
use crate::session::Sessions;
use crate::shutdown::Shutdown;
use crate::storage::{OpenFileCache, Store};

/// The optional parts of the protocol that are switched on (what routes exist).
#[derive(Debug, Clone, Copy)]
pub struct Features {
    /// tus resumable uploads (`ResumableUploads`).
    pub resumable: bool,
    /// Signed deletion (`DeleteSecret` set).
    pub deletion: bool,
}

pub struct App {
    pub config: Config,
    /// This node's index of stored files: expiry, quotas, deletion.
    pub retention: Catalog,
    /// `Secret` and `PreviousSecrets`, what uploads are verified with.
    pub keys: Keys,
    pub store: Arc<Store>,
    /// The session store of resumable uploads (None: switched off, or it failed to open).
    pub sessions: Option<Sessions>,
    /// The URL prefix uploads and downloads live under ("/upload/").
    pub prefix: String,
    pub head_limits: Limits,
    /// The optional routes switched on.
    pub features: Features,
    pub file_cache: OpenFileCache,
    pub shutdown: Shutdown,
    pub per_ip: PerIp,
    pub connections: ConnectionCap,
    /// Bytes held by upload bodies whose signature is not checked yet.
    pub unverified: Budget,
    pub metrics: Arc<Metrics>,
    /// `Cache-Control` of downloads without an expiry of their own.
    pub cache_control: String,
}

impl App {
    pub fn new(
        config: Config,
        store: Arc<Store>,
        sessions: Option<Sessions>,
        metrics: Arc<Metrics>,
        retention: Catalog,
    ) -> App {
        let (unverified_total, unverified_per_ip) = config.unverified_caps();
        App {
            keys: Keys::new(&config.secret, &config.previous_secrets),
            prefix: config.url_prefix(),
            features: Features {
                resumable: config.resumable_uploads,
                deletion: !config.delete_secret.is_empty(),
            },
            head_limits: Limits {
                max_head: config.max_header_bytes.0 as usize,
                max_url: config.max_url_bytes.0 as usize,
            },
            shutdown: Shutdown::new(config.worker_count()),
            file_cache: OpenFileCache {
                ttl: Duration::from_secs(config.open_file_cache_seconds),
                entries: config.open_file_cache_entries,
            },
            per_ip: PerIp::new(
                config.max_requests_per_second_per_ip,
                config.max_concurrent_uploads_per_ip,
            ),
            connections: ConnectionCap::new(config.max_connections),
            unverified: Budget::new(unverified_total, unverified_per_ip),
            metrics,
            retention,
            cache_control: crate::http::response::cache_control(config.cache_max_age, config.cache_public, None, 0),
            sessions,
            config,
            store,
        }
    }

    /// Remove a resumable upload's partial file and give up what it reserved.
    pub fn discard_part(&self, id: &str) {
        self.store.remove_part(id);
        self.retention.release_part(id);
    }
}
