//! Locking that survives a panic elsewhere. Every mutex here guards plain data that is whole
//! between statements (counters, sets, queues of whole lines), so a lock poisoned by a thread
//! that panicked while holding it is still safe to use: serving goes on.

use std::sync::{Condvar, Mutex, MutexGuard};

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `Condvar::wait`, likewise.
pub fn wait<'a, T>(c: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    c.wait(guard).unwrap_or_else(|p| p.into_inner())
}
