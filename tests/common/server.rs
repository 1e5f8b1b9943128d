//! The server under test: a real process on a free loopback port with its own StoreDir,
//! config and log, started, restarted and killed the way systemd or a crash would.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, signed_target, Proto, SECRET};

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
        let cfg = format!(
            "ListenPort = \"127.0.0.1:{port}\"\nSecret = \"{SECRET}\"\nStoreDir = \"{}\"\nLogLevel = \"debug\"\nLogFile = \"{}\"\nWorkers = 2\n",
            dir.path().join("store").display(),
            dir.path().join("server.log").display(),
        );
        // "{port}" in `extra` is this server's port (e.g. `ListenPort = "[::]:{port}"`).
        let cfg = merged(cfg, &extra.replace("{port}", &port.to_string()));
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

    /// Stop the server as systemd does (SIGTERM) and wait for it to exit.
    pub fn stop_graceful(&mut self) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(Instant::now() < deadline, "the server did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `stop_graceful`, then start again on the same config, StoreDir and port.
    pub fn restart_graceful(&mut self) {
        self.stop_graceful();
        self.restart();
    }

    /// `restart`, with `extra` TOML lines changing the configuration (as an operator edits
    /// it between two runs).
    pub fn restart_with(&mut self, extra: &str) {
        let path = self.dir.path().join("config.toml");
        let cfg = std::fs::read_to_string(&path).expect("read config");
        std::fs::write(&path, merged(cfg, extra)).expect("write config");
        self.restart();
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

/// `cfg` with the lines of `extra` added; a key `extra` sets replaces its earlier line.
fn merged(mut cfg: String, extra: &str) -> String {
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
    cfg
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
