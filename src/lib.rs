//! hmac-file-server: signed HTTP uploads for XMPP servers (XEP-0363 external upload), on a
//! thread-per-core io_uring runtime. docs/architecture.md maps the modules; a request goes
//! runtime → connection → router → handlers → domain (auth, path, storage, session, limits)
//! → http (the wire format).

// The process: threads, listeners, the side thread, the graceful stop.
pub mod runtime;
// The command line (parsed in main.rs; also the man page and completions).
pub mod cli;
// One client connection and its request loop.
pub mod connection;
// Where a request goes, and what is done with it.
pub mod handlers;
pub mod router;
// The operator's port, served on the side thread.
pub mod ops;
// What the handlers work with.
pub mod app;
pub mod auth;
pub mod limits;
pub mod metrics;
pub mod path;
pub mod retention;
pub mod session;
pub mod shutdown;
pub mod storage;
// Below everything.
pub mod config;
pub mod error;
pub mod http;
pub mod logging;
pub mod node;
pub mod sync;
