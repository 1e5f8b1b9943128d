//! PUT: authorize, then stream the body into a preallocated temporary file and publish it
//! (DESIGN.md §2–§4).

use crate::auth::{self, Signature};
use crate::budget::Hold;
use crate::conn::{BodySink, Conn, Outcome, Socket};
use crate::error::{Error, Result};
use crate::http::{response, Body, Head};
use crate::path::{self, PathError, StorePath};
use crate::storage::MAX_CONTENT_TYPE;

/// Bodies above this size are checked for a conflict before they are read.
const EARLY_CONFLICT_CHECK: u64 = 64 * 1024;

pub async fn put<S: Socket>(conn: &mut Conn<'_, S>, head: &Head) -> Result<Outcome> {
    let shared = conn.shared;
    let cfg = &shared.config;
    let (raw_path, query) = path::split_target(&head.target);
    let path = path::store_path(raw_path, &shared.prefix).map_err(|e| match e {
        PathError::NotUnderPrefix => Error::NotFound,
        e => Error::BadPath(e),
    })?;
    let content_type = head.content_type.as_deref().unwrap_or(auth::DEFAULT_CONTENT_TYPE);
    if content_type.len() > MAX_CONTENT_TYPE {
        return Err(Error::BadRequest("Content-Type longer than 1024 bytes".into()));
    }
    let sig =
        auth::signature_from_query(query).ok_or_else(|| Error::Forbidden("no v, v2 or token parameter".into()))?;
    let max = cfg.upload_max_size.0;

    let size = match head.body {
        Body::None => return Err(Error::LengthRequired),
        Body::Length(size) => {
            check_signature(shared.config.secret.as_bytes(), &sig, &path, size, content_type)?;
            if size > max {
                return Err(Error::TooLarge { size, max });
            }
            let upload = shared
                .store
                .begin(&path, Some(size), head.expect_continue || size > EARLY_CONFLICT_CHECK)?;
            if head.expect_continue {
                conn.send_continue().await?;
            }
            conn.body_to_file(&upload, size).await?;
            upload.publish(&path, size, content_type).await?;
            size
        }
        // No size up front: the signature can only be checked once the last chunk arrived,
        // and before anything becomes visible. Until then the body claims no path and is
        // held within the unverified-bytes budget.
        Body::Chunked => {
            let upload = shared.store.begin_unverified(&path)?;
            if head.expect_continue {
                conn.send_continue().await?;
            }
            let mut sink = Unverified(shared.unverified.hold(conn.client));
            let size = conn.chunked_at(&upload, 0, max, &mut sink).await?;
            check_signature(shared.config.secret.as_bytes(), &sig, &path, size, content_type)?;
            drop(sink);
            upload.publish(&path, size, content_type).await?;
            size
        }
    };
    let close = conn.closing(head);
    response::simple(&mut conn.wbuf, 201, &[], "", close);
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

pub fn check_signature(secret: &[u8], sig: &Signature, path: &StorePath, size: u64, content_type: &[u8]) -> Result<()> {
    if auth::verify(secret, sig, path.as_str(), size, content_type) {
        return Ok(());
    }
    // The inputs we signed, so an admin can see which side disagrees; never a valid signature.
    let ct = String::from_utf8_lossy(content_type);
    Err(Error::Forbidden(match sig.proto {
        auth::Proto::V => format!(
            "{} signature mismatch for path {:?} size {}",
            sig.proto.param(),
            path.as_str(),
            size
        ),
        _ => format!(
            "{} signature mismatch for path {:?} size {} content type {:?}",
            sig.proto.param(),
            path.as_str(),
            size,
            ct
        ),
    }))
}
