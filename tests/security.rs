//! The attacks an unauthenticated client (or a local user beside the server) could mount, each
//! reproduced against the real server and shown to do no harm: forged chunked bodies that
//! squat a path or fill the disk, drips, stalled downloads, content types that render as HTML,
//! smuggled requests, a symlink race, the example's secret. The low-severity hardening is in
//! tests/hardening.rs.
mod common;

use common::nginx::Nginx;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const FORGED: &str = "v=0000000000000000000000000000000000000000000000000000000000000000";

/// A TCP connection to `addr` from the loopback address 127.0.0.`n` (another client IP to the
/// server), optionally with a small receive buffer set before connecting (a slow phone's).
fn connect_as(n: u8, rcvbuf: Option<libc::c_int>, addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(dst) = addr else { panic!("IPv4 only") };
    let sin = |ip: [u8; 4], port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a fresh fd, with values that outlive each call.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        if let Some(size) = rcvbuf {
            let size_len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&size as *const libc::c_int).cast(),
                size_len,
            );
        }
        let src = sin([127, 0, 0, n], 0);
        assert_eq!(
            libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len),
            0,
            "bind 127.0.0.{n}"
        );
        let to = sin(dst.ip().octets(), dst.port());
        let rc = libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len);
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        let s = TcpStream::from_raw_fd(fd);
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }
}

fn connect_from(n: u8, addr: SocketAddr) -> TcpStream {
    connect_as(n, None, addr)
}

/// The head of a chunked PUT with a forged signature.
fn forged_chunked_head(path: &str) -> Vec<u8> {
    format!(
        "PUT /upload/{}?{FORGED} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        encode_path(path)
    )
    .into_bytes()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Wait until `cond` holds, for up to `limit`.
fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Sockets the server process holds open (its listeners included).
fn open_sockets(s: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

fn rss_kib(s: &Server) -> u64 {
    proc_status_kib(s.pid(), "VmRSS:")
}

#[test]
fn forged_chunked_uploads_neither_squat_the_path_nor_hold_a_signed_upload() {
    let s = Server::with_config("UploadMaxSize = \"16MB\"");
    let path = unique("photo.jpg");
    // Four forged streams to the path, each 1 MiB in and left open.
    let mut forged: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = connect(s.addr);
            c.write_all(&forged_chunked_head(&path)).unwrap();
            c.write_all(&chunk(&pattern(1 << 20, 3))).unwrap();
            c
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || s.temporaries().len() >= 4),
        "{:?}",
        s.temporaries()
    );
    // The signed upload to the same path goes through meanwhile.
    let body = pattern(300_000, 4);
    assert_eq!(
        put(&s, &s.put_target(&path, body.len() as u64, None, Proto::V), &body, None),
        201
    );
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);
    // When the forged bodies end, they are refused and leave nothing.
    for c in &mut forged {
        c.write_all(b"0\r\n\r\n").unwrap();
        let r = read_response(c, false).expect("an answer");
        assert!(r.status == 403 || r.status == 409, "{r:?}");
    }
    assert_eq!(
        std::fs::read(file_at(&s, &path)).unwrap(),
        body,
        "the signed file is untouched"
    );
    assert!(
        eventually(Duration::from_secs(5), || s.temporaries().is_empty()),
        "{:?}",
        s.temporaries()
    );
}

