//! hmac-file-server: signed HTTP uploads for XMPP servers (XEP-0363 external upload), on a
//! thread-per-core io_uring runtime. `server` is where a request's journey starts.

pub mod admin;
pub mod auth;
pub mod budget;
pub mod config;
pub mod conn;
pub mod download;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod path;
pub mod server;
pub mod session;
pub mod shutdown;
pub mod storage;
pub mod throttle;
pub mod tus;
pub mod upload;
