//! One client connection: its buffers, reading request heads under timeouts, and writing
//! responses under a send deadline. `serve` runs its requests one after the other; upload
//! bodies stream in through `body`, file bodies of downloads go out through `send`. Handlers
//! see it as an `Exchange`.

mod body;
mod send;
mod serve;

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent};

pub use serve::serve;

use crate::app::App;
use crate::error::{Error, Result};
use crate::handlers::{BodySink, Exchange};
use crate::http::{self, response, Head};
use crate::limits::ClientKey;
use crate::storage::Upload;

/// Initial read buffer: enough for a typical request head, small enough that thousands of
/// idle keep-alive connections stay cheap. It grows up to `MaxHeaderBytes` only when needed.
const INITIAL_READ_BUF: usize = 4096;
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

/// A client socket: a byte stream whose readiness can be awaited without lending the kernel a
/// buffer, so a slow or silent client costs no memory while it is waited for.
#[allow(async_fn_in_trait)]
pub trait Socket: AsyncReadRent + AsyncWriteRent + AsRawFd {
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

pub struct Conn<'a, S> {
    app: &'a App,
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
}

impl<'a, S: Socket> Conn<'a, S> {
    pub fn new(app: &'a App, stream: S, client: Option<ClientKey>) -> Self {
        Conn {
            app,
            client,
            stream,
            rbuf: Vec::with_capacity(INITIAL_READ_BUF),
            wbuf: Vec::new(),
            body_read: false,
            committed: false,
            broken: false,
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

    /// Read the next request head. Ok(None): the client closed or idled out between requests.
    pub async fn read_head(&mut self) -> Result<Option<Head>> {
        let cfg = &self.app.config;
        let limits = self.app.head_limits;
        let idle_deadline = Instant::now() + Duration::from_secs(cfg.idle_timeout);
        let mut head_deadline = None;
        self.committed = false;
        loop {
            if !self.rbuf.is_empty() {
                head_deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(cfg.header_timeout));
                if let Some((head, n)) = http::parse_head(&self.rbuf, limits)? {
                    self.rbuf.drain(..n);
                    self.body_read = false;
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

impl<S: Socket> Exchange for Conn<'_, S> {
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
