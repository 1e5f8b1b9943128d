//! GET and HEAD: no signature (the unguessable path is the capability), validators, single
//! ranges, and headers that keep uploaded content from acting as part of our origin.

use crate::app::App;
use crate::error::{Error, Result};
use crate::http::range::{self, RangeReq};
use crate::http::response::{self, ResponseHead};
use crate::http::{Head, Method};
use crate::path;
use crate::storage::Stored;

use super::{Exchange, Outcome};

/// Bodies up to this size go out in the same write as the head (and are held in `wbuf` until
/// the client takes them, so this stays small).
const INLINE_BODY: u64 = 16 * 1024;

pub async fn get<E: Exchange>(app: &App, head: &Head, ex: &mut E) -> Result<Outcome> {
    let (raw_path, _) = path::split_target(&head.target);
    let path = path::store_path(raw_path, &app.prefix).map_err(|e| Error::path(e, true))?;
    let stored = app.store.open_cached(&path, &app.file_cache)?;
    // An expired file is gone for clients from its expiry on, whether or not it was deleted
    // yet (docs/operations.md, "Retention, quotas and deletion").
    let now = crate::session::unix_now();
    let expiry = stored.expiry(app.config.file_ttl.0);
    if expiry.is_some_and(|e| e <= now) {
        return Err(Error::NotFound);
    }
    let close = ex.closing(head);
    let (etag, last_modified) = (&stored.etag, &stored.last_modified);

    if head.if_none_match.as_deref().is_some_and(|v| etag_matches(v, etag)) {
        ResponseHead::new(ex.response(), 304)
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

    let content_type = &stored.content_type[..];
    let disposition = if stored.inline { "inline" } else { "attachment" };
    let (status, start, len) = match range {
        RangeReq::Full => (200, 0, stored.size),
        RangeReq::Part { start, end } => (206, start, end - start + 1),
        RangeReq::Unsatisfiable => {
            ResponseHead::new(ex.response(), 416)
                .header("Content-Range", format_args!("bytes */{}", stored.size))
                .header("Accept-Ranges", "bytes")
                .finish(Some(0), close);
            return Ok(Outcome::status(416));
        }
    };

    let mut h = ResponseHead::new(ex.response(), status)
        .header_bytes("Content-Type", content_type)
        .header_bytes("Content-Disposition", disposition.as_bytes())
        .header_bytes("Accept-Ranges", b"bytes")
        .header_bytes("ETag", etag.as_bytes())
        .header_bytes("Last-Modified", last_modified.as_bytes())
        .header_bytes("Cache-Control", cache_control(app, expiry, now).as_bytes());
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
    send_body(app, ex, &stored, start, len).await?;
    Ok(Outcome {
        status,
        bytes: len,
        published: None,
    })
}

/// The configured `Cache-Control`, shortened for a file that expires sooner.
fn cache_control(app: &App, expiry: Option<u64>, now: u64) -> std::borrow::Cow<'_, str> {
    match expiry {
        None => app.cache_control.as_str().into(),
        Some(e) => response::cache_control(app.config.cache_max_age, app.config.cache_public, Some(e), now).into(),
    }
}

/// File bytes [start, start+len) to the socket: small bodies ride in the head's write,
/// larger ones go out through `Conn::send_file`, which holds no buffer while the client is slow.
async fn send_body<E: Exchange>(app: &App, ex: &mut E, stored: &Stored, start: u64, len: u64) -> Result<()> {
    if let Some(bytes) = stored.cached_body(start, len) {
        ex.response().extend_from_slice(bytes);
        return Ok(());
    }
    if len <= INLINE_BODY {
        let out = ex.response();
        let at = out.len();
        stored.read_into(out, start, len as usize).await?;
        if start == 0 && !app.file_cache.ttl.is_zero() {
            stored.remember_body(&out[at..]);
        }
        return Ok(());
    }
    ex.send_file(&stored.file, start, len).await
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
    fn etags() {
        assert!(etag_matches("\"a-b\"", "\"a-b\""));
        assert!(etag_matches("W/\"a-b\", \"x\"", "\"a-b\""));
        assert!(etag_matches("*", "\"a-b\""));
        assert!(!etag_matches("\"a-c\"", "\"a-b\""));
    }
}
