//! GET/HEAD/OPTIONS: byte-exact bodies, stored content types, validators, ranges and the
//! headers that keep uploads from running as our origin.

mod common;
use common::*;

fn upload(s: &Server, name: &str, body: &[u8], ct: Option<&str>) -> String {
    let path = unique(name);
    let target = s.put_target(&path, body.len() as u64, ct, Proto::V);
    assert_eq!(put(s, &target, body, ct), 201);
    format!("/upload/{}", encode_path(&path))
}

#[test]
fn get_and_head_are_byte_exact_with_the_stored_type() {
    let s = Server::start();
    let body = pattern(300_000, 11);
    let url = upload(&s, "pic.jpg", &body, Some("image/jpeg"));
    let (status, got) = get(&s, &url);
    assert_eq!(status, 200);
    assert_eq!(got, body);

    let r = raw(s.addr, format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    assert_eq!(r.header("content-type"), Some("image/jpeg"));
    assert_eq!(r.header("content-disposition"), Some("inline"));
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(
        r.header("content-security-policy"),
        Some("default-src 'none'; form-action 'none'; sandbox")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("etag").is_some_and(|e| e.starts_with('"')));
    assert!(r.header("last-modified").is_some());

    let mut c = connect(s.addr);
    use std::io::Write;
    c.write_all(format!("HEAD {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let h = read_response(&mut c, true).unwrap();
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-length"), Some("300000"));
    assert_eq!(h.header("etag"), r.header("etag"));
    // No body followed the HEAD: the next response on the connection parses cleanly.
    c.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-3\r\n\r\n").as_bytes())
        .unwrap();
    let next = read_response(&mut c, false).unwrap();
    assert_eq!(next.status, 206);
    assert_eq!(next.body, &body[..4]);
}

#[test]
fn content_types_decide_inline_or_attachment() {
    let s = Server::start();
    for (ct, expect_type, disposition) in [
        (Some("video/mp4"), "video/mp4", "inline"),
        (Some("audio/ogg; codecs=opus"), "audio/ogg; codecs=opus", "inline"),
        (Some("text/plain; charset=utf-8"), "text/plain; charset=utf-8", "inline"),
        (Some("text/html"), "text/html", "attachment"),
        (Some("application/pdf"), "application/pdf", "attachment"),
        (None, "application/octet-stream", "attachment"),
        (Some(""), "application/octet-stream", "attachment"),
    ] {
        let url = upload(&s, "f", b"data", ct);
        let r = raw(s.addr, format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.header("content-type"), Some(expect_type), "{ct:?}");
        assert_eq!(r.header("content-disposition"), Some(disposition), "{ct:?}");
        assert_eq!(r.body, b"data");
    }
}

#[test]
fn ranges() {
    let s = Server::start();
    let body = pattern(200_000, 5);
    let url = upload(&s, "r.bin", &body, None);
    let get_range = |range: &str| {
        raw(
            s.addr,
            format!("GET {url} HTTP/1.1\r\nHost: x\r\nRange: {range}\r\n\r\n").as_bytes(),
        )
    };
    let r = get_range("bytes=10-19");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/200000"));
    assert_eq!(r.body, &body[10..20]);
    let r = get_range("bytes=100000-");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[100_000..]);
    let r = get_range("bytes=-7");
    assert_eq!(r.body, &body[body.len() - 7..]);
    let r = get_range("bytes=200000-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */200000"));
    // Multiple ranges are answered with the whole file, as RFC 9110 allows.
    let r = get_range("bytes=0-1,5-6");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    // If-Range with a stale validator: the whole file.
    let r = raw(
        s.addr,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nIf-Range: \"stale\"\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), body.len());
}

#[test]
fn if_none_match_gives_304() {
    let s = Server::start();
    let url = upload(&s, "c.txt", b"cache me", Some("text/plain"));
    let r = raw(s.addr, format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    let etag = r.header("etag").unwrap().to_owned();
    let r = raw(
        s.addr,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    let r = raw(
        s.addr,
        format!("GET {url} HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"other\"\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn missing_directories_and_internals_are_404() {
    let s = Server::start();
    let url = upload(&s, "here.txt", b"x", None);
    let dir = url.rsplit_once('/').unwrap().0;
    for target in [
        format!("{dir}/missing.txt"),
        dir.to_owned(),
        "/upload/.hmac-file-server/tmp".to_owned(),
        "/".to_owned(),
        "/metrics".to_owned(),
        format!("{url}/below-a-file"),
    ] {
        let (status, _) = get(&s, &target);
        assert_eq!(status, 404, "{target}");
    }
    // A symlink inside StoreDir is never followed out of it.
    std::os::unix::fs::symlink("/etc/passwd", s.store().join("link")).unwrap();
    assert_eq!(get(&s, "/upload/link").0, 404);
    // HEAD of a missing file: 404 without a body (the connection stays in sync).
    let mut c = connect(s.addr);
    use std::io::Write;
    c.write_all(b"HEAD /upload/nope HTTP/1.1\r\nHost: x\r\n\r\nGET /upload/nope HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c, true).unwrap().status, 404);
    assert_eq!(read_response(&mut c, false).unwrap().status, 404);
}

#[test]
fn options_preflight_and_other_methods() {
    let s = Server::start();
    let r = raw(
        s.addr,
        b"OPTIONS /upload/a/b.jpg HTTP/1.1\r\nHost: x\r\nOrigin: https://chat.example\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type\r\n\r\n",
    );
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-methods").unwrap().contains("PUT"));
    assert!(r
        .header("access-control-allow-headers")
        .unwrap()
        .to_lowercase()
        .contains("content-type"));
    assert!(r.header("access-control-max-age").is_some());
    for method in ["DELETE", "POST", "PATCH", "BREW"] {
        let r = raw(
            s.addr,
            format!("{method} /upload/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD, PUT, OPTIONS"));
    }
}

#[test]
fn open_file_cache_serves_a_deleted_file_at_most_its_ttl() {
    let s = Server::with_config("OpenFileCacheSeconds = 1");
    let url = upload(&s, "gone.txt", b"soon gone", None);
    // Enough requests that both workers have it cached.
    for _ in 0..8 {
        assert_eq!(get(&s, &url).0, 200);
    }
    let rel = url.trim_start_matches("/upload/");
    let on_disk = s
        .store()
        .join(hmac_file_server::path::store_path(&url, "/upload/").unwrap().as_str());
    assert!(on_disk.is_file(), "{rel}");
    std::fs::remove_file(&on_disk).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for _ in 0..8 {
        assert_eq!(get(&s, &url).0, 404, "served after the cache TTL");
    }
    // Without the cache, deletion is visible at once.
    let s = Server::with_config("OpenFileCacheSeconds = 0");
    let url = upload(&s, "gone2.txt", b"x", None);
    assert_eq!(get(&s, &url).0, 200);
    std::fs::remove_file(
        s.store()
            .join(hmac_file_server::path::store_path(&url, "/upload/").unwrap().as_str()),
    )
    .unwrap();
    assert_eq!(get(&s, &url).0, 404);
}

#[test]
fn open_file_cache_notices_a_file_replaced_behind_its_back() {
    // Past its TTL a cached entry is kept only if its path still names the same file,
    // unchanged: one replaced by a local tool (a new inode renamed over it) is served anew.
    let s = Server::with_config("OpenFileCacheSeconds = 1");
    let url = upload(&s, "replaced.txt", b"the first", None);
    for _ in 0..8 {
        assert_eq!(get(&s, &url), (200, b"the first".to_vec()));
    }
    let on_disk = s
        .store()
        .join(hmac_file_server::path::store_path(&url, "/upload/").unwrap().as_str());
    let tmp = on_disk.with_extension("new");
    std::fs::write(&tmp, b"the second one").unwrap();
    std::fs::rename(&tmp, &on_disk).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for _ in 0..8 {
        assert_eq!(
            get(&s, &url),
            (200, b"the second one".to_vec()),
            "served after the cache TTL"
        );
    }
    // Unchanged, it keeps being served across many TTLs.
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert_eq!(get(&s, &url), (200, b"the second one".to_vec()));
    }
}

#[test]
fn open_file_cache_closes_expired_files_without_new_requests() {
    let s = Server::with_config("OpenFileCacheSeconds = 1");
    let url = upload(&s, "swept.txt", b"held open", None);
    for _ in 0..8 {
        assert_eq!(get(&s, &url).0, 200);
    }
    let on_disk = s
        .store()
        .join(hmac_file_server::path::store_path(&url, "/upload/").unwrap().as_str());
    // A deleted file shows as "<path> (deleted)": compare as text.
    let path_text = on_disk.display().to_string();
    let held = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .unwrap()
            .flatten()
            .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.display().to_string().starts_with(&path_text)))
            .count()
    };
    assert!(held() > 0, "the cache holds the file open");
    // A retention job deletes it; no request for it follows. Its space must not stay pinned.
    std::fs::remove_file(&on_disk).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(held(), 0, "expired cache entries are closed by the sweep");
}
