//! HTTP clients of the server under test: a raw HTTP/1.1 client for the shapes ordinary
//! clients refuse to send, ureq for ordinary requests, and tus requests.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Server;

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Send raw bytes on a fresh connection and read one response.
pub fn raw(addr: SocketAddr, request: &[u8]) -> Response {
    let mut s = connect(addr);
    s.write_all(request).expect("write request");
    read_response(&mut s, false).expect("a response")
}

/// Read one response from the stream. `head_only`: the request was HEAD (no body follows).
/// Returns None if the connection closed before a status line.
pub fn read_response(s: &mut TcpStream, head_only: bool) -> Option<Response> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect();
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 100 || status == 204 || status == 304 {
        return Some(resp);
    }
    if let Some(len) = resp.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).ok()?;
        resp.body = body;
    }
    Some(resp)
}

/// A tus request on a fresh connection (`headers`: extra "Name: value\r\n" lines).
pub fn tus(server: &Server, method: &str, target: &str, headers: &str, body: &[u8]) -> Response {
    let mut req = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut s = connect(server.addr);
    s.write_all(&req).expect("write request");
    read_response(&mut s, method == "HEAD").expect("a response")
}

/// A tus PATCH of `body` at `offset`, with extra header lines.
pub fn tus_patch(server: &Server, loc: &str, offset: u64, body: &[u8], extra: &str) -> Response {
    tus(
        server,
        "PATCH",
        loc,
        &format!("Upload-Offset: {offset}\r\nContent-Type: application/offset+octet-stream\r\n{extra}"),
        body,
    )
}

/// Create a resumable upload of `len` bytes to `path` (signed with v, no metadata).
pub fn tus_create(server: &Server, path: &str, len: usize) -> Response {
    let target = server.put_target(path, len as u64, None, super::Proto::V);
    tus(server, "POST", &target, &format!("Upload-Length: {len}\r\n"), b"")
}

/// Create a resumable upload of `data` to `path` and send its first `first` bytes; its URL.
pub fn tus_begin(server: &Server, path: &str, data: &[u8], first: usize) -> String {
    let r = tus_create(server, path, data.len());
    assert_eq!(r.status, 201, "{r:?}");
    let loc = r.header("Location").unwrap().to_owned();
    if first > 0 {
        assert_eq!(tus_patch(server, &loc, 0, &data[..first], "").status, 204);
    }
    loc
}

/// The head of a tus PATCH of `len` body bytes at `offset` (the body to follow).
pub fn tus_patch_head(loc: &str, offset: u64, len: usize) -> String {
    format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {offset}\r\n\
         Content-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// A PUT head for `target` with a Content-Length body.
pub fn put_head(target: &str, len: usize, content_type: Option<&str>, extra: &str) -> String {
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    format!("PUT {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len}\r\n{ct}{extra}\r\n")
}

/// PUT `body` to a slot's `target` with its `Authorization: Bearer` header, on a fresh
/// connection; the whole response (to see `WWW-Authenticate`).
pub fn put_bearer(server: &Server, target: &str, body: &[u8], token: &str) -> Response {
    let mut req = put_head(target, body.len(), None, &format!("Authorization: Bearer {token}\r\n")).into_bytes();
    req.extend_from_slice(body);
    raw(server.addr, &req)
}

/// The text exposition on the operator's port.
pub fn scrape(metrics: SocketAddr) -> String {
    let r = raw(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).expect("UTF-8 exposition")
}

/// PUT `body` with ureq, a real HTTP client. Returns the status (errors included).
pub fn put(server: &Server, target: &str, body: &[u8], content_type: Option<&str>) -> u16 {
    let mut req = ureq::put(&server.url(target));
    if let Some(ct) = content_type {
        req = req.set("Content-Type", ct);
    }
    match req.send_bytes(body) {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("PUT transport error: {e}"),
    }
}

/// GET with ureq: (status, body, response).
pub fn get(server: &Server, target: &str) -> (u16, Vec<u8>) {
    let resp = match ureq::get(&server.url(target)).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET transport error: {e}"),
    };
    let status = resp.status();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).expect("read body");
    (status, body)
}

pub fn file_at(server: &Server, path: &str) -> PathBuf {
    server.store().join(Path::new(path))
}

/// Raise this process's open-file limit to its hard limit (tests that hold 1,000 sockets).
pub fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}
