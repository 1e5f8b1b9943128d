//! Hostile input: a table of malformed and malicious requests, each sent on its own connection
//! to one real server, each with the status it must get. Afterwards the server still serves a
//! normal upload, holds no temporary and stored nothing it was not asked to.
mod common;

use common::*;
use std::io::Write;
use std::net::Shutdown;

struct Case {
    name: &'static str,
    request: Vec<u8>,
    status: u16,
}

fn case(name: &'static str, request: impl Into<Vec<u8>>, status: u16) -> Case {
    Case {
        name,
        request: request.into(),
        status,
    }
}

/// A PUT head for a freshly signed 4-byte upload, with `headers` (CRLF-terminated lines) and
/// `body` appended as given.
fn signed_put(s: &Server, name: &str, headers: &str, body: &str) -> Vec<u8> {
    let target = s.put_target(&unique(name), 4, None, Proto::V);
    format!("PUT {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n{body}").into_bytes()
}

fn put_path(raw_path: &str) -> Vec<u8> {
    format!("PUT /upload/{raw_path}?v=00 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ndata").into_bytes()
}

fn get_path(raw_path: &[u8]) -> Vec<u8> {
    [b"GET /upload/".as_slice(), raw_path, b" HTTP/1.1\r\nHost: x\r\n\r\n"].concat()
}

