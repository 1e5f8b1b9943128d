//! Real XMPP servers and a real XMPP client against a real server process.
//!
//! Prosody (Debian `prosody` + `prosody-modules`, `mod_http_upload_external`, protocol v1 and v2)
//! and ejabberd (Debian `ejabberd`, `mod_http_upload` with `external_secret`) run on loopback
//! from a throwaway directory, sharing `SECRET` with our server. The client is slixmpp
//! (tests/interop/xmpp_client.py): it registers two accounts in-band, discovers the upload
//! service (XEP-0363), uploads with its own HTTP code and sends the GET URL to the second
//! account, which downloads it. The refusals then go through slots the XMPP servers handed out.
mod common;

use common::xmpp::{exchange, target_of, with_slots, Flavour};
use common::*;
use std::io::Write;
use std::net::Shutdown;
use std::time::{Duration, Instant};

fn put_status(s: &Server, target: &str, body: &[u8], ty: &str) -> u16 {
    put(s, target, body, Some(ty))
}

/// Flip one character of `text` at byte `at` (ASCII there) to another of the same class.
fn flip(text: &str, at: usize) -> String {
    let mut b = text.as_bytes().to_vec();
    b[at] = match b[at] {
        b'0' => b'1',
        c if c.is_ascii_digit() => b'0',
        b'a' => b'b',
        b'A' => b'B',
        c if c.is_ascii_lowercase() => b'a',
        _ => b'A',
    };
    String::from_utf8(b).expect("ASCII flip")
}

/// Every refusal a client can meet, through slots the XMPP server handed out.
fn refusals(flavour: Flavour, param: &str) {
    let ty = "text/plain";
    let Some((s, x, got)) = with_slots(
        flavour,
        &[
            ("tampered-path.txt", 16, ty),
            ("tampered-signature.txt", 16, ty),
            ("no-signature.txt", 16, ty),
            ("wrong-size.txt", 16, ty),
            ("wrong-type.png", 16, "image/png"),
            ("truncated.txt", 16, ty),
            ("twice.txt", 16, ty),
        ],
    ) else {
        return;
    };
    let body = pattern(16, 9);
    for slot in &got {
        let (put_url, get_url) = (&slot.put, &slot.get);
        assert!(put_url.contains(&format!("?{param}=")), "{put_url} signs with {param}");
        assert_eq!(
            put_url.split('?').next(),
            Some(get_url.as_str()),
            "PUT URL = GET URL + signature"
        );
    }
    let target = |i: usize| target_of(&s, &got[i].put).to_owned();
    let nothing_at = |i: usize| {
        let (status, _) = get(&s, target_of(&s, &got[i].get));
        assert_eq!(status, 404, "nothing stored for slot {i}");
    };

    // Tampered path: one character of the first (random) segment changed.
    let t = target(0);
    assert_eq!(put_status(&s, &flip(&t, "/upload/".len()), &body, ty), 403);
    nothing_at(0);

    // Tampered signature: the last hex digit changed.
    let t = target(1);
    assert_eq!(put_status(&s, &flip(&t, t.len() - 1), &body, ty), 403);
    nothing_at(1);

    // No signature at all.
    let t = target(2);
    assert_eq!(put_status(&s, t.split('?').next().unwrap(), &body, ty), 403);
    nothing_at(2);

    // A body of another size than the slot's.
    let t = target(3);
    assert_eq!(put_status(&s, &t, &pattern(17, 9), ty), 403);
    assert_eq!(put_status(&s, &t, &pattern(15, 9), ty), 403);
    nothing_at(3);

    // Another type than the slot's: refused where the signature covers it (v2); protocol v1 and
    // ejabberd sign only path and size, so the upload stands with the type the client sent.
    let t = target(4);
    if x.signs_type {
        assert_eq!(put_status(&s, &t, &body, ty), 403);
        nothing_at(4);
    } else {
        assert_eq!(put_status(&s, &t, &body, ty), 201);
        let mut c = connect(s.addr);
        let head = format!("HEAD {} HTTP/1.1\r\nHost: x\r\n\r\n", target_of(&s, &got[4].get));
        c.write_all(head.as_bytes()).unwrap();
        let r = read_response(&mut c, true).expect("HEAD answered");
        assert_eq!((r.status, r.header("content-type")), (200, Some(ty)));
    }

    // A body cut short by a lost connection: nothing visible, and the slot still works after.
    let t = target(5);
    let mut c = connect(s.addr);
    c.write_all(put_head(&t, 16, Some(ty), "").as_bytes()).unwrap();
    c.write_all(&body[..8]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let answer = read_response(&mut c, false);
    assert!(
        answer.as_ref().is_none_or(|r| r.status == 400),
        "{:?}",
        answer.map(|r| r.status)
    );
    drop(c);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.temporaries().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
    nothing_at(5);
    assert_eq!(
        put_status(&s, &t, &body, ty),
        201,
        "the slot is still good after a lost upload"
    );
    assert_eq!(get(&s, target_of(&s, &got[5].get)), (200, body.clone()));

    // The same slot twice: the first stays.
    let t = target(6);
    assert_eq!(put_status(&s, &t, &body, ty), 201);
    assert_eq!(put_status(&s, &t, &body, ty), 409);
    assert_eq!(get(&s, target_of(&s, &got[6].get)), (200, body.clone()));

    let log = s.log();
    assert!(!log.contains(&format!("{param}=")), "signatures stay out of the log");
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
}

#[test]
fn prosody_v1_exchange() {
    exchange(Flavour::Prosody { protocol: "v1" });
}

#[test]
fn prosody_v2_exchange() {
    exchange(Flavour::Prosody { protocol: "v2" });
}

#[test]
fn ejabberd_exchange() {
    exchange(Flavour::Ejabberd);
}

#[test]
fn prosody_v1_refusals() {
    refusals(Flavour::Prosody { protocol: "v1" }, "v");
}

#[test]
fn prosody_v2_refusals() {
    refusals(Flavour::Prosody { protocol: "v2" }, "v2");
}

#[test]
fn ejabberd_refusals() {
    refusals(Flavour::Ejabberd, "v");
}
