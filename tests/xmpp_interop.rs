//! Real XMPP servers and a real XMPP client against a real server process.
//!
//! Prosody (Debian `prosody` + `prosody-modules`, `mod_http_upload_external`, protocol v1 and v2)
//! and ejabberd (Debian `ejabberd`, `mod_http_upload` with `external_secret`) run on loopback
//! from a throwaway directory, sharing `SECRET` with our server. The client is slixmpp
//! (tests/interop/xmpp_client.py): it registers two accounts in-band, discovers the upload
//! service (XEP-0363), uploads with its own HTTP code and sends the GET URL to the second
//! account, which downloads it. The refusals then go through slots the XMPP servers handed out.
mod common;

use common::*;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::net::{Shutdown, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Files of the exchange: tiny text, 1 MiB binary, a name with spaces and non-ASCII letters,
/// an image type. (name, content type, size, seed)
const FILES: &[(&str, &str, usize, u64)] = &[
    ("hello.txt", "text/plain", 27, 1),
    ("blob.bin", "application/octet-stream", 1 << 20, 2),
    ("très cool ü ñ.txt", "text/plain; charset=utf-8", 300, 3),
    ("photo.png", "image/png", 70_000, 4),
];

enum Flavour {
    Prosody { protocol: &'static str },
    Ejabberd,
}

/// One XMPP server process with its own directory, log and client port.
struct Xmpp {
    /// Config, data, logs and console output of this instance; removed with it.
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
    log: PathBuf,
    /// Whether its signatures cover the content type (Prosody v2).
    signs_type: bool,
}

impl Xmpp {
    fn installed(flavour: &Flavour) -> bool {
        let python = require("slixmpp (PyPI)", runs("python3", &["-c", "import slixmpp, aiohttp"]));
        let server = match flavour {
            Flavour::Prosody { .. } => require(
                "prosody with prosody-modules",
                on_path("prosody") && Path::new(PROSODY_MODULE).exists(),
            ),
            Flavour::Ejabberd => require("ejabberd", on_path("erl") && ejabberd_libs().is_some()),
        };
        python && server
    }

    fn start(flavour: Flavour, upload: &Server) -> Xmpp {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let base = format!("http://{}/upload", upload.addr);
        let (child, log, signs_type) = match flavour {
            Flavour::Prosody { protocol } => {
                let (child, log) = start_prosody(dir.path(), port, &base, protocol);
                (child, log, protocol == "v2")
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run the slixmpp client in `mode` with `spec` on stdin; its JSON answer.
    fn client(&self, mode: &str, spec: &serde_json::Value) -> serde_json::Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/xmpp_client.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(mode)
            .args(["--port", &self.port.to_string(), "--timeout", "30"])
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

fn start_prosody(dir: &Path, port: u16, base: &str, protocol: &str) -> (Child, PathBuf) {
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

Component "upload.localhost" "http_upload_external"
  http_upload_external_base_url = "{base}/"
  http_upload_external_secret = "{SECRET}"
  http_upload_external_file_size_limit = 104857600
  http_upload_external_protocol = "{protocol}"
"#
    );
    let cfg = dir.join("prosody.cfg.lua");
    std::fs::write(&cfg, config).expect("write prosody config");
    let child = Command::new("prosody")
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

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The request target of a URL on our server, and its decoded store path.
fn target_of<'a>(s: &Server, url: &'a str) -> &'a str {
    let origin = format!("http://{}", s.addr);
    url.strip_prefix(&origin)
        .unwrap_or_else(|| panic!("{url} is not on {origin}"))
}

fn stored_path(s: &Server, url: &str) -> PathBuf {
    let target = target_of(s, url);
    let path = target.split('?').next().unwrap().trim_start_matches("/upload/");
    let decoded = hmac_file_server::path::percent_decode(path.as_bytes()).expect("decodable path");
    file_at(s, &String::from_utf8(decoded).expect("UTF-8 path"))
}

/// alice uploads every file with slixmpp's XEP-0363 code, bob downloads what she sent him.
fn exchange(flavour: Flavour) {
    if !Xmpp::installed(&flavour) {
        return;
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
        assert_eq!(
            std::fs::read(stored_path(&s, get_url)).expect("stored file"),
            body,
            "{name} on disk"
        );
    }
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
}

/// Ask the XMPP server for slots (name, size, type) through slixmpp.
fn slots(x: &Xmpp, wanted: &[(&str, usize, &str)]) -> Vec<(String, String)> {
    let spec: Vec<_> = wanted
        .iter()
        .map(|(name, size, ty)| serde_json::json!({"name": name, "size": size, "type": ty, "path": null}))
        .collect();
    let answer = x.client("slots", &serde_json::Value::Array(spec));
    answer["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| {
            (
                s["put"].as_str().expect("put").to_owned(),
                s["get"].as_str().expect("get").to_owned(),
            )
        })
        .collect()
}

fn put_status(s: &Server, target: &str, body: &[u8], ty: &str) -> u16 {
    put(s, target, body, Some(ty))
}

/// Flip one character of `text` at byte `at` (ASCII there) to another of the same class.
fn flip(text: &str, at: usize) -> String {
    let mut b = text.as_bytes().to_vec();
    b[at] = match b[at] {
        b'0' => b'1',
        c if c.is_ascii_digit() => b'0',
        b'a' => b'b',
        b'A' => b'B',
        c if c.is_ascii_lowercase() => b'a',
        _ => b'A',
    };
    String::from_utf8(b).expect("ASCII flip")
}

/// Every refusal a client can meet, through slots the XMPP server handed out.
fn refusals(flavour: Flavour, param: &str) {
    if !Xmpp::installed(&flavour) {
        return;
    }
    let s = Server::start();
    let x = Xmpp::start(flavour, &s);
    let ty = "text/plain";
    let got = slots(
        &x,
        &[
            ("tampered-path.txt", 16, ty),
            ("tampered-signature.txt", 16, ty),
            ("no-signature.txt", 16, ty),
            ("wrong-size.txt", 16, ty),
            ("wrong-type.png", 16, "image/png"),
            ("truncated.txt", 16, ty),
            ("twice.txt", 16, ty),
        ],
    );
    let body = pattern(16, 9);
    for (put_url, get_url) in &got {
        assert!(put_url.contains(&format!("?{param}=")), "{put_url} signs with {param}");
        assert_eq!(
            put_url.split('?').next(),
            Some(get_url.as_str()),
            "PUT URL = GET URL + signature"
        );
    }
    let target = |i: usize| target_of(&s, &got[i].0).to_owned();
    let nothing_at = |i: usize| {
        let (status, _) = get(&s, target_of(&s, &got[i].1));
        assert_eq!(status, 404, "nothing stored for slot {i}");
    };

    // Tampered path: one character of the first (random) segment changed.
    let t = target(0);
    assert_eq!(put_status(&s, &flip(&t, "/upload/".len()), &body, ty), 403);
    nothing_at(0);

    // Tampered signature: the last hex digit changed.
    let t = target(1);
    assert_eq!(put_status(&s, &flip(&t, t.len() - 1), &body, ty), 403);
    nothing_at(1);

    // No signature at all.
    let t = target(2);
    assert_eq!(put_status(&s, t.split('?').next().unwrap(), &body, ty), 403);
    nothing_at(2);

    // A body of another size than the slot's.
    let t = target(3);
    assert_eq!(put_status(&s, &t, &pattern(17, 9), ty), 403);
    assert_eq!(put_status(&s, &t, &pattern(15, 9), ty), 403);
    nothing_at(3);

    // Another type than the slot's: refused where the signature covers it (v2); protocol v1 and
    // ejabberd sign only path and size, so the upload stands with the type the client sent.
    let t = target(4);
    if x.signs_type {
        assert_eq!(put_status(&s, &t, &body, ty), 403);
        nothing_at(4);
    } else {
        assert_eq!(put_status(&s, &t, &body, ty), 201);
        let mut c = connect(s.addr);
        let head = format!("HEAD {} HTTP/1.1\r\nHost: x\r\n\r\n", target_of(&s, &got[4].1));
        c.write_all(head.as_bytes()).unwrap();
        let r = read_response(&mut c, true).expect("HEAD answered");
        assert_eq!((r.status, r.header("content-type")), (200, Some(ty)));
    }

    // A body cut short by a lost connection: nothing visible, and the slot still works after.
    let t = target(5);
    let mut c = connect(s.addr);
    c.write_all(put_head(&t, 16, Some(ty), "").as_bytes()).unwrap();
    c.write_all(&body[..8]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let answer = read_response(&mut c, false);
    assert!(
        answer.as_ref().is_none_or(|r| r.status == 400),
        "{:?}",
        answer.map(|r| r.status)
    );
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.temporaries().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
    nothing_at(5);
    assert_eq!(
        put_status(&s, &t, &body, ty),
        201,
        "the slot is still good after a lost upload"
    );
    assert_eq!(get(&s, target_of(&s, &got[5].1)), (200, body.clone()));

    // The same slot twice: the first stays.
    let t = target(6);
    assert_eq!(put_status(&s, &t, &body, ty), 201);
    assert_eq!(put_status(&s, &t, &body, ty), 409);
    assert_eq!(get(&s, target_of(&s, &got[6].1)), (200, body.clone()));

    let log = s.log();
    assert!(!log.contains(&format!("{param}=")), "signatures stay out of the log");
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
}

#[test]
fn prosody_v1_exchange() {
    exchange(Flavour::Prosody { protocol: "v1" });
}

#[test]
fn prosody_v2_exchange() {
    exchange(Flavour::Prosody { protocol: "v2" });
}

#[test]
fn ejabberd_exchange() {
    exchange(Flavour::Ejabberd);
}

#[test]
fn prosody_v1_refusals() {
    refusals(Flavour::Prosody { protocol: "v1" }, "v");
}

#[test]
fn prosody_v2_refusals() {
    refusals(Flavour::Prosody { protocol: "v2" }, "v2");
}

#[test]
fn ejabberd_refusals() {
    refusals(Flavour::Ejabberd, "v");
}
