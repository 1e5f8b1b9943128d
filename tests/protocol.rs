//! HTTP/1.1 framing: keep-alive, pipelining, smuggling shapes, limits and timeouts.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = Server::start();
    let paths: Vec<String> = (0..5).map(|i| unique(&format!("p{i}.txt"))).collect();
    let mut batch = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let body = format!("body-{i}");
        let t = s.put_target(p, body.len() as u64, None, Proto::V);
        batch.extend_from_slice(put_head(&t, body.len(), None, "").as_bytes());
        batch.extend_from_slice(body.as_bytes());
    }
    for p in &paths {
        batch.extend_from_slice(format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(p)).as_bytes());
    }
    let mut c = connect(s.addr);
    c.write_all(&batch).unwrap();
    for _ in &paths {
        assert_eq!(read_response(&mut c, false).unwrap().status, 201);
    }
    for i in 0..paths.len() {
        let r = read_response(&mut c, false).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, format!("body-{i}").as_bytes());
    }
}

#[test]
fn smuggling_shapes_are_refused_and_closed() {
    let s = Server::start();
    let t = s.put_target(&unique("s.txt"), 5, None, Proto::V);
    for (req, status) in [
        (format!("PUT {t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), 400),
        (format!("PUT {t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), 400),
        (format!("PUT {t} HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"), 400),
        (format!("PUT {t} HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551616\r\n\r\n"), 400),
        (format!("PUT {t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n"), 400),
        (format!("PUT {t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501),
        (format!("PUT {t} HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"), 400),
        (format!("PUT {t} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\n\r\nhello"), 400),
    ] {
        let mut c = connect(s.addr);
        c.write_all(req.as_bytes()).unwrap();
        let r = read_response(&mut c, false).unwrap_or_else(|| panic!("no response to {req:?}"));
        assert_eq!(r.status, status, "{req:?}");
        assert_eq!(r.header("connection"), Some("close"), "{req:?}");
        // And the connection really ends: no second response can be smuggled after it.
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(!String::from_utf8_lossy(&rest).contains("HTTP/1.1"), "{req:?}");
    }
}

#[test]
fn head_and_url_limits() {
    let s = Server::start();
    let r = raw(
        s.addr,
        format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(10_000)).as_bytes(),
    );
    assert_eq!(r.status, 414);
    let r = raw(
        s.addr,
        format!(
            "GET /upload/a HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "b".repeat(20_000)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 431);
    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        s.addr,
        format!("GET /upload/a HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 431);
    let r = raw(s.addr, b"GET /upload/a HTTP/3.0\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 505);
    let r = raw(s.addr, b"GARBAGE\r\n\r\n");
    assert_eq!(r.status, 400);
    // Still serving normally afterwards.
    let t = s.put_target(&unique("after.txt"), 2, None, Proto::V);
    assert_eq!(put(&s, &t, b"ok", None), 201);
}

#[test]
fn slow_clients_time_out() {
    let s = Server::with_config("HeaderTimeout = 1\nBodyTimeout = 1\nIdleTimeout = 2");
    // A head that never finishes: 408.
    let mut c = connect(s.addr);
    c.write_all(b"GET /upload/a HTTP/1.1\r\nHost: x\r\n").unwrap();
    let started = Instant::now();
    let r = read_response(&mut c, false).unwrap();
    assert_eq!(r.status, 408);
    assert!(started.elapsed() < Duration::from_secs(10));

    // A body that stalls: 408 and the temporary is gone.
    let path = unique("stall.bin");
    let t = s.put_target(&path, 1000, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&t, 1000, None, "").as_bytes()).unwrap();
    c.write_all(&[1u8; 100]).unwrap();
    let r = read_response(&mut c, false).unwrap();
    assert_eq!(r.status, 408);
    assert!(s.temporaries().is_empty());
    assert!(!file_at(&s, &path).exists());

    // An idle keep-alive connection is closed without a response.
    let mut c = connect(s.addr);
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed quietly");
}

#[test]
fn http10_and_connection_close() {
    let s = Server::start();
    let url = {
        let p = unique("h.txt");
        assert_eq!(put(&s, &s.put_target(&p, 2, None, Proto::V), b"hi", None), 201);
        format!("/upload/{}", encode_path(&p))
    };
    let mut c = connect(s.addr);
    c.write_all(format!("GET {url} HTTP/1.0\r\n\r\n").as_bytes()).unwrap();
    let r = read_response(&mut c, false).unwrap();
    assert_eq!(r.body, b"hi");
    let mut rest = Vec::new();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "HTTP/1.0 without keep-alive closes");
    let mut c = connect(s.addr);
    c.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let r = read_response(&mut c, false).unwrap();
    assert_eq!(r.header("connection"), Some("close"));
}

/// Idle keep-alive connections hold no buffer while they wait (docs/architecture.md,
/// "Memory"); each must still get its answer when it finally asks: a plain request, two
/// pipelined ones, or a head that arrives in pieces.
#[test]
fn two_thousand_idle_connections_are_each_answered_when_they_ask() {
    const IDLE: usize = 2000;
    raise_fd_limit();
    let s = Server::with_config("IdleTimeout = 120\n");
    let path = unique("idle.txt");
    assert_eq!(
        put(&s, &s.put_target(&path, 9, None, Proto::V), b"idle body", None),
        201
    );
    let request = format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(&path));
    let mut conns: Vec<_> = (0..IDLE)
        .map(|_| {
            let mut c = connect(s.addr);
            c.write_all(request.as_bytes()).unwrap();
            c
        })
        .collect();
    for c in &mut conns {
        let r = read_response(c, false).expect("first answer");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"idle body"[..]));
    }
    // All of them idle now; the server goes on serving others meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let other = unique("busy.txt");
    assert_eq!(put(&s, &s.put_target(&other, 4, None, Proto::V), b"busy", None), 201);
    assert_eq!(
        get(&s, &format!("/upload/{}", encode_path(&other))),
        (200, b"busy".to_vec())
    );
    // Then each asks again, in reverse order of opening.
    for (i, c) in conns.iter_mut().enumerate().rev() {
        match i % 10 {
            0 => {
                let (a, b) = request.split_at(request.len() / 2);
                c.write_all(a.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(1));
                c.write_all(b.as_bytes()).unwrap();
            }
            1..=4 => c.write_all(format!("{request}{request}").as_bytes()).unwrap(),
            _ => c.write_all(request.as_bytes()).unwrap(),
        }
    }
    for (i, c) in conns.iter_mut().enumerate().rev() {
        let answers = if (1..=4).contains(&(i % 10)) { 2 } else { 1 };
        for _ in 0..answers {
            let r = read_response(c, false).unwrap_or_else(|| panic!("connection {i} got no answer"));
            assert_eq!(
                (r.status, r.body.as_slice()),
                (200, &b"idle body"[..]),
                "connection {i}"
            );
        }
    }
}
