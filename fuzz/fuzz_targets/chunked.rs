//! The chunked decoder: never panics, and feeding the input in two pieces (as the network may
//! deliver it) gives the same data and the same verdict as feeding it at once.
#![no_main]
use hmac_file_server::http::chunked::Decoder;
use libfuzzer_sys::fuzz_target;

fn run(pieces: &[&[u8]]) -> (Vec<u8>, Result<usize, u16>, bool) {
    let mut d = Decoder::default();
    let mut out = Vec::new();
    let mut consumed = 0;
    for piece in pieces {
        match d.feed(piece, &mut |data| {
            out.extend_from_slice(data);
            Ok(())
        }) {
            Ok(n) => {
                assert!(n <= piece.len());
                consumed += n;
                if d.is_done() {
                    break;
                }
            }
            Err(e) => return (out, Err(e.status()), false),
        }
    }
    (out, Ok(consumed), d.is_done())
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, body)) = data.split_first() else { return };
    let at = (split as usize).min(body.len());
    let whole = run(&[body]);
    let halves = run(&[&body[..at], &body[at..]]);
    assert_eq!(whole, halves);
});
