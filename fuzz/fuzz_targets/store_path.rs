//! Mapping a request path to a store path: never panics, and whatever it accepts is a
//! relative path of plain segments that cannot leave StoreDir or reach the server's own files.
#![no_main]
use hmac_file_server::path::{store_path, RESERVED_DIR};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    if let Ok(p) = store_path(raw, "/upload/") {
        let s = p.as_str();
        assert!(!s.is_empty() && !s.starts_with('/'), "{s:?}");
        assert!(!s.contains('\0') && !s.contains('\\'), "{s:?}");
        for seg in s.split('/') {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{s:?}");
        }
        assert!(s.split('/').next() != Some(RESERVED_DIR), "{s:?}");
    }
});
