//! Resumable uploads: tus 1.0.0 (core, creation, creation-with-upload, termination, checksum
//! with sha256, expiration) under the upload prefix, authorized by the same signatures as PUT.
//!
//! - `POST <prefix><path>?v=|v2=|token=` creates an upload: `Upload-Length` is the signed size,
//!   the `filetype` of `Upload-Metadata` the signed content type (absent: octet-stream).
//!   The answer's `Location` is `<prefix>.hmac-file-server/tus/<id>`: the id is the capability.
//! - `HEAD`/`PATCH`/`DELETE` on that URL report, append, terminate.
//!
//! Bytes are written at their offset into the partial file preallocated at creation; an
//! offset is recorded (and acknowledged) only after its bytes are durable; the last byte
//! publishes the file exactly like a PUT. Sessions live in the session store (`session`),
//! reached through the side thread.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::auth;
use crate::conn::{BodySink, Conn, Outcome, Socket};
use crate::error::{Error, Result};
use crate::http::response::{self, ResponseHead, TUS_CORS};
use crate::http::{Body, Head, Method, TusHeaders};
use crate::logging::Escaped;
use crate::path::{self, PathError, StorePath};
use crate::server::Shared;
use crate::session::{self, Session, Sessions, StoreError};
use crate::storage::{Upload, MAX_CONTENT_TYPE};

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
/// Where upload URLs live below the prefix: inside the reserved name, so no stored file can
/// ever have one of these paths.
pub const RESOURCE_DIR: &str = ".hmac-file-server/tus/";
const OFFSET_STREAM: &[u8] = b"application/offset+octet-stream";
/// Random bytes in an upload id, plus as many bytes of a tag keyed with the secret.
const ID_RANDOM: usize = 16;
const ID_TAG: usize = 16;
/// A writer's lock lasts this long unless renewed: a node killed mid-PATCH blocks its upload
/// for at most this long. A writer renews before it writes once LOCK_RENEW has passed, and
/// stops without writing if its lease was lost, so a stalled writer never writes over bytes a
/// successor has already had acknowledged.
const LOCK_LEASE: Duration = Duration::from_secs(30);
const LOCK_RENEW: Duration = Duration::from_secs(10);
/// A PATCH for a busy upload waits this long for the other writer before 423.
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// A long PATCH without checksum records its progress every this many bytes, so a crash or
/// a cut connection loses at most this much.
const CHECKPOINT: u64 = 16 << 20;

/// The upload id in a request's path, if it names an upload URL.
pub fn resource_id<'a>(prefix: &str, target: &'a str) -> Option<&'a str> {
    let (raw_path, _) = path::split_target(target);
    raw_path.strip_prefix(prefix)?.strip_prefix(RESOURCE_DIR)
}

pub fn location(prefix: &str, id: &str) -> String {
    format!("{prefix}{RESOURCE_DIR}{id}")
}

/// A new upload id: 128 random bits and a 128-bit tag over them keyed with the secret, hex.
/// The tag lets a forged id, or one minted by a server with another secret, be refused
/// before any store lookup.
pub fn new_id(secret: &[u8]) -> std::io::Result<String> {
    let mut random = [0u8; ID_RANDOM];
    fill_random(&mut random)?;
    let mut id = hex::encode(random);
    id.push_str(&hex::encode(id_tag(secret, &random)));
    Ok(id)
}

pub fn check_id(secret: &[u8], id: &str) -> bool {
    if id.len() != 2 * (ID_RANDOM + ID_TAG) {
        return false;
    }
    let Ok(bytes) = hex::decode(id) else { return false };
    let (random, tag) = bytes.split_at(ID_RANDOM);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(b"tus-upload-id\0");
    mac.update(random);
    mac.verify_truncated_left(tag).is_ok()
}

fn id_tag(secret: &[u8], random: &[u8]) -> [u8; ID_TAG] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!("HMAC takes any key"));
    mac.update(b"tus-upload-id\0");
    mac.update(random);
    let full = mac.finalize().into_bytes();
    let mut tag = [0u8; ID_TAG];
    tag.copy_from_slice(&full[..ID_TAG]);
    tag
}

fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most buf.len() - filled bytes into buf[filled..].
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        } else {
            filled += n as usize;
        }
    }
    Ok(())
}

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent).
pub fn parse_metadata(header: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Error::BadRequest("Upload-Metadata: bad key".into()));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(Error::BadRequest(format!("Upload-Metadata: key {key:?} twice")));
        }
        let value = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| Error::BadRequest(format!("Upload-Metadata: value of {key:?} is not base64")))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// The content type an upload is signed and stored with: metadata `filetype`, else the
