//! Where a request goes: `route` decides from the parsed head alone (no I/O), `handle` calls the
//! handler. Every route of the server is in these two functions.

use crate::app::App;
pub use crate::app::Features;
use crate::error::{Error, Result};
use crate::handlers::tus::{self, headers};
use crate::handlers::{delete, download, options, upload, Exchange, Outcome};
use crate::http::{Head, Method};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// PUT below the prefix: a signed upload.
    Put,
    /// GET or HEAD below the prefix: a download.
    Get,
    /// A CORS preflight or tus discovery, anywhere.
    Options,
    /// POST that speaks tus: create a resumable upload.
    TusCreate,
    /// HEAD, PATCH or DELETE on a resumable upload's URL.
    TusResource { id: &'a str, method: Method },
    /// DELETE below the prefix with `DeleteSecret` set: Metronome's signed deletion.
    Delete,
    /// 405 with `Allow`.
    NotAllowed,
}

impl Route<'_> {
    /// Whether the request writes an upload body (what `MaxConcurrentUploadsPerIP` counts).
    pub fn uploads(&self) -> bool {
        matches!(
            self,
            Route::Put
                | Route::TusCreate
                | Route::TusResource {
                    method: Method::Patch,
                    ..
                }
        )
    }
}

/// The route of a request below `prefix`. The method is the one the request stands for
/// (`X-HTTP-Method-Override` applied). A POST that does not speak tus is one of the "other
/// methods" (405), and so is a DELETE while signed deletion is off.
pub fn route<'a>(head: &'a Head, prefix: &str, features: Features) -> Route<'a> {
    let method = headers::method(head);
    if features.resumable {
        if let Some(id) = tus::resource_id(prefix, &head.target) {
            return match method {
                Method::Options => Route::Options,
                Method::Head | Method::Patch | Method::Delete => Route::TusResource { id, method },
                _ => Route::NotAllowed,
            };
        }
    }
    match method {
        Method::Put => Route::Put,
        Method::Get | Method::Head => Route::Get,
        Method::Options => Route::Options,
        Method::Post if headers::speaks_tus(head) => Route::TusCreate,
        Method::Delete if features.deletion => Route::Delete,
        Method::Post | Method::Patch | Method::Delete | Method::Other => Route::NotAllowed,
    }
}

pub async fn handle<E: Exchange>(app: &App, head: &Head, route: Route<'_>, ex: &mut E) -> Result<Outcome> {
    match route {
        Route::Put => upload::put(app, head, ex).await,
        Route::Get => download::get(app, head, ex).await,
        Route::Options => Ok(options::options(app, head, ex)),
        Route::TusCreate => tus::create(app, head, ex).await,
        Route::TusResource { id, method } => tus::resource(app, head, method, id, ex).await,
        Route::Delete => delete::delete(app, head, ex).await,
        Route::NotAllowed => Err(Error::MethodNotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{parse_head, Limits};

    const LIMITS: Limits = Limits {
        max_head: 16384,
        max_url: 8192,
    };
    const ID: &str = "0123456789abcdef";

    fn on(resumable: bool) -> Features {
        Features {
            resumable,
            deletion: false,
        }
    }

    fn routed(request: &str, resumable: bool) -> String {
        let (head, _) = parse_head(request.as_bytes(), LIMITS).unwrap().unwrap();
        format!("{:?}", route(&head, "/upload/", on(resumable)))
    }

    fn req(method: &str, target: &str, headers: &str) -> String {
        format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n")
    }

    #[test]
    fn plain_routes() {
        assert_eq!(routed(&req("PUT", "/upload/a/b.txt?v=1", ""), true), "Put");
        assert_eq!(routed(&req("GET", "/upload/a/b.txt", ""), true), "Get");
        assert_eq!(routed(&req("HEAD", "/upload/a/b.txt", ""), true), "Get");
        assert_eq!(routed(&req("OPTIONS", "/upload/a/b.txt", ""), true), "Options");
        assert_eq!(routed(&req("DELETE", "/upload/a/b.txt", ""), true), "NotAllowed");
        assert_eq!(routed(&req("BREW", "/upload/a", ""), true), "NotAllowed");
        // Outside the prefix still routes: the handler answers 404 for the path.
        assert_eq!(routed(&req("GET", "/elsewhere", ""), true), "Get");
        // Signed deletion, once switched on.
        let (head, _) = parse_head(req("DELETE", "/upload/a/b.txt?token=1", "").as_bytes(), LIMITS)
            .unwrap()
            .unwrap();
        let deletion = Features {
            resumable: true,
            deletion: true,
        };
        assert_eq!(route(&head, "/upload/", deletion), Route::Delete);
    }

    #[test]
    fn tus_routes() {
        let tus = "Tus-Resumable: 1.0.0\r\n";
        assert_eq!(routed(&req("POST", "/upload/a?v2=1", tus), true), "TusCreate");
        assert_eq!(
            routed(&req("POST", "/upload/a?v2=1", ""), true),
            "NotAllowed",
            "POST without tus"
        );
        let url = format!("/upload/.hmac-file-server/tus/{ID}");
        for (m, variant) in [("HEAD", "Head"), ("PATCH", "Patch"), ("DELETE", "Delete")] {
            let want = format!("TusResource {{ id: \"{ID}\", method: {variant} }}");
            assert_eq!(routed(&req(m, &url, tus), true), want, "{m}");
        }
        assert_eq!(routed(&req("OPTIONS", &url, ""), true), "Options");
        assert_eq!(routed(&req("GET", &url, tus), true), "NotAllowed");
        assert_eq!(routed(&req("PUT", &url, tus), true), "NotAllowed");
        // Browsers that only pass GET and POST: the override names the method.
        let over = format!("{tus}X-HTTP-Method-Override: PATCH\r\n");
        assert_eq!(
            routed(&req("POST", &url, &over), true),
            format!("TusResource {{ id: \"{ID}\", method: Patch }}")
        );
        // Resumable uploads off: an upload URL is just a path in the reserved directory.
        assert_eq!(routed(&req("HEAD", &url, tus), false), "Get");
        assert_eq!(routed(&req("PATCH", &url, tus), false), "NotAllowed");
    }

    #[test]
    fn what_counts_as_an_upload() {
        let (head, _) = parse_head(req("PUT", "/upload/a", "").as_bytes(), LIMITS)
            .unwrap()
            .unwrap();
        assert!(route(&head, "/upload/", on(true)).uploads());
        let url = format!("/upload/.hmac-file-server/tus/{ID}");
        let (head, _) = parse_head(req("PATCH", &url, "").as_bytes(), LIMITS).unwrap().unwrap();
        assert!(route(&head, "/upload/", on(true)).uploads());
        let (head, _) = parse_head(req("HEAD", &url, "").as_bytes(), LIMITS).unwrap().unwrap();
        assert!(!route(&head, "/upload/", on(true)).uploads());
    }
}
