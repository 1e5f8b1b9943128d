//! The smaller holes an attacker could use, each shown closed against the real server: a FIFO
//! planted in StoreDir, sloppy chunked framing, the operator's port, per-IP upload counting
//! for resumable uploads, control characters in logs, file permissions, cache lifetimes and
//! the reserved directory's spelling. (The systemd unit's hardening is in tests/contrib.rs.)
mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[test]
fn a_fifo_planted_in_store_dir_does_not_block_a_worker() {
    let s = Server::with_config("Workers = 1");
    let dir = s.store().join("planted");
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("pipe");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    let started = Instant::now();
    assert_eq!(get(&s, "/upload/planted/pipe").0, 404);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The one worker is free for everyone else.
    let path = unique("after.txt");
    assert_eq!(put(&s, &s.put_target(&path, 2, None, Proto::V), b"ok", None), 201);
    assert_eq!(
        get(&s, &format!("/upload/{}", encode_path(&path))),
        (200, b"ok".to_vec())
    );
}

#[test]
fn sloppy_chunked_framing_is_refused() {
    let s = Server::start();
    let cases: [(&str, &[u8]); 6] = [
        ("empty Transfer-Encoding", b"Transfer-Encoding:\r\n\r\n"),
        ("a lone comma", b"Transfer-Encoding: ,\r\n\r\n"),
        (
            "CR before CRLF",
            b"Transfer-Encoding: chunked\r\n\r\n1\r\r\nx\r\n0\r\n\r\n",
        ),
        (
            "form feed after the size",
            b"Transfer-Encoding: chunked\r\n\r\n1\x0c\r\nx\r\n0\r\n\r\n",
        ),
        (
            "bare CR in an extension",
            b"Transfer-Encoding: chunked\r\n\r\n1;a\rb\r\nx\r\n0\r\n\r\n",
        ),
        (
            "stray byte after the size",
            b"Transfer-Encoding: chunked\r\n\r\n1 x\r\nx\r\n0\r\n\r\n",
        ),
    ];
    for (name, rest) in cases {
        let path = unique("framed.txt");
        let mut req = format!("PUT {} HTTP/1.1\r\nHost: x\r\n", s.put_target(&path, 1, None, Proto::V)).into_bytes();
        req.extend_from_slice(rest);
        let r = raw(s.addr, &req);
        assert_eq!(r.status, 400, "{name}: {r:?}");
        assert!(!file_at(&s, &path).exists(), "{name}");
    }
    // GET is no exception for an empty Transfer-Encoding.
    let r = raw(
        s.addr,
        b"GET /upload/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\n\r\n",
    );
    assert_eq!(r.status, 400);
}

