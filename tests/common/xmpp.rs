//! XMPP servers for the interop tests: Prosody (with prosody-modules' mod_http_upload_external,
//! or its own mod_http_file_share) and ejabberd (mod_http_upload with `external_secret`), each a
//! throwaway instance on loopback sharing `SECRET` with our server, and the slixmpp client
//! (tests/interop/xmpp_client.py) that registers two accounts in-band, asks for slots and
//! uploads with its own XEP-0363 code.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{file_at, free_port, on_path, pattern, require, runs, wait_accepting, Server, SECRET};

/// Files of the exchange: tiny text, 1 MiB binary, a name with spaces and non-ASCII letters,
/// an image type. (name, content type, size, seed)
pub const FILES: &[(&str, &str, usize, u64)] = &[
    ("hello.txt", "text/plain", 27, 1),
    ("blob.bin", "application/octet-stream", 1 << 20, 2),
    ("très cool ü ñ.txt", "text/plain; charset=utf-8", 300, 3),
    ("photo.png", "image/png", 70_000, 4),
];

pub enum Flavour {
    /// Prosody with prosody-modules' mod_http_upload_external, protocol "v1" or "v2".
    Prosody {
        protocol: &'static str,
    },
    /// Prosody's own mod_http_file_share handing out Bearer-token slots for us; `clock`: a
    /// faketime offset for Prosody's clock (e.g. "-15m": its tokens have expired for us).
    FileShare {
        clock: Option<&'static str>,
    },
    Ejabberd,
}

/// One XMPP server process with its own directory, log and client port.
pub struct Xmpp {
    /// Config, data, logs and console output of this instance; removed with it.
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    log: PathBuf,
    /// Whether its signatures cover the content type (Prosody v2).
    pub signs_type: bool,
}

impl Xmpp {
    pub fn installed(flavour: &Flavour) -> bool {
        let python = require("slixmpp (PyPI)", runs("python3", &["-c", "import slixmpp, aiohttp"]));
        let server = match flavour {
            Flavour::Prosody { .. } => require(
                "prosody with prosody-modules",
                on_path("prosody") && Path::new(PROSODY_MODULE).exists(),
            ),
            Flavour::FileShare { clock } => {
                require(
                    "prosody 0.12 or later (mod_http_file_share)",
                    on_path("prosody") && Path::new(FILE_SHARE_MODULE).exists(),
                ) && (clock.is_none() || require("faketime", on_path("faketime")))
            }
            Flavour::Ejabberd => require("ejabberd", on_path("erl") && ejabberd_libs().is_some()),
        };
        python && server
    }

