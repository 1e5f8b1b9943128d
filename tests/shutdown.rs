//! Graceful shutdown: SIGTERM stops accepting, requests in flight finish (or are cut at
//! GracefulShutdownTimeout), a second signal exits at once, and nothing partial is left.

mod common;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io::Write;
use std::time::{Duration, Instant};

fn signal(s: &Server, sig: Signal) {
    kill(Pid::from_raw(s.pid() as i32), sig).expect("send signal");
}

/// Wait for the server to exit; its exit code, and how long it took.
fn wait_exit(s: &mut Server, limit: Duration) -> (Option<i32>, Duration) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = s.child.try_wait().expect("try_wait") {
            return (status.code(), started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("server still running {limit:?} after the signal; log:\n{}", s.log());
}

#[test]
fn an_upload_in_flight_finishes_and_new_connections_are_refused() {
    let mut s = Server::with_config("GracefulShutdownTimeout = 20");
    let path = unique("during-shutdown.bin");
    let body = pattern(2 << 20, 5);
    let target = s.put_target(&path, body.len() as u64, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, body.len(), None, "").as_bytes()).unwrap();
    c.write_all(&body[..1 << 20]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(&s, Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(s.addr).is_err(),
        "no new connections while draining"
    );
    c.write_all(&body[1 << 20..]).unwrap();
    let r = read_response(&mut c, false).expect("the upload in flight is answered");
    assert_eq!(r.status, 201);
    assert_eq!(r.header("connection"), Some("close"));
    let (code, _) = wait_exit(&mut s, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);
    let log = s.log();
    assert!(log.contains("stopping: no new connections"), "{log}");
    assert!(log.contains("every request in flight finished"), "{log}");
}

#[test]
fn idle_keep_alive_connections_do_not_delay_the_stop() {
    let mut s = Server::with_config("GracefulShutdownTimeout = 20");
    let mut idle = connect(s.addr);
    idle.write_all(b"OPTIONS /upload/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle, false).unwrap().status, 204);
    signal(&s, Signal::SIGTERM);
    let (code, took) = wait_exit(&mut s, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

#[test]
fn the_timeout_aborts_stalled_uploads_without_leftovers() {
    // Named temporaries, so the test can see that none is left behind.
    let mut s = Server::with_config_env(
        "GracefulShutdownTimeout = 1\nBodyTimeout = 60",
        &[("HMAC_FILE_SERVER_NO_TMPFILE", "1")],
    );
    let path = unique("stalled.bin");
    let target = s.put_target(&path, 1 << 20, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, 1 << 20, None, "").as_bytes()).unwrap();
    c.write_all(&[1u8; 100_000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.temporaries().len(), 1);
    signal(&s, Signal::SIGTERM);
    let (code, took) = wait_exit(&mut s, Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    assert!(!file_at(&s, &path).exists());
    assert_eq!(std::fs::read_dir(s.tmp_dir()).unwrap().count(), 0, "no temporary left");
    assert!(s.log().contains("GracefulShutdownTimeout reached"), "{}", s.log());
}

#[test]
fn a_second_signal_stops_at_once() {
    let mut s = Server::with_config("GracefulShutdownTimeout = 60");
    let target = s.put_target(&unique("slow.bin"), 1 << 20, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, 1 << 20, None, "").as_bytes()).unwrap();
    c.write_all(&[1u8; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    signal(&s, Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        s.child.try_wait().unwrap().is_none(),
        "still draining after the first signal"
    );
    signal(&s, Signal::SIGINT);
    let (code, took) = wait_exit(&mut s, Duration::from_secs(5));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert!(s.log().contains("second signal"), "{}", s.log());
}
