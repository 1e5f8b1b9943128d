//! The write lock of one upload: one writer at a time across workers and nodes, as a lease in
//! the session store. A writer renews before it writes once `LOCK_RENEW` has passed, and stops
//! without writing if its lease was lost, so a stalled writer never writes over bytes a
//! successor has already had acknowledged.

use std::time::{Duration, Instant};

use super::id::new_id;
use super::store_error;
use crate::error::{Error, Result};
use crate::session::Sessions;

/// A writer's lock lasts this long unless renewed: a node killed mid-PATCH blocks its upload
/// for at most this long.
pub const LOCK_LEASE: Duration = Duration::from_secs(30);
pub const LOCK_RENEW: Duration = Duration::from_secs(10);
/// A PATCH for a busy upload waits this long for the other writer before 423.
const LOCK_WAIT: Duration = Duration::from_secs(3);

/// The write lock of one upload, released (in the background) when dropped.
pub struct Lock<'a> {
    pub sessions: &'a Sessions,
    id: String,
    owner: String,
}

impl<'a> Lock<'a> {
    /// Take the lock, waiting up to LOCK_WAIT for another writer to finish: 423 after that.
    pub async fn take(sessions: &'a Sessions, id: &str) -> Result<Lock<'a>> {
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            match Lock::try_take(sessions, id).await {
                Ok(lock) => return Ok(lock),
                Err(Error::Locked) if Instant::now() < deadline => {
                    monoio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub async fn try_take(sessions: &'a Sessions, id: &str) -> Result<Lock<'a>> {
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
    pub async fn release(self) {
        let _ = self.sessions.unlock(&self.id, &self.owner).await;
        std::mem::forget(self);
    }

    pub async fn renew(&self) -> Result<()> {
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
