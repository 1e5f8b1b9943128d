//! The request-head parser: never panics, never claims more bytes than it was given, and a
//! head it accepts parses the same with any bytes appended (pipelined data never changes it).
#![no_main]
use hmac_file_server::http::{parse_head, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_head: 16 << 10,
    max_url: 8 << 10,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((head, n))) = parse_head(data, LIMITS) {
        assert!(n <= data.len());
        assert!(!head.target.is_empty());
        let mut more = data.to_vec();
        more.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (again, m) = parse_head(&more, LIMITS).expect("still parses").expect("still complete");
        assert_eq!(m, n);
        assert_eq!(again.target, head.target);
        assert_eq!(again.body, head.body);
    }
});
