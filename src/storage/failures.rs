//! Write errors the kernel reported to any of the store's flushes. The kernel tells an error
//! once, to whichever flush asks first, and cannot say whose bytes it lost: `syncfs` reports
//! each writeback error once per open file (it is the filesystem's error, not a file's), and
//! a directory fsync reports a failed block to the caller that ran it, not to the ones whose
//! entries the block also held. A round that covers an upload can thus succeed after an earlier
//! round, which did not cover it, wrote its pages and failed (docs/protocol.md, "How an upload
//! becomes durable"). So an upload watches this count from its first byte, and any failure
//! reported while it was in flight refuses it: a few innocent uploads get 500 and are retried,
//! none is acknowledged without its bytes.
//!
//! ext4 also has failures no flush reports: once a metadata write has failed, the next change
//! that needs metadata fails too, and where that is the conversion of written preallocated
//! blocks at the end of a writeback, ext4 only counts an error (its errors_count in sysfs) and
//! the flush succeeds with the blocks still reading as zeros. Every successful flush therefore
//! also looks at that count.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Failures {
    count: AtomicU64,
    /// ext4's error count for StoreDir's filesystem (/sys/fs/ext4/<device>/errors_count).
    fs_errors: Option<File>,
    /// Its value when last looked at.
    fs_errors_seen: AtomicU64,
}

/// The count when an upload began.
#[derive(Clone, Copy)]
pub struct Watch(u64);

impl Failures {
    /// For the filesystem of device `dev` (`st_dev` of StoreDir).
    pub fn new(dev: libc::dev_t) -> Failures {
        let fs_errors = super::fsops::block_device_name(dev)
            .and_then(|name| File::open(format!("/sys/fs/ext4/{name}/errors_count")).ok());
        let f = Failures {
            count: AtomicU64::new(0),
            fs_errors,
            fs_errors_seen: AtomicU64::new(0),
        };
        f.fs_errors_seen.store(f.fs_errors().unwrap_or(0), Ordering::Relaxed);
        f
    }

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

    /// The result of a flush: a failure is recorded, and so is a success during which ext4
    /// counted an error. Passed on as it came.
    pub fn note<T>(&self, res: io::Result<T>) -> io::Result<T> {
        if res.is_err() {
            self.record();
        } else if let Some(now) = self.fs_errors() {
            if self.fs_errors_seen.fetch_max(now, Ordering::AcqRel) < now {
                tracing::error!(
                    errors = now,
                    "ext4 counted an error on StoreDir's filesystem (see the kernel log)"
                );
                self.record();
            }
        }
        res
    }

    fn fs_errors(&self) -> Option<u64> {
        let mut buf = [0u8; 24];
        let n = self.fs_errors.as_ref()?.read_at(&mut buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_refuses_the_uploads_watching_before_it_and_no_later_one() {
        let f = Failures::new(0);
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
