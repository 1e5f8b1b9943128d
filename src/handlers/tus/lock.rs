//! The write lock of one upload: one writer at a time across workers and nodes, as a lease in
//! the session store. The lease is short (`LOCK_LEASE`), so a node that died mid-PATCH holds
//! its uploads only that long (and a node that restarts takes over its own at once: the store
//! lets an owner supersede an earlier generation of its own node). While bytes flow into a
//! request, a keep-alive renews its lease every `RENEW_EVERY`; a request whose client went
//! quiet lets it lapse, so the client's retry on a new connection gets the upload within a
//! lease. A write goes ahead only if a renewal was confirmed within `CONFIRMED_WITHIN` (else it
//! renews first), so it always falls inside the lease, and a writer that lost its lock stops
//! without writing over bytes a successor may already have had acknowledged.
//! docs/protocol.md, "Resumable uploads", has the timings.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::store_error;
use crate::error::{Error, Result};
use crate::session::{Owner, Sessions};

pub const LOCK_LEASE: Duration = Duration::from_secs(5);
const RENEW_EVERY: Duration = Duration::from_secs(1);
/// Two seconds of the lease are always left when a write starts.
const CONFIRMED_WITHIN: Duration = Duration::from_secs(3);
/// A request for a busy upload waits this long for the other writer before 423: longer than a
/// lease, so a writer that died without releasing is waited out rather than refused.
const LOCK_WAIT: Duration = Duration::from_secs(6);

/// The write lock of one upload, released (in the background) when dropped.
pub struct Lock<'a> {
    pub sessions: &'a Sessions,
    id: String,
    owner: Owner,
    /// When the newest renewal the store confirmed was asked for; None once it was refused.
    confirmed: Rc<Cell<Option<Instant>>>,
    /// Tells the keep-alive to stop.
    done: Rc<Cell<bool>>,
    /// Body bytes received so far (the keep-alive renews only while this grows).
    received: Rc<Cell<u64>>,
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

    /// `take`, once no request of this process is writing or about to write to the upload,
    /// all within LOCK_WAIT (for a HEAD: the writer of a PATCH that broke off a moment ago may
    /// not have reached the lock yet).
    pub async fn after_writers(sessions: &'a Sessions, id: &str) -> Result<Lock<'a>> {
        let deadline = Instant::now() + LOCK_WAIT;
        while sessions.being_written(id) {
            if Instant::now() >= deadline {
                return Err(Error::Locked);
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        Lock::take(sessions, id).await
    }

    pub async fn try_take(sessions: &'a Sessions, id: &str) -> Result<Lock<'a>> {
        let owner = Owner::of(sessions.node())?;
        let asked = Instant::now();
        let taken = sessions.lock(id, &owner, LOCK_LEASE).await.map_err(|e| {
            // A request that timed out may still be carried out (Redis runs what it has
            // queued): release what it may take, so the client's retry is not held off for
            // a whole lease.
            sessions.unlock_later(id, &owner);
            store_error(e)
        })?;
        if !taken {
            return Err(Error::Locked);
        }
        Ok(Lock {
            sessions,
            id: id.to_owned(),
            owner,
            confirmed: Rc::new(Cell::new(Some(asked))),
            done: Rc::new(Cell::new(false)),
            received: Rc::new(Cell::new(0)),
        })
    }

    /// Renew the lease in the background, while body bytes keep arriving (`received`), until
    /// the lock is released.
    pub fn keep_alive(&self) {
        let (sessions, id, owner) = (self.sessions.clone(), self.id.clone(), self.owner.clone());
        let (confirmed, done, received) = (self.confirmed.clone(), self.done.clone(), self.received.clone());
        monoio::spawn(async move {
            let mut seen = received.get();
            while !done.get() {
                monoio::time::sleep(RENEW_EVERY).await;
                if done.get() || confirmed.get().is_none() {
                    break;
                }
                if received.get() == seen {
                    continue;
                }
                seen = received.get();
                let asked = Instant::now();
                match sessions.renew(&id, &owner, LOCK_LEASE).await {
                    Ok(true) => confirmed.set(Some(asked)),
                    Ok(false) => confirmed.set(None),
                    // A store that does not answer: the next write renews itself, or stops.
                    Err(_) => {}
                }
            }
        });
    }

    /// Count body bytes received under this lock.
    pub fn received(&self, n: usize) {
        self.received.set(self.received.get() + n as u64);
    }

    /// Ok when the lease surely holds for a write about to start: confirmed recently, or
    /// renewed now. 423 once the lock was taken (or released) by someone else.
    pub async fn ensure(&self) -> Result<()> {
        match self.confirmed.get() {
            Some(at) if at.elapsed() < CONFIRMED_WITHIN => return Ok(()),
            None => return Err(Error::Locked),
            Some(_) => {}
        }
        let asked = Instant::now();
        if self
            .sessions
            .renew(&self.id, &self.owner, LOCK_LEASE)
            .await
            .map_err(store_error)?
        {
            self.confirmed.set(Some(asked));
            Ok(())
        } else {
            self.confirmed.set(None);
            Err(Error::Locked)
        }
    }

    /// Release now and wait for it (the answer to the client follows).
    pub async fn release(self) {
        self.done.set(true);
        let _ = self.sessions.unlock(&self.id, &self.owner).await;
        std::mem::forget(self);
    }
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        self.done.set(true);
        self.sessions.unlock_later(&self.id, &self.owner);
    }
}
