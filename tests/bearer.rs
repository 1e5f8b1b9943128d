//! Uploads with the Bearer tokens of Prosody's mod_http_file_share slots (docs/protocol.md,
//! "Bearer tokens"): what is accepted, what is stored with the file, every refusal with
//! Prosody's own status and nothing stored, chunked and resumable uploads, the rule between
//! a token and a signature, and expiry.
mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use serde_json::json;

/// A slot for a fresh path: (path, its target, a valid token for `body` as `filetype`).
fn slot(name: &str, body: &[u8], filetype: &str) -> (String, String, String) {
    let path = unique(name);
    let token = slot_token(SECRET, &slot_claims(&path, body.len() as u64, filetype));
    let target = slot_target(&path);
    (path, target, token)
}

fn nothing_stored(s: &Server, path: &str) {
    assert_eq!(get(s, &slot_target(path)).0, 404, "{path} must not be served");
    assert!(!file_at(s, path).exists(), "{path} must not exist");
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
}

fn xattr(s: &Server, path: &str, name: &str) -> Option<String> {
    xattr::get(file_at(s, path), name)
        .expect("read xattr")
        .map(|v| String::from_utf8(v).expect("UTF-8 xattr"))
}

#[test]
fn a_slot_upload_is_stored_with_its_type_uploader_and_expiry() {
    let s = Server::start();
    let body = pattern(70_000, 1);
    let (path, target, token) = slot("très cool ü.png", &body, "image/png");
    let r = put_bearer(&s, &target, &body, &token);
    assert_eq!(r.status, 201, "{r:?}\n{}", s.log());
    let resp = ureq::get(&s.url(&target)).call().expect("GET");
    assert_eq!(
        resp.header("Content-Type"),
        Some("image/png"),
        "the token's filetype is served"
    );
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut got).unwrap();
    assert_eq!(got, body);
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);
    assert_eq!(
        xattr(&s, &path, "user.hmac-file-server.uploader").as_deref(),
        Some("alice@localhost")
    );
    let expires: u64 = xattr(&s, &path, "user.hmac-file-server.expires")
        .expect("expiry kept with the file")
        .parse()
        .unwrap();
    let week = hmac_file_server::session::unix_now() + 7 * 86400;
    assert!(expires.abs_diff(week) < 60, "{expires} vs {week}");
    // The type the request declares does not matter: the token's is what Prosody told the
    // recipient.
    let body2 = b"plain".to_vec();
    let (path2, target2, token2) = slot("notes.txt", &body2, "text/plain");
    let mut req = put_head(
        &target2,
        body2.len(),
        Some("application/x-evil"),
        &format!("Authorization: Bearer {token2}\r\n"),
    )
    .into_bytes();
    req.extend_from_slice(&body2);
    assert_eq!(raw(s.addr, &req).status, 201);
    let mut c = connect(s.addr);
    c.write_all(format!("HEAD {target2} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let r = read_response(&mut c, true).expect("HEAD answered");
    assert_eq!(r.header("content-type"), Some("text/plain"), "{path2}");
    // Lower- and uppercase escapes in the URL are the same file name (LuaSocket versions differ).
    let body3 = b"x".to_vec();
    let (path3, _, token3) = slot("naïve.txt", &body3, "text/plain");
    let (slot3, _) = path3.split_once('/').unwrap();
    assert_eq!(
        put_bearer(&s, &format!("/upload/{slot3}/na%C3%AFve.txt"), &body3, &token3).status,
        201
    );
    assert_eq!(std::fs::read(file_at(&s, &path3)).unwrap(), body3);
    let (path4, _, token4) = slot("naïve.txt", &body3, "text/plain");
    let (slot4, _) = path4.split_once('/').unwrap();
    assert_eq!(
        put_bearer(&s, &format!("/upload/{slot4}/na%c3%afve.txt"), &body3, &token4).status,
        201
    );
}

#[test]
fn every_refusal_has_prosodys_status_and_stores_nothing() {
    let s = Server::start();
    let body = pattern(1000, 2);
    let ty = "text/plain";

    // No credential of any kind: the signed-URL servers' 403.
    let (path, target, _) = slot("none.txt", &body, ty);
    let r = raw(
        s.addr,
        &[put_head(&target, body.len(), None, "").as_bytes(), &body].concat(),
    );
    assert_eq!(r.status, 403);
    nothing_stored(&s, &path);

    // Another scheme, an empty token, garbage: 401 naming Bearer.
    for auth in [
        "Basic YWxpY2U6cHc=",
        "Bearer",
        "Bearer ",
        "Bearer not.a.token",
        "Bearer a.b",
    ] {
        let (path, target, _) = slot("scheme.txt", &body, ty);
        let mut req = put_head(&target, body.len(), None, &format!("Authorization: {auth}\r\n")).into_bytes();
        req.extend_from_slice(&body);
        let r = raw(s.addr, &req);
        assert_eq!(r.status, 401, "{auth}: {r:?}");
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(challenge.starts_with("Bearer"), "{auth}: {r:?}");
        nothing_stored(&s, &path);
    }

    // A tampered payload, a tampered signature, another key, alg none, HS512: 401.
    let (path, target, token) = slot("forged.txt", &body, ty);
    let parts: Vec<&str> = token.split('.').collect();
    let b64 = |v: &serde_json::Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let mut claims = slot_claims(&path, body.len() as u64, ty);
    claims["filesize"] = json!(1_000_000);
    let mut sig = parts[2].to_owned().into_bytes();
    sig[0] = if sig[0] == b'A' { b'B' } else { b'A' };
    let forged = [
        format!("{}.{}.{}", parts[0], b64(&claims), parts[2]),
        format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).unwrap()),
        slot_token("another secret", &slot_claims(&path, body.len() as u64, ty)),
        format!(
            "{}.{}.{}",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            parts[1],
            parts[2]
        ),
        format!("{}.{}.", b64(&json!({"alg": "none"})), parts[1]),
        format!(
            "{}.{}.{}",
            b64(&json!({"alg": "HS512", "typ": "JWT"})),
            parts[1],
            parts[2]
        ),
    ];
    for t in &forged {
        let r = put_bearer(&s, &target, &body, t);
        assert_eq!(r.status, 401, "{t}: {r:?}");
        nothing_stored(&s, &path);
    }

    // Expired, beyond the clock-skew allowance: 410.
    let (path, target, _) = slot("expired.txt", &body, ty);
    let mut claims = slot_claims(&path, body.len() as u64, ty);
    let now = hmac_file_server::session::unix_now();
    claims["iat"] = json!(now - 400);
    claims["exp"] = json!(now - 100);
    assert_eq!(put_bearer(&s, &target, &body, &slot_token(SECRET, &claims)).status, 410);
    nothing_stored(&s, &path);

    // Another slot, another file name: 400.
    let (path, _, token) = slot("mine.txt", &body, ty);
    let other = unique("theirs.txt");
    let other_slot = format!("{}/mine.txt", other.split_once('/').unwrap().0);
    for wrong in [
        slot_target(&other_slot),
        slot_target(&format!("{}/renamed.txt", path.split_once('/').unwrap().0)),
    ] {
        let r = put_bearer(&s, &wrong, &body, &token);
        assert_eq!(r.status, 400, "{wrong}: {r:?}");
    }
    nothing_stored(&s, &path);

    // Another size than the token's, either way: 413.
    let (path, target, token) = slot("size.txt", &body, ty);
    assert_eq!(put_bearer(&s, &target, &body[..999], &token).status, 413);
    assert_eq!(put_bearer(&s, &target, &pattern(1001, 2), &token).status, 413);
    nothing_stored(&s, &path);

    // A used slot: 409, the first upload stays.
    let (path, target, token) = slot("twice.txt", &body, ty);
    assert_eq!(put_bearer(&s, &target, &body, &token).status, 201);
    assert_eq!(put_bearer(&s, &target, &pattern(1000, 3), &token).status, 409);
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);

    // Expect: 100-continue with a bad token: the refusal, never a 100.
    let (path, target, _) = slot("continue.txt", &body, ty);
    let mut c = connect(s.addr);
    let head = put_head(
        &target,
        body.len(),
        None,
        "Authorization: Bearer x.y.z\r\nExpect: 100-continue\r\n",
    );
    c.write_all(head.as_bytes()).unwrap();
    let r = read_response(&mut c, false).expect("answer");
    assert_eq!(r.status, 401);
    nothing_stored(&s, &path);

    assert!(!s.log().contains(&token), "tokens stay out of the log");
}

