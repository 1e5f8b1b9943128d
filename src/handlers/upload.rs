//! PUT: authorize (a signed URL or a Bearer token), then stream the body into a preallocated
//! temporary file and publish it (docs/protocol.md, "Signatures", "Bearer tokens", "Storage").

use crate::app::App;
use crate::auth;
use crate::error::{Error, Result};
use crate::http::{response, Body, Head};
use crate::limits::Hold;
use crate::storage::MAX_CONTENT_TYPE;

use super::grant::grant;
use super::quota::{admit, recorded, Reserving};
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
    let uploader = grant.meta.uploader.as_deref();
    let (size, reservation) = match head.body {
        Body::None => return Err(Error::LengthRequired),
        Body::Length(size) => {
            grant.check_size(&app.keys, size)?;
            if size > max {
                return Err(Error::TooLarge { size, max });
            }
            let reservation = admit(app, uploader, size).await?;
            let early = head.expect_continue || size > EARLY_CONFLICT_CHECK;
            let upload = app.store.begin(path, Some(size), early, &grant.meta)?;
            if head.expect_continue {
                ex.send_continue().await?;
            }
            ex.body_at(&upload, 0, size, &mut Plain).await?;
            upload.publish(path, size).await?;
            (size, reservation)
        }
        // A token vouches for the upload before its body: it claims its path like any signed
        // upload, and the body may be as long as the token says.
        Body::Chunked if grant.verified() => {
            let mut sink = Reserving {
                app,
                reservation: admit(app, uploader, 0).await?,
                inner: Plain,
            };
            let upload = app.store.begin(path, None, true, &grant.meta)?;
            if head.expect_continue {
                ex.send_continue().await?;
            }
            let size = ex
                .chunked_at(&upload, 0, max, &mut sink)
                .await
                .map_err(|e| grant.explain(e, app.config.upload_max_size.0))?;
            grant.check_size(&app.keys, size)?;
            upload.publish(path, size).await?;
            (size, sink.reservation)
        }
        // No size up front: the signature can only be checked once the last chunk arrived,
        // and before anything becomes visible. Until then the body claims no path and is
        // held within the unverified-bytes budget.
        Body::Chunked => {
            // Whose upload it is counts only once the signature says so: until then the
            // body reserves against StoreMaxSize alone.
            let mut sink = Reserving {
                app,
                reservation: admit(app, None, 0).await?,
                inner: Unverified(app.unverified.hold(ex.client())),
            };
            let upload = app.store.begin_unverified(path, &grant.meta)?;
            if head.expect_continue {
                ex.send_continue().await?;
            }
            let size = ex.chunked_at(&upload, 0, max, &mut sink).await?;
            grant.check_size(&app.keys, size)?;
            drop(sink);
            let reservation = admit(app, uploader, size).await?;
            upload.publish(path, size).await?;
            (size, reservation)
        }
    };
    recorded(app, path, size, &grant.meta, Some(reservation)).await;
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
