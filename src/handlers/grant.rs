//! What an upload request's credential allows (docs/protocol.md, "Signatures" and "Bearer
//! tokens"), for PUT and for the creation of a resumable upload alike: the store path, what
//! is kept with the file, and the check of its size still to come.

use crate::app::App;
use crate::auth::{self, jwt, Credential, Keys, Proto, Signature};
use crate::error::{Error, Result};
use crate::http::Head;
use crate::logging::Escaped;
use crate::path::{self, StorePath};
use crate::storage::FileMeta;

pub struct Grant {
    pub path: StorePath,
    /// What is stored with the file: the content type that was signed (a token's `filetype`),
    /// and from a token its uploader and expiry.
    pub meta: FileMeta,
    check: Check,
}

enum Check {
    /// A signed URL: verified once the size is known (a chunked body's, at its end).
    Signature(Signature),
    /// A verified token, for this many bytes.
    Token { filesize: Option<u64> },
}

/// The grant of the request `head`; for a signed URL, `declared` must still give it the
/// content type the request declares.
pub fn grant(app: &App, head: &Head) -> Result<Grant> {
    let (raw_path, query) = path::split_target(&head.target);
    let path = path::store_path(raw_path, &app.prefix).map_err(|e| Error::path(e, false))?;
    match auth::credential(query, head.authorization.as_deref()) {
        Credential::Signed(sig) => {
            // ejabberd's first segment is sha1(user@host): stable per user (UploaderFromPath).
            let uploader = match path.as_str().split_once('/') {
                Some((first, _)) if app.config.uploader_from_path => Some(first.to_owned()),
                _ => None,
            };
            Ok(Grant {
                path,
                meta: FileMeta {
                    uploader,
                    ..FileMeta::default()
                },
                check: Check::Signature(sig),
            })
        }
        Credential::Bearer(token) => {
            let (claims, key) = jwt::verify(token, &app.keys.all()).map_err(Error::token)?;
            let now = crate::session::unix_now() as i64;
            claims
                .check_time(now, app.config.jwt_clock_skew)
                .map_err(Error::mismatch)?;
            claims.check_path(path.as_str()).map_err(Error::mismatch)?;
            tracing::debug!(
                key = %Keys::name(key),
                uploader = %Escaped(claims.sub.as_deref().unwrap_or("")),
                "Bearer token verified"
            );
            let content_type = claims
                .filetype
                .map_or_else(|| auth::DEFAULT_CONTENT_TYPE.to_vec(), String::into_bytes);
            Ok(Grant {
                path,
                meta: FileMeta {
                    content_type,
                    uploader: claims.sub,
                    expires: claims.expires,
                },
                check: Check::Token {
                    filesize: claims.filesize,
                },
            })
        }
        Credential::OtherScheme => Err(Error::Unauthorized {
            why: "Authorization is not a Bearer token, and the URL carries no signature".into(),
            invalid: false,
        }),
        Credential::None => Err(Error::Forbidden(
            "no v, v2 or token parameter and no Bearer token".into(),
        )),
    }
}

impl Grant {
    /// The content type the request declares (a PUT's Content-Type, a creation's `filetype`
    /// metadata): what a signed URL signs and what is stored. A token names its own.
    pub fn declared(mut self, content_type: &[u8]) -> Grant {
        if let Check::Signature(_) = self.check {
            self.meta.content_type = content_type.to_vec();
        }
        self
    }

    /// Whether the credential vouches for the upload before its size is known (a token
    /// does; a signed URL signs the size).
    pub fn verified(&self) -> bool {
        matches!(self.check, Check::Token { .. })
    }

    /// The largest body the credential can allow within `limit` (`UploadMaxSize`).
    pub fn max_size(&self, limit: u64) -> u64 {
        match self.check {
            Check::Token { filesize: Some(n) } => n.min(limit),
            _ => limit,
        }
    }

    /// Ok when an upload of `size` bytes is the one the credential is for: 403 for a signature
    /// that does not sign it, 413 for another size than a token's.
    pub fn check_size(&self, keys: &Keys, size: u64) -> Result<()> {
        match &self.check {
            Check::Signature(sig) => check_signature(keys, sig, &self.path, size, &self.meta.content_type),
            Check::Token { filesize } => {
                if *filesize == Some(size) {
                    return Ok(());
                }
                Err(Error::mismatch(jwt::Mismatch::Size {
                    token: filesize.map_or("no".into(), |n| n.to_string()),
                    body: size,
                }))
            }
        }
    }

    /// A chunked body that outgrew `max_size(limit)`: for a token below `limit`, the size it
    /// is for is the limit it broke.
    pub fn explain(&self, e: Error, limit: u64) -> Error {
        match (e, &self.check) {
            (Error::TooLarge { size, .. }, Check::Token { filesize }) if filesize.is_none_or(|n| n < limit) => {
                Error::mismatch(jwt::Mismatch::Size {
                    token: filesize.map_or("no".into(), |n| n.to_string()),
                    body: size,
                })
            }
            (e, _) => e,
        }
    }
}

/// 403 unless `sig` signs this upload with one of `keys`; the refusal names what was checked,
/// so an operator can see which side disagrees (never a valid signature).
fn check_signature(keys: &Keys, sig: &Signature, path: &StorePath, size: u64, content_type: &[u8]) -> Result<()> {
    if let Some(key) = keys.verify(sig, path.as_str(), size, content_type) {
        tracing::debug!(key = %Keys::name(key), "signature verified");
        return Ok(());
    }
    let (param, path) = (sig.proto.param(), path.as_str());
    Err(Error::Forbidden(match sig.proto {
        Proto::V => format!("{param} signature mismatch for path {path:?} size {size}"),
        _ => {
            let ct = String::from_utf8_lossy(content_type);
            format!("{param} signature mismatch for path {path:?} size {size} content type {ct:?}")
        }
    }))
}