/// The server's `hmac_file_server_unverified_bytes`.
fn unverified_bytes(metrics: SocketAddr) -> u64 {
    let r = raw(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("hmac_file_server_unverified_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the unverified-bytes gauge")
}

/// Write `piece` until the server answers (at most `max` times); the answer.
fn send_until_answered(c: &mut TcpStream, piece: &[u8], max: usize) -> Response {
    for _ in 0..max {
        if c.write_all(piece).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        c.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let answered = matches!(c.peek(&mut b), Ok(n) if n > 0);
        c.set_nonblocking(false).unwrap();
        if answered {
            break;
        }
    }
    read_response(c, false).expect("an answer")
}

#[test]
fn unverified_bytes_are_capped_per_client_and_in_total() {
    // Caps: 1 MiB per client IP and 2 MiB in all (1 and 2 × UploadMaxSize).
    let (s, metrics) = Server::with_metrics("UploadMaxSize = \"1MB\"", &[]);
    let piece = chunk(&pattern(256 << 10, 5));
    let body = |c: &mut TcpStream, pieces: usize| {
        c.write_all(&forged_chunked_head(&unique("forged"))).unwrap();
        for _ in 0..pieces {
            c.write_all(&piece).unwrap();
        }
    };
    // 127.0.0.2 holds 768 KiB in one body (1 MiB booked); a second body of its own is refused
    // with 429.
    let mut a = connect_from(2, s.addr);
    body(&mut a, 3);
    assert!(eventually(Duration::from_secs(10), || unverified_bytes(metrics) >= 1 << 20));
    let mut a2 = connect_from(2, s.addr);
    a2.write_all(&forged_chunked_head(&unique("forged"))).unwrap();
    let r = send_until_answered(&mut a2, &piece, 8);
    assert_eq!(r.status, 429, "{r:?}");
    assert!(r.header("retry-after").is_some());
    assert!(s.wait_log("MaxUnverifiedBytesPerIP"), "{}", s.log());
    // 127.0.0.3 brings the total to 2 MiB (bookings go in 256 KiB steps: each 768 KiB body
    // holds 1 MiB once it is read); 127.0.0.4's body is then refused with 503 before it
    // reaches its own 1 MiB.
    let mut b = connect_from(3, s.addr);
    body(&mut b, 3);
    assert!(eventually(Duration::from_secs(10), || unverified_bytes(metrics) >= 2 << 20));
    let mut c = connect_from(4, s.addr);
    c.write_all(&forged_chunked_head(&unique("forged"))).unwrap();
    let r = send_until_answered(&mut c, &piece, 8);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("retry-after").is_some());
    assert!(s.wait_log("MaxUnverifiedBytes ("), "{}", s.log());
    assert!(unverified_bytes(metrics) <= 2 << 20);
    // What was refused is gone; the bodies still held keep theirs until they end.
    assert!(
        eventually(Duration::from_secs(5), || s.temporaries().len() == 2),
        "{:?}",
        s.temporaries()
    );
    drop((a, b));
    assert!(
        eventually(Duration::from_secs(5), || s.temporaries().is_empty()),
        "{:?}",
        s.temporaries()
    );
    assert!(eventually(Duration::from_secs(5), || unverified_bytes(metrics) == 0));
    // A signed upload is not unverified: never held to these caps.
    let big = pattern(1 << 20, 6);
    let path = unique("signed.bin");
    assert_eq!(
        put(&s, &s.put_target(&path, big.len() as u64, None, Proto::V), &big, None),
        201
    );
}

#[test]
fn a_body_dripping_below_min_body_rate_is_cut_and_removed() {
    let s = Server::with_config("BodyTimeout = 2\nMinBodyRate = 1024");
    for signed in [false, true] {
        let path = unique("drip.bin");
        let mut c = connect(s.addr);
        if signed {
            let size = 100_000;
            c.write_all(put_head(&s.put_target(&path, size, None, Proto::V), size as usize, None, "").as_bytes())
                .unwrap();
        } else {
            c.write_all(&forged_chunked_head(&path)).unwrap();
        }
        let started = Instant::now();
        // One byte every 300 ms: never idle for BodyTimeout, far below 1 KiB/s.
        let mut answer = None;
        while started.elapsed() < Duration::from_secs(15) {
            let byte: &[u8] = if signed { b"x" } else { b"1\r\nx\r\n" };
            if c.write_all(byte).is_err() {
                break;
            }
            c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            let mut peek = [0u8; 1];
            if let Ok(n) = c.peek(&mut peek) {
                if n > 0 {
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    answer = read_response(&mut c, false);
                }
                break;
            }
        }
        let r = answer.expect("the drip is answered");
        assert_eq!(r.status, 408, "signed {signed}: {r:?}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(10),
            "{took:?}"
        );
        assert!(
            eventually(Duration::from_secs(5), || s.temporaries().is_empty()),
            "{:?}",
            s.temporaries()
        );
        assert!(!file_at(&s, &path).exists());
    }
    assert!(s.wait_log("slower than MinBodyRate"), "{}", s.log());
    // A body at a fair rate is never cut: 64 KiB/s for 3 s, past BodyTimeout.
    let body = pattern(192 << 10, 8);
    let path = unique("steady.bin");
    let mut c = connect(s.addr);
    c.write_all(
        put_head(
            &s.put_target(&path, body.len() as u64, None, Proto::V),
            body.len(),
            None,
            "",
        )
        .as_bytes(),
    )
    .unwrap();
    for part in body.chunks(16 << 10) {
        c.write_all(part).unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(read_response(&mut c, false).expect("an answer").status, 201);
}

#[test]
fn a_resumable_creation_does_not_preallocate_beside_a_put_in_progress() {
    let s = Server::start();
    let path = unique("both.bin");
    let size = 4u64 << 20;
    let mut c = connect(s.addr);
    c.write_all(put_head(&s.put_target(&path, size, None, Proto::V), size as usize, None, "").as_bytes())
        .unwrap();
    c.write_all(&pattern(1 << 20, 9)).unwrap();
    assert!(eventually(Duration::from_secs(10), || s.temporaries().len() == 1));
    let target = s.put_target(&path, size, None, Proto::V2);
    let r = tus(&s, "POST", &target, &format!("Upload-Length: {size}\r\n"), b"");
    assert_eq!(r.status, 409, "{r:?}");
    let parts = std::fs::read_dir(s.tmp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("tus_"));
    assert_eq!(parts.count(), 0, "no partial file was preallocated");
}

/// Start `n` downloads of `url` that never read a byte (client receive buffers kept small, as
/// a stalled phone's would be).
fn stalled_downloads(s: &Server, url: &str, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut c = connect_as(1, Some(8192), s.addr);
            c.write_all(format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            c
        })
        .collect()
}

