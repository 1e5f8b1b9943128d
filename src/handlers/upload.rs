//! PUT: authorize, then stream the body into a preallocated temporary file and publish it
//! (docs/protocol.md, "Signatures" and "Storage").

use crate::app::App;
use crate::auth::{self, Signature};
use crate::error::{Error, Result};
use crate::http::{response, Body, Head};
use crate::limits::Hold;
use crate::path::{self, StorePath};
use crate::storage::MAX_CONTENT_TYPE;

use super::{BodySink, Exchange, Outcome, Plain};

/// Bodies above this size are checked for a conflict before they are read.
const EARLY_CONFLICT_CHECK: u64 = 64 * 1024;

/// The store path a signed upload URL names, and the signature it carries (403 without one).
pub fn signed_target(app: &App, head: &Head) -> Result<(StorePath, Signature)> {
    let (raw_path, query) = path::split_target(&head.target);
    let path = path::store_path(raw_path, &app.prefix).map_err(|e| Error::path(e, false))?;
    let sig =
        auth::signature_from_query(query).ok_or_else(|| Error::Forbidden("no v, v2 or token parameter".into()))?;
    Ok((path, sig))
}

pub async fn put<E: Exchange>(app: &App, head: &Head, ex: &mut E) -> Result<Outcome> {
    let (path, sig) = signed_target(app, head)?;
    let content_type = head.content_type.as_deref().unwrap_or(auth::DEFAULT_CONTENT_TYPE);
    if content_type.len() > MAX_CONTENT_TYPE {
        return Err(Error::BadRequest("Content-Type longer than 1024 bytes".into()));
    }
    let secret = app.config.secret.as_bytes();
    let max = app.config.upload_max_size.0;
    let size = match head.body {
        Body::None => return Err(Error::LengthRequired),
        Body::Length(size) => {
            check_signature(secret, &sig, &path, size, content_type)?;
            if size > max {
                return Err(Error::TooLarge { size, max });
            }
            let early = head.expect_continue || size > EARLY_CONFLICT_CHECK;
            let upload = app.store.begin(&path, Some(size), early, content_type)?;
            if head.expect_continue {
                ex.send_continue().await?;
            }
            ex.body_at(&upload, 0, size, &mut Plain).await?;
            upload.publish(&path, size).await?;
            size
        }
        // No size up front: the signature can only be checked once the last chunk arrived,
        // and before anything becomes visible. Until then the body claims no path and is
        // held within the unverified-bytes budget.
        Body::Chunked => {
            let upload = app.store.begin_unverified(&path, content_type)?;
            if head.expect_continue {
                ex.send_continue().await?;
            }
            let mut sink = Unverified(app.unverified.hold(ex.client()));
            let size = ex.chunked_at(&upload, 0, max, &mut sink).await?;
            check_signature(secret, &sig, &path, size, content_type)?;
            drop(sink);
            upload.publish(&path, size).await?;
            size
        }
    };
    let close = ex.closing(head);
    response::simple(ex.response(), 201, &[], "", close);
    Ok(Outcome {
        status: 201,
        bytes: size,
        published: Some(size),
    })
}

/// A body no signature vouches for yet: each read must first fit the unverified-bytes budget.
struct Unverified<'a>(Hold<'a>);

impl BodySink for Unverified<'_> {
    fn cover(&mut self, bytes: u64) -> Result<()> {
        self.0.cover(bytes)
    }
}

/// 403 unless `sig` signs this upload; the refusal names what was checked, so an operator can
/// see which side disagrees (never a valid signature).
pub fn check_signature(secret: &[u8], sig: &Signature, path: &StorePath, size: u64, content_type: &[u8]) -> Result<()> {
    if auth::verify(secret, sig, path.as_str(), size, content_type) {
        return Ok(());
    }
    let (param, path) = (sig.proto.param(), path.as_str());
    Err(Error::Forbidden(match sig.proto {
        auth::Proto::V => format!("{param} signature mismatch for path {path:?} size {size}"),
        _ => {
            let ct = String::from_utf8_lossy(content_type);
            format!("{param} signature mismatch for path {path:?} size {size} content type {ct:?}")
        }
    }))
}
