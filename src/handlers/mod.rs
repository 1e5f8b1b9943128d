//! What the server does with a routed request (`router`). A handler receives the app's state,
//! the parsed head and the exchange (the connection as a handler sees it: the request body
//! in, the response out), and returns what the request amounted to; it never sees the socket.

pub mod delete;
pub mod download;
pub mod grant;
pub mod options;
pub mod quota;
pub mod tus;
pub mod upload;

use crate::error::Result;
use crate::http::Head;
use crate::limits::ClientKey;
use crate::storage::Upload;

/// What a handled request amounted to, for the access log and the metrics.
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

/// The connection as a handler sees it.
#[allow(async_fn_in_trait)]
pub trait Exchange {
    /// Who per-client limits count the client as (None on a Unix socket).
    fn client(&self) -> Option<ClientKey>;
    /// Whether this response will be the connection's last (`Connection: close`).
    fn closing(&self, head: &Head) -> bool;
    /// Where the response head (and a small body) go, after any earlier pipelined answers.
    fn response(&mut self) -> &mut Vec<u8>;
    /// `100 Continue`, now.
    async fn send_continue(&mut self) -> Result<()>;
    /// The `Content-Length` body of `len` bytes into `upload` at file position `start`.
    async fn body_at<K: BodySink>(&mut self, upload: &Upload<'_>, start: u64, len: u64, sink: &mut K) -> Result<()>;
    /// A chunked body into `upload` at `start`, at most `max` decoded bytes (413 beyond); its size.
    async fn chunked_at<K: BodySink>(&mut self, upload: &Upload<'_>, start: u64, max: u64, sink: &mut K)
        -> Result<u64>;
    /// The response head written so far, then `file`'s bytes `[start, start + len)`.
    async fn send_file(&mut self, file: &monoio::fs::File, start: u64, len: u64) -> Result<()>;
}

/// Watches an upload body on its way into the file. Signed PUTs use `Plain`, which does
/// nothing; chunked PUTs keep within the unverified-bytes budget; resumable uploads hash the
/// body and checkpoint their offset.
#[allow(async_fn_in_trait)]
pub trait BodySink {
    /// Whether bytes received before the body broke off are still written to the file.
    const KEEPS_PARTIAL: bool = false;
    /// Body bytes, in order, as they are received.
    fn data(&mut self, _bytes: &[u8]) {}
    /// The body is about to be read up to `bytes` (decoded) in all; an error refuses it.
    fn cover(&mut self, _bytes: u64) -> Result<()> {
        Ok(())
    }
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
