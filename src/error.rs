//! Request errors, and the one place that maps them to HTTP statuses.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Framing that could desynchronise us from a proxy in front: answer and close.
    #[error("ambiguous framing: {0}")]
    Smuggling(&'static str),
    #[error("bad path: {0}")]
    BadPath(#[from] crate::path::PathError),
    #[error("body shorter than Content-Length")]
    Truncated,
    #[error("forbidden: {0}")]
    Forbidden(String),
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

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) | Error::Smuggling(_) | Error::BadPath(_) | Error::Truncated => 400,
            Error::Forbidden(_) => 403,
            Error::NotFound => 404,
            Error::MethodNotAllowed => 405,
            Error::Timeout(_) => 408,
            Error::Conflict => 409,
            Error::LengthRequired => 411,
            Error::TooLarge { .. } => 413,
            Error::UriTooLong => 414,
            Error::ExpectationFailed => 417,
            Error::HeadTooLarge => 431,
            Error::Io(_) => 500,
            Error::NotImplemented(_) => 501,
            Error::TooManyRequests { .. } => 429,
            Error::Unavailable(_) => 503,
            Error::VersionNotSupported => 505,
            Error::InsufficientStorage => 507,
            Error::Gone => 410,
            Error::Locked => 423,
            Error::OffsetMismatch { .. } => 409,
            // tus checksum extension: "460 Checksum Mismatch".
            Error::ChecksumMismatch => 460,
            Error::TusVersion => 412,
            Error::UnsupportedMediaType(_) => 415,
        }
    }

    /// Whether the connection must close after the error response: whenever the framing is
    /// in doubt or a request body may be left unread on the wire.
    pub fn must_close(&self) -> bool {
        !matches!(
            self,
            Error::Forbidden(_)
                | Error::NotFound
                | Error::MethodNotAllowed
                | Error::Conflict
                | Error::Gone
                | Error::Locked
                | Error::OffsetMismatch { .. }
                | Error::ChecksumMismatch
                | Error::TusVersion
        )
    }
}

/// Labels of `hmac_file_server_errors_total{reason}`, indexed by `Error::reason`.
pub const REASONS: [&str; 26] = [
    "bad_request",
    "ambiguous_framing",
    "bad_path",
    "truncated",
    "forbidden",
    "not_found",
    "method_not_allowed",
    "timeout",
    "conflict",
    "length_required",
    "too_large",
    "uri_too_long",
    "expectation_failed",
    "head_too_large",
    "not_implemented",
    "version_not_supported",
    "too_many_requests",
    "unavailable",
    "insufficient_storage",
    "io",
    "gone",
    "locked",
    "offset_mismatch",
    "checksum_mismatch",
    "tus_version",
    "unsupported_media_type",
];

impl Error {
    /// Index into `REASONS`, for the metrics.
    pub fn reason(&self) -> usize {
        match self {
            Error::BadRequest(_) => 0,
            Error::Smuggling(_) => 1,
            Error::BadPath(_) => 2,
            Error::Truncated => 3,
            Error::Forbidden(_) => 4,
            Error::NotFound => 5,
            Error::MethodNotAllowed => 6,
            Error::Timeout(_) => 7,
            Error::Conflict => 8,
            Error::LengthRequired => 9,
            Error::TooLarge { .. } => 10,
            Error::UriTooLong => 11,
            Error::ExpectationFailed => 12,
            Error::HeadTooLarge => 13,
            Error::NotImplemented(_) => 14,
            Error::VersionNotSupported => 15,
            Error::TooManyRequests { .. } => 16,
            Error::Unavailable(_) => 17,
            Error::InsufficientStorage => 18,
            Error::Io(_) => 19,
            Error::Gone => 20,
            Error::Locked => 21,
            Error::OffsetMismatch { .. } => 22,
            Error::ChecksumMismatch => 23,
            Error::TusVersion => 24,
            Error::UnsupportedMediaType(_) => 25,
        }
    }

    /// Seconds for a Retry-After header, for the statuses that promise one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::TooManyRequests { retry_after, .. } => Some(*retry_after),
            Error::Unavailable(_) => Some(1),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
