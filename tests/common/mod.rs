//! Shared fixtures: a real server process on a loopback port with its own StoreDir, signed
//! URLs, and a raw HTTP/1.1 client for the shapes ordinary clients refuse to send.
#![allow(dead_code)]

pub mod nginx;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use hmac_file_server::auth::Proto;

pub const SECRET: &str = "test-secret-ä";

pub struct Server {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub child: Child,
    env: Vec<(String, String)>,
    /// A command the server runs under (strace), or empty.
    wrapper: Vec<String>,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_hmac-file-server")
}

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

/// Wait (`limit` at most) until `child` is up: `ready()` holds and a connection to `addr` reaches
/// something other than ourselves. A bare connect is not enough: while nothing listens, a
/// connect to a port in the ephemeral range can pick that same port as its source and connect
/// to itself. Panics with `log()` if the child exits or the time runs out.
pub fn wait_accepting(
    addr: SocketAddr,
    child: &mut Child,
    what: &str,
    limit: Duration,
    ready: impl Fn() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start-up ({status}); log:\n{}", log());
        }
        if ready() {
            if let Ok(c) = TcpStream::connect(addr) {
                if c.local_addr().ok() != c.peer_addr().ok() {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not start within {limit:?}; log:\n{}", log());
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

/// Run the server binary with `args` to completion: (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run binary");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Write `body` as `c.toml` in `dir`; its path.
pub fn write_config(dir: &Path, body: &str) -> String {
    let p = dir.join("c.toml");
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
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

impl Server {
    pub fn start() -> Server {
        Server::with_config("")
    }

    /// Start with extra TOML lines (they may override the defaults written here).
    pub fn with_config(extra: &str) -> Server {
        Server::with_config_env(extra, &[])
    }

    pub fn with_config_env(extra: &str, env: &[(&str, &str)]) -> Server {
        Server::wrapped(extra, env, &[])
    }

    /// Start under `wrapper` (a command and its arguments, the server's own command line
    /// appended), e.g. strace. `pid()` is then the wrapper's; `wrapped_pid()` the server's.
    pub fn wrapped(extra: &str, env: &[(&str, &str)], wrapper: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cfg = format!(
            "ListenPort = \"127.0.0.1:{port}\"\nSecret = \"{SECRET}\"\nStoreDir = \"{}\"\nLogLevel = \"debug\"\nLogFile = \"{}\"\nWorkers = 2\n",
            dir.path().join("store").display(),
            dir.path().join("server.log").display(),
        );
        // Later keys override earlier ones only if we drop the earlier line.
        for line in extra.lines() {
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                cfg = cfg
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{key} ")))
                    .map(|l| format!("{l}\n"))
                    .collect();
            }
            cfg.push_str(line);
            cfg.push('\n');
        }
        let cfg_path = dir.path().join("config.toml");
        std::fs::write(&cfg_path, cfg).expect("write config");
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let wrapper: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        let child = spawn_server(&cfg_path, &env, &wrapper);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut server = Server {
            addr,
            dir,
            child,
            env,
            wrapper,
        };
        server.wait_ready();
        server
    }

    /// Start with the operator's port (`/metrics`, `/health`, `/ready`) on a free port too.
    pub fn with_metrics(extra: &str, env: &[(&str, &str)]) -> (Server, SocketAddr) {
        let port = free_port();
        let s = Server::with_config_env(
            &format!("MetricsEnabled = true\nMetricsPort = \"127.0.0.1:{port}\"\n{extra}"),
            env,
        );
        (s, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// SIGKILL the server (no chance to clean up), as a crash or power cut would.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start the server again on the same config, StoreDir and port (after `kill_hard` or an
    /// exit). The previous run's log moves to `server.log.1`.
    pub fn restart(&mut self) {
        self.kill_hard();
        let log = self.dir.path().join("server.log");
        let _ = std::fs::rename(&log, self.dir.path().join("server.log.1"));
        self.child = spawn_server(&self.dir.path().join("config.toml"), &self.env, &self.wrapper);
        self.wait_ready();
    }

    /// Ready means: the server logged "listening" (all workers bound) and a connection reaches it.
    fn wait_ready(&mut self) {
        let log = self.dir.path().join("server.log");
        let logged = || std::fs::read_to_string(&log).unwrap_or_default();
        wait_accepting(
            self.addr,
            &mut self.child,
            "server",
            Duration::from_secs(15),
            || logged().contains("listening"),
            logged,
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Whether the log comes to contain `needle` within 5 s. Log lines are written by a
    /// background thread, so a line about a request can land just after its response.
    pub fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.store().join(".hmac-file-server").join("tmp")
    }

    pub fn url(&self, target: &str) -> String {
        format!("http://{}{}", self.addr, target)
    }

    /// Signed PUT target for `path` (not encoded; segments get percent-encoded here).
    pub fn put_target(&self, path: &str, size: u64, content_type: Option<&str>, proto: Proto) -> String {
        signed_target(SECRET, path, size, content_type, proto)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's own pid when it runs under a wrapper (the wrapper's only child).
    pub fn wrapped_pid(&self) -> u32 {
        let pid = self.pid();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next().and_then(|p| p.parse().ok()))
            .unwrap_or(pid)
    }

    /// Peak resident set size of the server process so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmHWM:")
    }

    /// Temporaries in the reserved directory: named files there, plus files the server holds
    /// open in it (an unnamed O_TMPFILE shows in /proc/PID/fd as "tmp/#NNN (deleted)").
    pub fn temporaries(&self) -> Vec<String> {
        let mut found: Vec<String> = std::fs::read_dir(self.tmp_dir())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        let tmp = self.tmp_dir();
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{}/fd", self.pid())) {
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    let unnamed = target.file_name().is_some_and(|n| n.to_string_lossy().starts_with('#'));
                    if target.starts_with(&tmp) && unnamed {
                        found.push(target.display().to_string());
                    }
                }
            }
        }
        found
    }
}

fn spawn_server(config: &Path, env: &[(String, String)], wrapper: &[String]) -> Child {
    let mut cmd = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.arg("--config")
        .arg(config)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn server")
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- server log ----\n{}", self.log());
        }
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn encode_path(path: &str) -> String {
    hmac_file_server::path::percent_encode(path)
}

pub fn signed_target(secret: &str, path: &str, size: u64, content_type: Option<&str>, proto: Proto) -> String {
    let ct = content_type.unwrap_or("application/octet-stream");
    let sig = hmac_file_server::auth::sign(secret.as_bytes(), proto, path, size, ct.as_bytes());
    format!("/upload/{}?{}={}", encode_path(path), proto.param(), sig)
}

/// A unique path per test, so parallel tests never collide.
pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{:x}{:04x}-{}/{}", std::process::id(), n, nanos() % 1_000_000, name)
}

