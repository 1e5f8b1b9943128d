//! One client connection: its buffers, reading request heads under timeouts, and writing
//! responses under a send deadline. `serve` runs its requests one after the other; upload
//! bodies stream in through `body`, file bodies of downloads go out through `send`. Handlers
//! see it as an `Exchange`.

mod body;
mod buffers;
mod idle;
mod send;
mod serve;

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, CancelableAsyncReadRent, Canceller};

pub use idle::run_timer as run_idle_timer;
pub use serve::serve;

use crate::app::App;
use crate::error::{Error, Result};
use crate::handlers::{BodySink, Exchange};
use crate::http::{self, response, Head};
use crate::limits::ClientKey;
use crate::storage::Upload;

/// A request's read buffer starts at this size (from the worker's pool) and grows up to
/// `MaxHeaderBytes` only when a head needs it.
const INITIAL_READ_BUF: usize = buffers::SIZE;
/// Responses to pipelined requests are held back until this much is queued: small, because a
/// client that pipelines and never reads holds it until `SendTimeout`.
const MAX_QUEUED_OUTPUT: usize = 16 * 1024;
/// After an error we stop reading requests but drain what the client still sends for a
/// while, so closing does not reset the connection before it has read our answer: a proxy
/// streaming a refused upload (nginx with proxy_request_buffering off) would otherwise turn
/// our 409 into its 502. Bounded like nginx's lingering close: in total time, in idle time
/// between reads, and in bytes. It holds a connection, never a worker or a buffer.
pub const LINGER_TIME: Duration = Duration::from_secs(30);
const LINGER_IDLE: Duration = Duration::from_secs(5);
const LINGER_BYTES: usize = 64 << 20;
/// How long a connection that was just served keeps a read with a buffer in the ring before it
/// waits without one: a busy client's next request then costs no extra system call (a poll and
/// then a receive), and a connection idle for longer holds no buffer.
const HOT: Duration = Duration::from_millis(250);

/// A client socket: a byte stream whose readiness can be awaited without lending the kernel a
/// buffer, so a slow or silent client costs no memory while it is waited for.
#[allow(async_fn_in_trait)]
pub trait Socket: AsyncReadRent + CancelableAsyncReadRent + AsyncWriteRent + AsRawFd {
    async fn readable(&self) -> io::Result<()>;
    async fn writable(&self) -> io::Result<()>;
}

// `relaxed = false`: the epoll fallback then checks readiness with a poll of its own, which
// our non-blocking sends and receives (outside monoio's bookkeeping) need.
impl Socket for monoio::net::TcpStream {
    async fn readable(&self) -> io::Result<()> {
        monoio::net::TcpStream::readable(self, false).await
    }
    async fn writable(&self) -> io::Result<()> {
        monoio::net::TcpStream::writable(self, false).await
    }
}

impl Socket for monoio::net::UnixStream {
    async fn readable(&self) -> io::Result<()> {
        monoio::net::UnixStream::readable(self, false).await
    }
    async fn writable(&self) -> io::Result<()> {
        monoio::net::UnixStream::writable(self, false).await
    }
}

pub struct Conn<S> {
    app: Arc<App>,
    /// Who per-client limits count this connection as (None on a Unix socket).
    client: Option<ClientKey>,
    stream: S,
    /// Bytes received but not yet consumed: the rest of a head, a body, pipelined requests.
    rbuf: Vec<u8>,
    /// Response bytes not yet written.
    wbuf: Vec<u8>,
    /// The current request's body has been read to its end.
    body_read: bool,
    /// A response body is going out: an error now can only close the connection.
    committed: bool,
    /// Writing failed or timed out: nothing more can be said on this connection.
    broken: bool,
    /// When the last request ended (or the connection began): `IdleTimeout` counts from here.
    quiet_since: Instant,
}

impl<S: Socket> Conn<S> {
    pub fn new(app: Arc<App>, stream: S, client: Option<ClientKey>) -> Self {
        Conn {
            app,
            client,
            stream,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            body_read: false,
            committed: false,
            broken: false,
            quiet_since: Instant::now(),
        }
    }

    /// Whether an error response can still be written: not once a response body has started
    /// going out, nor after the socket failed.
    pub fn can_answer(&self) -> bool {
        !self.committed && !self.broken
    }

    fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.app.config.send_timeout())
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

    /// Right after a request, wait for the next one's first bytes for a moment (`HOT`) with a
    /// read and a pooled buffer in the ring, so a busy client's next request costs no extra
    /// system call (a poll, then a receive). Some(true): bytes are in (pipelined ones
    /// included); Some(false): the client closed; None: nothing came, or this worker already
    /// has its share of hot connections: wait with `wait_idle`. `canceller` is the caller's,
    /// reused from one request to the next.
    pub async fn wait_hot(&mut self, canceller: &mut Canceller) -> Result<Option<bool>> {
        self.quiet_since = Instant::now();
        if !self.rbuf.is_empty() {
            return Ok(Some(true)); // pipelined
        }
        let Some(_hot) = buffers::hot_slot() else {
            return Ok(None);
        };
        let until = self.quiet_since + HOT.min(Duration::from_secs(self.app.config.idle_timeout));
        let buf = match self.rbuf.capacity() {
            0 => buffers::take(),
            _ => std::mem::take(&mut self.rbuf),
        };
        let mut read = std::pin::pin!(self.stream.cancelable_read(buf, canceller.handle()));
        let done = monoio::select! {
            read = read.as_mut() => Some(read),
            _ = idle::at(until) => None,
        };
        let cancelled = done.is_none();
        // A cancelled read still completes: with what it got meanwhile, or with an error.
        let (res, buf) = match done {
            Some(done) => done,
            None => {
                *canceller = std::mem::take(canceller).cancel();
                read.await
            }
        };
        self.rbuf = buf;
        match res {
            Ok(n) => Ok(Some(n > 0)),
            Err(_) if cancelled => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Wait for the next request's first bytes until `IdleTimeout` after the last request
    /// (or the connection's start), holding no buffer: both go back to the worker's pool and
    /// the connection waits for readability with nothing attached, taking a buffer again only
    /// when bytes have arrived. Its deadline is an entry in the worker's shared idle timer,
    /// not a timer of its own. Ok(false): the client closed or idled out.
    pub async fn wait_idle(&mut self) -> Result<bool> {
        if !self.rbuf.is_empty() {
            return Ok(true); // pipelined
        }
        if self.wbuf.is_empty() {
            buffers::give(std::mem::take(&mut self.wbuf));
        }
        buffers::give(std::mem::take(&mut self.rbuf));
        let deadline = self.quiet_since + Duration::from_secs(self.app.config.idle_timeout);
        loop {
            let ready = monoio::select! {
                ready = self.stream.readable() => Some(ready),
                _ = idle::at(deadline) => None,
            };
            match ready {
                None => return Ok(false),
                Some(ready) => ready?,
            }
            match self.recv_pooled(usize::MAX) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Ok(done? > 0),
            }
        }
    }

    /// Wait until the socket is readable under `deadline`, with no buffer lent to the kernel,
    /// then receive what came into `rbuf`, at most `max` bytes. Ok(0) is end of stream.
    async fn receive(&mut self, max: usize, deadline: Instant, what: &'static str) -> Result<usize> {
        loop {
            match monoio::time::timeout_at(deadline.into(), self.stream.readable()).await {
                Ok(ready) => ready?,
                Err(_) => return Err(Error::Timeout(what)),
            }
            match self.recv_pooled(max) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Ok(done?),
            }
        }
    }

    /// Receive without waiting into `rbuf`, which takes a buffer from the pool if it has none
    /// (and gives it back if nothing came).
    fn recv_pooled(&mut self, max: usize) -> io::Result<usize> {
        if self.rbuf.capacity() == 0 {
            self.rbuf = buffers::take();
        } else if self.rbuf.capacity() == self.rbuf.len() {
            self.rbuf.reserve(self.rbuf.len());
        }
        let got = recv_into(self.stream.as_raw_fd(), &mut self.rbuf, max);
        if self.rbuf.is_empty() {
            buffers::give(std::mem::take(&mut self.rbuf));
        }
        got
    }

    /// Read the next request head. Ok(None): the client closed or idled out between requests.
    pub async fn read_head(&mut self) -> Result<Option<Head>> {
        let limits = self.app.head_limits;
        let header_timeout = Duration::from_secs(self.app.config.header_timeout);
        let idle = Duration::from_secs(self.app.config.idle_timeout);
        // Both read the clock only when needed: a request already in `rbuf` (the usual case
        // after `wait_hot`/`wait_idle`) never waits for an idle client.
        let (mut idle_deadline, mut head_deadline) = (None, None);
        self.committed = false;
        // The response is built in a pooled buffer: one grown from nothing would be
        // reallocated several times over for every request.
        if self.wbuf.capacity() == 0 {
            self.wbuf = buffers::take();
        }
        loop {
            if !self.rbuf.is_empty() {
                head_deadline.get_or_insert_with(|| Instant::now() + header_timeout);
                if let Some((head, n)) = http::parse_head(&self.rbuf, limits)? {
                    self.rbuf.drain(..n);
                    self.body_read = false;
                    return Ok(Some(head));
                }
            }
            let room = limits.max_head.saturating_sub(self.rbuf.len()).max(1);
            let deadline = match head_deadline {
                Some(d) => d,
                None => *idle_deadline.get_or_insert_with(|| Instant::now() + idle),
            };
            match self.receive(room, deadline, "request head").await {
                Ok(0) if self.rbuf.is_empty() => return Ok(None),
                Ok(0) => return Err(Error::BadRequest("connection closed inside the request head".into())),
                Ok(_) => {}
                Err(Error::Timeout(_)) if head_deadline.is_none() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Write everything queued in `wbuf`, each write within `SendTimeout`.
    pub async fn flush(&mut self) -> Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        if self.broken {
            return Err(Error::Io(io::ErrorKind::BrokenPipe.into()));
        }
        let buf = std::mem::take(&mut self.wbuf);
        let timeout = self.send_timeout();
        match send::write_all(&mut self.stream, buf, timeout).await {
            Ok(mut buf) => {
                buf.clear();
                self.wbuf = buf;
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Flush unless more pipelined requests are already waiting and little output is queued.
    pub async fn flush_if_idle(&mut self) -> Result<()> {
        if self.rbuf.is_empty() || self.wbuf.len() >= MAX_QUEUED_OUTPUT {
            self.flush().await
        } else {
            Ok(())
        }
    }

    /// Close after an error: flush the answer, stop sending, and discard what the client still
    /// sends for up to `time` (normally `LINGER_TIME`), so the kernel does not reset the
    /// connection under our response. Waits for readability with no buffer attached.
    pub async fn linger_close(mut self, time: Duration) {
        if self.broken || self.flush().await.is_err() {
            return;
        }
        let _ = self.stream.shutdown().await;
        let deadline = Instant::now() + time;
        let mut discarded = 0;
        while discarded < LINGER_BYTES {
            let until = deadline.min(Instant::now() + LINGER_IDLE);
            match monoio::time::timeout_at(until.into(), self.stream.readable()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
            match send::discard(self.stream.as_raw_fd()) {
                Ok(0) => return,
                Ok(n) => discarded += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// Append to `buf` what the socket has, without waiting, at most `max` bytes and no more than
/// `buf` has room for.
fn recv_into(fd: std::os::fd::RawFd, buf: &mut Vec<u8>, max: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let want = spare.len().min(max);
    // SAFETY: the kernel writes at most `want` bytes into the vector's spare capacity, which
    // is at least that long; only the bytes it reports written are then counted as initialised.
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: `n <= want <= spare.len()` bytes past the old length were just written.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

impl<S: Socket> Exchange for Conn<S> {
    fn client(&self) -> Option<ClientKey> {
        self.client
    }

    /// The client asked, we are draining, or the request carried a body its handler did not
    /// read (a GET, HEAD or OPTIONS with a body). Such a body is never parsed as the next
    /// request: that is how a request is smuggled past a proxy that framed it differently.
    fn closing(&self, head: &Head) -> bool {
        head.close || self.app.shutdown.is_requested() || (head.body != http::Body::None && !self.body_read)
    }

    fn response(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    async fn send_continue(&mut self) -> Result<()> {
        self.wbuf.extend_from_slice(response::CONTINUE);
        self.flush().await
    }

    async fn body_at<K: BodySink>(&mut self, upload: &Upload<'_>, start: u64, len: u64, sink: &mut K) -> Result<()> {
        Conn::body_at(self, upload, start, len, sink).await
    }

    async fn chunked_at<K: BodySink>(
        &mut self,
        upload: &Upload<'_>,
        start: u64,
        max: u64,
        sink: &mut K,
    ) -> Result<u64> {
        Conn::chunked_at(self, upload, start, max, sink).await
    }

    async fn send_file(&mut self, file: &monoio::fs::File, start: u64, len: u64) -> Result<()> {
        Conn::send_file(self, file, start, len).await
    }
}
