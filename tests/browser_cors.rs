//! A real browser (headless Debian Chromium) uploading from another origin, the way Converse.js
//! does: the page's `fetch` PUT with a Content-Type (and for a Prosody mod_http_file_share
//! slot, an Authorization header) triggers a CORS preflight, then it reads the file back, and
//! error statuses must be readable by the page too.
mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

/// Serve `page` at `/` and hand each body POSTed to `/result` to the returned channel.
fn page_server(page: String) -> (u16, mpsc::Receiver<String>) {
    // Bound on port 0 and kept: no window for another process to take the port.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind page server");
    let port = listener.local_addr().expect("addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let mut stream = reader.into_inner();
            let reply = if request_line.starts_with("GET / ") {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    page.len()
                )
            } else if request_line.starts_with("POST /result ") {
                let _ = tx.send(String::from_utf8_lossy(&body).into_owned());
                "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n".to_owned()
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
            };
            let _ = stream.write_all(reply.as_bytes());
        }
    });
    (port, rx)
}

/// Open `page` (served from another origin than `s`) in headless Chromium; what the page
/// POSTed to `/result`, as JSON.
fn run_page(s: &Server, page: String) -> serde_json::Value {
    let (port, results) = page_server(page);
    let profile = tempfile::tempdir().expect("profile dir");
    let chromium_log = profile.path().join("chromium.log");
    let mut chromium = chromium(profile.path())
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&chromium_log).expect("log file"))
        .spawn()
        .expect("start chromium");
    let outcome = results.recv_timeout(Duration::from_secs(60));
    let _ = chromium.kill();
    let _ = chromium.wait();
    let outcome = outcome.unwrap_or_else(|_| {
        panic!(
            "the page never reported; chromium said:\n{}\nserver log:\n{}",
            std::fs::read_to_string(&chromium_log).unwrap_or_default(),
            s.log()
        )
    });
    serde_json::from_str(&outcome).expect("JSON from the page")
}

/// The page's script: `send(FORGED)` then `send(GOOD)` (each a PUT of `BYTES` by `fetch`, as
/// `send_js` defines it), a GET of `get` read back, and `send(GOOD)` once more; it POSTs the
/// statuses to `/result`. `consts`: the JavaScript constants FORGED and GOOD.
fn upload_page(consts: &str, send_js: &str, get: &str, bytes: &[u8]) -> String {
    format!(
        r#"<!doctype html><meta charset="utf-8"><title>upload</title><script>
{consts}
const GET = {get:?};
const BYTES = new Uint8Array({bytes:?});
(async () => {{
  const out = {{}};
  try {{
    const send = {send_js};
    out.forged = (await send(FORGED)).status;
    out.put = (await send(GOOD)).status;
    const r = await fetch(GET);
    out.get = r.status;
    out.type = r.headers.get("Content-Type");
    const got = new Uint8Array(await r.arrayBuffer());
    out.same = got.length === BYTES.length && got.every((v, i) => v === BYTES[i]);
    out.again = (await send(GOOD)).status;
  }} catch (e) {{
    out.error = String(e);
  }}
  await fetch("/result", {{ method: "POST", body: JSON.stringify(out) }});
}})();
</script>"#
    )
}

/// Run the page against `s`: the forged upload refused with `refusal` (readable cross-origin),
/// the good one stored at `path` and read back as `image/png`, a second one 409, and the
/// browser's preflight seen by the server.
fn round_trip(s: &Server, page: String, refusal: u16, path: &str, body: &[u8]) {
    let out = run_page(s, page);
    assert_eq!(out["error"], serde_json::Value::Null, "{out}");
    assert_eq!(out["forged"], refusal, "a refusal is readable cross-origin: {out}");
    assert_eq!(out["put"], 201, "{out}\n{}", s.log());
    assert_eq!(out["get"], 200, "{out}");
    assert_eq!(out["type"], "image/png", "{out}");
    assert_eq!(out["same"], true, "{out}");
    assert_eq!(out["again"], 409, "{out}");
    assert_eq!(std::fs::read(file_at(s, path)).expect("stored"), body);
    // The browser asked first, as browsers must for a cross-origin PUT with a Content-Type.
    assert!(
        s.wait_log("method=OPTIONS"),
        "no CORS preflight reached the server:\n{}",
        s.log()
    );
}

#[test]
fn chromium_uploads_cross_origin_and_reads_back() {
    if !require("chromium", on_path("chromium")) {
        return;
    }
    let s = Server::start();
    let path = unique("from the browser é.png");
    let body = pattern(5000, 77);
    let put = s.url(&s.put_target(&path, body.len() as u64, Some("image/png"), Proto::V2));
    // The same slot with its last signature digit changed.
    let mut bad = put.clone();
    let last = bad.pop().expect("signature");
    bad.push(if last == '0' { '1' } else { '0' });
    let page = upload_page(
        &format!("const GOOD = {put:?}, FORGED = {bad:?};"),
        r#"url => fetch(url, { method: "PUT", headers: { "Content-Type": "image/png" }, body: BYTES })"#,
        &s.url(&format!("/upload/{}", encode_path(&path))),
        &body,
    );
    round_trip(&s, page, 403, &path, &body);
}

/// A Prosody mod_http_file_share slot used from a page: the `Authorization` header makes the
/// PUT preflighted; a forged token's 401 is readable cross-origin too.
#[test]
fn chromium_uploads_with_a_bearer_token() {
    if !require("chromium", on_path("chromium")) {
        return;
    }
    let s = Server::start();
    let path = unique("bearer from the browser.png");
    let body = pattern(3000, 78);
    let token = slot_token(SECRET, &slot_claims(&path, body.len() as u64, "image/png"));
    // The token with a character of its signature changed.
    let mut forged = token.clone().into_bytes();
    let at = forged.len() - 3;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let url = s.url(&slot_target(&path));
    let page = upload_page(
        &format!("const URL_ = {url:?}, GOOD = {token:?}, FORGED = {forged:?};"),
        r#"t => fetch(URL_, { method: "PUT", headers: { "Authorization": "Bearer " + t, "Content-Type": "image/png" }, body: BYTES })"#,
        &url,
        &body,
    );
    round_trip(&s, page, 401, &path, &body);
}
