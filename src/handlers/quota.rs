//! Uploads and the store's accounting (docs/operations.md, "Retention, quotas and deletion"):
//! admitted against `StoreMaxSize` and `UserQuota` before their body (making room first with
//! `UserQuotaEvictOldest`), holding their size reserved while they run, and recorded in the
//! index once published.

use crate::app::App;
use crate::error::{Error, Result};
use crate::logging::Escaped;
use crate::path::StorePath;
use crate::retention::{Entry, Refusal, Reservation};
use crate::storage::FileMeta;

use super::BodySink;

/// Reserve `size` bytes for an upload by `uploader`, evicting the uploader's oldest files
/// first when that is how the quota is kept.
pub async fn admit(app: &App, uploader: Option<&str>, size: u64) -> Result<Reservation> {
    // Evicting can race with the uploader's other uploads taking the room: try again a few
    // times, then refuse.
    for _ in 0..3 {
        match app.retention.admit(uploader, size) {
            Ok(r) => return Ok(r),
            Err(Refusal::Evict { uploader, bytes }) => {
                let freed = app.retention.evict(&uploader, bytes).await?;
                tracing::info!(uploader = %Escaped(&uploader), freed, "UserQuotaEvictOldest: oldest files deleted to make room");
            }
            Err(r) => return Err(Error::quota(r)),
        }
    }
    app.retention.admit(uploader, size).map_err(Error::quota)
}

/// Record a file just published, turning its reservation into stored bytes. The file is
/// durable and visible whatever happens here: a failure is logged, not answered.
pub async fn recorded(app: &App, path: &StorePath, size: u64, meta: &FileMeta, reservation: Option<Reservation>) {
    let entry = Entry {
        path: path.as_str().to_owned(),
        size,
        uploader: meta.uploader.clone(),
        uploaded: crate::session::unix_now(),
        expires: meta.expires,
    };
    if let Err(e) = app.retention.record(entry, reservation).await {
        tracing::error!(path = %Escaped(path.as_str()), error = %e, "a stored file could not be recorded in the index: it will not expire or count until the index is rebuilt");
    }
}

/// Reserve the decoded bytes of a chunked body as they arrive, in steps, within the quotas;
/// `inner` watches the body too.
pub struct Reserving<'a, S> {
    pub app: &'a App,
    pub reservation: Reservation,
    pub inner: S,
}

/// Reservations grow by at least this much, so a body's many reads cost few lock round trips.
const STEP: u64 = 256 * 1024;

impl<S: BodySink> BodySink for Reserving<'_, S> {
    fn data(&mut self, bytes: &[u8]) {
        self.inner.data(bytes);
    }

    fn cover(&mut self, bytes: u64) -> Result<()> {
        let held = self.reservation.bytes();
        if bytes > held {
            let more = (bytes - held).max(STEP);
            if self.app.retention.grow(&mut self.reservation, more).is_err() {
                // The last step may not fit where the exact rest does.
                self.app
                    .retention
                    .grow(&mut self.reservation, bytes - held)
                    .map_err(Error::quota)?;
            }
        }
        self.inner.cover(bytes)
    }

    async fn before_write(&mut self) -> Result<()> {
        self.inner.before_write().await
    }

    async fn written(&mut self, upload: &crate::storage::Upload<'_>, end: u64) -> Result<()> {
        self.inner.written(upload, end).await
    }
}