#[test]
fn clock_skew_is_allowed_a_few_seconds() {
    let s = Server::with_config("JWTClockSkew = 5");
    let body = b"skew".to_vec();
    let now = hmac_file_server::session::unix_now();
    for (exp, want) in [(now - 2, 201), (now - 30, 410)] {
        let path = unique("skew.txt");
        let mut claims = slot_claims(&path, 4, "text/plain");
        claims["exp"] = json!(exp);
        let r = put_bearer(&s, &slot_target(&path), &body, &slot_token(SECRET, &claims));
        assert_eq!(r.status, want, "exp {} s ago", now - exp);
    }
}

#[test]
fn chunked_slot_uploads_are_checked_against_the_token_size() {
    let s = Server::start();
    let body = pattern(300_000, 4);
    let chunked = |target: &str, token: &str, data: &[u8]| {
        let mut c = connect(s.addr);
        let head = format!(
            "PUT {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        c.write_all(head.as_bytes()).unwrap();
        for part in data.chunks(64 << 10) {
            if c.write_all(format!("{:x}\r\n", part.len()).as_bytes()).is_err()
                || c.write_all(part).is_err()
                || c.write_all(b"\r\n").is_err()
            {
                break;
            }
        }
        let _ = c.write_all(b"0\r\n\r\n");
        read_response(&mut c, false).map_or(0, |r| r.status)
    };
    let (path, target, token) = slot("chunked.bin", &body, "application/octet-stream");
    assert_eq!(chunked(&target, &token, &body), 201);
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);
    let (path, target, token) = slot("short.bin", &body, "application/octet-stream");
    assert_eq!(chunked(&target, &token, &body[..200_000]), 413);
    nothing_stored(&s, &path);
    let (path, target, token) = slot("long.bin", &body, "application/octet-stream");
    assert_eq!(chunked(&target, &token, &pattern(400_000, 4)), 413);
    nothing_stored(&s, &path);
}

