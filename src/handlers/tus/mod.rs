//! Resumable uploads: tus 1.0.0 (core, creation, creation-with-upload, termination, checksum
//! with sha256, expiration) under the upload prefix, authorized by the same signatures as PUT
//! (docs/protocol.md, "Resumable uploads").
//!
//! - `POST <prefix><path>?v=|v2=|token=` creates an upload (`creation`); the answer's
//!   `Location` is `<prefix>.hmac-file-server/tus/<id>`, the id (`id`) being the capability.
//! - `HEAD`/`PATCH`/`DELETE` on that URL report, append, terminate (`resource`, `append`).
//!
//! Sessions live in the session store (`crate::session`), reached through the side thread;
//! one writer at a time holds an upload's `lock`; the side thread's `sweep` removes what
//! expired.

pub mod append;
pub mod creation;
pub mod headers;
pub mod id;
pub mod lock;
pub mod resource;
pub mod sweep;

use std::time::Duration;

pub use creation::create;
pub use resource::resource;
pub use sweep::sweep;

use crate::app::App;
use crate::error::{Error, Result};
use crate::path;
use crate::session::{Sessions, StoreError};

pub const VERSION: &str = "1.0.0";
pub const EXTENSIONS: &str = "creation,creation-with-upload,termination,checksum,expiration";
/// Where upload URLs live below the prefix: inside the reserved name, so no stored file can
/// ever have one of these paths.
pub const RESOURCE_DIR: &str = ".hmac-file-server/tus/";
const OFFSET_STREAM: &[u8] = b"application/offset+octet-stream";

/// The upload id in a request's path, if it names an upload URL.
pub fn resource_id<'a>(prefix: &str, target: &'a str) -> Option<&'a str> {
    let (raw_path, _) = path::split_target(target);
    raw_path.strip_prefix(prefix)?.strip_prefix(RESOURCE_DIR)
}

pub fn location(prefix: &str, id: &str) -> String {
    format!("{prefix}{RESOURCE_DIR}{id}")
}

fn sessions(app: &App) -> Result<&Sessions> {
    if !app.config.resumable_uploads {
        return Err(Error::MethodNotAllowed);
    }
    app.sessions
        .as_ref()
        .ok_or_else(|| Error::Unavailable("the session store could not be opened (see the start-up log)".into()))
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::PathBusy => Error::Conflict,
        e @ StoreError::Unavailable { .. } => Error::Unavailable(e.to_string()),
    }
}

fn expires_header(unix: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_urls() {
        assert_eq!(
            resource_id("/upload/", "/upload/.hmac-file-server/tus/abc"),
            Some("abc")
        );
        assert_eq!(
            resource_id("/upload/", "/upload/.hmac-file-server/tus/abc?x=1"),
            Some("abc")
        );
        assert_eq!(resource_id("/upload/", "/upload/a/b.txt"), None);
        assert_eq!(location("/upload/", "abc"), "/upload/.hmac-file-server/tus/abc");
    }
}
