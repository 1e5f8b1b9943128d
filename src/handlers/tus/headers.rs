//! The tus request headers: `Tus-Resumable`, `Upload-Length`/`-Offset`, `Upload-Metadata`,
//! `Upload-Checksum`, and `X-HTTP-Method-Override` for clients behind GET/POST-only proxies.
//! Pure parsing.

use base64::Engine;

use super::VERSION;
use crate::auth;
use crate::error::{Error, Result};
use crate::http::{Head, Method, TusHeaders};
use crate::storage::MAX_CONTENT_TYPE;

/// `Upload-Metadata`: comma-separated `key base64value` pairs (the value may be absent).
pub fn parse_metadata(header: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for pair in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once(' ').unwrap_or((pair, ""));
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(Error::BadRequest("Upload-Metadata: bad key".into()));
        }
        if out.iter().any(|(k, _)| k == key) {
            return Err(Error::BadRequest(format!("Upload-Metadata: key {key:?} twice")));
        }
        let value = base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|_| Error::BadRequest(format!("Upload-Metadata: value of {key:?} is not base64")))?;
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// The content type an upload is signed and stored with: metadata `filetype`, else the
/// default. It is served back as a header, so only visible ASCII and spaces are allowed.
pub fn content_type(metadata: &[(String, Vec<u8>)]) -> Result<String> {
    let Some((_, v)) = metadata.iter().find(|(k, _)| k == "filetype") else {
        return Ok(String::from_utf8_lossy(auth::DEFAULT_CONTENT_TYPE).into_owned());
    };
    if v.len() > MAX_CONTENT_TYPE || !v.iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
        return Err(Error::BadRequest(
            "Upload-Metadata: filetype is not a valid content type".into(),
        ));
    }
    Ok(String::from_utf8_lossy(v).into_owned())
}

/// `Upload-Checksum: sha256 <base64>`; any other algorithm is 400 (tus checksum extension).
pub fn parse_checksum(header: &str) -> Result<[u8; 32]> {
    let (algo, value) = header
        .trim()
        .split_once(' ')
        .ok_or_else(|| Error::BadRequest("Upload-Checksum: expected \"sha256 <base64>\"".into()))?;
    if !algo.eq_ignore_ascii_case("sha256") {
        return Err(Error::BadRequest(format!(
            "Upload-Checksum: algorithm {algo:?} not supported (sha256 is)"
        )));
    }
    let digest = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|d| <[u8; 32]>::try_from(d).ok())
        .ok_or_else(|| Error::BadRequest("Upload-Checksum: not a base64 SHA-256 digest".into()))?;
    Ok(digest)
}

pub fn parse_number(value: Option<&str>, name: &str) -> Result<u64> {
    let v = value
        .ok_or_else(|| Error::BadRequest(format!("{name} required")))?
        .trim();
    if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadRequest(format!("{name} is not a non-negative integer")));
    }
    v.parse().map_err(|_| Error::BadRequest(format!("{name} too large")))
}

/// The method a request stands for: browsers and proxies that only pass GET and POST let
/// tus clients send `X-HTTP-Method-Override`.
pub fn method(head: &Head) -> Method {
    let over = head.tus.as_ref().and_then(|t| t.method_override.as_deref());
    match (head.method, over.map(str::trim)) {
        (Method::Post, Some(m)) if m.eq_ignore_ascii_case("PATCH") => Method::Patch,
        (Method::Post, Some(m)) if m.eq_ignore_ascii_case("DELETE") => Method::Delete,
        (Method::Post, Some(m)) if m.eq_ignore_ascii_case("HEAD") => Method::Head,
        (m, _) => m,
    }
}

/// Whether a request speaks tus (or is a browser's preflight for one): its responses get the
/// tus CORS headers.
pub fn is_tus(head: &Head) -> bool {
    let Some(t) = head.tus.as_ref() else { return false };
    let wants = |v: &Option<String>, any: &[&str]| {
        v.as_deref()
            .is_some_and(|v| any.iter().any(|a| v.to_ascii_lowercase().contains(a)))
    };
    t.resumable.is_some()
        || wants(&t.preflight_method, &["post", "patch", "delete"])
        || wants(&t.preflight_headers, &["tus-", "upload-"])
}

/// Whether the request carries Tus-Resumable (whatever its version).
pub fn speaks_tus(head: &Head) -> bool {
    head.tus.as_ref().is_some_and(|t| t.resumable.is_some())
}

/// Every tus request but OPTIONS must say `Tus-Resumable: 1.0.0` (else 412 with Tus-Version).
pub fn tus_headers(head: &Head) -> Result<&TusHeaders> {
    match head.tus.as_deref() {
        Some(t) if t.resumable.as_deref().map(str::trim) == Some(VERSION) => Ok(t),
        _ => Err(Error::TusVersion),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn metadata() {
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential, filetype aW1hZ2UvcG5n")
            .unwrap();
        assert_eq!(m[0], ("filename".into(), b"world_domination_plan.pdf".to_vec()));
        assert_eq!(m[1], ("is_confidential".into(), Vec::new()));
        assert_eq!(content_type(&m).unwrap(), "image/png");
        assert_eq!(content_type(&[]).unwrap(), "application/octet-stream");
        assert_eq!(parse_metadata("").unwrap(), vec![]);
        assert_eq!(parse_metadata("a !!!").unwrap_err().status(), 400);
        assert_eq!(parse_metadata("a YQ==,a YQ==").unwrap_err().status(), 400);
        // A header injection through the stored type is refused.
        let evil = vec![("filetype".to_owned(), b"text/plain\r\nX-Evil: 1".to_vec())];
        assert_eq!(content_type(&evil).unwrap_err().status(), 400);
    }

    #[test]
    fn checksums() {
        let d = parse_checksum("sha256 LCa0a2j/xo/5m0U8HTBBNBNCLXBkg7+g+YpeiGJm564=").unwrap();
        assert_eq!(hex::encode(d), hex::encode(Sha256::digest(b"foo")));
        assert_eq!(
            parse_checksum("sha1 C+7Hteo/D9vJXQ3UfzxbwnXaijM=")
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(parse_checksum("sha256 !!").unwrap_err().status(), 400);
        assert_eq!(parse_checksum("sha256").unwrap_err().status(), 400);
        assert_eq!(parse_checksum("sha256 Zm9v").unwrap_err().status(), 400, "not 32 bytes");
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(Some("0012"), "n").unwrap(), 12);
        assert_eq!(parse_number(Some("-1"), "n").unwrap_err().status(), 400);
        assert_eq!(parse_number(None, "n").unwrap_err().status(), 400);
    }
}
