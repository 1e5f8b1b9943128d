//! HTTP/1.1 wire format: request heads (httparse), chunked bodies, ranges, response heads.
//! Pure parsing and formatting; the connection loop in `server` drives it.

pub mod chunked;
pub mod media_type;
pub mod range;
pub mod response;
pub mod status;
pub mod syntax;

use crate::error::Error;

/// Headers beyond this count are answered with 431.
const MAX_HEADERS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Put,
    Options,
    /// Resumable uploads (tus): creation, chunks, termination.
    Post,
    Patch,
    Delete,
    Other,
}

/// How the request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    None,
    Length(u64),
    Chunked,
}

/// The parts of a request head the server acts on, owned so the buffer can be reused.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: Method,
    pub method_name: String,
    pub target: String,
    pub http10: bool,
    pub body: Body,
    /// The client asked us to close after this exchange (or spoke HTTP/1.0 without keep-alive).
    pub close: bool,
    pub expect_continue: bool,
    /// Content-Type verbatim; None when absent (Some(empty) when present but empty).
    pub content_type: Option<Vec<u8>>,
    pub range: Option<String>,
    pub if_none_match: Option<String>,
    pub if_range: Option<String>,
    /// Authorization verbatim (a Bearer token is an upload capability: never logged).
    pub authorization: Option<String>,
    /// The tus and preflight headers; None when the request carries none (every plain
    /// PUT/GET), so they cost nothing there.
    pub tus: Option<Box<TusHeaders>>,
}

/// Headers of the tus protocol (and of CORS preflights for it), verbatim.
#[derive(Debug, Clone, Default)]
pub struct TusHeaders {
    pub resumable: Option<String>,
    pub upload_length: Option<String>,
    pub upload_offset: Option<String>,
    pub upload_metadata: Option<String>,
    pub upload_checksum: Option<String>,
    pub upload_defer_length: Option<String>,
    pub method_override: Option<String>,
    pub preflight_method: Option<String>,
    pub preflight_headers: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_head: usize,
    pub max_url: usize,
}

/// Whether a `\n` not preceded by `\r` occurs: without an early exit, so the compiler can
/// check many bytes at once (the byte-by-byte loop was the other third of `parse_head`).
fn has_bare_lf(head: &[u8]) -> bool {
    let first = head.first() == Some(&b'\n');
    let later = head
        .iter()
        .zip(head.iter().skip(1))
        .fold(false, |found, (&prev, &b)| found | ((b == b'\n') & (prev != b'\r')));
    first | later
}

