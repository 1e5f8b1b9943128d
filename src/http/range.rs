//! Single-range `Range: bytes=` parsing (RFC 9110 §14).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No usable range: send the whole representation (also for multi-range requests,
    /// which RFC 9110 lets a server ignore).
    Full,
    /// Inclusive byte positions.
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

pub fn parse(header: &str, size: u64) -> RangeReq {
    let Some(spec) = header.trim().strip_prefix("bytes=") else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(last) {
            Some(n) if n > 0 && size > 0 => RangeReq::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            Some(_) => RangeReq::Unsatisfiable,
            None => RangeReq::Full,
        },
        (false, _) => {
            let Some(start) = num(first) else {
                return RangeReq::Full;
            };
            let end = if last.is_empty() {
                u64::MAX
            } else {
                match num(last) {
                    Some(e) if e >= start => e,
                    _ => return RangeReq::Full,
                }
            };
            if start >= size {
                RangeReq::Unsatisfiable
            } else {
                RangeReq::Part {
                    start,
                    end: end.min(size - 1),
                }
            }
        }
        (true, true) => RangeReq::Full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeReq::*;

    #[test]
    fn forms() {
        assert_eq!(parse("bytes=0-9", 100), Part { start: 0, end: 9 });
        assert_eq!(parse("bytes=90-", 100), Part { start: 90, end: 99 });
        assert_eq!(parse("bytes=90-500", 100), Part { start: 90, end: 99 });
        assert_eq!(parse("bytes=-10", 100), Part { start: 90, end: 99 });
        assert_eq!(parse("bytes=-500", 100), Part { start: 0, end: 99 });
        assert_eq!(parse("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse("bytes=0-0", 0), Unsatisfiable);
        assert_eq!(parse("bytes=-5", 0), Unsatisfiable);
    }

    #[test]
    fn ignored_forms() {
        assert_eq!(parse("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse("items=0-1", 100), Full);
        assert_eq!(parse("bytes=5-1", 100), Full);
        assert_eq!(parse("bytes=a-b", 100), Full);
        assert_eq!(parse("bytes=-", 100), Full);
        assert_eq!(parse("bytes=99999999999999999999999-", 100), Full);
    }
}
