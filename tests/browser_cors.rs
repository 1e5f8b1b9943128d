//! A real browser (headless Debian Chromium) uploading from another origin, the way Converse.js
//! does: the page's `fetch` PUT with a Content-Type triggers a CORS preflight, then it reads the
//! file back, and error statuses must be readable by the page too.
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

#[test]
fn chromium_uploads_cross_origin_and_reads_back() {
    if !require("chromium", on_path("chromium")) {
        return;
    }
    let s = Server::start();
    let path = unique("from the browser é.png");
    let body = pattern(5000, 77);
    let put = s.url(&s.put_target(&path, body.len() as u64, Some("image/png"), Proto::V2));
    let get = s.url(&format!("/upload/{}", encode_path(&path)));
    // The same slot with its last signature digit changed.
    let mut bad = put.clone();
    let last = bad.pop().expect("signature");
    bad.push(if last == '0' { '1' } else { '0' });

    let page = format!(
        r#"<!doctype html><meta charset="utf-8"><title>upload</title><script>
const PUT = {put:?}, GET = {get:?}, BAD = {bad:?};
const BYTES = new Uint8Array({bytes:?});
(async () => {{
  const out = {{}};
  try {{
    const send = url => fetch(url, {{ method: "PUT", headers: {{ "Content-Type": "image/png" }}, body: BYTES }});
    out.forged = (await send(BAD)).status;
    out.put = (await send(PUT)).status;
    const r = await fetch(GET);
    out.get = r.status;
    out.type = r.headers.get("Content-Type");
    const got = new Uint8Array(await r.arrayBuffer());
    out.same = got.length === BYTES.length && got.every((v, i) => v === BYTES[i]);
    out.again = (await send(PUT)).status;
  }} catch (e) {{
    out.error = String(e);
  }}
  await fetch("/result", {{ method: "POST", body: JSON.stringify(out) }});
}})();
</script>"#,
        bytes = body,
    );
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
    let out: serde_json::Value = serde_json::from_str(&outcome).expect("JSON from the page");
    assert_eq!(out["error"], serde_json::Value::Null, "{out}");
    assert_eq!(out["forged"], 403, "a refusal is readable cross-origin: {out}");
    assert_eq!(out["put"], 201, "{out}\n{}", s.log());
    assert_eq!(out["get"], 200, "{out}");
    assert_eq!(out["type"], "image/png", "{out}");
    assert_eq!(out["same"], true, "{out}");
    assert_eq!(out["again"], 409, "{out}");
    assert_eq!(std::fs::read(file_at(&s, &path)).expect("stored"), body);
    // The browser asked first, as browsers must for a cross-origin PUT with a Content-Type.
    assert!(
        s.wait_log("method=OPTIONS"),
        "no CORS preflight reached the server:\n{}",
        s.log()
    );
}
