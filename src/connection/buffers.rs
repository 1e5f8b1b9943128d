//! This worker's pool of head buffers. A connection holds one only while a request is under
//! way: an idle keep-alive connection waits for readability with nothing attached and gives
//! its read and write buffers back here, so thousands of idle clients cost their sockets and
//! a few hundred bytes of task each, not a buffer each (docs/architecture.md, "Memory").

use std::cell::{Cell, RefCell};

/// The size a buffer is taken at: enough for a typical request head and its response head.
pub const SIZE: usize = 4096;
/// Buffers kept for reuse per worker: about as many as requests one worker has under way at
/// once under load; beyond that they go back to the allocator.
const KEEP: usize = 128;
/// A buffer that grew past this (a long head, a large error page) is freed, not kept.
const KEEP_MAX_CAPACITY: usize = 4 * SIZE;

/// Connections of one worker that may wait with a buffer in the ring at once (their hot
/// moment after a request): enough for every busy client, few enough that thousands of
/// connections served at once and then left idle cost a bounded amount.
const HOT_MAX: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static HOT: Cell<usize> = const { Cell::new(0) };
}

/// Leave to wait with a buffer attached; given back when dropped.
pub struct HotSlot(());

/// A hot slot, if fewer than `HOT_MAX` connections of this worker hold one.
pub fn hot_slot() -> Option<HotSlot> {
    HOT.with(|h| {
        let n = h.get();
        (n < HOT_MAX).then(|| {
            h.set(n + 1);
            HotSlot(())
        })
    })
}

impl Drop for HotSlot {
    fn drop(&mut self) {
        let _ = HOT.try_with(|h| h.set(h.get().saturating_sub(1)));
    }
}

/// An empty buffer of at least `SIZE` bytes.
pub fn take() -> Vec<u8> {
    FREE.with(|f| f.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// Give `buf` back (its contents are dropped). An unallocated buffer is ignored.
pub fn give(mut buf: Vec<u8>) {
    let cap = buf.capacity();
    if !(SIZE..=KEEP_MAX_CAPACITY).contains(&cap) {
        return;
    }
    buf.clear();
    FREE.with(|f| {
        let mut free = f.borrow_mut();
        if free.len() < KEEP {
            free.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_empty_and_oversized_ones_are_freed() {
        let mut a = take();
        assert!(a.capacity() >= SIZE);
        a.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let ptr = a.as_ptr();
        give(a);
        let b = take();
        assert!(b.is_empty());
        assert_eq!(b.as_ptr(), ptr, "the buffer is reused");
        give(Vec::with_capacity(KEEP_MAX_CAPACITY * 2));
        give(Vec::new());
        let c = take();
        assert!(c.capacity() <= KEEP_MAX_CAPACITY);
        give(b);
        give(c);
    }

    #[test]
    fn hot_slots_are_bounded_and_come_back() {
        let held: Vec<HotSlot> = std::iter::from_fn(hot_slot).take(HOT_MAX + 1).collect();
        assert_eq!(held.len(), HOT_MAX);
        assert!(hot_slot().is_none());
        drop(held);
        assert!(hot_slot().is_some());
    }
}