    pub fn start(flavour: Flavour, upload: &Server) -> Xmpp {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let base = format!("http://{}/upload", upload.addr);
        let (child, log, signs_type) = match flavour {
            Flavour::Prosody { protocol } => {
                let component = format!(
                    r#"Component "upload.localhost" "http_upload_external"
  http_upload_external_base_url = "{base}/"
  http_upload_external_secret = "{SECRET}"
  http_upload_external_file_size_limit = 104857600
  http_upload_external_protocol = "{protocol}"
"#
                );
                let (child, log) = start_prosody(dir.path(), port, &component, None);
                (child, log, protocol == "v2")
            }
            Flavour::FileShare { clock } => {
                // docs/operations.md's mod_http_file_share example.
                let component = format!(
                    r#"Component "upload.localhost" "http_file_share"
  http_file_share_base_url = "{base}"
  http_file_share_secret = "{SECRET}"
  http_file_share_size_limit = 104857600
  http_file_share_daily_quota = 1073741824
  http_file_share_expires_after = 3600
"#
                );
                let (child, log) = start_prosody(dir.path(), port, &component, clock);
                (child, log, true)
            }
            Flavour::Ejabberd => {
                let (child, log) = start_ejabberd(dir.path(), port, &base);
                (child, log, false)
            }
        };
        let mut x = Xmpp {
            dir,
            child,
            port,
            log,
            signs_type,
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = x.log.clone();
        let console = x.dir.path().join("console.log");
        let logged = || {
            let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
            format!("{}\n--- console ---\n{}", read(&log), read(&console))
        };
        // Generous: an Erlang VM booting beside a loaded test run has been seen to take long.
        wait_accepting(
            addr,
            &mut x.child,
            "XMPP server",
            Duration::from_secs(60),
            || true,
            logged,
        );
        x
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run the slixmpp client in `mode` with `spec` on stdin; its JSON answer. Each step may
    /// take 60 s: under the whole suite beside a CPU hog, ejabberd once took just over 30 s.
    pub fn client(&self, mode: &str, spec: &serde_json::Value) -> serde_json::Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/xmpp_client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(mode)
            .args(["--port", &self.port.to_string(), "--timeout", "60"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run python3");
        let input = serde_json::to_vec(spec).expect("spec");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&input)
            .expect("write spec");
        let out = child.wait_with_output().expect("client output");
        assert!(
            out.status.success(),
            "xmpp client failed ({}):\n{}\n--- XMPP server log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).expect("client prints JSON")
    }
}

impl Drop for Xmpp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The XMPP server's own stdout and stderr, kept for the failure message.
fn console(dir: &Path) -> Stdio {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("console.log"))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

const PROSODY_MODULE: &str = "/usr/lib/prosody/modules/mod_http_upload_external/mod_http_upload_external.lua";

const FILE_SHARE_MODULE: &str = "/usr/lib/prosody/modules/mod_http_file_share.lua";

/// A throwaway Prosody with `component` as its upload service, its clock shifted by `clock`
/// (faketime) when given.
fn start_prosody(dir: &Path, port: u16, component: &str, clock: Option<&str>) -> (Child, PathBuf) {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    std::fs::create_dir_all(dir.join("certs")).expect("certs dir");
    // The README's Prosody example, plus what a throwaway instance needs: its own ports and
    // directories, plain TCP on loopback, in-band registration for the test accounts.
    let config = format!(
        r#"
run_as_root = true
pidfile = "{d}/prosody.pid"
data_path = "{d}/data"
certificates = "{d}/certs"
plugin_paths = {{ "/usr/lib/prosody/modules" }}
log = {{ {{ levels = {{ min = "debug" }}, to = "file", filename = "{d}/prosody.log" }} }}
modules_enabled = {{ "disco", "roster", "saslauth", "register", "posix" }}
modules_disabled = {{ "s2s", "offline" }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{}}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
c2s_require_encryption = false
allow_registration = true
authentication = "internal_hashed"

VirtualHost "localhost"

{component}"#
    );
    let cfg = dir.join("prosody.cfg.lua");
    std::fs::write(&cfg, config).expect("write prosody config");
    let mut cmd = Command::new("prosody");
    if let Some(offset) = clock {
        // What the faketime wrapper sets, set here: the wrapper would stay Prosody's parent,
        // and killing it left Prosody running.
        cmd.env("LD_PRELOAD", "/usr/$LIB/faketime/libfaketime.so.1")
            .env("FAKETIME", offset);
    }
    let child = cmd
        .arg("--config")
        .arg(&cfg)
        .arg("-F")
        .stdout(console(dir))
        .stderr(console(dir))
        .spawn()
        .expect("spawn prosody");
    (child, dir.join("prosody.log"))
}

/// The directory holding ejabberd's Erlang applications (ERL_LIBS), as Debian installs it.
fn ejabberd_libs() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib").ok()?;
    lib.flatten().map(|e| e.path()).find(|arch| {
        std::fs::read_dir(arch)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with("ejabberd-"))
            })
            .unwrap_or(false)
    })
}

fn start_ejabberd(dir: &Path, port: u16, base: &str) -> (Child, PathBuf) {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("spool")).expect("spool dir");
    // The README's ejabberd example, plus a throwaway instance's port and in-band registration.
    let config = format!(
        r#"
hosts:
  - localhost
loglevel: info
log_rotate_count: 0
certfiles: []
listen:
  -
    port: {port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    access: all
s2s_access: none
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  register:
    allow: all
  local:
    allow: local
registration_timeout: infinity
modules:
  mod_disco: {{}}
  mod_roster: {{}}
  mod_register:
    ip_access: all
    access: register
  mod_http_upload:
    put_url: "{base}"
    get_url: "{base}"
    external_secret: "{SECRET}"
    max_size: 104857600
"#
    );
    let cfg = dir.join("ejabberd.yml");
    std::fs::write(&cfg, config).expect("write ejabberd config");
    let log = dir.join("ejabberd.log");
    // What `ejabberdctl foreground` runs, minus its switch to the ejabberd user and without a
    // distributed node name (no epmd needed).
    let child = Command::new("erl")
        .args(["+K", "true", "-noinput", "-mnesia", "dir"])
        .arg(format!("\"{d}/spool\""))
        .args(["-s", "ejabberd"])
        .env("EJABBERD_CONFIG_PATH", &cfg)
        .env("EJABBERD_LOG_PATH", &log)
        .env("ERL_LIBS", ejabberd_libs().expect("ejabberd installed"))
        .env("HOME", dir)
        .current_dir(dir)
        .stdout(console(dir))
        .stderr(console(dir))
        .spawn()
        .expect("spawn ejabberd");
    (child, log)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The request target of a URL on our server, and its decoded store path.
pub fn target_of<'a>(s: &Server, url: &'a str) -> &'a str {
    let origin = format!("http://{}", s.addr);
    url.strip_prefix(&origin)
        .unwrap_or_else(|| panic!("{url} is not on {origin}"))
}