/// default. It is served back as a header, so only visible ASCII and spaces are allowed.
pub fn content_type(metadata: &[(String, Vec<u8>)]) -> Result<String> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == "filetype") else {
        return Ok(String::from_utf8_lossy(auth::DEFAULT_CONTENT_TYPE).into_owned());
    };
    if v.len() > MAX_CONTENT_TYPE || !v.iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
        return Err(Error::BadRequest(
            "Upload-Metadata: filetype is not a valid content type".into(),
        ));
    }
    Ok(String::from_utf8_lossy(v).into_owned())
}

/// `Upload-Checksum: sha256 <base64>`; any other algorithm is 400 (tus checksum extension).
pub fn parse_checksum(header: &str) -> Result<[u8; 32]> {
    let (algo, value) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| Error::BadRequest("Upload-Checksum: expected \"sha256 <base64>\"".into()))?;
    if !algo.eq_ignore_ascii_case("sha256") {
        return Err(Error::BadRequest(format!(
            "Upload-Checksum: algorithm {algo:?} not supported (sha256 is)"
        )));
    }
    let digest = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or_else(|| Error::BadRequest("Upload-Checksum: not a base64 SHA-256 digest".into()))?;
    Ok(digest)
}

fn parse_number(value: Option<&str>, name: &str) -> Result<u64> {
    let v = value
        .ok_or_else(|| Error::BadRequest(format!("{name} required")))?
        .trim();
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadRequest(format!("{name} is not a non-negative integer")));
    }
    v.parse().map_err(|_| Error::BadRequest(format!("{name} too large")))
}

/// The method a request stands for: browsers and proxies that only pass GET and POST let
/// tus clients send `X-HTTP-Method-Override`.
pub fn method(head: &Head) -> Method {
    let over = head.tus.as_ref().and_then(|t| t.method_override.as_deref());
    match (head.method, over.map(str::trim)) {
        (Method::Post, Some(m)) if m.eq_ignore_ascii_case("PATCH") => Method::Patch,
        (Method::Post, Some(m)) if m.eq_ignore_ascii_case("DELETE") => Method::Delete,
        (Method::Post, Some(m)) if m.eq_ignore_ascii_case("HEAD") => Method::Head,
        (m, _) => m,
    }
}

/// Whether a request speaks tus (or is a browser's preflight for one): its responses get the
/// tus CORS headers.
pub fn is_tus(head: &Head) -> bool {
    let Some(t) = head.tus.as_ref() else { return false };
    let wants = |v: &Option<String>, any: &[&str]| {
        v.as_deref()
            .is_some_and(|v| any.iter().any(|a| v.to_ascii_lowercase().contains(a)))
    };
    t.resumable.is_some()
        || wants(&t.preflight_method, &["post", "patch", "delete"])
        || wants(&t.preflight_headers, &["tus-", "upload-"])
}

/// Whether the request carries Tus-Resumable (whatever its version).
pub fn speaks_tus(head: &Head) -> bool {
    head.tus.as_ref().is_some_and(|t| t.resumable.is_some())
}

/// Every tus request but OPTIONS must say `Tus-Resumable: 1.0.0` (else 412 with Tus-Version).
fn tus_headers(head: &Head) -> Result<&TusHeaders> {
    match head.tus.as_deref() {
        Some(t) if t.resumable.as_deref().map(str::trim) == Some(VERSION) => Ok(t),
        _ => Err(Error::TusVersion),
    }
}

fn sessions(shared: &Shared) -> Result<&Sessions> {
    if !shared.config.resumable_uploads {
        return Err(Error::MethodNotAllowed);
    }
    shared
        .sessions
        .as_ref()
        .ok_or_else(|| Error::Unavailable("the session store could not be opened (see the start-up log)".into()))
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::PathBusy => Error::Conflict,
        e @ StoreError::Unavailable { .. } => Error::Unavailable(e.to_string()),
    }
}

fn expires_header(unix: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(unix))
}

