//! `Content-Type` values as RFC 9110 §8.3.1 defines them: exactly one
//! `type "/" subtype *( OWS ";" OWS parameter )`, parameters as `token "=" ( token /
//! quoted-string )`. An uploader controls the header, and a browser that is handed a list
//! (`image/png, text/html`) may pick the dangerous member, so anything that is not one media
//! type is treated as no type at all (docs/protocol.md, "Content types").

/// The type a file is stored and served with when its declared one is absent, empty, or not
/// exactly one media type.
pub const OCTET_STREAM: &[u8] = b"application/octet-stream";

/// One parsed media type: its `type/subtype` (the essence), parameters validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    /// The whole value, surrounding whitespace trimmed.
    pub value: &'a [u8],
    pub kind: &'a [u8],
    pub subtype: &'a [u8],
}

use super::syntax::{ows_len, token_len, value_len};

/// Parse `value` as exactly one media type; None for anything else (a list, a bare word,
/// control characters, non-ASCII bytes, an unterminated quote).
pub fn parse(value: &[u8]) -> Option<MediaType<'_>> {
    let value = value.trim_ascii();
    let kind_len = token_len(value);
    if kind_len == 0 || value.get(kind_len) != Some(&b'/') {
        return None;
    }
    let rest = &value[kind_len + 1..];
    let sub_len = token_len(rest);
    if sub_len == 0 {
        return None;
    }
    let mut s = &rest[sub_len..];
    loop {
        s = &s[ows_len(s)..];
        if s.is_empty() {
            break;
        }
        if s[0] != b';' {
            return None;
        }
        s = &s[1..];
        s = &s[ows_len(s)..];
        // `text/plain;` and `a/b; ; c=d`: empty parameters are tolerated, as browsers do.
        if s.is_empty() || s[0] == b';' {
            continue;
        }
        let name = token_len(s);
        if name == 0 || s.get(name) != Some(&b'=') {
            return None;
        }
        s = &s[name + 1..];
        match value_len(s) {
            0 => return None,
            n => s = &s[n..],
        }
    }
    Some(MediaType {
        value,
        kind: &value[..kind_len],
        subtype: &rest[..sub_len],
    })
}

/// What a file is stored with, given the request's `Content-Type` (None: absent): the value
/// itself when it is exactly one media type, else `application/octet-stream`.
pub fn stored(declared: Option<&[u8]>) -> &[u8] {
    declared.and_then(parse).map_or(OCTET_STREAM, |m| m.value)
}

impl MediaType<'_> {
    /// Media a browser may show in place: images, audio, video and plain text, but not SVG,
    /// which is a document that can carry scripts and links. Everything else downloads.
    pub fn is_inline(&self) -> bool {
        let kind = |k: &[u8]| self.kind.eq_ignore_ascii_case(k);
        let sub = |s: &[u8]| self.subtype.eq_ignore_ascii_case(s);
        (kind(b"image") && !sub(b"svg+xml")) || kind(b"video") || kind(b"audio") || (kind(b"text") && sub(b"plain"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn essence(v: &str) -> Option<(String, String)> {
        parse(v.as_bytes()).map(|m| {
            (
                String::from_utf8_lossy(m.kind).into_owned(),
                String::from_utf8_lossy(m.subtype).into_owned(),
            )
        })
    }

    #[test]
    fn one_media_type_parses() {
        assert_eq!(essence("image/png"), Some(("image".into(), "png".into())));
        assert_eq!(
            essence(" Text/Plain ; charset=UTF-8 "),
            Some(("Text".into(), "Plain".into()))
        );
        assert_eq!(essence("audio/ogg; codecs=opus"), Some(("audio".into(), "ogg".into())));
        assert!(
            essence("text/plain; a=\"x, y; z\"").is_some(),
            "a comma inside a quoted string"
        );
        assert!(essence("text/plain; a=\"q\\\"uote\"").is_some());
        assert!(essence("text/plain;").is_some());
        assert!(essence("application/vnd.openxmlformats-officedocument.wordprocessingml.document").is_some());
        assert_eq!(parse(b" image/png\t").unwrap().value, b"image/png");
    }

    #[test]
    fn lists_and_garbage_do_not() {
        for bad in [
            "image/png, text/html",
            "text/plain; a=b, text/html",
            "text/plain, text/html; a=b",
            "",
            "png",
            "image/",
            "/png",
            "image/png/x",
            "image /png",
            "image/png; a",
            "image/png; a=",
            "image/png; =b",
            "image/png; a=\"unterminated",
            "image/png; a=b c",
            "image/png\r\nX-Evil: 1",
            "image/png; a=\"\u{e9}\"",
            "image/pn\u{e9}",
            "text/html\x0b",
        ] {
            assert_eq!(essence(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn storage_falls_back_to_octet_stream() {
        assert_eq!(stored(None), OCTET_STREAM);
        assert_eq!(stored(Some(b"")), OCTET_STREAM);
        assert_eq!(stored(Some(b"image/png, text/html")), OCTET_STREAM);
        assert_eq!(stored(Some(b"image/jpeg")), b"image/jpeg");
        assert_eq!(
            stored(Some(b" text/plain; charset=utf-8 ")),
            b"text/plain; charset=utf-8"
        );
    }

    #[test]
    fn inline_only_for_passive_media() {
        let inline = |v: &str| parse(v.as_bytes()).is_some_and(|m| m.is_inline());
        assert!(inline("image/jpeg"));
        assert!(inline("Video/MP4"));
        assert!(inline("audio/ogg; codecs=opus"));
        assert!(inline("text/plain; charset=utf-8"));
        assert!(!inline("image/svg+xml"));
        assert!(!inline("IMAGE/SVG+XML; charset=utf-8"));
        assert!(!inline("text/html"));
        assert!(!inline("application/pdf"));
        assert!(!inline("text/plainx"));
        assert!(!inline("image/png, text/html"));
        assert!(!inline("text/plain; a=b, text/html"));
    }
}
