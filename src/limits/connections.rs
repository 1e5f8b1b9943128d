//! The global cap on open connections (`MaxConnections`): one atomic add per connection,
//! never per request.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The global cap on open connections (`MaxConnections`).
pub struct ConnectionCap {
    max: usize,
    open: AtomicUsize,
}

impl ConnectionCap {
    pub fn new(max: usize) -> ConnectionCap {
        ConnectionCap {
            max,
            open: AtomicUsize::new(0),
        }
    }

    /// Count a new connection; None when the cap is reached (the caller answers 503).
    pub fn open(&self) -> Option<ConnectionGuard<'_>> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ConnectionGuard(self))
    }
}

pub struct ConnectionGuard<'a>(&'a ConnectionCap);

impl Drop for ConnectionGuard<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cap() {
        let cap = ConnectionCap::new(2);
        let a = cap.open().unwrap();
        let _b = cap.open().unwrap();
        assert!(cap.open().is_none());
        drop(a);
        assert!(cap.open().is_some());
    }
}
