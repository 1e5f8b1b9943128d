//! Writing a request body into a resumable upload: at the session's offset, made durable
//! before the new offset is recorded (and only then acknowledged), published like a PUT once
//! the last byte is in.

use sha2::{Digest, Sha256};

use crate::app::App;
use crate::error::{Error, Result};
use crate::handlers::quota::recorded;
use crate::handlers::{BodySink, Exchange};
use crate::http::{Body, Head};
use crate::logging::Escaped;
use crate::path::StorePath;
use crate::session::{self, Session, Sessions};
use crate::storage::Upload;

use super::id::short;
use super::lock::Lock;
use super::store_error;

/// A long PATCH without checksum records its progress every this many bytes, so a crash or
/// a cut connection loses at most this much.
const CHECKPOINT: u64 = 16 << 20;

/// Write the request body at the session's offset, make it durable, record the new offset,
/// and publish the file when it is complete. Returns (bytes of this body kept, new offset).
pub async fn append<E: Exchange>(
    app: &App,
    ex: &mut E,
    head: &Head,
    session: &Session,
    lock: &Lock<'_>,
    checksum: Option<[u8; 32]>,
) -> Result<(u64, u64)> {
    let sessions = lock.sessions;
    let path = StorePath::from_stored(&session.path).map_err(Error::BadPath)?;
    let upload = match app.store.open_part(&session.id, &path, session.content_type.as_bytes()) {
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
        app,
        lock,
        session,
        hasher: checksum.map(|_| Sha256::new()),
        written: session.offset,
        acked: session.offset,
    };
    lock.keep_alive();
    if head.expect_continue {
        ex.send_continue().await?;
    }
    let body = match head.body {
        Body::None => Ok(()),
        Body::Length(n) if n > left => Err(Error::TooLarge {
            size: session.offset + n,
            max: session.length,
        }),
        Body::Length(n) => ex.body_at(&upload, session.offset, n, &mut sink).await,
        Body::Chunked => ex
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
        finish(app, sessions, session, upload).await?;
    }
    Ok((written, end))
}

/// Publish a complete upload at its path, like a PUT (no-replace: a path that appeared
/// meanwhile is 409, and that upload is over). The session stays, complete, until it expires,
/// so a client that asks again learns that its upload is done.
pub async fn finish(app: &App, sessions: &Sessions, session: &Session, upload: Upload<'_>) -> Result<()> {
    let path = StorePath::from_stored(&session.path).map_err(Error::BadPath)?;
    // What creation stored on the part (uploader, expiry) is what the index records.
    let meta = app.store.part_meta(&session.id).map(|(m, _)| m).unwrap_or_default();
    match upload.publish(&path, session.length).await {
        Ok(()) => {
            tracing::info!(id = %short(&session.id), path = %Escaped(&session.path), size = session.length, "resumable upload published");
            let reservation = app.retention.take_part(&session.id).await;
            recorded(app, &path, session.length, &meta, reservation).await;
            Ok(())
        }
        Err(Error::Conflict) => {
            app.discard_part(&session.id);
            let _ = sessions.remove(&session.id).await;
            Err(Error::Conflict)
        }
        Err(e) => Err(e),
    }
}

/// Follows a PATCH body into the partial file: hashes it for Upload-Checksum, and without a
/// checksum records durable progress every CHECKPOINT bytes.
struct Progress<'a> {
    app: &'a App,
    lock: &'a Lock<'a>,
    session: &'a Session,
    hasher: Option<Sha256>,
    /// File position written up to.
    written: u64,
    /// Offset durable and recorded in the session store.
    acked: u64,
}

impl Progress<'_> {
    /// Make everything up to `end` durable, then record it as the offset.
    async fn commit(&mut self, upload: &Upload<'_>, end: u64) -> Result<()> {
        if end == self.acked {
            return Ok(());
        }
        upload.sync_data().await?;
        let expires = session::unix_now() + self.app.config.resumable_expiration;
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
        tracing::debug!(id = %short(&self.session.id), offset = end, "resumable upload offset recorded");
        Ok(())
    }
}

impl BodySink for Progress<'_> {
    const KEEPS_PARTIAL: bool = true;

    fn data(&mut self, bytes: &[u8]) {
        self.lock.received(bytes.len());
        if let Some(h) = &mut self.hasher {
            h.update(bytes);
        }
    }

    async fn before_write(&mut self) -> Result<()> {
        self.lock.ensure().await
    }

    async fn written(&mut self, upload: &Upload<'_>, end: u64) -> Result<()> {
        self.written = end;
        if self.hasher.is_none() && end - self.acked >= CHECKPOINT && end < self.session.length {
            self.commit(upload, end).await?;
        }
        Ok(())
    }
}