fn nanos() -> u128 {
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

// ---------------- raw HTTP/1.1 client ----------------

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Send raw bytes on a fresh connection and read one response.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(request).expect("write request");
    read_response(&mut s, false).expect("a response")
}

/// Read one response from the stream. `head_only`: the request was HEAD (no body follows).
/// Returns None if the connection closed before a status line.
pub fn read_response(s: &mut TcpStream, head_only: bool) -> Option<Response> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 100 || status == 204 || status == 304 {
        return Some(resp);
    }
    if let Some(len) = resp.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        resp.body = body;
    }
    Some(resp)
}

/// A tus request on a fresh connection (`headers`: extra "Name: value\r\n" lines).
pub fn tus(server: &Server, method: &str, target: &str, headers: &str, body: &[u8]) -> Response {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut s = connect(server.addr);
    s.write_all(&req).expect("write request");
    read_response(&mut s, method == "HEAD").expect("a response")
}

/// A tus PATCH of `body` at `offset`, with extra header lines.
pub fn tus_patch(server: &Server, loc: &str, offset: u64, body: &[u8], extra: &str) -> Response {
    tus(
        server,
        "PATCH",
        loc,
        &format!("Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n{extra}"),
        body,
    )
}

/// A PUT head for `target` with a Content-Length body.
pub fn put_head(target: &str, len: usize, content_type: Option<&str>, extra: &str) -> String {
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    format!("PUT {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\n{ct}{extra}\r\n")
}

