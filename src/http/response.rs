//! Response heads, written straight into a byte buffer.

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

pub const ALLOW: &str = "GET, HEAD, PUT, OPTIONS";

/// Headers every response carries: browsers (Converse.js) upload cross-origin, and nothing we
/// serve should ever be interpreted as active content of our origin.
const COMMON: &str = "Access-Control-Allow-Origin: *\r\n\
Access-Control-Allow-Methods: GET, HEAD, PUT, OPTIONS\r\n\
Access-Control-Allow-Headers: Authorization, Content-Type\r\n\
Access-Control-Expose-Headers: Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified\r\n\
Access-Control-Max-Age: 86400\r\n\
X-Content-Type-Options: nosniff\r\n\
Content-Security-Policy: default-src 'none'; form-action 'none'; sandbox\r\n";

/// The same for resumable (tus) requests: browser tus clients send and read these headers.
pub const TUS_CORS: &str = "Access-Control-Allow-Origin: *\r\n\
Access-Control-Allow-Methods: GET, HEAD, PUT, POST, PATCH, DELETE, OPTIONS\r\n\
Access-Control-Allow-Headers: Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Metadata, \
Upload-Offset, Upload-Checksum, Upload-Defer-Length, Upload-Concat, X-HTTP-Method-Override, X-Requested-With\r\n\
Access-Control-Expose-Headers: Location, Upload-Offset, Upload-Length, Upload-Metadata, Upload-Expires, \
Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm\r\n\
Access-Control-Max-Age: 86400\r\n\
X-Content-Type-Options: nosniff\r\n\
Content-Security-Policy: default-src 'none'; form-action 'none'; sandbox\r\n";

thread_local! {
    /// (unix second, formatted Date header line): formatting once a second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

fn with_date(f: impl FnOnce(&str)) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.0 != secs || cell.1.is_empty() {
            *cell = (secs, httpdate::fmt_http_date(now));
        }
        f(&cell.1);
    });
}

/// Builder for one response head. `out` may already hold earlier pipelined responses.
pub struct ResponseHead<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> ResponseHead<'a> {
    pub fn new(out: &'a mut Vec<u8>, status: u16) -> Self {
        Self::with_cors(out, status, COMMON)
    }

    /// A head whose CORS (and safety) headers are `cors` instead of the plain set.
    pub fn with_cors(out: &'a mut Vec<u8>, status: u16, cors: &str) -> Self {
        out.extend_from_slice(b"HTTP/1.1 ");
        push_decimal(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(super::status::reason(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        with_date(|d| {
            out.extend_from_slice(b"Date: ");
            out.extend_from_slice(d.as_bytes());
            out.extend_from_slice(b"\r\n");
        });
        out.extend_from_slice(cors.as_bytes());
        ResponseHead { out }
    }

    pub fn header(self, name: &str, value: impl std::fmt::Display) -> Self {
        let _ = write!(self.out, "{name}: {value}\r\n");
        self
    }

    pub fn header_bytes(self, name: &str, value: &[u8]) -> Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// End the head. `length` goes out as Content-Length (None for 1xx/204/304).
    pub fn finish(self, length: Option<u64>, close: bool) {
        if let Some(n) = length {
            self.out.extend_from_slice(b"Content-Length: ");
            push_decimal(self.out, n);
            self.out.extend_from_slice(b"\r\n");
        }
        if close {
            self.out.extend_from_slice(b"Connection: close\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }
}

/// `n` in decimal: every response carries a status and a length, and `write!` costs more than
/// the rest of a small GET's head together.
pub fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The `Cache-Control` of a download: kept by the client's own cache only (`private`) unless
/// the operator allows shared caches, for `max_age` seconds at most and never past the
/// file's own expiry (Unix seconds), so a deleted file does not live on in caches.
pub fn cache_control(max_age: u64, public: bool, expires: Option<u64>, now: u64) -> String {
    let scope = if public { "public" } else { "private" };
    let age = expires.map_or(max_age, |e| max_age.min(e.saturating_sub(now)));
    if age == 0 {
        format!("{scope}, no-cache")
    } else {
        format!("{scope}, max-age={age}, immutable")
    }
}

/// A complete short text response (errors, 201, 204).
pub fn simple(out: &mut Vec<u8>, status: u16, extra: &[(&str, &str)], body: &str, close: bool) {
    let mut h = ResponseHead::new(out, status);
    for (k, v) in extra {
        h = h.header(k, v);
    }
    if body.is_empty() {
        h.finish(Some(0), close);
    } else {
        h = h.header("Content-Type", "text/plain; charset=utf-8");
        h.finish(Some(body.len() as u64), close);
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 201, 4096, 1 << 40, u64::MAX] {
            let mut out = b"x".to_vec();
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }

    #[test]
    fn cache_lifetimes() {
        assert_eq!(
            cache_control(86400, false, None, 0),
            "private, max-age=86400, immutable"
        );
        assert_eq!(cache_control(86400, true, None, 0), "public, max-age=86400, immutable");
        assert_eq!(
            cache_control(86400, false, Some(1060), 1000),
            "private, max-age=60, immutable"
        );
        assert_eq!(
            cache_control(30, false, Some(1060), 1000),
            "private, max-age=30, immutable"
        );
        assert_eq!(cache_control(86400, false, Some(900), 1000), "private, no-cache");
        assert_eq!(cache_control(0, false, None, 0), "private, no-cache");
    }

    #[test]
    fn head_shape() {
        let mut out = Vec::new();
        simple(&mut out, 403, &[], "forbidden\n", true);
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 403 Forbidden\r\nDate: "));
        assert!(s.contains("\r\nContent-Length: 10\r\nConnection: close\r\n\r\nforbidden\n"));
        assert!(s.contains("Access-Control-Allow-Origin: *\r\n"));
    }
}
