//! Request errors, and the one table that says what each kind means: its HTTP status, its
//! metrics label (`hmac_file_server_errors_total{reason}`) and whether the connection must
//! close after it. The reason phrase follows from the status (`http::status`). Path and
//! storage errors are mapped to these kinds here too, and nowhere else.

use std::io;

use crate::auth::jwt::{Mismatch, TokenError};
use crate::path::PathError;
use crate::retention::Refusal;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Framing that could desynchronise us from a proxy in front: answer and close.
    #[error("ambiguous framing: {0}")]
    Smuggling(&'static str),
    #[error("bad path: {0}")]
    BadPath(PathError),
    #[error("body shorter than Content-Length")]
    Truncated,
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// A Bearer token that is missing or not valid; `invalid`: one was given.
    #[error("unauthorized: {why}")]
    Unauthorized { why: String, invalid: bool },
    #[error("Bearer token expired at {0}")]
    TokenExpired(i64),
    #[error("the token is for another upload: {0}")]
    SlotMismatch(String),
    #[error("the body is not the size the token is for: {0}")]
    SizeMismatch(String),
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("request timed out: {0}")]
    Timeout(&'static str),
    #[error("target exists or an upload to it is in progress")]
    Conflict,
    #[error("Content-Length required")]
    LengthRequired,
    #[error("size {size} above UploadMaxSize {max}")]
    TooLarge { size: u64, max: u64 },
    #[error("URL too long")]
    UriTooLong,
    #[error("expectation not supported")]
    ExpectationFailed,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    #[error("HTTP version not supported")]
    VersionNotSupported,
    #[error("too many requests ({why})")]
    TooManyRequests { why: &'static str, retry_after: u64 },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error("not enough disk space")]
    InsufficientStorage,
    /// `StoreMaxSize` or `UserQuota` would be exceeded.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("resumable upload expired or removed")]
    Gone,
    #[error("resumable upload busy: another request is writing to it")]
    Locked,
    #[error("Upload-Offset {got} does not match the upload's offset {expected}")]
    OffsetMismatch { expected: u64, got: u64 },
    #[error("Upload-Checksum does not match the body")]
    ChecksumMismatch,
    #[error("Tus-Resumable missing or not 1.0.0")]
    TusVersion,
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(&'static str),
}

/// After the answer: keep the connection for the next request, or close it (whenever the
/// framing is in doubt or a request body may be left unread on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Keep,
    Close,
}

macro_rules! kinds {
    ($($kind:ident => $status:literal, $label:literal, $after:ident;)*) => {
        /// Every kind of error, one per `Error` variant.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Kind {
            $($kind),*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$kind),*];

            pub fn status(self) -> u16 {
                match self {
                    $(Kind::$kind => $status),*
                }
            }

            /// The `reason` label of `hmac_file_server_errors_total`.
            pub fn label(self) -> &'static str {
                match self {
                    $(Kind::$kind => $label),*
                }
            }

            pub fn after(self) -> After {
                match self {
                    $(Kind::$kind => After::$after),*
                }
            }

            /// Position in `ALL` (the metrics keep one counter per kind).
            pub fn index(self) -> usize {
                self as usize
            }
        }
    };
}

// The table.
kinds! {
    BadRequest => 400, "bad_request", Close;
    Smuggling => 400, "ambiguous_framing", Close;
    BadPath => 400, "bad_path", Close;
    Truncated => 400, "truncated", Close;
    Forbidden => 403, "forbidden", Keep;
    Unauthorized => 401, "unauthorized", Keep;
    TokenExpired => 410, "token_expired", Keep;
    SlotMismatch => 400, "slot_mismatch", Close;
    SizeMismatch => 413, "size_mismatch", Close;
    NotFound => 404, "not_found", Keep;
    MethodNotAllowed => 405, "method_not_allowed", Keep;
    Timeout => 408, "timeout", Close;
    Conflict => 409, "conflict", Keep;
    LengthRequired => 411, "length_required", Close;
    TooLarge => 413, "too_large", Close;
    UriTooLong => 414, "uri_too_long", Close;
    ExpectationFailed => 417, "expectation_failed", Close;
    HeadTooLarge => 431, "head_too_large", Close;
    NotImplemented => 501, "not_implemented", Close;
    VersionNotSupported => 505, "version_not_supported", Close;
    TooManyRequests => 429, "too_many_requests", Close;
    Unavailable => 503, "unavailable", Close;
    InsufficientStorage => 507, "insufficient_storage", Close;
    QuotaExceeded => 507, "quota_exceeded", Close;
    Io => 500, "io", Close;
    Gone => 410, "gone", Keep;
    Locked => 423, "locked", Keep;
    OffsetMismatch => 409, "offset_mismatch", Keep;
    // tus checksum extension: "460 Checksum Mismatch".
    ChecksumMismatch => 460, "checksum_mismatch", Keep;
    TusVersion => 412, "tus_version", Keep;
    UnsupportedMediaType => 415, "unsupported_media_type", Close;
}

