//! Durations in the configuration: an integer of seconds, or a string such as "168h", "7d",
//! "90m" (humantime's forms); `0` and `""` mean none.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// A duration in whole seconds; 0 = none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seconds(pub u64);

pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    if let Ok(n) = s.parse::<u64>() {
        return Some(n);
    }
    humantime::parse_duration(s).ok().map(|d| d.as_secs())
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Seconds;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration: seconds as an integer, or a string like \"168h\" or \"7d\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
                u64::try_from(v)
                    .map(Seconds)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
                Ok(Seconds(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
                parse_duration(v)
                    .map(Seconds)
                    .ok_or_else(|| E::custom(format!("{v:?} is not a duration like \"168h\" or \"7d\"")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse_duration(""), Some(0));
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("2s"), Some(2));
        assert_eq!(parse_duration("168h"), Some(604_800));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("1h 30m"), Some(5400));
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("-5"), None);
    }
}