pub fn stored_path(s: &Server, url: &str) -> PathBuf {
    let target = target_of(s, url);
    let path = target.split('?').next().unwrap().trim_start_matches("/upload/");
    let decoded = hmac_file_server::path::percent_decode(path.as_bytes()).expect("decodable path");
    file_at(s, &String::from_utf8(decoded).expect("UTF-8 path"))
}

/// alice uploads every file with slixmpp's XEP-0363 code, bob downloads what she sent him:
/// byte-exact, with the declared type. The server and the stored files, for further checks
/// (None: SKIPPED, the XMPP server is not installed here).
pub fn exchange(flavour: Flavour) -> Option<(Server, Vec<PathBuf>)> {
    if !Xmpp::installed(&flavour) {
        return None;
    }
    let s = Server::start();
    let x = Xmpp::start(flavour, &s);
    let files = tempfile::tempdir().expect("tempdir");
    let mut spec = Vec::new();
    for (i, (name, ty, size, seed)) in FILES.iter().enumerate() {
        let local = files.path().join(format!("f{i}"));
        std::fs::write(&local, pattern(*size, *seed)).expect("write file");
        spec.push(serde_json::json!({"name": name, "type": ty, "size": size, "path": local}));
    }
    let answer = x.client("exchange", &serde_json::Value::Array(spec));
    assert_eq!(
        answer["service"], "upload.localhost",
        "the upload service was discovered"
    );
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), FILES.len(), "{answer}");
    let mut stored = Vec::new();
    for ((name, ty, size, seed), r) in FILES.iter().zip(results) {
        let body = pattern(*size, *seed);
        let get_url = r["get_url"].as_str().expect("get_url");
        assert_eq!(r["received_url"], r["get_url"], "bob got the URL alice sent");
        assert_eq!(r["status"], 200, "{name}: {r}\n{}", s.log());
        assert_eq!(r["size"], *size, "{name}");
        assert_eq!(r["sha256"], sha256_hex(&body), "{name}: bob's download is byte-exact");
        assert_eq!(r["content_type"], *ty, "{name}: the declared type is served back");
        let disposition = if ty.starts_with("application/") {
            "attachment"
        } else {
            "inline"
        };
        assert!(
            r["disposition"].as_str().unwrap_or("").starts_with(disposition),
            "{name}: {r}"
        );
        let at = stored_path(&s, get_url);
        assert_eq!(std::fs::read(&at).expect("stored file"), body, "{name} on disk");
        stored.push(at);
    }
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
    drop(x);
    Some((s, stored))
}

/// A fresh server and an XMPP server of `flavour` handing out its slots, and the slots it gave
/// alice for `wanted` (name, size, type). None: SKIPPED, the XMPP server is not installed here.
pub fn with_slots(flavour: Flavour, wanted: &[(&str, usize, &str)]) -> Option<(Server, Xmpp, Vec<Slot>)> {
    if !Xmpp::installed(&flavour) {
        return None;
    }
    let s = Server::start();
    let x = Xmpp::start(flavour, &s);
    let got = slots(&x, wanted);
    Some((s, x, got))
}

/// A slot an XMPP server handed out: its PUT and GET URLs and the headers the PUT must carry.
pub struct Slot {
    pub put: String,
    pub get: String,
    pub headers: Vec<(String, String)>,
}

/// Ask the XMPP server for slots (name, size, type) through slixmpp.
pub fn slots(x: &Xmpp, wanted: &[(&str, usize, &str)]) -> Vec<Slot> {
    let spec: Vec<_> = wanted
        .iter()
        .map(|(name, size, ty)| serde_json::json!({"name": name, "size": size, "type": ty, "path": null}))
        .collect();
    let answer = x.client("slots", &serde_json::Value::Array(spec));
    answer["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| Slot {
            put: s["put"].as_str().expect("put").to_owned(),
            get: s["get"].as_str().expect("get").to_owned(),
            headers: s["headers"]
                .as_object()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}