#[test]
fn the_operators_port_serves_a_bounded_number_of_connections() {
    let (s, metrics) = Server::with_metrics("", &[]);
    // Idle connections that never send a request, up to the cap and one more.
    let held: Vec<_> = (0..64).map(|_| connect(metrics)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let r = raw(metrics, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "answered at once");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    while raw(metrics, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").status != 200 {
        assert!(Instant::now() < deadline, "the slots were not given back");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(s);
    // By default it listens on loopback only.
    let c = hmac_file_server::config::Config::parse("Secret = \"0123456789abcdef\"").unwrap();
    assert!(c.metrics_addr().unwrap().ip().is_loopback());
}

#[test]
fn resumable_creations_and_patches_count_as_uploads_per_ip() {
    let s = Server::with_config("MaxConcurrentUploadsPerIP = 1");
    // A PUT in progress...
    let body = pattern(100_000, 2);
    let first = unique("first.bin");
    let mut c = connect(s.addr);
    let t1 = s.put_target(&first, body.len() as u64, None, Proto::V);
    c.write_all(put_head(&t1, body.len(), None, "").as_bytes()).unwrap();
    c.write_all(&body[..10_000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // ...holds the IP's slot against a resumable creation.
    let second = unique("second.bin");
    let target = s.put_target(&second, 4, None, Proto::V2);
    let r = tus(&s, "POST", &target, "Upload-Length: 4\r\n", b"");
    assert_eq!(r.status, 429, "{r:?}");
    c.write_all(&body[10_000..]).unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 201);
    drop(c);
    // A PATCH in progress holds it against a PUT.
    let r = tus(&s, "POST", &target, "Upload-Length: 4\r\n", b"");
    assert_eq!(r.status, 201, "{r:?}");
    let loc = r.header("Location").unwrap().to_owned();
    let mut p = connect(s.addr);
    p.write_all(
        format!(
            "PATCH {loc} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n\
             Content-Type: application/offset+octet-stream\r\nContent-Length: 4\r\n\r\nda"
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let third = unique("third.bin");
    let r = raw(
        s.addr,
        format!(
            "{}data",
            put_head(&s.put_target(&third, 4, None, Proto::V), 4, None, "")
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 429, "{r:?}");
    p.write_all(b"ta").unwrap();
    assert_eq!(read_response(&mut p, false).unwrap().status, 204);
    assert_eq!(std::fs::read(file_at(&s, &second)).unwrap(), b"data");
}

#[test]
fn control_and_bidi_characters_reach_the_log_escaped() {
    let s = Server::start();
    // A raw request target with C1 controls, a bidi override and a line separator in it.
    let evil = "/upload/a\u{85}b\u{9b}31m\u{202e}txt.exe\u{2028}forged_line";
    let r = raw(s.addr, format!("GET {evil} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(r.status, 404);
    // Percent-encoded, they reach the log of a resumable upload's path too.
    let path = "bidi/\u{202e}gpj.exe";
    let r = tus(
        &s,
        "POST",
        &s.put_target(path, 1, None, Proto::V2),
        "Upload-Length: 1\r\n",
        b"",
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(s.wait_log("resumable upload created"));
    assert!(s.wait_log("\\u{202e}txt.exe\\u{2028}forged_line"), "{}", s.log());
    let log = s.log();
    for c in ['\u{85}', '\u{9b}', '\u{202e}', '\u{2028}'] {
        assert!(!log.contains(c), "{c:?} reached the log raw:\n{log}");
    }
}

#[test]
fn stored_files_directories_and_the_journal_are_not_world_readable() {
    let s = Server::start();
    let path = unique("private.txt");
    assert_eq!(put(&s, &s.put_target(&path, 2, None, Proto::V), b"hi", None), 201);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let file = file_at(&s, &path);
    assert_eq!(mode(&file), 0o640);
    assert_eq!(mode(file.parent().unwrap()), 0o750);
    let sessions = s.store().join(".hmac-file-server/sessions");
    assert_eq!(mode(&sessions), 0o700);
    assert_eq!(mode(&sessions.join("journal")), 0o600);
    // The modes are the operator's to choose.
    let s = Server::with_config("FileMode = 0o644\nDirMode = 0o755");
    let path = unique("public.txt");
    assert_eq!(put(&s, &s.put_target(&path, 2, None, Proto::V), b"hi", None), 201);
    let file = file_at(&s, &path);
    assert_eq!(mode(&file), 0o644);
    assert_eq!(mode(file.parent().unwrap()), 0o755);
}

#[test]
fn downloads_are_cached_privately_for_a_bounded_time() {
    for (config, expected) in [
        ("", "private, max-age=86400, immutable"),
        (
            "CacheMaxAge = 600\nCachePublic = true",
            "public, max-age=600, immutable",
        ),
        ("CacheMaxAge = 0", "private, no-cache"),
    ] {
        let s = Server::with_config(config);
        let path = unique("cached.txt");
        assert_eq!(put(&s, &s.put_target(&path, 2, None, Proto::V), b"hi", None), 201);
        let r = raw(
            s.addr,
            format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(&path)).as_bytes(),
        );
        assert_eq!(r.header("cache-control"), Some(expected), "{config}");
    }
}

#[test]
fn the_reserved_directory_is_reserved_in_any_case() {
    let s = Server::start();
    for spelling in [".HMAC-FILE-SERVER", ".Hmac-File-Server", ".hmac-file-server"] {
        let path = format!("{spelling}/sessions/journal");
        let r = raw(
            s.addr,
            format!("GET /upload/{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 404, "{spelling}");
        let target = s.put_target(&format!("{spelling}/planted"), 4, None, Proto::V);
        let r = raw(s.addr, format!("{}data", put_head(&target, 4, None, "")).as_bytes());
        assert_eq!(r.status, 400, "{spelling}: {r:?}");
        assert!(!s.store().join(spelling).join("planted").exists());
    }
}
