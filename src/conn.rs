//! One client connection: its buffers, reading request heads and bodies under timeouts,
//! and writing responses. Handlers in `upload` and `download` work through it.

use std::time::{Duration, Instant};

use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};

use crate::error::{Error, Result};
use crate::http::{self, chunked, response, Head};
use crate::server::Shared;
use crate::storage::Upload;
use crate::throttle::Pace;

/// Initial read buffer: enough for a typical request head, small enough that thousands of
/// idle keep-alive connections stay cheap. It grows up to `MaxHeaderBytes` only when needed.
const INITIAL_READ_BUF: usize = 4096;
/// Responses to pipelined requests are held back until this much is queued.
const MAX_QUEUED_OUTPUT: usize = 64 * 1024;
/// After an error we stop reading requests but drain what the client still sends for a
/// while, so closing does not reset the connection before it has read our answer: a proxy
/// streaming a refused upload (nginx with proxy_request_buffering off) would otherwise turn
/// our 409 into its 502. Bounded like nginx's lingering close: in total time, in idle time
/// between reads, and in bytes. It holds a connection, never a worker.
pub const LINGER_TIME: Duration = Duration::from_secs(30);
const LINGER_IDLE: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 64 << 20;

pub struct Conn<'a, S> {
    pub shared: &'a Shared,
    stream: S,
    /// Bytes received but not yet consumed: the rest of a head, a body, pipelined requests.
    rbuf: Vec<u8>,
    /// Response bytes not yet written.
    pub wbuf: Vec<u8>,
}

/// What a handled request amounted to, for the access log.
pub struct Outcome {
    pub status: u16,
    /// Body bytes received (uploads) or sent (downloads).
    pub bytes: u64,
    /// The size of a file this request published (a PUT, or a resumable upload's last piece).
    pub published: Option<u64>,
}

impl Outcome {
    pub fn status(status: u16) -> Outcome {
        Outcome {
            status,
            bytes: 0,
            published: None,
        }
    }
}

impl<'a, S: AsyncReadRent + AsyncWriteRent> Conn<'a, S> {
    pub fn new(shared: &'a Shared, stream: S) -> Self {
        Conn {
            shared,
            stream,
            rbuf: Vec::with_capacity(INITIAL_READ_BUF),
            wbuf: Vec::new(),
        }
    }

    /// Whether this response is the connection's last: the client asked, or we are draining.
    pub fn closing(&self, head: &Head) -> bool {
        head.close || self.shared.shutdown.is_requested()
    }

    /// Append to `rbuf` from the socket, at most `max` bytes. Ok(0) is end of stream.
    async fn fill(&mut self, max: usize, deadline: Instant, what: &'static str) -> Result<usize> {
        let len = self.rbuf.len();
        if self.rbuf.capacity() == len {
            self.rbuf.reserve(len.max(INITIAL_READ_BUF));
        }
        let end = (len + max).min(self.rbuf.capacity());
        let buf = std::mem::take(&mut self.rbuf).slice_mut(len..end);
        match monoio::time::timeout_at(deadline.into(), self.stream.read(buf)).await {
            Ok((res, buf)) => {
                self.rbuf = buf.into_inner();
                Ok(res?)
            }
            Err(_) => Err(Error::Timeout(what)),
        }
    }

    /// Read the next request head. Ok(None): the client closed or idled out between requests.
    pub async fn read_head(&mut self) -> Result<Option<Head>> {
        let cfg = &self.shared.config;
        let limits = self.shared.limits;
        let idle_deadline = Instant::now() + Duration::from_secs(cfg.idle_timeout);
        let mut head_deadline = None;
        loop {
            if !self.rbuf.is_empty() {
                head_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(cfg.header_timeout));
                if let Some((head, n)) = http::parse_head(&self.rbuf, limits)? {
                    self.rbuf.drain(..n);
                    return Ok(Some(head));
                }
            }
            let room = limits.max_head.saturating_sub(self.rbuf.len()).max(1);
            let deadline = head_deadline.unwrap_or(idle_deadline);
            match self.fill(room, deadline, "request head").await {
                Ok(0) if self.rbuf.is_empty() => return Ok(None),
                Ok(0) => return Err(Error::BadRequest("connection closed inside the request head".into())),
                Ok(_) => {}
                Err(Error::Timeout(_)) if head_deadline.is_none() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn body_deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.shared.config.body_timeout)
    }

    /// Stream a `Content-Length` body of `len` bytes into `upload`, a chunk at a time: socket
    /// reads land directly in the chunk buffer, each full buffer is one write through the ring.
    pub async fn body_to_file(&mut self, upload: &Upload<'_>, len: u64) -> Result<()> {
        self.body_at(upload, 0, len, &mut Plain).await
    }

