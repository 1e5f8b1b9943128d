//! PUT: the three signature protocols, every refusal status, conflicts and races, and that
//! nothing but a complete, verified upload ever appears under StoreDir.

mod common;
use common::*;
use std::io::Write;

#[test]
fn each_protocol_stores_the_file() {
    let s = Server::start();
    for (proto, ct) in [
        (Proto::V, None),
        (Proto::V, Some("image/png")),
        (Proto::V2, Some("image/jpeg")),
        (Proto::V2, None),
        (Proto::Token, Some("text/plain; charset=utf-8")),
    ] {
        let path = unique("photo.jpg");
        let body = pattern(1000, 7);
        let target = s.put_target(&path, body.len() as u64, ct, proto);
        assert_eq!(put(&s, &target, &body, ct), 201, "{proto:?} {ct:?}");
        assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);
    }
    assert!(s.temporaries().is_empty());
}

#[test]
fn tampering_is_forbidden_and_stores_nothing() {
    let s = Server::start();
    let path = unique("a.txt");
    let body = b"hello there";
    let good = s.put_target(&path, body.len() as u64, Some("text/plain"), Proto::V2);
    let other_path = unique("b.txt");
    let sig = good.split_once("?v2=").unwrap().1.to_owned();
    let cases: Vec<(String, Vec<u8>, Option<&str>)> = vec![
        // path tampered, signature kept
        (
            format!("/upload/{}?v2={sig}", encode_path(&other_path)),
            body.to_vec(),
            Some("text/plain"),
        ),
        // size differs from the signed one
        (good.clone(), b"hello there!".to_vec(), Some("text/plain")),
        // content type differs (v2 signs it)
        (good.clone(), body.to_vec(), Some("text/html")),
        // absent type means application/octet-stream, which was not signed
        (good.clone(), body.to_vec(), None),
        // wrong secret
        (
            signed_target("other-secret", &path, body.len() as u64, Some("text/plain"), Proto::V2),
            body.to_vec(),
            Some("text/plain"),
        ),
        // right digest under another parameter name
        (good.replace("?v2=", "?v="), body.to_vec(), Some("text/plain")),
        // no signature at all
        (
            format!("/upload/{}", encode_path(&path)),
            body.to_vec(),
            Some("text/plain"),
        ),
        // malformed hex
        (
            format!("/upload/{}?v2=zz{}", encode_path(&path), &sig[2..]),
            body.to_vec(),
            Some("text/plain"),
        ),
        // truncated signature
        (
            format!("/upload/{}?v2={}", encode_path(&path), &sig[..60]),
            body.to_vec(),
            Some("text/plain"),
        ),
    ];
    for (target, body, ct) in cases {
        assert_eq!(put(&s, &target, &body, ct), 403, "{target} {ct:?}");
    }
    assert!(!file_at(&s, &path).exists());
    assert!(!file_at(&s, &other_path).exists());
    assert!(s.temporaries().is_empty());
    // The untampered request still works, uppercase hex included.
    assert_eq!(
        put(&s, &good.replace(&sig, &sig.to_uppercase()), body, Some("text/plain")),
        201
    );
    assert!(s.wait_log("v2 signature mismatch"), "log names the parameter");
    let log = s.log();
    assert!(!log.contains(&sig), "a valid signature never reaches the log");
}

#[test]
fn highest_parameter_wins() {
    let s = Server::start();
    let path = unique("x.bin");
    let v2 = s.put_target(&path, 3, None, Proto::V2);
    let v2sig = v2.split_once("?v2=").unwrap().1;
    // A valid v2 next to a bogus v: v2 is used.
    assert_eq!(
        put(
            &s,
            &format!("{}?v={}&v2={v2sig}", v2.split_once('?').unwrap().0, "0".repeat(64)),
            b"abc",
            None
        ),
        201
    );
    let path = unique("y.bin");
    let v = s.put_target(&path, 3, None, Proto::V);
    let vsig = v.split_once("?v=").unwrap().1;
    // A valid v next to a bogus v2: v2 is used, so refused.
    assert_eq!(put(&s, &format!("{v}&v2={}", "0".repeat(64)), b"abc", None), 403);
    assert_eq!(
        put(&s, &format!("{}?v={vsig}", v.split_once('?').unwrap().0), b"abc", None),
        201
    );
}

