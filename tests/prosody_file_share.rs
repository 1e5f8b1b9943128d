//! Prosody's own mod_http_file_share as the slot issuer (docs/operations.md, "Prosody"): the
//! Debian Prosody hands out slots whose PUT carries `Authorization: Bearer <JWT>`; slixmpp
//! uploads with the slot's header, a second account downloads byte-exact with the declared
//! type, and what a client can get wrong with such a slot is refused with Prosody's statuses.
mod common;

use common::xmpp::{exchange, target_of, with_slots, Flavour, Slot};
use common::*;

fn authorization(slot: &Slot) -> &str {
    slot.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .expect("the slot's PUT carries an Authorization header")
}

/// PUT `body` to the slot's URL with `authorization` as the header; the status.
fn put_slot(s: &Server, slot: &Slot, body: &[u8], authorization: &str) -> u16 {
    let target = target_of(s, &slot.put);
    let mut req = put_head(target, body.len(), None, &format!("Authorization: {authorization}\r\n")).into_bytes();
    req.extend_from_slice(body);
    raw(s.addr, &req).status
}

#[test]
fn file_share_exchange() {
    let Some((s, stored)) = exchange(Flavour::FileShare { clock: None }) else {
        return;
    };
    // The uploader and the file's expiry (http_file_share_expires_after = 3600) are kept.
    let now = hmac_file_server::session::unix_now();
    for at in &stored {
        let uploader = xattr::get(at, "user.hmac-file-server.uploader").unwrap();
        assert_eq!(uploader.as_deref(), Some(&b"alice@localhost"[..]), "{}", at.display());
        let expires: u64 = String::from_utf8(xattr::get(at, "user.hmac-file-server.expires").unwrap().unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(expires.abs_diff(now + 3600) < 120, "{expires}");
    }
    assert!(!s.log().contains("Bearer ey"), "tokens stay out of the log");
}

#[test]
fn file_share_refusals() {
    let ty = "text/plain";
    let Some((s, _x, got)) = with_slots(
        Flavour::FileShare { clock: None },
        &[
            ("forged.txt", 16, ty),
            ("wrong-size.txt", 16, ty),
            ("other-slot.txt", 16, ty),
            ("twice.txt", 16, ty),
        ],
    ) else {
        return;
    };
    let body = pattern(16, 9);
    for slot in &got {
        assert_eq!(slot.put, slot.get, "GET URL = PUT URL");
        assert!(authorization(slot).starts_with("Bearer "), "{:?}", slot.headers);
    }
    let nothing_at = |slot: &Slot| assert_eq!(get(&s, target_of(&s, &slot.get)).0, 404);

    // A forged token: one character of its signature changed; no token at all.
    let mut forged = authorization(&got[0]).to_owned().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    assert_eq!(put_slot(&s, &got[0], &body, &String::from_utf8(forged).unwrap()), 401);
    assert_eq!(put_slot(&s, &got[0], &body, "Bearer"), 401);
    nothing_at(&got[0]);

    // Another size than the slot's.
    assert_eq!(put_slot(&s, &got[1], &pattern(17, 9), authorization(&got[1])), 413);
    nothing_at(&got[1]);

    // One slot's token on another slot's URL.
    assert_eq!(put_slot(&s, &got[2], &body, authorization(&got[3])), 400);
    nothing_at(&got[2]);

    // A slot used twice: the first upload stays.
    assert_eq!(put_slot(&s, &got[3], &body, authorization(&got[3])), 201);
    assert_eq!(put_slot(&s, &got[3], &pattern(16, 10), authorization(&got[3])), 409);
    assert_eq!(get(&s, target_of(&s, &got[3].get)), (200, body.clone()));
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
}

/// Prosody's clock a quarter of an hour behind ours: the tokens it signs (valid 300 s in 0.12,
/// 600 s in 13.0) have expired by the time they reach us.
#[test]
fn an_expired_file_share_token_is_refused() {
    let Some((s, _x, got)) = with_slots(
        Flavour::FileShare { clock: Some("-15m") },
        &[("late.txt", 4, "text/plain")],
    ) else {
        return;
    };
    assert_eq!(put_slot(&s, &got[0], b"late", authorization(&got[0])), 410);
    assert_eq!(get(&s, target_of(&s, &got[0].get)).0, 404);
}
