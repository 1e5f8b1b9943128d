//! Shared fixtures of the real-server tests, by concern: the server under test (`server`),
//! HTTP clients for it (`clients`), the session stores behind it (`stores`), a proxy in front
//! of it (`nginx`), XMPP servers that hand out its slots (`xmpp`), and the small helpers below (test data, signed URLs, external tools).
#![allow(dead_code, unused_imports)]

pub mod clients;
pub mod nginx;
pub mod server;
pub mod stores;
pub mod xmpp;

pub use clients::*;
pub use server::*;
pub use stores::*;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};

pub use hmac_file_server::auth::Proto;

pub const SECRET: &str = "test-secret-ä";

/// A free loopback port for a server under test, chosen below the kernel's ephemeral range
/// (32768 and up here): the clients of concurrent tests take their source ports from that
/// range, and one that landed on a server's port just as it (re)starts would make its bind
/// fail or a readiness probe connect to itself.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ COUNTER.fetch_add(1, Ordering::Relaxed) | 1;
    loop {
        // xorshift: spread consecutive seeds over the range.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Whether an external tool the interop tests drive is installed. Missing under `CI=true`: the
/// test fails (CI installs everything). Missing elsewhere: a loud SKIPPED line, so a quick
/// `cargo test` on a machine without them still runs the rest; `tests/install-deps.sh` adds them.
pub fn require(tool: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is not installed; CI must install it (tests/install-deps.sh)");
    }
    eprintln!("SKIPPED: {tool} is not installed; run tests/install-deps.sh to run this test");
    false
}

/// Headless Debian Chromium with a fresh profile in `profile`, started the way this machine's
/// closed network needs (no background connections, no QUIC, no sandbox as root).
pub fn chromium(profile: &Path) -> Command {
    let mut c = Command::new("chromium");
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
    ])
    .arg(format!("--user-data-dir={}", profile.join("profile").display()));
    c
}

/// Whether `cmd` is an executable on PATH (some tools, like `prosody --version`, wait on
/// their terminal when run, so finding them is the check).
pub fn on_path(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(cmd)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Whether `cmd` runs and succeeds.
pub fn runs(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn encode_path(path: &str) -> String {
    hmac_file_server::path::percent_encode(path)
}

pub fn signed_target(secret: &str, path: &str, size: u64, content_type: Option<&str>, proto: Proto) -> String {
    let ct = content_type.unwrap_or("application/octet-stream");
    let sig = hmac_file_server::auth::sign(secret.as_bytes(), proto, path, size, ct.as_bytes());
    format!("/upload/{}?{}={}", encode_path(path), proto.param(), sig)
}

/// The claims of a Prosody mod_http_file_share slot for `path` ("slot/filename"), as its
/// `get_authz` signs them: valid 300 s from now, the file kept a week.
pub fn slot_claims(path: &str, size: u64, filetype: &str) -> serde_json::Value {
    let (slot, filename) = path.split_once('/').expect("slot/filename");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    serde_json::json!({
        "sub": "alice@localhost", "iat": now, "exp": now + 300, "slot": slot,
        "expires": now + 7 * 86400, "filename": filename, "filesize": size, "filetype": filetype,
    })
}

/// A token over `claims` as Prosody's `util.jwt` mints it, keyed with `secret`.
pub fn slot_token(secret: &str, claims: &serde_json::Value) -> String {
    hmac_file_server::auth::jwt::mint(secret.as_bytes(), &claims.to_string())
}

/// The target of a slot's URL: `/upload/<slot>/<filename>`, percent-encoded, no query.
pub fn slot_target(path: &str) -> String {
    format!("/upload/{}", encode_path(path))
}

/// A unique path per test, so parallel tests never collide.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:04x}-{}/{}", std::process::id(), n, nanos() % 1_000_000, name)
}

pub fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Deterministic pseudo-random bytes (xorshift), so large bodies are not trivially compressible
/// or repetitive in a way that could hide an offset bug.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