#[test]
fn second_put_conflicts_and_keeps_the_first() {
    let s = Server::start();
    let path = unique("once.txt");
    let target = s.put_target(&path, 5, None, Proto::V);
    assert_eq!(put(&s, &target, b"first", None), 201);
    assert_eq!(put(&s, &target, b"other", None), 409);
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), b"first");
    assert!(s.temporaries().is_empty());
}

/// `n` clients PUT different bodies of `size` bytes to one path at once: exactly one 201, the
/// rest 409, and the stored file is one whole body, never a mix.
fn race_one_path(s: &Server, name: &str, n: u64, size: usize, seed: u64) {
    let path = unique(name);
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| pattern(size, seed + i)).collect();
    let target = s.put_target(&path, size as u64, None, Proto::V);
    let statuses: Vec<u16> = std::thread::scope(|sc| {
        let handles: Vec<_> = bodies.iter().map(|b| sc.spawn(|| put(s, &target, b, None))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|&&c| c == 201).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|&c| c == 201 || c == 409), "{statuses:?}");
    let stored = std::fs::read(file_at(s, &path)).unwrap();
    assert!(
        bodies.contains(&stored),
        "the stored file is one whole body, never a mix"
    );
}

#[test]
fn racing_puts_have_exactly_one_winner() {
    let s = Server::start();
    for round in 0..5 {
        race_one_path(&s, &format!("race{round}.bin"), 8, 200_000, 100);
    }
    assert!(s.temporaries().is_empty());
}

#[test]
fn size_limit_and_length_required() {
    let s = Server::with_config("UploadMaxSize = 1000");
    let path = unique("big.bin");
    let target = s.put_target(&path, 1001, None, Proto::V);
    // Refused from the head alone: the server answers without waiting for the body.
    let r = raw(s.addr, put_head(&target, 1001, None, "").as_bytes());
    assert_eq!(r.status, 413);
    let ok = s.put_target(&unique("fits.bin"), 1000, None, Proto::V);
    assert_eq!(put(&s, &ok, &pattern(1000, 1), None), 201);
    // Neither Content-Length nor chunked.
    let r = raw(
        s.addr,
        format!(
            "PUT {} HTTP/1.1\r\nHost: x\r\n\r\n",
            s.put_target(&unique("n"), 3, None, Proto::V)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 411);
    assert!(!file_at(&s, &path).exists());
}

#[test]
fn short_body_is_bad_request_and_leaves_nothing() {
    let s = Server::start();
    let path = unique("short.bin");
    let target = s.put_target(&path, 100, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, 100, None, "").as_bytes()).unwrap();
    c.write_all(&[b'x'; 40]).unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let r = read_response(&mut c, false).expect("a response to a short body");
    assert_eq!(r.status, 400);
    assert!(!file_at(&s, &path).exists());
    assert!(s.temporaries().is_empty());
}

#[test]
fn client_disconnect_half_way_leaves_no_file_and_no_temporary() {
    let s = Server::start();
    let path = unique("half.bin");
    let size = 8 << 20;
    let target = s.put_target(&path, size, None, Proto::V);
    {
        let mut c = connect(s.addr);
        c.write_all(put_head(&target, size as usize, None, "").as_bytes())
            .unwrap();
        c.write_all(&pattern(3 << 20, 3)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // While the body streams, the temporary exists (and only there).
        assert_eq!(s.temporaries().len(), 1, "{:?}", s.temporaries());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.temporaries().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        s.temporaries().is_empty(),
        "temporary removed after the client vanished"
    );
    assert!(!file_at(&s, &path).exists());
    // The path is free again for a real upload.
    assert_eq!(put(&s, &target, &pattern(size as usize, 4), None), 201);
}

#[test]
fn encoded_and_raw_utf8_paths() {
    let s = Server::start();
    let dir = unique("x");
    let dir = dir.trim_end_matches("/x");
    let name = "très cool.jpg";
    let path = format!("{dir}/{name}");
    let body = b"0123456789";
    let sig = hmac_file_server::auth::sign(SECRET.as_bytes(), Proto::V, &path, 10, b"");
    // Uppercase %XX (ejabberd <= 25.07).
    let upper = format!("/upload/{dir}/tr%C3%A8s%20cool.jpg?v={sig}");
    let r = raw(
        s.addr,
        [put_head(&upper, 10, None, "").as_bytes(), body].concat().as_slice(),
    );
    assert_eq!(r.status, 201);
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);
    // Raw UTF-8 in the request line (ejabberd >= 25.08), lowercase elsewhere; same file: 409.
    let path2 = format!("{dir}/naïve_ß.txt");
    let sig2 = hmac_file_server::auth::sign(SECRET.as_bytes(), Proto::V, &path2, 10, b"");
    let rawutf8 = format!("/upload/{path2}?v={sig2}");
    let r = raw(
        s.addr,
        [put_head(&rawutf8, 10, None, "").as_bytes(), body].concat().as_slice(),
    );
    assert_eq!(r.status, 201);
    assert_eq!(std::fs::read(file_at(&s, &path2)).unwrap(), body);
    let lower = format!("/upload/{dir}/tr%c3%a8s%20cool.jpg?v={sig}");
    let r = raw(
        s.addr,
        [put_head(&lower, 10, None, "").as_bytes(), body].concat().as_slice(),
    );
    assert_eq!(r.status, 409);
    // ejabberd's three-segment layout.
    let ej = "9637f279e87dc3aba7eb582ceceaa621fa695865/aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5bC7d/tr_s_cool.jpg";
    let ej = format!("{dir}{ej}");
    assert_eq!(put(&s, &s.put_target(&ej, 10, None, Proto::V), body, None), 201);
    assert!(file_at(&s, &ej).is_file());
}

