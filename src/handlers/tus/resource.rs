//! HEAD, PATCH and DELETE on a resumable upload's URL: report its offset, append to it,
//! terminate it.

use std::time::{Duration, Instant};

use crate::app::App;
use crate::error::{Error, Result};
use crate::handlers::{Exchange, Outcome};
use crate::http::response::{ResponseHead, TUS_CORS};
use crate::http::{Head, Method};
use crate::logging::Escaped;
use crate::path::StorePath;
use crate::session::{self, Session, Sessions};

use super::append::{append, finish};
use super::headers::{parse_checksum, parse_number, tus_headers};
use super::id::{check_id, short};
use super::lock::Lock;
use super::{expires_header, sessions, store_error, OFFSET_STREAM, VERSION};

/// HEAD, PATCH or DELETE on the upload URL `id` (the router sends no other method here).
/// How long a HEAD gives a PATCH sent just before it to reach its handler (see `resource`).
const HEAD_GRACE: Duration = Duration::from_millis(50);

pub async fn resource<E: Exchange>(app: &App, head: &Head, method: Method, id: &str, ex: &mut E) -> Result<Outcome> {
    let sessions = sessions(app)?;
    let t = tus_headers(head)?;
    if !check_id(&app.keys.all(), id) {
        return Err(Error::NotFound);
    }
    // Counted from its head on, before any wait: a HEAD that arrives behind it waits for it.
    let _writer = (method == Method::Patch).then(|| sessions.writer(id));
    let arrived = Instant::now();
    match method {
        Method::Head => {
            // Unknown or expired: answered before waiting for anything.
            load(app, sessions, id, None).await?;
            // A writer still finishing (a PATCH whose connection broke a moment ago records
            // what it received) is waited for: the offset reported is never about to move.
            // Ours are known from their heads on, other nodes' by the store's lock. The head
            // of a PATCH the client sent just before this HEAD may still be unread on another
            // worker (the client opened a new connection for this HEAD, but threads are
            // scheduled as they are): it is given HEAD_GRACE to show up.
            monoio::time::sleep_until((arrived + HEAD_GRACE).into()).await;
            let lock = Lock::after_writers(sessions, id).await?;
            let session = load(app, sessions, id, Some(&lock)).await?;
            lock.release().await;
            let close = ex.closing(head);
            let mut h = ResponseHead::with_cors(ex.response(), 200, TUS_CORS)
                .header("Tus-Resumable", VERSION)
                .header("Cache-Control", "no-store")
                .header("Upload-Offset", session.offset)
                .header("Upload-Length", session.length);
            if !session.metadata.is_empty() {
                h = h.header("Upload-Metadata", &session.metadata);
            }
            if !session.complete() {
                h = h.header("Upload-Expires", expires_header(session.expires));
            }
            h.finish(None, close);
            Ok(Outcome::status(200))
        }
        Method::Patch => {
            if head.content_type.as_deref() != Some(OFFSET_STREAM) {
                return Err(Error::UnsupportedMediaType(
                    "PATCH needs Content-Type: application/offset+octet-stream",
                ));
            }
            let claimed = parse_number(t.upload_offset.as_deref(), "Upload-Offset")?;
            let checksum = t.upload_checksum.as_deref().map(parse_checksum).transpose()?;
            // Unknown or expired: answered before waiting for any lock.
            load(app, sessions, id, None).await?;
            let lock = Lock::take(sessions, id).await?;
            let session = load(app, sessions, id, Some(&lock)).await?;
            if claimed != session.offset {
                return Err(Error::OffsetMismatch {
                    expected: session.offset,
                    got: claimed,
                });
            }
            let (written, offset) = append(app, ex, head, &session, &lock, checksum).await?;
            lock.release().await;
            let close = ex.closing(head);
            let mut h = ResponseHead::with_cors(ex.response(), 204, TUS_CORS)
                .header("Tus-Resumable", VERSION)
                .header("Upload-Offset", offset);
            if offset < session.length {
                let expires = session::unix_now() + app.config.resumable_expiration;
                h = h.header("Upload-Expires", expires_header(expires));
            }
            h.finish(None, close);
            Ok(Outcome {
                status: 204,
                bytes: written,
                published: (offset == session.length).then_some(session.length),
            })
        }
        _ => {
            sessions.get(id).await.map_err(store_error)?.ok_or(Error::NotFound)?;
            let _lock = Lock::take(sessions, id).await?;
            let session = sessions.get(id).await.map_err(store_error)?.ok_or(Error::NotFound)?;
            // A finished upload's file stays: termination only forgets the session.
            if !session.complete() {
                app.discard_part(id);
            }
            sessions.remove(id).await.map_err(store_error)?;
            tracing::info!(id = %short(id), path = %Escaped(&session.path), offset = session.offset, "resumable upload terminated");
            let close = ex.closing(head);
            ResponseHead::with_cors(ex.response(), 204, TUS_CORS)
                .header("Tus-Resumable", VERSION)
                .finish(None, close);
            Ok(Outcome::status(204))
        }
    }
}

/// The session behind an upload URL: 404 if unknown, 410 once expired. A complete session
/// whose file was not yet published (a crash between the last offset and the link) is
/// published now, under `held` (the caller's lock) or a lock taken for it.
async fn load(app: &App, sessions: &Sessions, id: &str, held: Option<&Lock<'_>>) -> Result<Session> {
    let session = sessions.get(id).await.map_err(store_error)?.ok_or(Error::NotFound)?;
    if session.complete() {
        if app.store.part_exists(id) {
            let taken = match held {
                Some(_) => None,
                None => Lock::try_take(sessions, id).await.ok(),
            };
            if held.is_some() || taken.is_some() {
                let path = StorePath::from_stored(&session.path).map_err(Error::BadPath)?;
                let upload = app.store.open_part(id, &path, session.content_type.as_bytes())?;
                finish(app, sessions, &session, upload).await?;
            }
            if let Some(lock) = taken {
                lock.release().await;
            }
        }
        return Ok(session);
    }
    if session.expired(session::unix_now()) {
        return Err(Error::Gone);
    }
    Ok(session)
}
