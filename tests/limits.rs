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
    let held: Vec<_> = (0..3).map(|_| connect(s.addr)).collect();
    std::thread::sleep(Duration::from_millis(200));
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
