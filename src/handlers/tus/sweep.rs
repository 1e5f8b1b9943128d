//! Expiry of resumable uploads, run by the side thread: sessions past `ResumableExpiration`
//! go with their partial data, and so do partial files no session knows.

use std::time::Duration;

use crate::app::App;
use crate::logging::Escaped;
use crate::session::{self, Owner, Sessions};

use super::id::short;
use super::lock::LOCK_LEASE;

/// Remove expired sessions with their partial data, and partial files no session knows
/// (a crash between creating one and recording its session). Runs on the side thread.
pub async fn sweep(app: &App, sessions: &Sessions) {
    let store = sessions.store();
    let now = session::unix_now();
    match store.expired(now).await {
        Ok(expired) => {
            for s in expired {
                // A writer still holds it: its next offset renews the expiry.
                let Ok(owner) = Owner::of(sessions.node()) else {
                    continue;
                };
                if !matches!(store.lock(&s.id, &owner, LOCK_LEASE).await, Ok(true)) {
                    continue;
                }
                if !s.complete() {
                    app.discard_part(&s.id);
                }
                match store.remove(&s.id).await {
                    Ok(()) => {
                        tracing::info!(id = %short(&s.id), path = %Escaped(&s.path), offset = s.offset, length = s.length, "resumable upload expired and removed")
                    }
                    Err(e) => tracing::warn!(error = %e, "could not remove an expired resumable upload"),
                }
                let _ = store.unlock(&s.id, &owner).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "resumable uploads: cannot list expired sessions"),
    }
    let grace = Duration::from_secs(app.config.resumable_expiration.max(3600));
    for (id, mtime) in app.store.parts() {
        if mtime.elapsed().unwrap_or_default() < grace {
            continue;
        }
        if let Ok(None) = store.get(&id).await {
            app.discard_part(&id);
            tracing::info!(id = %short(&id), "removed a partial file without a session");
        }
    }
}