#[test]
fn bad_paths_are_refused_before_anything_is_written() {
    let s = Server::start();
    for raw_path in [
        "../escape.txt",
        "a/../../escape.txt",
        "%2e%2e/escape.txt",
        "a%2f..%2f..%2fescape.txt",
        "/abs.txt",
        "a//b.txt",
        "a%00b.txt",
        "a%5cb.txt",
        "a\\b.txt",
        ".hmac-file-server/tmp/x",
        "%zz.txt",
    ] {
        let sig = hmac_file_server::auth::sign(SECRET.as_bytes(), Proto::V, raw_path, 3, b"");
        let r = raw(
            s.addr,
            format!("PUT /upload/{raw_path}?v={sig} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc").as_bytes(),
        );
        assert_eq!(r.status, 400, "{raw_path}");
    }
    assert!(!s.dir.path().join("escape.txt").exists());
    assert!(!s.store().parent().unwrap().join("escape.txt").exists());
    assert!(s.temporaries().is_empty());
    // Outside the upload prefix nothing is stored.
    let r = raw(
        s.addr,
        b"PUT /elsewhere/a.txt?v=00 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert_eq!(r.status, 404);
}

fn chunked(body: &[u8], piece: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(piece) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn chunked_upload_is_verified_over_the_received_size() {
    let s = Server::with_config("UploadMaxSize = 100000");
    let body = pattern(70_000, 9);
    let path = unique("chunked.bin");
    let target = s.put_target(&path, body.len() as u64, Some("image/png"), Proto::V2);
    let head =
        format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: image/png\r\n\r\n");
    let r = raw(s.addr, &[head.as_bytes(), &chunked(&body, 3000)].concat());
    assert_eq!(r.status, 201);
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);

    // Signed for a different size than what arrived: 403, nothing visible.
    let path = unique("chunked-bad.bin");
    let target = s.put_target(&path, 100, None, Proto::V);
    let head = format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let r = raw(s.addr, &[head.as_bytes(), &chunked(&body[..200], 64)].concat());
    assert_eq!(r.status, 403);
    assert!(!file_at(&s, &path).exists());

    // Streaming past UploadMaxSize: 413 (the Go server let chunked bodies bypass the limit).
    let big = pattern(150_000, 2);
    let path = unique("chunked-big.bin");
    let target = s.put_target(&path, big.len() as u64, None, Proto::V);
    let head = format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    let r = raw(s.addr, &[head.as_bytes(), &chunked(&big, 10_000)].concat());
    assert_eq!(r.status, 413);
    assert!(!file_at(&s, &path).exists());

    // Malformed framing: 400.
    let path = unique("chunked-malformed.bin");
    let target = s.put_target(&path, 5, None, Proto::V);
    for bad in [
        &b"5\r\nhelloXX0\r\n\r\n"[..],
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"-5\r\nhello\r\n0\r\n\r\n",
    ] {
        let head = format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
        let r = raw(s.addr, &[head.as_bytes(), bad].concat());
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
    }
    assert!(!file_at(&s, &path).exists());
    assert!(s.temporaries().is_empty());
}

#[test]
fn expect_100_continue_only_after_the_checks() {
    let s = Server::start();
    // Valid: 100 first, then the body, then 201.
    let path = unique("expect.txt");
    let target = s.put_target(&path, 5, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, 5, None, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    let interim = read_response(&mut c, false).unwrap();
    assert_eq!(interim.status, 100);
    c.write_all(b"hello").unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 201);

    // Bad signature: the final 403 at once, never a 100, and the body is never needed.
    let bad = s.put_target(&unique("expect-bad.txt"), 6, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&bad, 5, None, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 403);

    // Existing target: 409 at once.
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, 5, None, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 409);
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), b"hello");
}