#[test]
fn a_token_decides_over_a_signature_beside_it() {
    let s = Server::start();
    let body = b"both".to_vec();
    let (path, target, token) = slot("both.txt", &body, "text/plain");
    // A valid token beside a wrong signature: the token decides.
    let r = put_bearer(&s, &format!("{target}?v=00"), &body, &token);
    assert_eq!(r.status, 201, "{r:?}");
    // A valid signature beside a bad token: the token decides.
    let path2 = unique("both2.txt");
    let signed = s.put_target(&path2, 4, None, Proto::V);
    assert_eq!(put_bearer(&s, &signed, &body, "x.y.z").status, 401);
    nothing_stored(&s, &path2);
    // Another scheme beside a valid signature: the signature is the credential.
    let r = raw(
        s.addr,
        &[
            put_head(&signed, 4, None, "Authorization: Basic YTpi\r\n").as_bytes(),
            &body,
        ]
        .concat(),
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert!(file_at(&s, &path).exists());
}

#[test]
fn an_expired_file_is_no_longer_served() {
    let s = Server::start();
    let now = hmac_file_server::session::unix_now();
    let body = b"short-lived".to_vec();
    let (past, soon) = (unique("past.txt"), unique("soon.txt"));
    for (path, expires) in [(&past, now - 10), (&soon, now + 2)] {
        let mut claims = slot_claims(path, body.len() as u64, "text/plain");
        claims["expires"] = json!(expires);
        let r = put_bearer(&s, &slot_target(path), &body, &slot_token(SECRET, &claims));
        assert_eq!(r.status, 201, "{r:?}");
    }
    assert_eq!(get(&s, &slot_target(&past)).0, 404, "expired when it was stored");
    let r = ureq::get(&s.url(&slot_target(&soon))).call().expect("GET");
    let max_age: u64 = r
        .header("Cache-Control")
        .and_then(|v| v.split("max-age=").nth(1))
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.parse().ok())
        .expect("max-age");
    assert!(max_age <= 2, "caches keep it no longer than it lives: {max_age}");
    std::thread::sleep(Duration::from_millis(3100));
    assert_eq!(get(&s, &slot_target(&soon)).0, 404, "gone from its expiry on");
}