/// Parse a request head from the start of `buf`. `Ok(None)`: need more bytes.
/// `Ok(Some((head, n)))`: the head took `n` bytes; the body (if any) follows.
pub fn parse_head(buf: &[u8], limits: Limits) -> Result<Option<(Head, usize)>, Error> {
    // Left uninitialised for httparse to fill: zeroing 100 headers (3.2 KiB) was a third of
    // this function's time on a small GET.
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let n = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() >= limits.max_head {
                // Still no end of the request line: the URL itself is what is too long.
                let line_done = buf.windows(2).any(|w| w == b"\r\n") || buf.contains(&b'\n');
                return Err(if line_done {
                    Error::HeadTooLarge
                } else {
                    Error::UriTooLong
                });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
        Err(httparse::Error::Version) => return Err(Error::VersionNotSupported),
        Err(e) => return Err(Error::BadRequest(format!("malformed request head: {e}"))),
    };
    if n > limits.max_head {
        return Err(Error::HeadTooLarge);
    }
    // httparse accepts a bare LF as a line end; a proxy in front may not, and two parsers that
    // disagree on where a head ends is how requests get smuggled. Only CRLF is accepted.
    if has_bare_lf(&buf[..n]) {
        return Err(Error::Smuggling("bare LF line ending in the request head"));
    }
    let method_name = req.method.unwrap_or_default();
    let target = req.path.unwrap_or_default();
    if target.len() > limits.max_url {
        return Err(Error::UriTooLong);
    }
    let http10 = req.version == Some(0);
    let method = match method_name {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "OPTIONS" => Method::Options,
        "POST" => Method::Post,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        _ => Method::Other,
    };

    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Vec<String> = Vec::new();
    let mut conn_close = http10;
    let mut expect_continue = false;
    let mut content_type = None;
    let mut range = None;
    let mut if_none_match = None;
    let mut if_range = None;
    let mut authorization = None;
    let mut tus: Option<Box<TusHeaders>> = None;
    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("content-length") {
            if split_list(value).next().is_none() {
                return Err(Error::Smuggling("empty Content-Length"));
            }
            for part in split_list(value) {
                let v = parse_content_length(part)?;
                if content_length.is_some_and(|old| old != v) {
                    return Err(Error::Smuggling("differing Content-Length values"));
                }
                content_length = Some(v);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if split_list(value).next().is_none() {
                return Err(Error::Smuggling("empty Transfer-Encoding"));
            }
            for part in split_list(value) {
                let s = String::from_utf8_lossy(part).to_ascii_lowercase();
                transfer_encoding.push(s);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in split_list(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    conn_close = false;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(Error::ExpectationFailed);
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            if content_type.is_some() {
                return Err(Error::BadRequest("more than one Content-Type".into()));
            }
            content_type = Some(value.to_vec());
        } else if name.eq_ignore_ascii_case("range") {
            range = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("if-none-match") {
            if_none_match = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("if-range") {
            if_range = Some(String::from_utf8_lossy(value).into_owned());
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(Error::BadRequest("more than one Authorization".into()));
            }
            authorization = Some(String::from_utf8_lossy(value).into_owned());
        } else if let Some(slot) = tus_header(&mut tus, name) {
            if slot.is_some() {
                return Err(Error::BadRequest(format!("more than one {name}")));
            }
            *slot = Some(String::from_utf8_lossy(value).into_owned());
        }
    }

    let body = if transfer_encoding.is_empty() {
        match content_length {
            Some(0) | None => Body::None,
            Some(n) => Body::Length(n),
        }
    } else {
        // RFC 9112 §6.1: both headers at once is the classic smuggling shape.
        if content_length.is_some() {
            return Err(Error::Smuggling("both Content-Length and Transfer-Encoding"));
        }
        if http10 {
            return Err(Error::Smuggling("Transfer-Encoding in an HTTP/1.0 request"));
        }
        match transfer_encoding.last().map(String::as_str) {
            Some("chunked") if transfer_encoding.len() == 1 => Body::Chunked,
            Some("chunked") => return Err(Error::NotImplemented("transfer codings other than chunked")),
            _ => return Err(Error::Smuggling("Transfer-Encoding without final chunked")),
        }
    };
    // Content-Length: 0 on a PUT is still a declared size (an empty file), unlike no header.
    let body = match (body, content_length) {
        (Body::None, Some(0)) if method == Method::Put => Body::Length(0),
        (b, _) => b,
    };

    Ok(Some((
        Head {
            method,
            method_name: method_name.to_owned(),
            target: target.to_owned(),
            http10,
            body,
            close: conn_close,
            expect_continue,
            content_type,
            range,
            if_none_match,
            if_range,
            authorization,
            tus,
        },
        n,
    )))
}

/// Where a tus (or tus preflight) header goes, allocating the set on the first one.
fn tus_header<'a>(tus: &'a mut Option<Box<TusHeaders>>, name: &str) -> Option<&'a mut Option<String>> {
    const NAMES: [&str; 9] = [
        "tus-resumable",
        "upload-length",
        "upload-offset",
        "upload-metadata",
        "upload-checksum",
        "upload-defer-length",
        "x-http-method-override",
        "access-control-request-method",
        "access-control-request-headers",
    ];
    // Most headers of most requests are none of these: one byte decides.
    if !matches!(
        name.as_bytes().first().map(u8::to_ascii_lowercase),
        Some(b't' | b'u' | b'x' | b'a')
    ) {
        return None;
    }
    let i = NAMES.iter().position(|n| n.eq_ignore_ascii_case(name))?;
    let t = tus.get_or_insert_with(Default::default);
    Some(match i {
        0 => &mut t.resumable,
        1 => &mut t.upload_length,
        2 => &mut t.upload_offset,
        3 => &mut t.upload_metadata,
        4 => &mut t.upload_checksum,
        5 => &mut t.upload_defer_length,
        6 => &mut t.method_override,
        7 => &mut t.preflight_method,
        _ => &mut t.preflight_headers,
    })
}

fn split_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|p| p.trim_ascii())
        .filter(|p| !p.is_empty())
}