impl Error {
    pub fn kind(&self) -> Kind {
        match self {
            Error::BadRequest(_) => Kind::BadRequest,
            Error::Smuggling(_) => Kind::Smuggling,
            Error::BadPath(_) => Kind::BadPath,
            Error::Truncated => Kind::Truncated,
            Error::Forbidden(_) => Kind::Forbidden,
            Error::Unauthorized { .. } => Kind::Unauthorized,
            Error::TokenExpired(_) => Kind::TokenExpired,
            Error::SlotMismatch(_) => Kind::SlotMismatch,
            Error::SizeMismatch(_) => Kind::SizeMismatch,
            Error::NotFound => Kind::NotFound,
            Error::MethodNotAllowed => Kind::MethodNotAllowed,
            Error::Timeout(_) => Kind::Timeout,
            Error::Conflict => Kind::Conflict,
            Error::LengthRequired => Kind::LengthRequired,
            Error::TooLarge { .. } => Kind::TooLarge,
            Error::UriTooLong => Kind::UriTooLong,
            Error::ExpectationFailed => Kind::ExpectationFailed,
            Error::HeadTooLarge => Kind::HeadTooLarge,
            Error::NotImplemented(_) => Kind::NotImplemented,
            Error::VersionNotSupported => Kind::VersionNotSupported,
            Error::TooManyRequests { .. } => Kind::TooManyRequests,
            Error::Unavailable(_) => Kind::Unavailable,
            Error::InsufficientStorage => Kind::InsufficientStorage,
            Error::QuotaExceeded(_) => Kind::QuotaExceeded,
            Error::Io(_) => Kind::Io,
            Error::Gone => Kind::Gone,
            Error::Locked => Kind::Locked,
            Error::OffsetMismatch { .. } => Kind::OffsetMismatch,
            Error::ChecksumMismatch => Kind::ChecksumMismatch,
            Error::TusVersion => Kind::TusVersion,
            Error::UnsupportedMediaType(_) => Kind::UnsupportedMediaType,
        }
    }

    pub fn status(&self) -> u16 {
        self.kind().status()
    }

    /// Whether the connection must close after the error response.
    pub fn must_close(&self) -> bool {
        self.kind().after() == After::Close
    }

    /// Seconds for a Retry-After header, for the statuses that promise one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::TooManyRequests { retry_after, .. } => Some(*retry_after),
            Error::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750 §3).
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            Error::Unauthorized { invalid: false, .. } => Some("Bearer"),
            Error::Unauthorized { invalid: true, .. } => Some("Bearer error=\"invalid_token\""),
            _ => None,
        }
    }

    /// A Bearer token that does not verify.
    pub fn token(e: TokenError) -> Error {
        Error::Unauthorized {
            why: e.to_string(),
            invalid: true,
        }
    }

    /// A verified Bearer token that does not allow this request.
    pub fn mismatch(m: Mismatch) -> Error {
        match m {
            Mismatch::Expired(at) => Error::TokenExpired(at),
            Mismatch::Slot { .. } | Mismatch::Filename { .. } => Error::SlotMismatch(m.to_string()),
            Mismatch::Size { .. } => Error::SizeMismatch(m.to_string()),
        }
    }

    /// An upload the quotas do not admit.
    pub fn quota(r: Refusal) -> Error {
        match r {
            Refusal::Counting => Error::Unavailable(r.to_string()),
            r => Error::QuotaExceeded(r.to_string()),
        }
    }

    /// A request path that cannot be mapped to a store path: outside the prefix is no file of
    /// ours (404), anything else a malformed request (400). For reads the reserved directory
    /// does not exist either (404); an upload into it is malformed.
    pub fn path(e: PathError, reading: bool) -> Error {
        match e {
            PathError::NotUnderPrefix => Error::NotFound,
            PathError::Reserved if reading => Error::NotFound,
            e => Error::BadPath(e),
        }
    }

    /// Why a file or directory could not be created in StoreDir, as the client should hear
    /// it: a full disk or quota is 507, a store that cannot be written to right now (remounted
    /// read-only, permissions taken, the directory deleted under us) 503, anything else 500.
    pub fn storage(e: io::Error) -> Error {
        use nix::errno::Errno;
        match Errno::from_raw(e.raw_os_error().unwrap_or(0)) {
            Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG => Error::InsufficientStorage,
            Errno::EROFS | Errno::EACCES | Errno::EPERM | Errno::ENOENT | Errno::ESTALE => {
                Error::Unavailable(format!("StoreDir is not writable: {e}"))
            }
            _ => Error::Io(e),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_declaration_order_and_complete() {
        for (i, k) in Kind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
        let labels: std::collections::HashSet<_> = Kind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), Kind::ALL.len(), "labels are distinct");
        for k in Kind::ALL {
            assert!(
                crate::http::status::reason(k.status()) != "Unknown",
                "{k:?}: no reason phrase for {}",
                k.status()
            );
        }
    }

    #[test]
    fn statuses_and_close_policy() {
        assert_eq!(Error::Conflict.status(), 409);
        assert!(!Error::Conflict.must_close());
        assert!(Error::Truncated.must_close());
        assert_eq!(Error::ChecksumMismatch.status(), 460);
        assert_eq!(Error::path(PathError::Reserved, true).status(), 404);
        assert_eq!(Error::path(PathError::Reserved, false).status(), 400);
        assert_eq!(Error::path(PathError::NotUnderPrefix, false).status(), 404);
        let full = io::Error::from_raw_os_error(libc::ENOSPC);
        assert_eq!(Error::storage(full).status(), 507);
        let ro = io::Error::from_raw_os_error(libc::EROFS);
        assert_eq!(Error::storage(ro).status(), 503);
        let eio = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(Error::storage(eio).status(), 500);
    }
}
