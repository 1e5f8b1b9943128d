//! Write errors the kernel reported to any of the store's flushes. The kernel tells an error
//! once, to whichever flush asks first, and cannot say whose bytes it lost: `syncfs` reports
//! each writeback error once per open file (it is the filesystem's error, not a file's), and
//! a directory fsync reports a failed block to the caller that ran it, not to the ones whose
//! entries the block also held. A round that covers an upload can thus succeed after an earlier
//! round, which did not cover it, wrote its pages and failed (docs/protocol.md, "How an upload
//! becomes durable"). So an upload watches this count from its first byte, and any failure
//! reported while it was in flight refuses it: a few innocent uploads get 500 and are retried,
//! none is acknowledged without its bytes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Failures {
    count: AtomicU64,
}

/// The count when an upload began.
#[derive(Clone, Copy)]
pub struct Watch(u64);

impl Failures {
    pub fn watch(&self) -> Watch {
        Watch(self.count.load(Ordering::Acquire))
    }

    /// A flush of the store's filesystem failed.
    pub fn record(&self) {
        self.count.fetch_add(1, Ordering::Release);
    }

    /// EIO if any flush failed since `since`.
    pub fn check(&self, since: Watch) -> io::Result<()> {
        let failed = self.count.load(Ordering::Acquire) - since.0;
        if failed == 0 {
            return Ok(());
        }
        tracing::warn!(
            failed,
            "upload refused: the kernel reported a write error while it was in flight, and does not say whose"
        );
        Err(io::Error::from_raw_os_error(libc::EIO))
    }

    /// Record `res` if it failed, and pass it on.
    pub fn note<T>(&self, res: io::Result<T>) -> io::Result<T> {
        if res.is_err() {
            self.record();
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_refuses_the_uploads_watching_before_it_and_no_later_one() {
        let f = Failures::default();
        let before = f.watch();
        assert!(f.check(before).is_ok());
        assert!(f
            .note(Err::<(), _>(io::Error::from_raw_os_error(libc::ENOSPC)))
            .is_err());
        let after = f.watch();
        assert_eq!(f.check(before).unwrap_err().raw_os_error(), Some(libc::EIO));
        assert!(f.check(after).is_ok());
        assert!(f.note(Ok(())).is_ok());
        assert!(f.check(after).is_ok());
    }
}