/// Digits only: no sign, no spaces inside, no hex, and it must fit in u64.
fn parse_content_length(v: &[u8]) -> Result<u64, Error> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(Error::Smuggling("invalid Content-Length"));
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Error::Smuggling("invalid Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_line_feeds_are_found_anywhere() {
        for (head, bare) in [
            (&b""[..], false),
            (b"\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", true),
            (b"\r\r\n", false),
            (b"\n\r\n", true),
        ] {
            assert_eq!(has_bare_lf(head), bare, "{:?}", String::from_utf8_lossy(head));
        }
        let long = [b"X-A: b\r\n".repeat(40), b"X: y\n".to_vec()].concat();
        assert!(has_bare_lf(&long));
    }

    const L: Limits = Limits {
        max_head: 16384,
        max_url: 8192,
    };

    fn parse(s: &str) -> Result<Option<(Head, usize)>, Error> {
        parse_head(s.as_bytes(), L)
    }
    fn head(s: &str) -> Head {
        parse(s).unwrap().unwrap().0
    }
    fn status(s: &str) -> u16 {
        parse(s).unwrap_err().status()
    }

    #[test]
    fn put_with_length_and_type() {
        let h = head(
            "PUT /upload/a?v=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nContent-Type: image/png; q=1\r\n\r\nbody",
        );
        assert_eq!(h.method, Method::Put);
        assert_eq!(h.target, "/upload/a?v=1");
        assert_eq!(h.body, Body::Length(12));
        assert_eq!(h.content_type.as_deref(), Some(&b"image/png; q=1"[..]));
        assert!(!h.close);
    }

    #[test]
    fn partial_needs_more() {
        assert!(parse("GET / HTTP/1.1\r\nHost:").unwrap().is_none());
    }

    #[test]
    fn framing_rules() {
        assert_eq!(
            head("PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").body,
            Body::Chunked
        );
        assert_eq!(
            head("PUT /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body,
            Body::Length(0)
        );
        assert_eq!(head("PUT /a HTTP/1.1\r\n\r\n").body, Body::None);
        assert_eq!(
            head("PUT /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").body,
            Body::Length(5)
        );
        assert_eq!(
            status("PUT /a HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            400
        );
        assert_eq!(status("PUT /a HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"), 400);
        assert_eq!(
            status("PUT /a HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status("PUT /a HTTP/1.1\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(status("PUT /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n"), 400);
        assert_eq!(status("PUT /a HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n"), 400);
        assert_eq!(
            status("PUT /a HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n"),
            400
        );
        assert_eq!(
            status("PUT /a HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            501
        );
        assert_eq!(
            status("PUT /a HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            400
        );
        assert_eq!(status("PUT /a HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n"), 400);
        assert_eq!(status("PUT /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(status("PUT /a HTTP/1.1\r\nContent-Length: \r\n\r\n"), 400);
        assert_eq!(status("PUT /a HTTP/1.1\r\nContent-Length: ,\r\n\r\n"), 400);
        assert_eq!(status("PUT /a HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n"), 400);
        assert_eq!(status("PUT /a HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n"), 400);
        assert_eq!(status("GET /a HTTP/1.1\r\nTransfer-Encoding: \r\n\r\n"), 400);
    }

    #[test]
    fn connection_and_expect() {
        assert!(head("GET / HTTP/1.0\r\n\r\n").close);
        assert!(!head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").close);
        assert!(head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").close);
        assert!(head("PUT / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n").expect_continue);
        assert_eq!(status("PUT / HTTP/1.1\r\nExpect: teapot\r\n\r\n"), 417);
    }

    #[test]
    fn limits() {
        let long_url = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(9000));
        assert_eq!(status(&long_url), 414);
        let endless_url = format!("GET /{}", "a".repeat(20000));
        assert_eq!(status(&endless_url), 414);
        let big_head = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(20000));
        assert_eq!(status(&big_head), 431);
        let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(status(&format!("GET / HTTP/1.1\r\n{many}\r\n")), 431);
        assert_eq!(status("GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(status("GET\x01 / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: x\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\nHost: x\r\n\r\n"), 400);
    }

    #[test]
    fn content_type_presence() {
        assert_eq!(
            head("PUT / HTTP/1.1\r\nContent-Type:\r\n\r\n").content_type.as_deref(),
            Some(&b""[..])
        );
        assert!(head("PUT / HTTP/1.1\r\n\r\n").content_type.is_none());
    }
}
