//! `UnixSocket = true`: serving on a Unix socket at ListenPort (for a reverse proxy on the same
//! host), its mode, replacing a stale socket after a crash, never a live one.

mod common;
use common::*;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn start(dir: &Path, sock: &Path) -> Child {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "UnixSocket = true\nListenPort = \"{}\"\nUnixSocketMode = 0o600\nSecret = \"{SECRET}\"\nStoreDir = \"{}\"\nLogFile = \"{}\"\nWorkers = 2\n",
            sock.display(),
            dir.join("store").display(),
            dir.join("server.log").display()
        ),
    )
    .unwrap();
    Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_listening(sock: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if UnixStream::connect(sock).is_ok() {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("server exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no server on {}", sock.display());
}

fn exchange(sock: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains("\r\n\r\n") || out.len() < request_len_hint(&out) {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Head length plus Content-Length, once the head is complete.
fn request_len_hint(out: &[u8]) -> usize {
    let text = String::from_utf8_lossy(out);
    let Some(end) = text.find("\r\n\r\n") else {
        return usize::MAX;
    };
    let len = text[..end]
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    end + 4 + len
}

#[test]
fn serves_on_a_unix_socket_with_its_mode_and_removes_it_at_stop() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hfs.sock");
    let mut child = start(dir.path(), &sock);
    wait_listening(&sock, &mut child);
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let path = unique("via-unix.txt");
    let target = signed_target(SECRET, &path, 5, None, Proto::V);
    let resp = exchange(
        &sock,
        format!("PUT {target} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let resp = exchange(
        &sock,
        format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(&path)).as_bytes(),
    );
    assert!(
        resp.starts_with("HTTP/1.1 200") && resp.ends_with("\r\n\r\nhello"),
        "{resp}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!sock.exists(), "socket removed at a clean stop");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hfs.sock");
    // A socket file nobody accepts on, as a crash leaves it (the Go server could not restart).
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut child = start(dir.path(), &sock);
    wait_listening(&sock, &mut child);
    // The log is written by a background thread: give the line a moment to land.
    let read_log = || std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read_log().contains("replacing a stale Unix socket") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(read_log().contains("replacing a stale Unix socket"), "{}", read_log());

    // A second server on the same live socket must refuse to start, naming the problem.
    let dir2 = tempfile::tempdir().unwrap();
    let second = start(dir2.path(), &sock).wait_with_output().unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("in use by a running server"), "{err}");
    // The first one still serves.
    let resp = exchange(&sock, b"OPTIONS /upload/x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 204"), "{resp}");
    let _ = child.kill();
    let _ = child.wait();
}
