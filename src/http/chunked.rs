//! Incremental decoder for `Transfer-Encoding: chunked` request bodies.

use super::syntax::{ows_len, token_len, value_len};
use crate::error::Error;

/// Longest chunk-size line (size, extensions, CRLF) and longest trailer section we accept.
const MAX_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16384;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex size line; `line` counts its bytes so far.
    Size,
    /// Inside chunk data with this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data (0: want CR, 1: want LF).
    DataEnd(u8),
    /// Reading trailer lines after the last chunk.
    Trailers,
    Done,
}

#[derive(Debug)]
pub struct Decoder {
    state: State,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }
}

fn malformed(what: &str) -> Error {
    Error::BadRequest(format!("malformed chunked body: {what}"))
}

impl Decoder {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feed bytes; each piece of body data is passed to `data`. Returns the bytes consumed:
    /// less than `input.len()` only once the body is complete (the rest is the next request).
    pub fn feed(&mut self, input: &[u8], data: &mut impl FnMut(&[u8]) -> Result<(), Error>) -> Result<usize, Error> {
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Done => return Ok(i),
                State::Size | State::Trailers => {
                    let Some(pos) = input[i..].iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(&input[i..]);
                        self.check_line_limits()?;
                        return Ok(input.len());
                    };
                    self.line.extend_from_slice(&input[i..i + pos + 1]);
                    i += pos + 1;
                    self.check_line_limits()?;
                    let line = std::mem::take(&mut self.line);
                    let line = line
                        .strip_suffix(b"\r\n")
                        .ok_or_else(|| malformed("line without CRLF"))?;
                    if self.state == State::Size {
                        let size = parse_size_line(line)?;
                        self.state = if size == 0 { State::Trailers } else { State::Data(size) };
                    } else if line.is_empty() {
                        self.state = State::Done;
                    } else if !valid_trailer(line) {
                        return Err(malformed("control character in a trailer line"));
                    } else {
                        self.trailer_bytes += line.len() + 2;
                    }
                }
                State::Data(left) => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    data(&input[i..i + take])?;
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        State::DataEnd(0)
                    } else {
                        State::Data(left)
                    };
                }
                State::DataEnd(k) => {
                    let want = if k == 0 { b'\r' } else { b'\n' };
                    if input[i] != want {
                        return Err(malformed("chunk data not followed by CRLF"));
                    }
                    i += 1;
                    self.state = if k == 0 { State::DataEnd(1) } else { State::Size };
                }
            }
        }
        Ok(i)
    }

    fn check_line_limits(&self) -> Result<(), Error> {
        if self.line.len() > MAX_LINE {
            return Err(malformed("chunk-size or trailer line too long"));
        }
        if self.trailer_bytes + self.line.len() > MAX_TRAILERS {
            return Err(malformed("trailers too large"));
        }
        Ok(())
    }
}

/// `1a3f` or `1a3f;ext=val`: at most 16 hex digits (no u64 overflow), then extensions as
/// RFC 9112 §7.1.1 writes them, `*( BWS ";" BWS name [ BWS "=" BWS value ] )`. Anything else
/// (a bare CR, a form feed, stray bytes) is refused: a proxy that reads the line otherwise
/// would see another body.
fn parse_size_line(line: &[u8]) -> Result<u64, Error> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 || !valid_extensions(&line[digits..]) {
        return Err(malformed("bad chunk size"));
    }
    let s = std::str::from_utf8(&line[..digits]).map_err(|_| malformed("bad chunk size"))?;
    u64::from_str_radix(s, 16).map_err(|_| malformed("bad chunk size"))
}

fn valid_extensions(mut s: &[u8]) -> bool {
    loop {
        s = &s[ows_len(s)..];
        if s.is_empty() {
            return true;
        }
        if s[0] != b';' {
            return false;
        }
        s = &s[1..];
        s = &s[ows_len(s)..];
        let name = token_len(s);
        if name == 0 {
            return false;
        }
        s = &s[name..];
        let after_ws = &s[ows_len(s)..];
        if after_ws.first() == Some(&b'=') {
            let v = &after_ws[1..];
            let v = &v[ows_len(v)..];
            match value_len(v) {
                0 => return false,
                n => s = &v[n..],
            }
        }
    }
}

/// A trailer line: a field line with no control characters but tab (no bare CR).
fn valid_trailer(line: &[u8]) -> bool {
    line.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), Error> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step) {
            let n = d.feed(piece, &mut |b| {
                out.extend_from_slice(b);
                Ok(())
            })?;
            used += n;
            if d.is_done() {
                break;
            }
        }
        Ok((out, used, d.is_done()))
    }

    #[test]
    fn decodes_in_any_split() {
        let body = b"5\r\nhello\r\n6;name=x\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET /next";
        for step in [1, 2, 3, 7, 100] {
            let (out, used, done) = decode_all(body, step).unwrap();
            assert_eq!(out, b"hello world");
            assert!(done);
            assert_eq!(&body[used..], b"GET /next", "step {step}");
        }
    }

    #[test]
    fn uppercase_hex_and_empty_body() {
        let (out, _, done) = decode_all(b"A\r\n0123456789\r\n0\r\n\r\n", 4).unwrap();
        assert_eq!(out, b"0123456789");
        assert!(done);
        let (out, _, done) = decode_all(b"0\r\n\r\n", 1).unwrap();
        assert!(out.is_empty() && done);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"x\r\n"[..],
            b"-1\r\n",
            b"\r\n",
            b"5\r\nhelloXX",
            b"5\nhello\r\n",
            b"11111111111111111\r\n",
            b" 5\r\n",
            b"0x5\r\n",
            // A bare CR, a form feed, stray bytes after the size or in an extension.
            b"1\r\r\n",
            b"1\x0c\r\n",
            b"1;a\rb\r\n",
            b"1;\r\n",
            b"1;=x\r\n",
            b"1;a=\r\n",
            b"1 x\r\n",
            b"1;a=\"open\r\n",
            b"0\r\nX-T: a\rb\r\n\r\n",
        ] {
            assert!(decode_all(bad, 100).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        for good in [
            &b"1;a\r\nx\r\n0\r\n\r\n"[..],
            b"1 ; a = b ; c=\"d;e\"\r\nx\r\n0\r\n\r\n",
            b"1\t\r\nx\r\n0\r\n\r\n",
        ] {
            assert!(decode_all(good, 100).is_ok(), "{:?}", String::from_utf8_lossy(good));
        }
        let long = format!("5;{}\r\n", "a".repeat(5000));
        assert!(decode_all(long.as_bytes(), 100).is_err());
    }

    #[test]
    fn incomplete_is_not_done() {
        let (_, _, done) = decode_all(b"5\r\nhel", 100).unwrap();
        assert!(!done);
    }
}