/// PUT `body` with ureq, a real HTTP client. Returns the status (errors included).
pub fn put(server: &Server, target: &str, body: &[u8], content_type: Option<&str>) -> u16 {
    let mut req = ureq::put(&server.url(target));
    if let Some(ct) = content_type {
        req = req.set("Content-Type", ct);
    }
    match req.send_bytes(body) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("PUT transport error: {e}"),
    }
}

/// GET with ureq: (status, body, response).
pub fn get(server: &Server, target: &str) -> (u16, Vec<u8>) {
    let resp = match ureq::get(&server.url(target)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET transport error: {e}"),
    };
    let status = resp.status();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).expect("read body");
    (status, body)
}

pub fn file_at(server: &Server, path: &str) -> PathBuf {
    server.store().join(Path::new(path))
}

// ---------------- session stores ----------------

/// A session store for a test server, isolated from every other test: a private Redis on a
/// free port, or a fresh PostgreSQL / MariaDB database on the local server. Dropping it
/// stops the Redis or drops the database.
pub struct StoreFixture {
    /// Config lines that select it.
    pub config: String,
    redis: Option<Child>,
    redis_port: u16,
    database: Option<(&'static str, String)>,
}

impl StoreFixture {
    pub fn embedded() -> Option<StoreFixture> {
        Some(StoreFixture {
            config: String::new(),
            redis: None,
            redis_port: 0,
            database: None,
        })
    }

    /// A private redis-server (nothing persisted), or None (SKIPPED) where it is not installed.
    pub fn redis() -> Option<StoreFixture> {
        if !require("redis-server", on_path("redis-server")) {
            return None;
        }
        let port = free_port();
        let mut f = StoreFixture {
            config: format!("RedisAddr = \"127.0.0.1:{port}\"\nRetryDelay = 1\n"),
            redis: None,
            redis_port: port,
            database: None,
        };
        f.start_redis();
        Some(f)
    }

    pub fn redis_port(&self) -> u16 {
        self.redis_port
    }

