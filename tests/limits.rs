//! Abuse limits: MaxBytesPerSecond pacing, per-IP request rate and concurrent uploads (429 with
//! Retry-After), and the global connection cap (503).
mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

/// CPU seconds (user + system) the process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

#[test]
fn max_bytes_per_second_paces_uploads_without_burning_cpu() {
    let s = Server::with_config("MaxBytesPerSecond = \"256KB\"");
    let body = pattern(768 << 10, 3);
    let path = unique("paced.bin");
    let target = s.put_target(&path, body.len() as u64, None, Proto::V);
    let cpu_before = cpu_seconds(s.pid());
    let started = Instant::now();
    assert_eq!(put(&s, &target, &body, None), 201);
    let took = started.elapsed();
    let cpu = cpu_seconds(s.pid()) - cpu_before;
    // 768 KiB at 256 KiB/s: three seconds (a first read of up to a tenth of a second's worth is free).
    assert!(took >= Duration::from_millis(2600), "paced upload took only {took:?}");
    assert!(took < Duration::from_secs(10), "paced upload took {took:?}");
    assert!(cpu < 0.5, "the server burned {cpu} CPU seconds while pacing");
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);

    // Chunked bodies are paced too.
    let path = unique("paced-chunked.bin");
    let body = pattern(512 << 10, 4);
    let target = s.put_target(&path, body.len() as u64, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes())
        .unwrap();
    let started = Instant::now();
    for part in body.chunks(64 << 10) {
        c.write_all(format!("{:x}\r\n", part.len()).as_bytes()).unwrap();
        c.write_all(part).unwrap();
        c.write_all(b"\r\n").unwrap();
    }
    c.write_all(b"0\r\n\r\n").unwrap();
    let r = read_response(&mut c, false).expect("answer");
    assert_eq!(r.status, 201);
    assert!(
        started.elapsed() >= Duration::from_millis(1600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);
}

#[test]
fn unlimited_by_default() {
    let s = Server::start();
    let body = pattern(8 << 20, 5);
    let target = s.put_target(&unique("fast.bin"), body.len() as u64, None, Proto::V);
    let started = Instant::now();
    assert_eq!(put(&s, &target, &body, None), 201);
    assert!(started.elapsed() < Duration::from_secs(5));
}

