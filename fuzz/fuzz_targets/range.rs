//! Range parsing: never panics, and a satisfiable range always lies inside the file.
#![no_main]
use hmac_file_server::http::range::{parse, RangeReq};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let size = u64::from_le_bytes(data[..8].try_into().expect("8 bytes")) >> (data[0] % 64);
    let Ok(header) = std::str::from_utf8(&data[8..]) else { return };
    match parse(header, size) {
        RangeReq::Part { start, end } => assert!(start <= end && end < size, "{start}-{end} of {size}"),
        RangeReq::Full | RangeReq::Unsatisfiable => {}
    }
});
