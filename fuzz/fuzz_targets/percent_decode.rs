//! Percent-decoding: never panics, and encoding what it decoded decodes back to the same.
#![no_main]
use hmac_file_server::path::{percent_decode, percent_encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(decoded) = percent_decode(data) {
        if let Ok(text) = String::from_utf8(decoded.clone()) {
            let encoded = percent_encode(&text);
            assert_eq!(percent_decode(encoded.as_bytes()).ok(), Some(decoded));
        }
    }
});
