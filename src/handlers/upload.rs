//! PUT: authorize (a signed URL or a Bearer token), then stream the body into a preallocated
//! temporary file and publish it (docs/protocol.md, "Signatures", "Bearer tokens", "Storage").

use crate::app::App;
use crate::auth;
use crate::error::{Error, Result};
use crate::http::{response, Body, Head};
use crate::limits::Hold;
use crate::storage::MAX_CONTENT_TYPE;

use super::grant::grant;
use super::{BodySink, Exchange, Outcome, Plain};

/// Bodies above this size are checked for a conflict before they are read.
const EARLY_CONFLICT_CHECK: u64 = 64 * 1024;

pub async fn put<E: Exchange>(app: &App, head: &Head, ex: &mut E) -> Result<Outcome> {
    let requested_type = head.content_type.as_deref().unwrap_or(auth::DEFAULT_CONTENT_TYPE);
    let grant = grant(app, head)?.declared(requested_type);
    if grant.meta.content_type.len() > MAX_CONTENT_TYPE {
        return Err(Error::BadRequest("Content-Type longer than 1024 bytes".into()));
    }
    let path = &grant.path;
    let max = grant.max_size(app.config.upload_max_size.0);
    let size = match head.body {
        Body::None => return Err(Error::LengthRequired),
        Body::Length(size) => {
            grant.check_size(&app.keys, size)?;
            if size > max {
                return Err(Error::TooLarge { size, max });
            }
            let early = head.expect_continue || size > EARLY_CONFLICT_CHECK;
            let upload = app.store.begin(path, Some(size), early, &grant.meta)?;
            if head.expect_continue {
                ex.send_continue().await?;
            }
            ex.body_at(&upload, 0, size, &mut Plain).await?;
            upload.publish(path, size).await?;
            size
        }
        // A token vouches for the upload before its body: it claims its path like any signed
        // upload, and the body may be as long as the token says.
        Body::Chunked if grant.verified() => {
            let upload = app.store.begin(path, None, true, &grant.meta)?;
            if head.expect_continue {
                ex.send_continue().await?;
            }
            let size = ex
                .chunked_at(&upload, 0, max, &mut Plain)
                .await
                .map_err(|e| grant.explain(e, app.config.upload_max_size.0))?;
            grant.check_size(&app.keys, size)?;
            upload.publish(path, size).await?;
            size
        }
        // No size up front: the signature can only be checked once the last chunk arrived,
        // and before anything becomes visible. Until then the body claims no path and is
        // held within the unverified-bytes budget.
        Body::Chunked => {
            let upload = app.store.begin_unverified(path, &grant.meta)?;
            if head.expect_continue {
                ex.send_continue().await?;
            }
            let mut sink = Unverified(app.unverified.hold(ex.client()));
            let size = ex.chunked_at(&upload, 0, max, &mut sink).await?;
            grant.check_size(&app.keys, size)?;
            drop(sink);
            upload.publish(path, size).await?;
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
