//! Client-controlled text on its way into a log line. A path may hold any character but NUL
//! and C0 controls once decoded, and a terminal or viewer shown a raw C1 control (U+009B is
//! CSI), a bidi override (U+202E) or a line separator (U+2028) can be made to show a forged
//! or reordered line. Such characters are written as Rust's `\u{…}` escapes; quotes and
//! backslashes stay as they are, so ordinary paths read unchanged.

use std::fmt;

/// Displays the string with every non-printable character escaped.
pub struct Escaped<'a>(pub &'a str);

fn escaped(c: char) -> bool {
    // The common case, without the table: in ASCII exactly the controls are not printable.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    // Rust's own table of what is not printable: Cc, Cf (bidi controls among them), Zl, Zp,
    // unassigned; quotes and backslash are printable, only `escape_debug` quotes them.
    !matches!(c, '"' | '\'' | '\\') && c.escape_debug().len() > 1
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(escaped) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_debug())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Append `s` as `Escaped` shows it; printable ASCII, nearly every method and path, as it is.
pub fn push_escaped(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        out.extend_from_slice(s.as_bytes());
    } else {
        use std::io::Write;
        let _ = write!(out, "{}", Escaped(s));
    }
}

/// `s` as a JSON string, with the same characters escaped as `\uXXXX` (JSON readers restore
/// them; a raw line no longer shows them).
pub fn json_str(out: &mut Vec<u8>, s: &str) {
    use std::io::Write;
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            c if escaped(c) => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_escaped_exactly_where_the_table_says() {
        for b in 0u8..0x80 {
            let c = char::from(b);
            let by_table = !matches!(c, '"' | '\'' | '\\') && c.escape_debug().len() > 1;
            assert_eq!(escaped(c), by_table, "{b:#x}");
        }
    }

    #[test]
    fn pushed_text_is_the_displayed_text() {
        for raw in [
            "/upload/a b/c.jpg",
            "GET",
            "",
            "caf\u{e9}",
            "a\u{202e}b",
            "x\ty\u{7f}",
            "\"q\"\\",
        ] {
            let mut out = Vec::new();
            push_escaped(&mut out, raw);
            assert_eq!(String::from_utf8(out).unwrap(), Escaped(raw).to_string(), "{raw:?}");
        }
    }

    #[test]
    fn controls_bidi_and_separators_are_escaped() {
        let raw = "a\u{85}b\u{9b}31mc\u{202e}d\u{2028}e\u{2029}f\u{2066}g\u{200f}h\r\n\x1b\u{7f}";
        let shown = Escaped(raw).to_string();
        assert_eq!(
            shown,
            "a\\u{85}b\\u{9b}31mc\\u{202e}d\\u{2028}e\\u{2029}f\\u{2066}g\\u{200f}h\\r\\n\\u{1b}\\u{7f}"
        );
        assert_eq!(
            Escaped("4a77/très \"cool\" \\.jpg").to_string(),
            "4a77/très \"cool\" \\.jpg"
        );
    }

    #[test]
    fn json_escapes_them_and_stays_valid() {
        let raw = "p\u{202e}\u{85}\"\\\n\u{1F600}é";
        let mut out = Vec::new();
        json_str(&mut out, raw);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(!text.contains('\u{202e}') && !text.contains('\u{85}'), "{text}");
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, raw);
    }
}