fn head_request(s: &Server, target: &str) -> Response {
    let mut c = connect(s.addr);
    c.write_all(format!("HEAD {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    read_response(&mut c, true).expect("answer")
}

#[test]
fn requests_per_ip_are_limited_with_retry_after() {
    let s = Server::with_config("MaxRequestsPerSecondPerIP = 5");
    let path = unique("limited.txt");
    assert_eq!(put(&s, &s.put_target(&path, 2, None, Proto::V), b"hi", None), 201);
    let target = format!("/upload/{}", encode_path(&path));
    let burst_started = Instant::now();
    let statuses: Vec<Response> = (0..20).map(|_| head_request(&s, &target)).collect();
    // Tokens refill at 5/s while the burst runs (milliseconds, unless the machine is loaded).
    let refilled = (burst_started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let ok = statuses.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Response> = statuses.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok + limited.len(), 20);
    // The put used one token, the bucket holds five: at most a handful pass in the burst.
    assert!(ok >= 4 && ok <= 5 + refilled, "{ok} passed, {refilled} refilled");
    assert!(!limited.is_empty());
    let retry: u64 = limited[0].header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(head_request(&s, &target).status, 200, "tokens refill");
    assert!(
        s.wait_log("MaxRequestsPerSecondPerIP"),
        "the refusal is logged with its reason"
    );
}

#[test]
fn concurrent_uploads_per_ip_are_limited() {
    let s = Server::with_config("MaxConcurrentUploadsPerIP = 1");
    let first = unique("first.bin");
    let body = pattern(100_000, 6);
    let t1 = s.put_target(&first, body.len() as u64, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&t1, body.len(), None, "").as_bytes()).unwrap();
    c.write_all(&body[..50_000]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A second upload from the same address while the first is in progress.
    let second = unique("second.bin");
    let t2 = s.put_target(&second, 4, None, Proto::V);
    let r = raw(s.addr, format!("{}data", put_head(&t2, 4, None, "")).as_bytes());
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    // Downloads are not uploads.
    assert_eq!(get(&s, "/upload/nothing-here").0, 404);
    c.write_all(&body[50_000..]).unwrap();
    assert_eq!(read_response(&mut c, false).expect("answer").status, 201);
    drop(c);
    assert_eq!(put(&s, &t2, b"data", None), 201, "the slot was released");
    assert_eq!(std::fs::read(file_at(&s, &second)).unwrap(), b"data");
    assert_eq!(std::fs::read(file_at(&s, &first)).unwrap(), body);
}

#[test]
fn connection_cap_answers_503() {
    let s = Server::with_config("MaxConnections = 3");
    // Each held connection is answered once, so the server has certainly counted it (a bare
    // connect may still wait in the accept queue on a loaded machine).
    let held: Vec<_> = (0..3)
        .map(|_| {
            let mut c = connect(s.addr);
            c.write_all(b"GET /upload/x HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            assert_eq!(read_response(&mut c, false).expect("answer").status, 404);
            c
        })
        .collect();
    let r = raw(s.addr, b"GET /upload/x HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = raw(s.addr, b"GET /upload/x HTTP/1.1\r\nHost: x\r\n\r\n");
        if r.status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "closed connections were not counted out");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(s.wait_log("MaxConnections (3) reached"), "{}", s.log());
}

/// A /48 of unique-local addresses routed to the loopback interface ("AnyIP"), so a test client
/// can connect from any of its addresses with IPV6_FREEBIND. Needs root; under CI it must work.
const TEST_PREFIX: &str = "fd48:6d61:6366";

fn route_test_prefix() -> bool {
    let ok = std::process::Command::new("ip")
        .args([
            "-6",
            "route",
            "replace",
            "local",
            &format!("{TEST_PREFIX}::/48"),
            "dev",
            "lo",
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot route {TEST_PREFIX}::/48 to lo (needs root and the ip tool)"
        );
        eprintln!("skipped: cannot route {TEST_PREFIX}::/48 to lo (needs root)");
    }
    ok
}

/// One HEAD on a fresh connection from `source` to the server's IPv6 loopback address.
fn head_from(source: &str, port: u16, target: &str) -> Response {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::STREAM, None).expect("socket");
    s.set_freebind_v6(true).expect("IPV6_FREEBIND");
    let from: std::net::SocketAddr = format!("[{source}]:0").parse().unwrap();
    s.bind(&from.into()).expect("bind the source address");
    let to: std::net::SocketAddr = format!("[::1]:{port}").parse().unwrap();
    s.connect(&to.into()).expect("connect");
    let mut c: std::net::TcpStream = s.into();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(format!("HEAD {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    read_response(&mut c, true).expect("answer")
}

#[test]
fn ipv6_clients_are_limited_per_64() {
    if !route_test_prefix() {
        return;
    }
    // Dual-stack: the fixture's readiness check connects over IPv4.
    let s = Server::with_config("ListenPort = \"[::]:{port}\"\nMaxRequestsPerSecondPerIP = 5");
    let port = s.addr.port();
    let path = unique("v6.txt");
    assert_eq!(put(&s, &s.put_target(&path, 2, None, Proto::V), b"hi", None), 201);
    let target = format!("/upload/{}", encode_path(&path));
    // Twenty connections, each from a fresh address in one /64: one bucket of five.
    let burst_started = Instant::now();
    let statuses: Vec<u16> = (1..=20)
        .map(|n| head_from(&format!("{TEST_PREFIX}:7::{n:x}:1"), port, &target).status)
        .collect();
    let refilled = (burst_started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let ok = statuses.iter().filter(|&&st| st == 200).count();
    let limited = statuses.iter().filter(|&&st| st == 429).count();
    assert_eq!(ok + limited, 20, "{statuses:?}");
    assert!(
        ok <= 5 + refilled,
        "{ok} of 20 addresses in one /64 passed: {statuses:?}"
    );
    assert!(limited > 0, "{statuses:?}");
    // The neighbouring /64 is another client with its own bucket.
    assert_eq!(head_from(&format!("{TEST_PREFIX}:8::1"), port, &target).status, 200);
}
