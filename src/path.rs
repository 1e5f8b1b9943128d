//! Request-target → relative store path: percent-decoding and the rules that keep every
//! path inside `StoreDir`. Pure functions, no I/O.

/// The top-level directory inside `StoreDir` that holds temporaries and server state.
/// No request path may name it, so nothing in it is reachable over HTTP.
pub const RESERVED_DIR: &str = ".hmac-file-server";

/// Longest name one path segment may have (Linux NAME_MAX).
const MAX_SEGMENT: usize = 255;
/// Longest decoded path (Linux PATH_MAX minus room for `StoreDir`).
const MAX_PATH: usize = 3072;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is not below the upload prefix")]
    NotUnderPrefix,
    #[error("bad percent-encoding")]
    BadEncoding,
    #[error("path is not valid UTF-8")]
    NotUtf8,
    #[error("empty path or empty segment")]
    EmptySegment,
    #[error("'.' or '..' segment")]
    DotSegment,
    #[error("NUL, control character or backslash in path")]
    BadCharacter,
    #[error("path segment or path too long")]
    TooLong,
    #[error("path names the server's reserved directory")]
    Reserved,
}

/// A decoded, validated path relative to `StoreDir` (what the signature covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorePath(String);

impl StorePath {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A path that was validated once and kept (a resumable upload's session), checked again
    /// since it comes back from outside this process.
    pub fn from_stored(path: &str) -> Result<StorePath, PathError> {
        validate(path)?;
        Ok(StorePath(path.to_owned()))
    }

    /// Directory segments, then the file name.
    pub fn split(&self) -> (Vec<&str>, &str) {
        let mut segs: Vec<&str> = self.0.split('/').collect();
        let name = segs.pop().unwrap_or_default();
        (segs, name)
    }
}

/// Split a request target into its path and query (without the `?`).
pub fn split_target(target: &str) -> (&str, &str) {
    target.split_once('?').unwrap_or((target, ""))
}

/// Map the path part of a request target below `prefix` (e.g. "/upload/") to a store path.
pub fn store_path(raw_path: &str, prefix: &str) -> Result<StorePath, PathError> {
    let rest = raw_path.strip_prefix(prefix).ok_or(PathError::NotUnderPrefix)?;
    let decoded = percent_decode(rest.as_bytes())?;
    let decoded = String::from_utf8(decoded).map_err(|_| PathError::NotUtf8)?;
    validate(&decoded)?;
    Ok(StorePath(decoded))
}

fn validate(path: &str) -> Result<(), PathError> {
    if path.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    for (i, seg) in path.split('/').enumerate() {
        if seg.is_empty() {
            return Err(PathError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(PathError::DotSegment);
        }
        if seg.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
            return Err(PathError::BadCharacter);
        }
        if seg.len() > MAX_SEGMENT {
            return Err(PathError::TooLong);
        }
        // Case-insensitively: on a case-folding filesystem (ext4 casefold, a CIFS share)
        // `.HMAC-File-Server` opens the same directory.
        if i == 0 && seg.eq_ignore_ascii_case(RESERVED_DIR) {
            return Err(PathError::Reserved);
        }
    }
    Ok(())
}

/// Decode `%xx`/`%XX`; other bytes (raw UTF-8 included) pass through. A `%` not followed by
/// two hex digits is an error rather than a literal, so one path has one spelling.
pub fn percent_decode(input: &[u8]) -> Result<Vec<u8>, PathError> {
    let escapes_ok = input.iter().enumerate().filter(|(_, &b)| b == b'%').all(|(i, _)| {
        input
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return Err(PathError::BadEncoding);
    }
    Ok(percent_encoding::percent_decode(input).collect())
}

/// What a store path keeps unencoded in a URL: RFC 3986 unreserved characters and `/`.
const URL_PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// Percent-encode a decoded store path for a URL, in lowercase `%xx` as Prosody writes it.
pub fn percent_encode(path: &str) -> String {
    percent_encoding::utf8_percent_encode(path, URL_PATH)
        .map(|piece| match piece.starts_with('%') {
            true => std::borrow::Cow::Owned(piece.to_ascii_lowercase()),
            false => std::borrow::Cow::Borrowed(piece),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        store_path(raw, "/upload/").unwrap().as_str().to_owned()
    }
    fn err(raw: &str) -> PathError {
        store_path(raw, "/upload/").unwrap_err()
    }

    #[test]
    fn decodes_lower_upper_and_raw_utf8() {
        assert_eq!(ok("/upload/4a77/tr%c3%a8s%20cool.jpg"), "4a77/très cool.jpg");
        assert_eq!(ok("/upload/4a77/tr%C3%A8s%20cool.jpg"), "4a77/très cool.jpg");
        assert_eq!(ok("/upload/4a77/très cool.jpg"), "4a77/très cool.jpg");
        assert_eq!(ok("/upload/a/b/c/d.txt"), "a/b/c/d.txt");
        assert_eq!(ok("/upload/.profile"), ".profile");
    }

    #[test]
    fn traversal_in_every_spelling_is_refused() {
        for raw in [
            "/upload/../etc/passwd",
            "/upload/a/../../x",
            "/upload/%2e%2e/x",
            "/upload/%2E%2E/x",
            "/upload/a%2f..%2f..%2fx",
            "/upload/a/%2e/b",
            "/upload/./a",
        ] {
            assert_eq!(err(raw), PathError::DotSegment, "{raw}");
        }
        assert_eq!(err("/upload//etc/passwd"), PathError::EmptySegment);
        assert_eq!(err("/upload/%2fetc/passwd"), PathError::EmptySegment);
        assert_eq!(err("/upload/a//b"), PathError::EmptySegment);
        assert_eq!(err("/upload/a/"), PathError::EmptySegment);
        assert_eq!(err("/upload/"), PathError::EmptySegment);
        assert_eq!(err("/upload/a%00b"), PathError::BadCharacter);
        assert_eq!(err("/upload/a%5cb"), PathError::BadCharacter);
        assert_eq!(err("/upload/a\\b"), PathError::BadCharacter);
        assert_eq!(err("/upload/a%0ab"), PathError::BadCharacter);
        assert_eq!(err("/upload/a%zzb"), PathError::BadEncoding);
        assert_eq!(err("/upload/a%4"), PathError::BadEncoding);
        assert_eq!(err("/upload/%ff%fe"), PathError::NotUtf8);
        assert_eq!(err("/other/a"), PathError::NotUnderPrefix);
        assert_eq!(err("/upload"), PathError::NotUnderPrefix);
        assert_eq!(err(&format!("/upload/{}", "a".repeat(256))), PathError::TooLong);
        assert_eq!(err("/upload/.hmac-file-server/tmp/x"), PathError::Reserved);
        assert_eq!(err("/upload/%2ehmac-file-server/x"), PathError::Reserved);
        assert_eq!(err("/upload/.HMAC-File-Server/sessions/journal"), PathError::Reserved);
        assert_eq!(err("/upload/.hmac-FILE-server"), PathError::Reserved);
        assert_eq!(ok("/upload/a/.hmac-file-server"), "a/.hmac-file-server");
    }

    #[test]
    fn split_parts() {
        let p = store_path("/upload/a/b/c.txt", "/upload/").unwrap();
        assert_eq!(p.split(), (vec!["a", "b"], "c.txt"));
        assert_eq!(split_target("/upload/a?v=1&x"), ("/upload/a", "v=1&x"));
        assert_eq!(split_target("/upload/a"), ("/upload/a", ""));
        assert_eq!(store_path("/x.bin", "/").unwrap().as_str(), "x.bin");
        let raw = "4a77/très cool?#%.jpg";
        assert_eq!(percent_encode(raw), "4a77/tr%c3%a8s%20cool%3f%23%25.jpg");
        assert_eq!(
            store_path(&format!("/upload/{}", percent_encode(raw)), "/upload/")
                .unwrap()
                .as_str(),
            raw
        );
    }
}
