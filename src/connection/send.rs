//! Bytes to the client under `SendTimeout`: no write may wait longer than that for the client
//! to accept a single byte. File bodies go out without holding a buffer while the client is
//! slow: the worker waits for the socket to be writable with nothing attached, then borrows
//! one of a few per-worker buffers, reads about as much of the file as the socket has room
//! for, hands it to the kernel with a non-blocking send and gives the buffer back. Bytes the
//! socket did not take are read again next time (from the page cache). So a stalled download
//! costs its socket and its open file, not a `ChunkSize` buffer.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::os::fd::RawFd;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use monoio::buf::IoBuf;
use monoio::io::AsyncWriteRent;
use nix::sys::socket::{self, MsgFlags};

use super::{Conn, Socket};
use crate::error::{Error, Result};
use crate::storage::read_exact_at;

/// A socket with less room than this is waited for first: smaller sends cost a syscall for
/// little.
const MIN_SEND: usize = 16 * 1024;
/// Bodies up to this size are read into the response buffer behind their head and go out with
/// it in one write: a file read and a write through the ring, where a larger body costs a
/// write of the head, then a read and a send per piece. Small enough that the buffer still goes
/// back to the pool afterwards.
const SMALL_BODY: u64 = 8 * 1024;
/// Download buffers one worker lends at once, and keeps when they come back.
const LENT_MAX: usize = 4;
const KEEP: usize = 2;

fn timed_out() -> Error {
    Error::Timeout("response: the client accepted no byte for SendTimeout")
}

/// Write all of `buf`, each write accepting at least one byte within `timeout`; the buffer
/// comes back for reuse (on a timeout it is gone with the cancelled write).
pub(super) async fn write_all<S: AsyncWriteRent>(
    stream: &mut S,
    mut buf: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>> {
    let mut done = 0;
    while done < buf.len() {
        let end = buf.len();
        match monoio::time::timeout(timeout, stream.write(buf.slice(done..end))).await {
            Ok((Ok(0), _)) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
            Ok((Ok(n), slice)) => {
                done += n;
                buf = slice.into_inner();
            }
            Ok((Err(e), _)) => return Err(Error::Io(e)),
            Err(_) => return Err(timed_out()),
        }
    }
    Ok(buf)
}

/// Read and throw away what the client sent (a lingering close), without blocking.
pub(super) fn discard(fd: RawFd) -> io::Result<usize> {
    thread_local! {
        static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; 16 * 1024].into_boxed_slice());
    }
    SCRATCH.with(|s| Ok(socket::recv(fd, &mut s.borrow_mut(), MsgFlags::MSG_DONTWAIT)?))
}

/// Free space in the socket's send buffer, as far as the kernel tells (SO_SNDBUF less what is
/// queued and unacknowledged).
fn room(fd: RawFd) -> usize {
    let mut sndbuf: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let mut queued: libc::c_int = 0;
    // SAFETY: both calls write one c_int into locals of that size.
    let ok = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut sndbuf as *mut libc::c_int).cast(),
            &mut len,
        ) == 0
            && libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) == 0
    };
    if ok {
        (sndbuf.max(0) as usize).saturating_sub(queued.max(0) as usize)
    } else {
        MIN_SEND
    }
}

/// Hand `buf` to the kernel without waiting; how much it took (0: the socket is full).
fn send_now(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    match socket::send(fd, buf, MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL) {
        Ok(n) => Ok(n),
        Err(nix::errno::Errno::EAGAIN) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

impl<S: Socket> Conn<S> {
    /// The queued head, then `file`'s bytes `[start, start + len)`. Once the head is out the
    /// response is committed: an error can then only close the connection.
    pub(super) async fn send_file(&mut self, file: &monoio::fs::File, start: u64, len: u64) -> Result<()> {
        if len <= SMALL_BODY {
            let read = read_exact_at(file, &mut self.wbuf, start, len as usize).await;
            // The head is queued: a failed read can only close the connection.
            self.committed = true;
            read?;
            return self.flush().await;
        }
        self.flush().await?;
        self.committed = true;
        let res = self.send_range(file, start, len).await;
        if let Err(Error::Timeout(_) | Error::Io(_)) = &res {
            self.broken = true;
        }
        res
    }

    async fn send_range(&mut self, file: &monoio::fs::File, start: u64, len: u64) -> Result<()> {
        let fd = self.stream.as_raw_fd();
        let timeout = self.send_timeout();
        let chunk = self.app.config.chunk_size.0 as usize;
        let (mut pos, end) = (start, start + len);
        let mut progress = Instant::now();
        let mut full = false;
        while pos < end {
            if full {
                match monoio::time::timeout_at((progress + timeout).into(), self.stream.writable()).await {
                    Ok(r) => r?,
                    Err(_) => return Err(timed_out()),
                }
            }
            let space = room(fd);
            if space < MIN_SEND && !full {
                full = true;
                continue;
            }
            let want = space
                .clamp(MIN_SEND, chunk)
                .min(usize::try_from(end - pos).unwrap_or(usize::MAX));
            let mut buf = lend(chunk).await;
            read_exact_at(file, buf.vec(), pos, want).await?;
            let sent = send_now(fd, buf.vec())?;
            drop(buf);
            if sent > 0 {
                pos += sent as u64;
                progress = Instant::now();
            }
            full = sent < want;
        }
        Ok(())
    }
}

#[derive(Default)]
struct Pool {
    free: Vec<Vec<u8>>,
    lent: usize,
    waiters: Vec<Waker>,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
}

/// A download buffer on loan from this worker's pool, returned when dropped.
struct Lent(Vec<u8>);

impl Lent {
    fn vec(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Borrow an empty buffer of at least `cap` bytes, waiting while `LENT_MAX` are out.
async fn lend(cap: usize) -> Lent {
    poll_fn(|cx| {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.lent >= LENT_MAX {
                p.waiters.push(cx.waker().clone());
                return Poll::Pending;
            }
            p.lent += 1;
            let mut buf = p.free.pop().unwrap_or_default();
            buf.clear();
            buf.reserve_exact(cap);
            Poll::Ready(Lent(buf))
        })
    })
    .await
}

impl Drop for Lent {
    fn drop(&mut self) {
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            p.lent -= 1;
            if p.free.len() < KEEP {
                p.free.push(std::mem::take(&mut self.0));
            }
            // Every waiter: one of them may have gone away meanwhile.
            for w in p.waiters.drain(..) {
                w.wake();
            }
        });
    }
}