    /// `body_to_file` from file position `start`, showing the bytes to `sink` as they arrive
    /// and each write as it lands. When reading fails part-way, what was received is written
    /// (and shown to the sink) before the error returns, so a resumable upload can keep it.
    pub async fn body_at<K: BodySink>(
        &mut self,
        upload: &Upload<'_>,
        start: u64,
        len: u64,
        sink: &mut K,
    ) -> Result<()> {
        let cap = (self.shared.config.chunk_size.0.min(len)) as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(cap);
        let mut pos = start;
        let mut left = len;
        let mut pace = Pace::new(self.shared.config.max_bytes_per_second.0);
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
            let (res, slice) =
                match monoio::time::timeout_at(self.body_deadline().into(), self.stream.read(slice)).await {
                    Ok(r) => r,
                    // The cancelled read took the buffer with it: what it held is not kept.
                    Err(_) => return Err(Error::Timeout("request body")),
                };
            buf = slice.into_inner();
            let n = match res {
                Ok(0) => return Err(keep_partial(upload, buf, pos, sink, Error::Truncated).await),
                Ok(n) => n,
                Err(e) => return Err(keep_partial(upload, buf, pos, sink, Error::Io(e)).await),
            };
            sink.data(&buf[have..have + n]);
            left -= n as u64;
            if let Some(p) = &mut pace {
                p.received(n).await;
            }
            if buf.len() == cap || left == 0 {
                buf = flush(upload, buf, &mut pos, sink).await?;
            }
        }
        Ok(())
    }

    /// Stream a chunked body into `upload`; returns its decoded size. Above `max` bytes: 413.
    pub async fn chunked_to_file(&mut self, upload: &Upload<'_>, max: u64) -> Result<u64> {
        self.chunked_at(upload, 0, max, &mut Plain).await
    }

    /// `chunked_to_file` from file position `start`, with a sink as in `body_at`.
    pub async fn chunked_at<K: BodySink>(
        &mut self,
        upload: &Upload<'_>,
        start: u64,
        max: u64,
        sink: &mut K,
    ) -> Result<u64> {
        let cap = self.shared.config.chunk_size.0 as usize;
        let mut buf: Vec<u8> = Vec::with_capacity(cap.min(64 * 1024));
        let mut pos = start;
        let mut total = 0u64;
        let mut decoder = chunked::Decoder::default();
        let mut pace = Pace::new(self.shared.config.max_bytes_per_second.0);
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
                    return Ok(total);
                }
            }
            let mut room = self.rbuf.capacity().max(INITIAL_READ_BUF * 4) - self.rbuf.len();
            if let Some(p) = &pace {
                room = p.read_size(room);
            }
            let deadline = self.body_deadline();
            let n = match self.fill(room, deadline, "request body").await {
                Ok(0) => return Err(keep_partial(upload, buf, pos, sink, Error::Truncated).await),
                Ok(n) => n,
                Err(e) => return Err(keep_partial(upload, buf, pos, sink, e).await),
            };
            if let Some(p) = &mut pace {
                p.received(n).await;
            }
        }
    }

    pub async fn send_continue(&mut self) -> Result<()> {
        self.wbuf.extend_from_slice(response::CONTINUE);
        self.flush().await
    }

    /// Write everything queued in `wbuf`.
    pub async fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.wbuf);
        let (res, mut buf) = self.stream.write_all(buf).await;
        buf.clear();
        self.wbuf = buf;
        res?;
        Ok(())
    }

    /// Flush unless more pipelined requests are already waiting and little output is queued.
    pub async fn flush_if_idle(&mut self) -> Result<()> {
        if self.rbuf.is_empty() || self.wbuf.len() >= MAX_QUEUED_OUTPUT {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Write a buffer that is not `wbuf` (file data), returning it for reuse.
    pub async fn write_all<B: IoBuf + 'static>(&mut self, buf: B) -> (Result<()>, B) {
        let (res, buf) = self.stream.write_all(buf).await;
        (res.map(|_| ()).map_err(Error::Io), buf)
    }

    /// Close after an error: flush the answer, stop sending, and discard what the client still
    /// sends for up to `time` (normally `LINGER_TIME`), so the kernel does not reset the
    /// connection under our response.
    pub async fn linger_close(mut self, time: Duration) {
        if self.flush().await.is_err() {
            return;
        }
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + time;
        let mut discarded = 0;
        let mut buf = vec![0u8; 16 * 1024];
        while discarded < LINGER_BYTES {
            let until = deadline.min(Instant::now() + LINGER_IDLE);
            match monoio::time::timeout_at(until.into(), self.stream.read(buf)).await {
                Ok((Ok(n), b)) if n > 0 => {
                    discarded += n;
                    buf = b;
                }
                _ => return,
            }
        }
    }
}

/// Watches an upload body on its way into the file. Plain PUTs use `Plain`, which does
/// nothing; resumable uploads hash the body and checkpoint their offset (`tus`).
#[allow(async_fn_in_trait)]
pub trait BodySink {
    /// Whether bytes received before the body broke off are still written to the file.
    const KEEPS_PARTIAL: bool = false;
    /// Body bytes, in order, as they are received.
    fn data(&mut self, _bytes: &[u8]) {}
    /// A write is about to go to the file.
    async fn before_write(&mut self) -> Result<()> {
        Ok(())
    }
    /// Everything up to file position `end` has been written to `upload`.
    async fn written(&mut self, _upload: &Upload<'_>, _end: u64) -> Result<()> {
        Ok(())
    }
}

pub struct Plain;
impl BodySink for Plain {}

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