    /// A redis-cli command against the private Redis; what it printed.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (Re)start the private Redis on its port.
    pub fn start_redis(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.redis = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !runs("redis-cli", &["-p", &self.redis_port.to_string(), "ping"]) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_redis(&mut self) {
        if let Some(mut c) = self.redis.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A fresh database on the local PostgreSQL (127.0.0.1:5432, trust) for this test.
    pub fn postgres() -> Option<StoreFixture> {
        let name = fresh_db_name();
        let created = db_client("postgres", "test", &format!("CREATE DATABASE {name}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !require("PostgreSQL on 127.0.0.1:5432 (psql)", created) {
            return None;
        }
        Some(StoreFixture {
            config: format!(
                "FallbackEnabled = true\nFallbackDBType = \"postgres\"\nFallbackDBHost = \"127.0.0.1:5432\"\nFallbackDBUser = \"postgres\"\nFallbackDBName = \"{name}\"\nRetryDelay = 1\n"
            ),
            redis: None,
            redis_port: 0,
            database: Some(("postgres", name)),
        })
    }

    /// A fresh database on the local MariaDB (127.0.0.1:3306, root) for this test.
    pub fn mysql() -> Option<StoreFixture> {
        let name = fresh_db_name();
        let created = db_client("mysql", "test", &format!("CREATE DATABASE {name}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !require("MariaDB on 127.0.0.1:3306 (mysql)", created) {
            return None;
        }
        Some(StoreFixture {
            config: format!(
                "FallbackEnabled = true\nFallbackDBType = \"mysql\"\nFallbackDBHost = \"127.0.0.1:3306\"\nFallbackDBUser = \"root\"\nFallbackDBName = \"{name}\"\nRetryDelay = 1\n"
            ),
            redis: None,
            redis_port: 0,
            database: Some(("mysql", name)),
        })
    }

    /// Cut every connection the server under test holds to this store, the way a restarted
    /// proxy or an administrator would; how many were cut.
    pub fn drop_connections(&self) -> usize {
        if self.redis_port != 0 {
            return self
                .redis_cli(&["CLIENT", "KILL", "TYPE", "normal"])
                .trim()
                .parse()
                .unwrap_or(0);
        }
        match &self.database {
            Some(("postgres", name)) => self
                .sql(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ))
                .lines()
                .filter(|l| l.trim() == "t")
                .count(),
            Some((_, name)) => {
                let ids = self.sql(&format!(
                    "SELECT id FROM information_schema.processlist WHERE db = '{name}' AND id <> CONNECTION_ID()"
                ));
                ids.lines()
                    .filter(|id| !id.trim().is_empty())
                    .filter(|id| {
                        db_client("mysql", "test", &format!("KILL CONNECTION {}", id.trim()))
                            .status()
                            .is_ok_and(|s| s.success())
                    })
                    .count()
            }
            None => 0,
        }
    }

    /// Make the store hang for `secs` without closing anything: Redis pauses every client,
    /// a database holds the row of upload `id` locked. The stall runs in the background.
    pub fn stall(&self, id: &str, secs: u32) -> Child {
        if self.redis_port != 0 {
            let c = Command::new("redis-cli")
                .args(["-p", &self.redis_port.to_string(), "CLIENT", "PAUSE"])
                .args([(secs * 1000).to_string(), "ALL".into()])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-cli");
            std::thread::sleep(Duration::from_millis(300));
            return c;
        }
        let (kind, name) = self.database.as_ref().expect("a store to stall");
        let hold = format!("SELECT id FROM hfs_upload_sessions WHERE id = '{id}' FOR UPDATE");
        let sleep = if *kind == "postgres" {
            format!("SELECT pg_sleep({secs})")
        } else {
            format!("DO SLEEP({secs})")
        };
        let child = db_client(kind, name, &format!("BEGIN; {hold}; {sleep}; COMMIT;"))
            .stdout(Stdio::null())
            .spawn()
            .expect("database client");
        // Until the row is locked.
        std::thread::sleep(Duration::from_millis(500));
        child
    }

    /// Run SQL in this fixture's database; its output.
    pub fn sql(&self, statement: &str) -> String {
        let Some((kind, name)) = &self.database else {
            return String::new();
        };
        db_client(kind, name, statement)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// The command-line client of the local PostgreSQL (`kind` "postgres") or MariaDB running
/// `statement` in database `db`, printing bare values (no headers, no alignment).
fn db_client(kind: &str, db: &str, statement: &str) -> Command {
    let mut c;
    if kind == "postgres" {
        c = Command::new("psql");
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qtAc", statement]);
    } else {
        c = Command::new("mysql");
        c.args(["-h", "127.0.0.1", "-u", "root", "-N", "-e", statement, db]);
    }
    c
}

fn fresh_db_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "hfs_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos() % 1_000_000
    )
}

impl Drop for StoreFixture {
    fn drop(&mut self) {
        self.stop_redis();
        match &self.database {
            Some(("postgres", name)) => {
                let _ = db_client(
                    "postgres",
                    "test",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                )
                .output();
            }
            Some((kind, name)) => {
                let _ = db_client(kind, "test", &format!("DROP DATABASE IF EXISTS {name}")).output();
            }
            None => {}
        }
    }
}
