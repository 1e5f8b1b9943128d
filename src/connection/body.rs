//! Upload bodies from the socket into a file: `Content-Length` and chunked framing, under
//! `BodyTimeout` (no byte for that long) and `MinBodyRate` (once the body has run
//! `BodyTimeout`, its average rate must stay at or above it), paced to `MaxBytesPerSecond`.

use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;

use super::{Conn, Socket, INITIAL_READ_BUF};
use crate::error::{Error, Result};
use crate::handlers::BodySink;
use crate::http::chunked;
use crate::limits::{body_deadline, Pace};
use crate::storage::Upload;

/// How long one body may still take: see `limits::body_deadline`.
struct BodyClock {
    start: Instant,
    last: Instant,
    received: u64,
    idle: Duration,
    min_rate: u64,
}

impl BodyClock {
    fn new(config: &crate::config::Config) -> BodyClock {
        let now = Instant::now();
        BodyClock {
            start: now,
            last: now,
            received: 0,
            idle: Duration::from_secs(config.body_timeout),
            min_rate: config.min_body_rate.0,
        }
    }

    fn got(&mut self, n: usize) {
        self.received += n as u64;
        self.last = Instant::now();
    }

    fn deadline(&self) -> (Instant, &'static str) {
        body_deadline(self.start, self.last, self.received, self.idle, self.min_rate)
    }
}

impl<S: Socket> Conn<S> {
    /// Stream a `Content-Length` body of `len` bytes into `upload` from file position `start`,
    /// a chunk at a time: socket reads land directly in the chunk buffer, each full buffer is
    /// one write through the ring. `sink` sees the bytes as they arrive and each write as it
    /// lands. When reading fails part-way, what was received is written (and shown to the
    /// sink) before the error returns, so a resumable upload can keep it.
    pub(super) async fn body_at<K: BodySink>(
        &mut self,
        upload: &Upload<'_>,
        start: u64,
        len: u64,
        sink: &mut K,
    ) -> Result<()> {
        let cap = (self.app.config.chunk_size.0.min(len)) as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(cap);
        let mut pos = start;
        let mut left = len;
        let mut pace = Pace::new(self.app.config.max_bytes_per_second.0);
        let mut clock = BodyClock::new(&self.app.config);
        // Body bytes that arrived together with the head.
        while left > 0 && !self.rbuf.is_empty() {
            let take = self.rbuf.len().min(left as usize).min(cap - buf.len());
            buf.extend_from_slice(&self.rbuf[..take]);
            sink.data(&self.rbuf[..take]);
            self.rbuf.drain(..take);
            left -= take as u64;
            if buf.len() == cap || left == 0 {
                buf = flush(upload, buf, &mut pos, sink).await?;
            }
        }
        while left > 0 {
            let have = buf.len();
            let mut want = (cap - have).min(usize::try_from(left).unwrap_or(usize::MAX));
            if let Some(p) = &pace {
                want = p.read_size(want);
            }
            let slice = buf.slice_mut(have..have + want);
            let (deadline, why) = clock.deadline();
            let (res, slice) = match monoio::time::timeout_at(deadline.into(), self.stream.read(slice)).await {
                Ok(r) => r,
                // The cancelled read took the buffer with it: what it held is not kept.
                Err(_) => return Err(Error::Timeout(why)),
            };
            buf = slice.into_inner();
            let n = match res {
                Ok(0) => return Err(keep_partial(upload, buf, pos, sink, Error::Truncated).await),
                Ok(n) => n,
                Err(e) => return Err(keep_partial(upload, buf, pos, sink, Error::Io(e)).await),
            };
            clock.got(n);
            sink.data(&buf[have..have + n]);
            left -= n as u64;
            if let Some(p) = &mut pace {
                p.received(n).await;
            }
            if buf.len() == cap || left == 0 {
                buf = flush(upload, buf, &mut pos, sink).await?;
            }
        }
        self.body_read = true;
        Ok(())
    }

    /// Stream a chunked body into `upload` from file position `start`, with a sink as in
    /// `body_at`; returns its decoded size. Above `max` bytes: 413.
    pub(super) async fn chunked_at<K: BodySink>(
        &mut self,
        upload: &Upload<'_>,
        start: u64,
        max: u64,
        sink: &mut K,
    ) -> Result<u64> {
        let cap = self.app.config.chunk_size.0 as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(cap.min(64 * 1024));
        let mut pos = start;
        let mut total = 0u64;
        let mut decoder = chunked::Decoder::default();
        let mut pace = Pace::new(self.app.config.max_bytes_per_second.0);
        let mut clock = BodyClock::new(&self.app.config);
        loop {
            if !self.rbuf.is_empty() {
                let fed = decoder.feed(&self.rbuf, &mut |data| {
                    total += data.len() as u64;
                    if total > max {
                        return Err(Error::TooLarge { size: total, max });
                    }
                    buf.extend_from_slice(data);
                    sink.data(data);
                    Ok(())
                });
                let used = match fed {
                    Ok(used) => used,
                    Err(e) => return Err(keep_partial(upload, buf, pos, sink, e).await),
                };
                self.rbuf.drain(..used);
                if buf.len() >= cap || (decoder.is_done() && !buf.is_empty()) {
                    buf = flush(upload, buf, &mut pos, sink).await?;
                }
                if decoder.is_done() {
                    self.body_read = true;
                    return Ok(total);
                }
            }
            let mut room = self.rbuf.capacity().max(INITIAL_READ_BUF * 4) - self.rbuf.len();
            if let Some(p) = &pace {
                room = p.read_size(room);
            }
            // Before the bytes are read: a body no signature vouches for yet may be refused here.
            // (Never beyond `max`: past it the body is 413 anyway.)
            if let Err(e) = sink.cover((total + room as u64).min(max)) {
                return Err(keep_partial(upload, buf, pos, sink, e).await);
            }
            let (deadline, why) = clock.deadline();
            let n = match self.fill(room, deadline, why).await {
                Ok(0) => return Err(keep_partial(upload, buf, pos, sink, Error::Truncated).await),
                Ok(n) => n,
                Err(e) => return Err(keep_partial(upload, buf, pos, sink, e).await),
            };
            clock.got(n);
            if let Some(p) = &mut pace {
                p.received(n).await;
            }
        }
    }
}

async fn flush<K: BodySink>(upload: &Upload<'_>, buf: Vec<u8>, pos: &mut u64, sink: &mut K) -> Result<Vec<u8>> {
    let n = buf.len() as u64;
    sink.before_write().await?;
    let (res, mut buf) = upload.write_at(buf, *pos).await;
    res?;
    *pos += n;
    sink.written(upload, *pos).await?;
    buf.clear();
    Ok(buf)
}

/// The body broke off with `err`: write what is buffered, so the sink sees every byte that
/// arrived, then hand `err` back.
async fn keep_partial<K: BodySink>(upload: &Upload<'_>, buf: Vec<u8>, mut pos: u64, sink: &mut K, err: Error) -> Error {
    if K::KEEPS_PARTIAL && !buf.is_empty() {
        let _ = flush(upload, buf, &mut pos, sink).await;
    }
    err
}