#[test]
fn resumable_uploads_take_the_token_in_place_of_a_signature() {
    let s = Server::start();
    let data = pattern(600_000, 5);
    let (path, target, token) = slot("resumable.jpg", &data, "image/jpeg");
    let auth = format!("Authorization: Bearer {token}\r\n");
    // Another length than the token's: 413, nothing created.
    let r = tus(&s, "POST", &target, &format!("Upload-Length: 5\r\n{auth}"), b"");
    assert_eq!(r.status, 413, "{r:?}");
    let r = tus(
        &s,
        "POST",
        &target,
        &format!("Upload-Length: {}\r\n{auth}", data.len()),
        b"",
    );
    assert_eq!(r.status, 201, "{r:?}\n{}", s.log());
    let loc = r.header("Location").expect("Location").to_owned();
    assert_eq!(tus_patch(&s, &loc, 0, &data[..300_000], "").status, 204);
    assert_eq!(tus_patch(&s, &loc, 300_000, &data[300_000..], "").status, 204);
    let resp = ureq::get(&s.url(&target)).call().expect("GET");
    assert_eq!(resp.header("Content-Type"), Some("image/jpeg"));
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), data);
    assert_eq!(
        xattr(&s, &path, "user.hmac-file-server.uploader").as_deref(),
        Some("alice@localhost")
    );
    assert!(xattr(&s, &path, "user.hmac-file-server.expires").is_some());
    // A forged token creates nothing.
    let (_, target2, _) = slot("forged.jpg", &data, "image/jpeg");
    let r = tus(
        &s,
        "POST",
        &target2,
        &format!("Upload-Length: {}\r\nAuthorization: Bearer a.b.c\r\n", data.len()),
        b"",
    );
    assert_eq!(r.status, 401);
}

#[test]
fn the_sign_command_mints_a_slot_token() {
    let s = Server::start();
    let path = unique("signed by cli.txt");
    let cfg = write_config(
        s.dir.path(),
        &format!("Secret = \"{SECRET}\"\nListenPort = \"{}\"\n", s.addr),
    );
    let (code, out, err) = run(&[
        "sign",
        "--config",
        &cfg,
        "--proto",
        "bearer",
        "--path",
        &path,
        "--size",
        "5",
        "--type",
        "text/plain",
        "--sub",
        "bob@localhost",
        "--expires-in",
        "1d",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    let url = lines.next().expect("URL line");
    let token = lines
        .next()
        .and_then(|l| l.strip_prefix("Authorization: Bearer "))
        .expect("header line");
    let target = url.strip_prefix(&format!("http://{}", s.addr)).expect("our URL");
    assert_eq!(put_bearer(&s, target, b"hello", token).status, 201);
    assert_eq!(
        xattr(&s, &path, "user.hmac-file-server.uploader").as_deref(),
        Some("bob@localhost")
    );
}