#[test]
fn empty_file_and_keep_alive_after_201() {
    let s = Server::start();
    let path = unique("empty");
    let target = s.put_target(&path, 0, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, 0, None, "").as_bytes()).unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 201);
    assert_eq!(std::fs::metadata(file_at(&s, &path)).unwrap().len(), 0);
    // Same connection, next request.
    let path2 = unique("next.txt");
    let t2 = s.put_target(&path2, 2, None, Proto::V);
    c.write_all(format!("{}ok", put_head(&t2, 2, None, "")).as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut c, false).unwrap().status, 201);
    assert_eq!(std::fs::read(file_at(&s, &path2)).unwrap(), b"ok");
}

#[test]
fn named_temporary_fallback_keeps_the_guarantees() {
    // Filesystems without O_TMPFILE (NFS) use named temporaries and renameat2(RENAME_NOREPLACE).
    let s = Server::with_config_env("", &[("HMAC_FILE_SERVER_NO_TMPFILE", "1")]);
    assert!(s.wait_log("named, in the reserved directory"), "{}", s.log());
    race_one_path(&s, "named.bin", 6, 300_000, 50);
    // A vanished client leaves no named temporary behind.
    let half = unique("named-half.bin");
    let t = s.put_target(&half, 1 << 20, None, Proto::V);
    {
        let mut c = connect(s.addr);
        c.write_all(put_head(&t, 1 << 20, None, "").as_bytes()).unwrap();
        c.write_all(&[7u8; 4096]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        let named: Vec<_> = std::fs::read_dir(s.tmp_dir()).unwrap().flatten().collect();
        assert_eq!(named.len(), 1, "a named temporary while streaming");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !s.temporaries().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(s.temporaries().is_empty());
    assert!(!file_at(&s, &half).exists());
}

#[test]
fn every_shape_of_directory_path_lands_where_its_url_says() {
    let s = Server::start();
    let top = unique("x").replace("/x", "");
    // Small uploads are made durable by the group commit, large ones (over 1 MiB) fsync each
    // directory they changed: both, in each shape the directory walk takes.
    for size in [1000usize, 1_500_000] {
        for path in [
            format!("{top}-{size}/new/deeper/f.bin"), // nothing exists: component by component
            format!("{top}-{size}/new/other/f.bin"),  // the parent exists, the last is new
            format!("{top}-{size}/new/deeper/g.bin"), // the whole chain exists
            format!("{top}-{size}/h.bin"),            // one directory, existing
            format!("{top}-{size}-flat/h.bin"),       // one directory, new
        ] {
            let body = pattern(size, path.len() as u64);
            assert_eq!(
                put(&s, &s.put_target(&path, size as u64, None, Proto::V), &body, None),
                201,
                "{path}"
            );
            assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body, "{path}");
            assert_eq!(get(&s, &format!("/upload/{path}")), (200, body), "{path}");
        }
    }
    assert!(s.temporaries().is_empty());
}

#[test]
fn symlinked_directories_in_store_dir_are_never_followed() {
    let s = Server::start();
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(s.store()).unwrap();
    std::os::unix::fs::symlink(&outside, s.store().join("evil")).unwrap();
    for (path, size) in [
        ("evil/x.txt", 3u64),
        ("evil/deeper/x.txt", 3),
        ("evil/big.bin", 100_000),
    ] {
        let body = pattern(size as usize, 3);
        let status = put(&s, &s.put_target(path, size, None, Proto::V), &body, None);
        assert_eq!(status, 409, "{path}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the symlink"
    );
    assert_eq!(get(&s, "/upload/evil/x.txt").0, 404);
}
