//! `POST <prefix><path>?<signature>` (or with a Bearer token) and `Tus-Resumable`: create a
//! resumable upload, authorized like the PUT it stands for (`Upload-Length` is the signed size,
//! the metadata's `filetype` the signed content type; a token names both), and with a body,
//! write its start.

use crate::app::App;
use crate::error::{Error, Result};
use crate::handlers::grant::grant;
use crate::handlers::quota::admit;
use crate::handlers::{Exchange, Outcome};
use crate::http::response::{ResponseHead, TUS_CORS};
use crate::http::{Body, Head};
use crate::logging::Escaped;
use crate::session::{self, Session};

use super::append::append;
use super::headers::{content_type, parse_metadata, parse_number, tus_headers};
use super::id::{new_id, short};
use super::lock::Lock;
use super::{expires_header, location, sessions, store_error, OFFSET_STREAM, VERSION};

pub async fn create<E: Exchange>(app: &App, head: &Head, ex: &mut E) -> Result<Outcome> {
    let sessions = sessions(app)?;
    let t = tus_headers(head)?;
    let grant = grant(app, head)?;
    if t.upload_length.is_none() && t.upload_defer_length.is_some() {
        return Err(Error::BadRequest(
            "Upload-Defer-Length is not supported: the signed size must be declared".into(),
        ));
    }
    let length = parse_number(t.upload_length.as_deref(), "Upload-Length")?;
    let metadata = t.upload_metadata.clone().unwrap_or_default();
    let requested_type = content_type(&parse_metadata(&metadata)?)?;
    let grant = grant.declared(requested_type.as_bytes());
    grant.check_size(&app.keys, length)?;
    let path = &grant.path;
    // What was signed: the metadata's type, or a token's own.
    let content_type = String::from_utf8_lossy(&grant.meta.content_type).into_owned();
    let max = app.config.upload_max_size.0;
    if length > max {
        return Err(Error::TooLarge { size: length, max });
    }
    let with_body = head.body != Body::None;
    if with_body && head.content_type.as_deref() != Some(OFFSET_STREAM) {
        return Err(Error::UnsupportedMediaType(
            "a creation with a body needs Content-Type: application/offset+octet-stream",
        ));
    }
    // A PUT writing to the path already holds its own preallocation: no second one for it.
    if app.store.is_claimed(path) || app.store.exists(path)? {
        return Err(Error::Conflict);
    }
    // The whole upload is reserved now, and stays so (across restarts: the partial file
    // says how much and for whom) until it is published or goes.
    let reservation = admit(app, grant.meta.uploader.as_deref(), length).await?;
    let id = new_id(app.keys.current())?;
    app.store.create_part(&id, length, &grant.meta).await?;
    app.retention.hold_part(&id, reservation);
    let session = Session {
        id: id.clone(),
        path: path.as_str().to_owned(),
        length,
        offset: 0,
        content_type,
        metadata,
        expires: session::unix_now() + app.config.resumable_expiration,
    };
    if let Err(e) = sessions.create(session.clone()).await {
        app.discard_part(&id);
        return Err(store_error(e));
    }
    tracing::info!(id = %short(&id), path = %Escaped(path.as_str()), length, "resumable upload created");
    let mut outcome = Outcome::status(201);
    let mut offset = None;
    if with_body || length == 0 {
        let lock = Lock::take(sessions, &id).await?;
        match append(app, ex, head, &session, &lock, None).await {
            Ok((written, now)) => {
                outcome.bytes = written;
                offset = Some(now);
                outcome.published = (now == length).then_some(length);
                lock.release().await;
            }
            Err(e) => {
                // The client never saw the upload URL, so nobody can resume this one.
                app.discard_part(&id);
                let _ = sessions.remove(&id).await;
                return Err(e);
            }
        }
    }
    let close = ex.closing(head);
    let mut h = ResponseHead::with_cors(ex.response(), 201, TUS_CORS)
        .header("Tus-Resumable", VERSION)
        .header("Location", location(&app.prefix, &id))
        .header("Upload-Expires", expires_header(session.expires));
    if let Some(o) = offset {
        h = h.header("Upload-Offset", o);
    }
    h.finish(Some(0), close);
    Ok(outcome)
}