/// Discovery: the OPTIONS answer, with the tus headers (and tus CORS for a tus preflight).
pub fn options(shared: &Shared, head: &Head, out: &mut Vec<u8>, close: bool) {
    let cors = if is_tus(head) { TUS_CORS } else { "" };
    let mut h = if cors.is_empty() {
        ResponseHead::new(out, 204)
    } else {
        ResponseHead::with_cors(out, 204, cors)
    };
    h = h.header("Allow", response::ALLOW);
    if shared.config.resumable_uploads {
        h = h
            .header("Tus-Resumable", VERSION)
            .header("Tus-Version", VERSION)
            .header("Tus-Extension", EXTENSIONS)
            .header("Tus-Max-Size", shared.config.upload_max_size.0)
            .header("Tus-Checksum-Algorithm", "sha256");
    }
    h.finish(Some(0), close);
}

/// `POST <prefix><path>?<signature>`: create an upload (and, with a body, write its start).
pub async fn create<S: Socket>(conn: &mut Conn<'_, S>, head: &Head) -> Result<Outcome> {
    let shared = conn.shared;
    let sessions = sessions(shared)?;
    let t = tus_headers(head)?;
    let (raw_path, query) = path::split_target(&head.target);
    let path = path::store_path(raw_path, &shared.prefix).map_err(|e| match e {
        PathError::NotUnderPrefix => Error::NotFound,
        e => Error::BadPath(e),
    })?;
    let sig =
        auth::signature_from_query(query).ok_or_else(|| Error::Forbidden("no v, v2 or token parameter".into()))?;
    if t.upload_length.is_none() && t.upload_defer_length.is_some() {
        return Err(Error::BadRequest(
            "Upload-Defer-Length is not supported: the signed size must be declared".into(),
        ));
    }
    let length = parse_number(t.upload_length.as_deref(), "Upload-Length")?;
    let metadata = t.upload_metadata.clone().unwrap_or_default();
    let content_type = content_type(&parse_metadata(&metadata)?)?;
    crate::upload::check_signature(
        shared.config.secret.as_bytes(),
        &sig,
        &path,
        length,
        content_type.as_bytes(),
    )?;
    let max = shared.config.upload_max_size.0;
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
    if shared.store.is_claimed(&path) || shared.store.exists(&path)? {
        return Err(Error::Conflict);
    }
    let id = new_id(shared.config.secret.as_bytes())?;
    shared.store.create_part(&id, length).await?;
    let session = Session {
        id: id.clone(),
        path: path.as_str().to_owned(),
        length,
        offset: 0,
        content_type,
        metadata,
        expires: session::unix_now() + shared.config.resumable_expiration,
    };
    if let Err(e) = sessions.create(session.clone()).await {
        shared.store.remove_part(&id);
        return Err(store_error(e));
    }
    tracing::info!(id = %short(&id), path = %Escaped(path.as_str()), length, "resumable upload created");
    let mut outcome = Outcome {
        status: 201,
        bytes: 0,
        published: None,
    };
    let mut offset = None;
    if with_body || length == 0 {
        let lock = Lock::take(sessions, &id).await?;
        match append(conn, head, &session, &lock, None).await {
            Ok((written, now)) => {
                outcome.bytes = written;
                offset = Some(now);
                outcome.published = (now == length).then_some(length);
                lock.release().await;
            }
            Err(e) => {
                // The client never saw the upload URL, so nobody can resume this one.
                shared.store.remove_part(&id);
                let _ = sessions.remove(&id).await;
                return Err(e);
            }
        }
    }
    let close = conn.closing(head);
    let mut h = ResponseHead::with_cors(&mut conn.wbuf, 201, TUS_CORS)
        .header("Tus-Resumable", VERSION)
        .header("Location", location(&shared.prefix, &id))
        .header("Upload-Expires", expires_header(session.expires));
    if let Some(o) = offset {
        h = h.header("Upload-Offset", o);
    }
    h.finish(Some(0), close);
    Ok(outcome)
}

