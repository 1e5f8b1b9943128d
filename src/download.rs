//! GET and HEAD: no signature (the unguessable path is the capability), validators, single
//! ranges, and headers that keep uploaded content from acting as part of our origin.

use crate::conn::{read_exact_into, Conn, Outcome, Socket};
use crate::error::{Error, Result};
use crate::http::media_type;
use crate::http::range::{self, RangeReq};
use crate::http::response::ResponseHead;
use crate::http::{Head, Method};
use crate::path::{self, PathError};
use crate::storage::Stored;

/// Bodies up to this size go out in the same write as the head (and are held in `wbuf` until
/// the client takes them, so this stays small).
const INLINE_BODY: u64 = 16 * 1024;

pub async fn get<S: Socket>(conn: &mut Conn<'_, S>, head: &Head) -> Result<Outcome> {
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

    // Parsed again on the way out: an xattr may hold what an older version or a local user
    // put there.
    let (content_type, disposition) = match stored.content_type.as_deref().and_then(media_type::parse) {
        Some(t) if t.is_inline() => (t.value, "inline"),
        Some(t) => (t.value, "attachment"),
        None => (media_type::OCTET_STREAM, "attachment"),
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
        .header_bytes("Cache-Control", shared.cache_control.as_bytes());
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
/// larger ones go out through `Conn::send_file`, which holds no buffer while the client is slow.
async fn send_body<S: Socket>(conn: &mut Conn<'_, S>, stored: &Stored, start: u64, len: u64) -> Result<()> {
    if let Some(bytes) = stored.cached_body(start, len) {
        conn.wbuf.extend_from_slice(bytes);
        return Ok(());
    }
    if len <= INLINE_BODY {
        let mut out = std::mem::take(&mut conn.wbuf);
        let at = out.len();
        let res = read_exact_into(&stored.file, &mut out, start, len as usize).await;
        if res.is_ok() && start == 0 && !conn.shared.file_cache.ttl.is_zero() {
            stored.remember_body(&out[at..]);
        }
        conn.wbuf = out;
        return res;
    }
    conn.send_file(&stored.file, start, len).await
}

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
    fn etags() {
        assert!(etag_matches("\"a-b\"", "\"a-b\""));
        assert!(etag_matches("W/\"a-b\", \"x\"", "\"a-b\""));
        assert!(etag_matches("*", "\"a-b\""));
        assert!(!etag_matches("\"a-c\"", "\"a-b\""));
    }
}