#[test]
fn stalled_downloads_hold_no_buffers_and_are_closed_after_send_timeout() {
    raise_fd_limit();
    // Long enough for all 1,000 to be under way at once: each first fills its socket's send
    // queue, megabytes of kernel memory (not ours), which takes the kernel a while.
    let s = Server::with_config("SendTimeout = 20\nIdleTimeout = 600");
    let body = pattern(32 << 20, 10);
    let path = unique("big.bin");
    assert_eq!(
        put(&s, &s.put_target(&path, body.len() as u64, None, Proto::V), &body, None),
        201
    );
    let url = format!("/upload/{}", encode_path(&path));
    // One full download first, so every lazily allocated buffer is already counted.
    assert_eq!(get(&s, &url).1.len(), body.len());
    let sockets_before = open_sockets(&s);
    let rss_before = rss_kib(&s);
    let held = stalled_downloads(&s, &url, 1000);
    assert!(
        eventually(Duration::from_secs(20), || open_sockets(&s) >= sockets_before + 1000),
        "{} of 1000 under way",
        open_sockets(&s) - sockets_before
    );
    std::thread::sleep(Duration::from_millis(500));
    let grew = rss_kib(&s).saturating_sub(rss_before);
    // The connections themselves cost a few KiB each; no chunk buffer is pinned by any.
    assert!(
        grew < 24 << 10,
        "1000 stalled downloads took {grew} KiB of server memory"
    );
    // Nobody reads: after SendTimeout every one of them is closed.
    assert!(
        eventually(Duration::from_secs(40), || open_sockets(&s) <= sockets_before),
        "{} sockets still open",
        open_sockets(&s)
    );
    drop(held);
    assert!(s.wait_log("accepted no byte for SendTimeout"), "{}", s.log());
    // And the server still serves.
    assert_eq!(get(&s, &url).1, body);
}

