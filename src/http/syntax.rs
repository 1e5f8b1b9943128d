//! The RFC 9110 §5.6 building blocks that several header grammars share.

pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Optional whitespace: space or horizontal tab.
pub fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The length of the whitespace at the start of `s`.
pub fn ows_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| is_ows(b)).count()
}

/// The length of the token at the start of `s` (0: none).
pub fn token_len(s: &[u8]) -> usize {
    s.iter().take_while(|&&b| is_tchar(b)).count()
}

/// The length of the quoted-string at the start of `s`, if one is there and well formed.
/// Only visible ASCII, space and tab inside (no obs-text): values may be served back.
pub fn quoted_len(s: &[u8]) -> Option<usize> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let allowed = |b: u8| b.is_ascii_graphic() || is_ows(b);
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return Some(i + 1),
            b'\\' if s.get(i + 1).is_some_and(|&n| allowed(n)) => i += 2,
            b if b != b'\\' && allowed(b) => i += 1,
            _ => return None,
        }
    }
    None
}

/// The length of a token or quoted-string value at the start of `s` (0: neither).
pub fn value_len(s: &[u8]) -> usize {
    quoted_len(s).unwrap_or_else(|| token_len(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces() {
        assert_eq!(token_len(b"abc=d"), 3);
        assert_eq!(token_len(b"=d"), 0);
        assert_eq!(quoted_len(b"\"a b\"x"), Some(5));
        assert_eq!(quoted_len(b"\"a\\\"b\""), Some(6));
        assert_eq!(quoted_len(b"\"open"), None);
        assert_eq!(quoted_len(b"\"bad\rcr\""), None);
        assert_eq!(quoted_len(b"\"end\\"), None);
        assert_eq!(value_len(b"tok;"), 3);
        assert_eq!(value_len(b"\"q\";"), 3);
        assert_eq!(ows_len(b" \t x"), 3);
    }
}
