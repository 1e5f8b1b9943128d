//! OPTIONS: a browser's CORS preflight (and a tus client's discovery of what we support). The
//! CORS headers themselves are on every response (`http::response`); a preflight for a tus
//! request gets the tus set.

use crate::app::App;
use crate::http::response::{self, ResponseHead, TUS_CORS};
use crate::http::Head;

use super::tus::{self, headers::is_tus};
use super::{Exchange, Outcome};

pub fn options<E: Exchange>(app: &App, head: &Head, ex: &mut E) -> Outcome {
    let close = ex.closing(head);
    let out = ex.response();
    let mut h = if is_tus(head) {
        ResponseHead::with_cors(out, 204, TUS_CORS)
    } else {
        ResponseHead::new(out, 204)
    };
    h = h.header("Allow", response::ALLOW);
    if app.config.resumable_uploads {
        h = h
            .header("Tus-Resumable", tus::VERSION)
            .header("Tus-Version", tus::VERSION)
            .header("Tus-Extension", tus::EXTENSIONS)
            .header("Tus-Max-Size", app.config.upload_max_size.0)
            .header("Tus-Checksum-Algorithm", "sha256");
    }
    h.finish(Some(0), close);
    Outcome::status(204)
}