#[test]
fn a_stalled_download_is_closed_after_send_timeout() {
    let s = Server::with_config("SendTimeout = 2\nIdleTimeout = 600");
    let body = pattern(32 << 20, 12);
    let path = unique("big.bin");
    assert_eq!(
        put(&s, &s.put_target(&path, body.len() as u64, None, Proto::V), &body, None),
        201
    );
    let url = format!("/upload/{}", encode_path(&path));
    let sockets_before = open_sockets(&s);
    let started = Instant::now();
    let held = stalled_downloads(&s, &url, 40);
    // Every one is cut after SendTimeout (not sooner), and the server holds none of them then.
    let cut = || s.log().matches("accepted no byte for SendTimeout").count();
    assert!(
        eventually(Duration::from_secs(20), || cut() == 40),
        "{} of 40 cut",
        cut()
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert!(
        eventually(Duration::from_secs(5), || open_sockets(&s) <= sockets_before),
        "{} sockets still open",
        open_sockets(&s)
    );
    drop(held);
}

#[test]
fn pipelined_requests_nobody_reads_and_lingering_closes_end_after_send_timeout() {
    let s = Server::with_config("SendTimeout = 2\nIdleTimeout = 600");
    let body = pattern(200 << 10, 11);
    let path = unique("pipelined.bin");
    assert_eq!(
        put(&s, &s.put_target(&path, body.len() as u64, None, Proto::V), &body, None),
        201
    );
    let url = format!("/upload/{}", encode_path(&path));
    let sockets_before = open_sockets(&s);
    // 2,000 pipelined GETs, never read.
    let mut pipelined = connect(s.addr);
    let one = format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n");
    pipelined.write_all(one.repeat(2000).as_bytes()).unwrap();
    // A refused PUT whose answer is never read while the client keeps sending: the lingering
    // close cannot flush its answer into a full window either.
    let mut lingering = connect(s.addr);
    let mut req = one.repeat(200).into_bytes();
    req.extend_from_slice(
        format!("PUT /upload/x?{FORGED} HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n").as_bytes(),
    );
    lingering.write_all(&req).unwrap();
    lingering.set_nonblocking(true).unwrap();
    let started = Instant::now();
    let filler = vec![b'z'; 64 << 10];
    while started.elapsed() < Duration::from_secs(1) {
        let _ = lingering.write(&filler);
    }
    assert!(
        eventually(Duration::from_secs(20), || open_sockets(&s) <= sockets_before),
        "{} sockets still open",
        open_sockets(&s)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    drop((pipelined, lingering));
}

/// What headless Chromium makes of `url` within 10 s: the DOM it rendered, or "" when it
/// rendered nothing (a download).
fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut child = chromium(profile.path())
        .arg("--dump-dom")
        .arg(url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    out
}

#[test]
fn content_types_that_are_not_one_media_type_never_render_inline() {
    let s = Server::start();
    let page = b"<html><body><h1 id=\"pwned\">PWNED</h1><form action=\"https://evil.example/\"><input name=p></form></body></html>";
    let mut urls = Vec::new();
    for declared in [
        "image/png, text/html",
        "text/plain; a=b, text/html",
        "image/svg+xml",
        "text/html",
    ] {
        let path = unique("page.png");
        let target = s.put_target(&path, page.len() as u64, Some(declared), Proto::V2);
        assert_eq!(put(&s, &target, page, Some(declared)), 201, "{declared}");
        let url = format!("/upload/{}", encode_path(&path));
        let r = raw(s.addr, format!("GET {url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(r.header("content-disposition"), Some("attachment"), "{declared}: {r:?}");
        let csp = r.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("sandbox") && csp.contains("form-action 'none'"), "{csp}");
        if declared.contains(',') {
            assert_eq!(r.header("content-type"), Some("application/octet-stream"), "{declared}");
        } else {
            assert_eq!(r.header("content-type"), Some(declared));
        }
        urls.push(s.url(&url));
    }
    // A plain picture is still shown in place.
    let png = pattern(100, 1);
    let path = unique("real.png");
    assert_eq!(
        put(
            &s,
            &s.put_target(&path, 100, Some("image/png"), Proto::V2),
            &png,
            Some("image/png")
        ),
        201
    );
    let r = raw(
        s.addr,
        format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(&path)).as_bytes(),
    );
    assert_eq!(r.header("content-disposition"), Some("inline"));
    if !require("chromium", on_path("chromium")) {
        return;
    }
    // The control: the same bytes as text/plain are shown in place, as text.
    let path = unique("page.txt");
    let target = s.put_target(&path, page.len() as u64, Some("text/plain"), Proto::V2);
    assert_eq!(put(&s, &target, page, Some("text/plain")), 201);
    let control = s.url(&format!("/upload/{}", encode_path(&path)));
    let doms: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = [&urls[0], &urls[1], &control]
            .into_iter()
            .map(|u| scope.spawn(move || chromium_dom(u)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        doms[2].contains("PWNED") && !doms[2].contains("<h1"),
        "the control: {:?}",
        doms[2]
    );
    for (url, dom) in urls.iter().zip(&doms[..2]) {
        assert!(
            !dom.contains("<h1 id=\"pwned\">"),
            "Chromium rendered {url} as a page:\n{dom}"
        );
    }
}

#[test]
fn a_body_on_get_head_or_options_is_never_read_as_a_request() {
    let s = Server::start();
    let path = unique("kept.txt");
    assert_eq!(put(&s, &s.put_target(&path, 4, None, Proto::V), b"kept", None), 201);
    let url = format!("/upload/{}", encode_path(&path));
    for method in ["GET", "HEAD", "OPTIONS"] {
        let victim = unique("smuggled.txt");
        let smuggled = format!(
            "{}data",
            put_head(&s.put_target(&victim, 4, None, Proto::V), 4, None, "")
        );
        let mut c = connect(s.addr);
        c.write_all(
            format!(
                "{method} {url} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
                smuggled.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let first = read_response(&mut c, method == "HEAD").expect("the answer");
        assert!(first.status == 200 || first.status == 204, "{method}: {first:?}");
        assert_eq!(first.header("connection"), Some("close"), "{method}");
        // Nothing more comes: the connection closes after the one answer.
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
        assert!(
            !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
            "{method}: a second response"
        );
        assert!(!file_at(&s, &victim).exists(), "{method}: the smuggled PUT ran");
    }
}

#[test]
fn a_request_smuggled_through_nginx_with_upstream_keepalive_does_not_run() {
    if !require("nginx", std::path::Path::new("/usr/sbin/nginx").exists()) {
        return;
    }
    let s = Server::start();
    let path = unique("kept.txt");
    assert_eq!(put(&s, &s.put_target(&path, 4, None, Proto::V), b"kept", None), 201);
    let proxy = Nginx::keepalive_proxy(&s);
    let victim = unique("smuggled.txt");
    let smuggled = format!(
        "{}data",
        put_head(&s.put_target(&victim, 4, None, Proto::V), 4, None, "")
    );
    for _ in 0..3 {
        let mut c = connect(proxy.addr());
        c.write_all(
            format!(
                "GET /upload/{} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}",
                encode_path(&path),
                smuggled.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut c, false).expect("an answer through nginx");
        assert_eq!(r.status, 200, "{r:?}");
        // The next request on the kept-alive upstream connection is a plain one.
        let (status, got) = get_via(proxy.addr(), &format!("/upload/{}", encode_path(&path)));
        assert_eq!((status, got.as_slice()), (200, &b"kept"[..]));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!file_at(&s, &victim).exists(), "the smuggled PUT ran");
}

fn get_via(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let r = raw(addr, format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    (r.status, r.body)
}

#[test]
fn a_symlink_swapped_in_during_publication_never_takes_a_file_outside() {
    let s = Server::start();
    let store = s.store();
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(store.join("race")).unwrap();
    std::os::unix::fs::symlink(&outside, store.join("race-link")).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A local user swapping StoreDir/race between a directory and a symlink, as fast as it can.
    let swapper = {
        let (stop, store) = (stop.clone(), store.clone());
        std::thread::spawn(move || {
            let (a, b) = (store.join("race"), store.join("race-link"));
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                nix::fcntl::renameat2(None, &a, None, &b, nix::fcntl::RenameFlags::RENAME_EXCHANGE).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let mut created = Vec::new();
    for i in 0..300 {
        let path = format!("race/{}-{i}.txt", unique("f").replace('/', "_"));
        match put(&s, &s.put_target(&path, 2, None, Proto::V), b"hi", None) {
            201 => created.push(path),
            409 => {}
            other => panic!("PUT {path}: {other}"),
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 300, "the race ran ({swaps} swaps)");
    let escaped: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        escaped.is_empty(),
        "{} of {} files landed outside StoreDir: {escaped:?}",
        escaped.len(),
        created.len()
    );
    // Every acknowledged file is in the real directory, whatever its name is now.
    let real = if store.join("race").is_symlink() {
        store.join("race-link")
    } else {
        store.join("race")
    };
    for path in &created {
        let name = path.strip_prefix("race/").unwrap();
        assert_eq!(std::fs::read(real.join(name)).unwrap(), b"hi", "{path}");
    }
}

#[test]
fn the_example_secret_is_refused_and_a_short_one_warned_about() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "Secret = \"change-me-to-a-long-random-string\"\nStoreDir = \"{}\"\nListenPort = \"127.0.0.1:{}\"\n",
            d.path().join("s").display(),
            free_port()
        ),
    );
    let (code, _, err) = run(&["--config", &cfg]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`Secret`") && err.contains("openssl rand -hex 32"),
        "{err}"
    );
    assert!(!d.path().join("s").exists(), "refused before anything was created");
    let s = Server::with_config("Secret = \"short\"");
    assert!(s.wait_log("5 bytes is short for an HMAC key"), "{}", s.log());
    // The README's quick start passes a generated secret through the environment, and the
    // example it runs listens on loopback only.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(
        readme.contains("HMAC_FILE_SERVER_SECRET=$(openssl rand -hex 32"),
        "README quick start"
    );
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example")).unwrap();
    let c = hmac_file_server::config::Config::parse_with_secret(&example, Some("k".repeat(32))).unwrap();
    assert!(c.listen_addr().unwrap().ip().is_loopback());
}