fn cases(s: &Server) -> Vec<Case> {
    let big_signed = s.put_target(&unique("too-big.bin"), 2 << 20, None, Proto::V);
    let chunked_target = s.put_target(&unique("chunked-too-big.bin"), 4, None, Proto::V);
    let ten_thousand_headers: String = (0..10_000).map(|i| format!("X-Flood-{i}: y\r\n")).collect();
    let mega_url = format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(1 << 20));
    let mut oversized_chunk =
        format!("PUT {chunked_target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n200000\r\n")
            .into_bytes();
    oversized_chunk.extend(std::iter::repeat_n(b'z', 2 << 20));
    oversized_chunk.extend(b"\r\n0\r\n\r\n");
    vec![
        // Request smuggling shapes.
        case(
            "CL and TE",
            signed_put(
                s,
                "a",
                "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
                "4\r\ndata\r\n0\r\n\r\n",
            ),
            400,
        ),
        case(
            "two differing CL",
            signed_put(s, "a", "Content-Length: 4\r\nContent-Length: 5\r\n", "data"),
            400,
        ),
        case("CL list", signed_put(s, "a", "Content-Length: 4, 5\r\n", "data"), 400),
        // RFC 9112 §6.3: a request whose last transfer coding is not chunked is 400, closed.
        case(
            "TE gzip",
            signed_put(s, "a", "Transfer-Encoding: gzip\r\n", "data"),
            400,
        ),
        case(
            "TE chunked then gzip",
            signed_put(s, "a", "Transfer-Encoding: chunked, gzip\r\n", "data"),
            400,
        ),
        case(
            "TE xchunked",
            signed_put(s, "a", "Transfer-Encoding: xchunked\r\n", "data"),
            400,
        ),
        case(
            "TE gzip then chunked",
            signed_put(s, "a", "Transfer-Encoding: gzip, chunked\r\n", "4\r\ndata\r\n0\r\n\r\n"),
            501,
        ),
        case(
            "TE obs-fold",
            signed_put(s, "a", "Transfer-Encoding:\r\n chunked\r\n", "4\r\ndata\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "space before colon",
            signed_put(s, "a", "Content-Length : 4\r\n", "data"),
            400,
        ),
        case("bare LF head", b"GET /upload/x HTTP/1.1\nHost: x\n\n".to_vec(), 400),
        case(
            "bare CR in head",
            b"GET /upload/x HTTP/1.1\r\nHost: x\rX: y\r\n\r\n".to_vec(),
            400,
        ),
        // Content-Length values.
        case("negative CL", signed_put(s, "a", "Content-Length: -4\r\n", "data"), 400),
        case(
            "overflowing CL",
            signed_put(s, "a", "Content-Length: 99999999999999999999999\r\n", "data"),
            400,
        ),
        case(
            "CL with plus",
            signed_put(s, "a", "Content-Length: +4\r\n", "data"),
            400,
        ),
        case("hex CL", signed_put(s, "a", "Content-Length: 0x4\r\n", "data"), 400),
        case(
            "CL with inner space",
            signed_put(s, "a", "Content-Length: 4 4\r\n", "data"),
            400,
        ),
        case("empty CL", signed_put(s, "a", "Content-Length: \r\n", "data"), 400),
        case(
            "body shorter than CL",
            signed_put(s, "a", "Content-Length: 4\r\n", "da"),
            400,
        ),
        case("no length at all", signed_put(s, "a", "", ""), 411),
        case(
            "CL above UploadMaxSize, signed",
            format!(
                "PUT {big_signed} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                2 << 20
            ),
            413,
        ),
        // Chunked bodies.
        case(
            "chunk size not hex",
            signed_put(s, "a", "Transfer-Encoding: chunked\r\n", "zz\r\ndata\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "chunk size overflow",
            signed_put(
                s,
                "a",
                "Transfer-Encoding: chunked\r\n",
                "fffffffffffffffffffff\r\ndata\r\n0\r\n\r\n",
            ),
            400,
        ),
        case(
            "negative chunk size",
            signed_put(s, "a", "Transfer-Encoding: chunked\r\n", "-4\r\ndata\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "chunk data without CRLF",
            signed_put(s, "a", "Transfer-Encoding: chunked\r\n", "4\r\ndataXX0\r\n\r\n"),
            400,
        ),
        case(
            "chunk longer than its size",
            signed_put(s, "a", "Transfer-Encoding: chunked\r\n", "2\r\ndata\r\n0\r\n\r\n"),
            400,
        ),
        case(
            "chunked body cut off",
            signed_put(s, "a", "Transfer-Encoding: chunked\r\n", "4\r\nda"),
            400,
        ),
        case("chunked above UploadMaxSize", oversized_chunk, 413),
        // Paths.
        case("dot-dot", put_path("../etc/passwd"), 400),
        case("encoded dot-dot", put_path("%2e%2e/etc/passwd"), 400),
        case("mixed-case encoded dot-dot", put_path("%2E%2e/x"), 400),
        case("encoded slash", put_path("a%2f..%2fb"), 400),
        case("backslash", put_path("a\\..\\b"), 400),
        case("encoded backslash", put_path("a%5c..%5cb"), 400),
        case("encoded NUL", put_path("a%00b"), 400),
        case("empty segment", put_path("a//b"), 400),
        case("dot segment", put_path("a/./b"), 400),
        case("absolute after prefix", put_path("/etc/passwd"), 400),
        case("bad percent escape", put_path("a%zzb"), 400),
        case("invalid UTF-8 encoded", put_path("%ff%fe/x"), 400),
        case("invalid UTF-8 raw", get_path(b"\xff\xfe/x"), 400),
        case("overlong segment", put_path(&"n".repeat(300)), 400),
        case("reserved directory", get_path(b".hmac-file-server/tmp"), 404),
        case(
            "outside the prefix",
            b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            404,
        ),
        // Sizes and floods.
        case(
            "10,000 headers",
            format!("GET /upload/x HTTP/1.1\r\nHost: x\r\n{ten_thousand_headers}\r\n"),
            431,
        ),
        case(
            "one 20 KB header",
            format!(
                "GET /upload/x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "b".repeat(20_000)
            ),
            431,
        ),
        case("1 MiB URL", mega_url, 414),
        // Malformed request lines and headers.
        case(
            "TLS hello on plain port",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
        ),
        case("HTTP/0.9 request line", b"GET /upload/x\r\n\r\n".to_vec(), 400),
        case(
            "HTTP/2.0 version",
            b"GET /upload/x HTTP/2.0\r\nHost: x\r\n\r\n".to_vec(),
            505,
        ),
        case(
            "method with bad characters",
            b"P@T /upload/x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        case(
            "header without colon",
            b"GET /upload/x HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
            400,
        ),
        case(
            "control character in header value",
            b"GET /upload/x HTTP/1.1\r\nHost: x\x01y\r\n\r\n".to_vec(),
            400,
        ),
        case(
            "NUL in request line",
            b"GET /upload/x\x00 HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            400,
        ),
        // Authorisation.
        case(
            "no signature",
            format!(
                "PUT /upload/{} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ndata",
                unique("n")
            ),
            403,
        ),
        case(
            "signature not hex",
            format!(
                "PUT /upload/{}?v={} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ndata",
                unique("n"),
                "z".repeat(64)
            ),
            403,
        ),
        case(
            "signature too long",
            format!(
                "PUT /upload/{}?v={} HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\ndata",
                unique("n"),
                "a".repeat(4000)
            ),
            403,
        ),
        case(
            "unknown expectation",
            signed_put(s, "a", "Content-Length: 4\r\nExpect: 200-ok\r\n", "data"),
            417,
        ),
        // Methods.
        case("DELETE", b"DELETE /upload/x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
        case(
            "CONNECT",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
            405,
        ),
        case("TRACE", b"TRACE /upload/x HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 405),
    ]
}

#[test]
fn hostile_requests_get_clear_statuses_and_change_nothing() {
    let s = Server::with_config("UploadMaxSize = \"1MB\"");
    let cases = cases(&s);
    assert!(cases.len() >= 40, "{} cases", cases.len());
    let mut wrong = Vec::new();
    for c in &cases {
        let mut conn = connect(s.addr);
        // The server may answer and close before it has read everything (floods, refused bodies).
        let _ = conn.write_all(&c.request);
        let _ = conn.shutdown(Shutdown::Write);
        let got = read_response(&mut conn, false).map(|r| r.status);
        if got != Some(c.status) {
            wrong.push(format!("{}: expected {}, got {:?}", c.name, c.status, got));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );

    // Still healthy: a normal upload and download work, nothing else was stored.
    let path = unique("after-the-storm.txt");
    assert_eq!(put(&s, &s.put_target(&path, 4, None, Proto::V), b"fine", None), 201);
    assert_eq!(
        get(&s, &format!("/upload/{}", encode_path(&path))),
        (200, b"fine".to_vec())
    );
    let stored: Vec<_> = std::fs::read_dir(s.store())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".hmac-file-server")
        .collect();
    assert_eq!(stored.len(), 1, "only the normal upload is stored: {stored:?}");
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
    assert!(!s.log().contains("panicked"), "{}", s.log());
}
