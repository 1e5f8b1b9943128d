//! The I/O driver: io_uring where the kernel allows it, the epoll fallback otherwise, and the
//! log always says which.

mod common;
use common::*;

fn round_trip(s: &Server) {
    let path = unique("d.bin");
    let body = pattern(3 << 20, 77);
    assert_eq!(
        put(s, &s.put_target(&path, body.len() as u64, None, Proto::V), &body, None),
        201
    );
    let (status, got) = get(s, &format!("/upload/{}", encode_path(&path)));
    assert_eq!(status, 200);
    assert_eq!(got, body);
}

#[test]
fn io_uring_is_used_and_logged() {
    let s = Server::start();
    round_trip(&s);
    assert!(s.log().contains("driver=\"io_uring\""), "{}", s.log());
}

#[test]
fn epoll_fallback_works_and_warns() {
    let s = Server::with_config_env("", &[("MONOIO_FORCE_LEGACY_DRIVER", "1")]);
    round_trip(&s);
    let log = s.log();
    assert!(log.contains("driver=\"epoll\""), "{log}");
    assert!(log.contains("WARN") && log.contains("io_uring is unavailable"), "{log}");
}