/// HEAD, PATCH or DELETE (or GET, refused) on an upload URL.
pub async fn resource<S: Socket>(conn: &mut Conn<'_, S>, head: &Head, method: Method, id: &str) -> Result<Outcome> {
    let shared = conn.shared;
    let sessions = sessions(shared)?;
    if method == Method::Options {
        let close = conn.closing(head);
        options(shared, head, &mut conn.wbuf, close);
        return Ok(Outcome::status(204));
    }
    if !matches!(method, Method::Head | Method::Patch | Method::Delete) {
        return Err(Error::MethodNotAllowed);
    }
    let t = tus_headers(head)?;
    if !check_id(shared.config.secret.as_bytes(), id) {
        return Err(Error::NotFound);
    }
    match method {
        Method::Head => {
            let session = load(shared, sessions, id).await?;
            let close = conn.closing(head);
            let mut h = ResponseHead::with_cors(&mut conn.wbuf, 200, TUS_CORS)
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
            load(shared, sessions, id).await?;
            let lock = Lock::take(sessions, id).await?;
            let session = load(shared, sessions, id).await?;
            if claimed != session.offset {
                return Err(Error::OffsetMismatch {
                    expected: session.offset,
                    got: claimed,
                });
            }
            let (written, offset) = append(conn, head, &session, &lock, checksum).await?;
            lock.release().await;
            let close = conn.closing(head);
            let mut h = ResponseHead::with_cors(&mut conn.wbuf, 204, TUS_CORS)
                .header("Tus-Resumable", VERSION)
                .header("Upload-Offset", offset);
            if offset < session.length {
                let expires = session::unix_now() + shared.config.resumable_expiration;
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
                shared.store.remove_part(id);
            }
            sessions.remove(id).await.map_err(store_error)?;
            tracing::info!(id = %short(id), path = %Escaped(&session.path), offset = session.offset, "resumable upload terminated");
            let close = conn.closing(head);
            ResponseHead::with_cors(&mut conn.wbuf, 204, TUS_CORS)
                .header("Tus-Resumable", VERSION)
                .finish(None, close);
            Ok(Outcome::status(204))
        }
    }
}

/// The session behind an upload URL: 404 if unknown, 410 once expired. A complete session
/// whose file was not yet published (a crash between the last offset and the link) is
/// published now.
async fn load(shared: &Shared, sessions: &Sessions, id: &str) -> Result<Session> {
    let session = sessions.get(id).await.map_err(store_error)?.ok_or(Error::NotFound)?;
    if session.complete() {
        if shared.store.part_exists(id) {
            if let Ok(lock) = Lock::try_take(sessions, id).await {
                let path = StorePath::from_stored(&session.path).map_err(Error::BadPath)?;
                let upload = shared.store.open_part(id, &path)?;
                finish(shared, sessions, &session, upload).await?;
                drop(lock);
            }
        }
        return Ok(session);
    }
    if session.expired(session::unix_now()) {
        return Err(Error::Gone);
    }
    Ok(session)
}

/// Write the request body at the session's offset, make it durable, record the new offset,
/// and publish the file when it is complete. Returns (bytes of this body kept, new offset).
async fn append<S: Socket>(
    conn: &mut Conn<'_, S>,
    head: &Head,
    session: &Session,
    lock: &Lock<'_>,
    checksum: Option<[u8; 32]>,
) -> Result<(u64, u64)> {
    let shared = conn.shared;
    let sessions = lock.sessions;
    let path = StorePath::from_stored(&session.path).map_err(Error::BadPath)?;
    let upload = match shared.store.open_part(&session.id, &path) {
        Ok(u) => u,
        Err(Error::Gone) => {
            // The partial data is gone (removed by hand, or a crash before it was durable).
            let _ = sessions.remove(&session.id).await;
            return Err(Error::Gone);
        }
        Err(e) => return Err(e),
    };
    let left = session.length.saturating_sub(session.offset);
    let mut sink = Progress {
        shared,
        lock,
        session,
        hasher: checksum.map(|_| Sha256::new()),
        written: session.offset,
        acked: session.offset,
        renewed: std::time::Instant::now(),
    };
    if head.expect_continue {
        conn.send_continue().await?;
    }
    let body = match head.body {
        Body::None => Ok(()),
        Body::Length(n) if n > left => Err(Error::TooLarge {
            size: session.offset + n,
            max: session.length,
        }),
        Body::Length(n) => conn.body_at(&upload, session.offset, n, &mut sink).await,
        Body::Chunked => conn
            .chunked_at(&upload, session.offset, left, &mut sink)
            .await
            .map(|_| ()),
    };
    if let Err(e) = body {
        // Keep what arrived unless a checksum covers the whole body (then none of it can be
        // trusted). The client is probably gone; its next HEAD sees the saved offset.
        if sink.hasher.is_none() && sink.written > sink.acked {
            let end = sink.written;
            if let Err(save) = sink.commit(&upload, end).await {
                tracing::warn!(error = %save, "resumable upload: could not keep a broken-off body");
            }
        }
        return Err(e);
    }
    if let (Some(want), Some(hasher)) = (checksum, sink.hasher.take()) {
        if hasher.finalize().as_slice() != want {
            return Err(Error::ChecksumMismatch);
        }
    }
    let end = sink.written;
    sink.commit(&upload, end).await?;
    let written = end - session.offset;
    if end == session.length {
        finish(shared, sessions, session, upload).await?;
    }
    Ok((written, end))
}

