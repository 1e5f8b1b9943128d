//! `DELETE <prefix><path>?token=<hex>`: Metronome's signed deletion (docs/protocol.md,
//! "Deletion"), on while `DeleteSecret` is set. The token is `HMAC-SHA256(Secret, path "\0"
//! DeleteSecret)` over the decoded store path; the file goes durably, with the directories it
//! leaves empty, and stops being served at once.

use crate::app::App;
use crate::auth::Keys;
use crate::error::{Error, Result};
use crate::http::{response, Head};
use crate::logging::Escaped;
use crate::path;
use crate::retention::Why;
use crate::storage::Removed;

use super::{Exchange, Outcome};

pub async fn delete<E: Exchange>(app: &App, head: &Head, ex: &mut E) -> Result<Outcome> {
    let (raw_path, query) = path::split_target(&head.target);
    let path = path::store_path(raw_path, &app.prefix).map_err(|e| Error::path(e, true))?;
    let token = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .ok_or_else(|| Error::Forbidden("DELETE without a token parameter".into()))?;
    let Some(key) = app
        .keys
        .verify_deletion(token, path.as_str(), &app.config.delete_secret)
    else {
        return Err(Error::Forbidden(format!(
            "deletion token mismatch for path {:?}",
            path.as_str()
        )));
    };
    tracing::debug!(key = %Keys::name(key), path = %Escaped(path.as_str()), "deletion token verified");
    let status = match app.retention.delete(path, Why::Request).await? {
        Removed::File(_) => 204,
        Removed::Nothing => return Err(Error::NotFound),
    };
    let close = ex.closing(head);
    response::simple(ex.response(), status, &[], "", close);
    Ok(Outcome::status(status))
}
