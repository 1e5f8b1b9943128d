//! GET and HEAD: no signature (the unguessable path is the capability), validators, single
//! ranges, and headers that keep uploaded content from acting as part of our origin.

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::conn::{Conn, Outcome};
use crate::error::{Error, Result};
use crate::http::range::{self, RangeReq};
use crate::http::response::ResponseHead;
use crate::http::{Head, Method};
use crate::path::{self, PathError};
use crate::storage::Stored;

/// Bodies up to this size go out in the same write as the head.
const INLINE_BODY: u64 = 64 * 1024;

pub async fn get<S: AsyncReadRent + AsyncWriteRent>(conn: &mut Conn<'_, S>, head: &Head) -> Result<Outcome> {
    let shared = conn.shared;
    let (raw_path, _) = path::split_target(&head.target);
    let path = path::store_path(raw_path, &shared.prefix).map_err(|e| match e {
        PathError::NotUnderPrefix | PathError::Reserved => Error::NotFound,
        e => Error::BadPath(e),
    })?;
    let stored = shared.store.open_cached(&path, &shared.file_cache)?;
    let close = conn.closing(head);
    let (etag, last_modified) = (&stored.etag, &stored.last_modified);

    if head.if_none_match.as_deref().is_some_and(|v| etag_matches(v, etag)) {
        ResponseHead::new(&mut conn.wbuf, 304)
            .header("ETag", etag)
            .header("Last-Modified", last_modified)
            .finish(None, close);
        return Ok(Outcome::status(304));
    }

    let range_applies = match head.if_range.as_deref() {
        None => true,
        Some(v) if v.trim_start().starts_with('"') => v.trim() == etag.as_str(),
        Some(v) => v.trim() == last_modified.as_str(),
    };
    let range = match (&head.range, range_applies) {
        (Some(r), true) => range::parse(r, stored.size),
        _ => RangeReq::Full,
    };

    let content_type = stored
        .content_type
        .as_deref()
        .filter(|t| !t.is_empty())
        .unwrap_or(b"application/octet-stream");
    let disposition = if is_inline(content_type) {
        "inline"
    } else {
        "attachment"
    };
    let (status, start, len) = match range {
        RangeReq::Full => (200, 0, stored.size),
        RangeReq::Part { start, end } => (206, start, end - start + 1),
        RangeReq::Unsatisfiable => {
            ResponseHead::new(&mut conn.wbuf, 416)
                .header("Content-Range", format_args!("bytes */{}", stored.size))
                .header("Accept-Ranges", "bytes")
                .finish(Some(0), close);
            return Ok(Outcome::status(416));
        }
    };

    let mut h = ResponseHead::new(&mut conn.wbuf, status)
        .header_bytes("Content-Type", content_type)
        .header_bytes("Content-Disposition", disposition.as_bytes())
        .header_bytes("Accept-Ranges", b"bytes")
        .header_bytes("ETag", etag.as_bytes())
        .header_bytes("Last-Modified", last_modified.as_bytes())
        .header_bytes("Cache-Control", b"public, max-age=31536000, immutable");
    if status == 206 {
        h = h.header(
            "Content-Range",
            format_args!("bytes {}-{}/{}", start, start + len - 1, stored.size),
        );
    }
    h.finish(Some(len), close);

    if head.method == Method::Head || len == 0 {
        return Ok(Outcome::status(status));
    }
    send_body(conn, &stored, start, len).await?;
    Ok(Outcome {
        status,
        bytes: len,
        published: None,
    })
}

/// File bytes [start, start+len) to the socket: small bodies ride in the head's write,
/// larger ones go chunk by chunk through one reused buffer.
async fn send_body<S: AsyncReadRent + AsyncWriteRent>(
    conn: &mut Conn<'_, S>,
    stored: &Stored,
    start: u64,
    len: u64,
) -> Result<()> {
    if let Some(bytes) = stored.cached_body(start, len) {
        conn.wbuf.extend_from_slice(bytes);
        return Ok(());
    }
    if len <= INLINE_BODY {
        let mut out = std::mem::take(&mut conn.wbuf);
        out.reserve(len as usize);
        let at = out.len();
        let res = read_exact_into(stored, &mut out, start, len as usize).await;
        if res.is_ok() && start == 0 && !conn.shared.file_cache.ttl.is_zero() {
            stored.remember_body(&out[at..]);
        }
        conn.wbuf = out;
        return res;
    }
    conn.flush().await?;
    let cap = conn.shared.config.chunk_size.0.min(len) as usize;
    let mut buf = Vec::with_capacity(cap);
    let mut pos = start;
    let end = start + len;
    while pos < end {
        buf.clear();
        let want = ((end - pos) as usize).min(cap);
        read_exact_into(stored, &mut buf, pos, want).await?;
        pos += want as u64;
        let (res, b) = conn.write_all(buf).await;
        buf = b;
        res?;
    }
    Ok(())
}

/// Append exactly `want` bytes read at `pos` to `out` (whose spare capacity must hold them).
async fn read_exact_into(stored: &Stored, out: &mut Vec<u8>, mut pos: u64, want: usize) -> Result<()> {
    let target = out.len() + want;
    let mut buf = std::mem::take(out);
    while buf.len() < target {
        let have = buf.len();
        let (res, slice) = stored.file.read_at(buf.slice_mut(have..target), pos).await;
        buf = slice.into_inner();
        match res {
            Ok(0) => {
                *out = buf;
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while being served",
                )));
            }
            Ok(n) => pos += n as u64,
            Err(e) => {
                *out = buf;
                return Err(Error::Io(e));
            }
        }
    }
    *out = buf;
    Ok(())
}

/// Media a browser may show in place; everything else downloads (DESIGN.md §3).
fn is_inline(content_type: &[u8]) -> bool {
    let essence = content_type
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let starts = |prefix: &[u8]| essence.len() >= prefix.len() && essence[..prefix.len()].eq_ignore_ascii_case(prefix);
    starts(b"image/") || starts(b"video/") || starts(b"audio/") || essence.eq_ignore_ascii_case(b"text/plain")
}

fn etag_matches(header: &str, etag: &str) -> bool {
    header
        .split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_types() {
        assert!(is_inline(b"image/jpeg"));
        assert!(is_inline(b"Video/MP4"));
        assert!(is_inline(b"audio/ogg; codecs=opus"));
        assert!(is_inline(b"text/plain; charset=utf-8"));
        assert!(!is_inline(b"text/html"));
        assert!(!is_inline(b"application/pdf"));
        assert!(!is_inline(b"text/plainx"));
    }

    #[test]
    fn etags() {
        assert!(etag_matches("\"a-b\"", "\"a-b\""));
        assert!(etag_matches("W/\"a-b\", \"x\"", "\"a-b\""));
        assert!(etag_matches("*", "\"a-b\""));
        assert!(!etag_matches("\"a-c\"", "\"a-b\""));
    }
}