/// Publish a complete upload at its path, like a PUT (no-replace: a path that appeared
/// meanwhile is 409, and that upload is over). The session stays, complete, until it expires,
/// so a client that asks again learns that its upload is done.
async fn finish(shared: &Shared, sessions: &Sessions, session: &Session, upload: Upload<'_>) -> Result<()> {
    let path = StorePath::from_stored(&session.path).map_err(Error::BadPath)?;
    match upload
        .publish(&path, session.length, session.content_type.as_bytes())
        .await
    {
        Ok(()) => {
            tracing::info!(id = %short(&session.id), path = %Escaped(&session.path), size = session.length, "resumable upload published");
            Ok(())
        }
        Err(Error::Conflict) => {
            shared.store.remove_part(&session.id);
            let _ = sessions.remove(&session.id).await;
            Err(Error::Conflict)
        }
        Err(e) => Err(e),
    }
}

/// The first characters of an id, enough to follow an upload through the logs without
/// writing its capability there.
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

/// The write lock of one upload, released (in the background) when dropped.
struct Lock<'a> {
    sessions: &'a Sessions,
    id: String,
    owner: String,
}

impl<'a> Lock<'a> {
    /// Take the lock, waiting up to LOCK_WAIT for another writer to finish: 423 after that.
    async fn take(sessions: &'a Sessions, id: &str) -> Result<Lock<'a>> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match Lock::try_take(sessions, id).await {
                Ok(lock) => return Ok(lock),
                Err(Error::Locked) if std::time::Instant::now() < deadline => {
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_take(sessions: &'a Sessions, id: &str) -> Result<Lock<'a>> {
        let owner = new_id(b"lock owner")?;
        let taken = sessions.lock(id, &owner, LOCK_LEASE).await.map_err(|e| {
            // A request that timed out may still be carried out (Redis runs what it has
            // queued): release what it may take, so the client's retry is not held off for
            // a whole lease.
            sessions.unlock_later(id, &owner);
            store_error(e)
        })?;
        if taken {
            Ok(Lock {
                sessions,
                id: id.to_owned(),
                owner,
            })
        } else {
            Err(Error::Locked)
        }
    }

    /// Release now and wait for it (the answer to the client follows).
    async fn release(self) {
        let _ = self.sessions.unlock(&self.id, &self.owner).await;
        std::mem::forget(self);
    }

    async fn renew(&self) -> Result<()> {
        if self
            .sessions
            .lock(&self.id, &self.owner, LOCK_LEASE)
            .await
            .map_err(store_error)?
        {
            Ok(())
        } else {
            Err(Error::Locked)
        }
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        self.sessions.unlock_later(&self.id, &self.owner);
    }
}

/// Follows a PATCH body into the partial file: hashes it for Upload-Checksum, and without a
/// checksum records durable progress every CHECKPOINT bytes.
struct Progress<'a> {
    shared: &'a Shared,
    lock: &'a Lock<'a>,
    session: &'a Session,
    hasher: Option<Sha256>,
    /// File position written up to.
    written: u64,
    /// Offset durable and recorded in the session store.
    acked: u64,
    renewed: std::time::Instant,
}

impl Progress<'_> {
    /// Make everything up to `end` durable, then record it as the offset.
    async fn commit(&mut self, upload: &Upload<'_>, end: u64) -> Result<()> {
        if end == self.acked {
            return Ok(());
        }
        upload.sync_data().await?;
        let expires = session::unix_now() + self.shared.config.resumable_expiration;
        let moved = self
            .lock
            .sessions
            .advance(&self.session.id, self.acked, end, expires)
            .await
            .map_err(store_error)?;
        if !moved {
            // Only if our lease ran out and another writer took over.
            return Err(Error::Locked);
        }
        self.acked = end;
        self.renewed = std::time::Instant::now();
        Ok(())
    }
}

impl BodySink for Progress<'_> {
    const KEEPS_PARTIAL: bool = true;

    fn data(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
    }

    async fn before_write(&mut self) -> Result<()> {
        if self.renewed.elapsed() >= LOCK_RENEW {
            self.lock.renew().await?;
            self.renewed = std::time::Instant::now();
        }
        Ok(())
    }

    async fn written(&mut self, upload: &Upload<'_>, end: u64) -> Result<()> {
        self.written = end;
        if self.hasher.is_none() && end - self.acked >= CHECKPOINT && end < self.session.length {
            self.commit(upload, end).await?;
        }
        Ok(())
    }
}

/// Remove expired sessions with their partial data, and partial files no session knows
/// (a crash between creating one and recording its session). Runs on the side thread.
pub async fn sweep(shared: &Shared, sessions: &Sessions) {
    let store = sessions.store();
    let now = session::unix_now();
    match store.expired(now).await {
        Ok(expired) => {
            for s in expired {
                // A writer still holds it: its next offset renews the expiry.
                let owner = "expiry sweeper";
                if !matches!(store.lock(&s.id, owner, Duration::from_secs(30)).await, Ok(true)) {
                    continue;
                }
                if !s.complete() {
                    shared.store.remove_part(&s.id);
                }
                match store.remove(&s.id).await {
                    Ok(()) => {
                        tracing::info!(id = %short(&s.id), path = %Escaped(&s.path), offset = s.offset, length = s.length, "resumable upload expired and removed")
                    }
                    Err(e) => tracing::warn!(error = %e, "could not remove an expired resumable upload"),
                }
                let _ = store.unlock(&s.id, owner).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "resumable uploads: cannot list expired sessions"),
    }
    let grace = Duration::from_secs(shared.config.resumable_expiration.max(3600));
    for (id, mtime) in shared.store.parts() {
        if mtime.elapsed().unwrap_or_default() < grace {
            continue;
        }
        if let Ok(None) = store.get(&id).await {
            shared.store.remove_part(&id);
            tracing::info!(id = %short(&id), "removed a partial file without a session");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_tagged() {
        let a = new_id(b"secret").unwrap();
        let b = new_id(b"secret").unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(check_id(b"secret", &a));
        assert!(!check_id(b"other secret", &a), "minted with another secret");
        let mut forged = a.clone().into_bytes();
        forged[3] = if forged[3] == b'0' { b'1' } else { b'0' };
        assert!(!check_id(b"secret", std::str::from_utf8(&forged).unwrap()));
        assert!(!check_id(b"secret", &a[..63]));
        assert!(!check_id(b"secret", &format!("{}zz", &a[..62])));
    }

    #[test]
    fn metadata() {
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, filetype aW1hZ2UvcG5n")
            .unwrap();
        assert_eq!(m[0], ("filename".into(), b"world_domination_plan.pdf".to_vec()));
        assert_eq!(m[1], ("is_confidential".into(), Vec::new()));
        assert_eq!(content_type(&m).unwrap(), "image/png");
        assert_eq!(content_type(&[]).unwrap(), "application/octet-stream");
        assert_eq!(parse_metadata("").unwrap(), vec![]);
        assert_eq!(parse_metadata("a !!!").unwrap_err().status(), 400);
        assert_eq!(parse_metadata("a YQ==,a YQ==").unwrap_err().status(), 400);
        // A header injection through the stored type is refused.
        let evil = vec![("filetype".to_owned(), b"text/plain\r\nX-Evil: 1".to_vec())];
        assert_eq!(content_type(&evil).unwrap_err().status(), 400);
    }

    #[test]
    fn checksums() {
        let d = parse_checksum("sha256 LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=").unwrap();
        assert_eq!(hex::encode(d), hex::encode(Sha256::digest(b"foo")));
        assert_eq!(
            parse_checksum("sha1 C+7Hteo/D9vJXQ3UfzxbwnXaijM=")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(parse_checksum("sha256 !!").unwrap_err().status(), 400);
        assert_eq!(parse_checksum("sha256").unwrap_err().status(), 400);
        assert_eq!(parse_checksum("sha256 Zm9v").unwrap_err().status(), 400, "not 32 bytes");
    }

    #[test]
    fn upload_urls() {
        assert_eq!(
            resource_id("/upload/", "/upload/.hmac-file-server/tus/abc"),
            Some("abc")
        );
        assert_eq!(
            resource_id("/upload/", "/upload/.hmac-file-server/tus/abc?x=1"),
            Some("abc")
        );
        assert_eq!(resource_id("/upload/", "/upload/a/b.txt"), None);
        assert_eq!(location("/upload/", "abc"), "/upload/.hmac-file-server/tus/abc");
        assert_eq!(parse_number(Some("0012"), "n").unwrap(), 12);
        assert_eq!(parse_number(Some("-1"), "n").unwrap_err().status(), 400);
        assert_eq!(parse_number(None, "n").unwrap_err().status(), 400);
    }
}
