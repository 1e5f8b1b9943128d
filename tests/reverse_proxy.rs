//! The nginx TLS reverse proxy of docs/operations.md in front of a real server, driven with curl: signed
//! paths arrive untouched (encoded non-ASCII included), large bodies stream through, refusals
//! and CORS headers reach the client unchanged.
mod common;

use common::nginx::Nginx;
use common::*;
use std::path::Path;
use std::process::Command;

/// The nginx server block of docs/operations.md ("Behind a TLS reverse proxy"), between its markers.
fn documented_server_block() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md"))
        .expect("docs/operations.md");
    let start = doc.find("# nginx-proxy-begin").expect("nginx snippet start marker");
    let end = doc.find("# nginx-proxy-end").expect("nginx snippet end marker");
    doc[start..end].to_owned()
}

/// curl through the proxy: (status, headers and body as text).
fn curl(n: &Nginx, args: &[&str], target: &str) -> (u16, String) {
    let url = format!("https://localhost:{}{target}", n.port);
    let out = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(n.dir.path().join("cert.pem"))
        .args(["--resolve", &format!("localhost:{}:127.0.0.1", n.port)])
        .args(["-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(&url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rest, code) = text.trim_end().rsplit_once('\n').unwrap_or(("", text.trim()));
    (code.trim().parse().expect("status code"), rest.to_owned())
}

#[test]
fn uploads_and_downloads_through_the_documented_nginx_proxy() {
    if !require("nginx", Path::new("/usr/sbin/nginx").exists() || on_path("nginx"))
        || !require("curl and openssl", on_path("curl") && on_path("openssl"))
    {
        return;
    }
    let s = Server::start();
    let n = Nginx::tls(&s, &documented_server_block());
    let files = tempfile::tempdir().expect("tempdir");

    // A large body with a non-ASCII, space-containing name: streamed, path passed untouched.
    let path = unique("Ferien bild ä.jpg");
    let body = pattern(24 << 20, 31);
    let file = files.path().join("upload");
    std::fs::write(&file, &body).unwrap();
    let target = s.put_target(&path, body.len() as u64, Some("image/jpeg"), Proto::V2);
    let file_arg = file.display().to_string();
    let (code, out) = curl(&n, &["-T", &file_arg, "-H", "Content-Type: image/jpeg"], &target);
    assert_eq!(code, 201, "{out}\n{}", s.log());
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), body);

    let get_target = format!("/upload/{}", encode_path(&path));
    let dl = files.path().join("download");
    let dl_arg = dl.display().to_string();
    let (code, head) = curl(&n, &["-o", &dl_arg], &get_target);
    assert_eq!(code, 200, "{head}");
    assert_eq!(std::fs::read(&dl).unwrap(), body, "byte-exact through the proxy");
    assert!(head.to_ascii_lowercase().contains("content-type: image/jpeg"), "{head}");

    // A range request passes through.
    let (code, _) = curl(&n, &["-o", &dl_arg, "-r", "100-199"], &get_target);
    assert_eq!(code, 206);
    assert_eq!(std::fs::read(&dl).unwrap(), &body[100..200]);

    // Refusals come back as they are: a second PUT, a forged signature.
    let (code, out) = curl(&n, &["-T", &file_arg, "-H", "Content-Type: image/jpeg"], &target);
    assert_eq!(code, 409, "{out}\nnginx: {}\n{}", n.error_log(), s.log());
    let small = files.path().join("small");
    std::fs::write(&small, &body[..10]).unwrap();
    let small_arg = small.display().to_string();
    let forged_path = unique("forged.txt");
    let mut forged = s.put_target(&forged_path, 10, None, Proto::V);
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (code, _) = curl(&n, &["-T", &small_arg], &forged);
    assert_eq!(code, 403);

    // A Prosody mod_http_file_share slot: the Authorization header reaches the server.
    let slot_path = unique("slot through the proxy.txt");
    let token = slot_token(SECRET, &slot_claims(&slot_path, 10, "text/plain"));
    let auth = format!("Authorization: Bearer {token}");
    let (code, out) = curl(&n, &["-T", &small_arg, "-H", &auth], &slot_target(&slot_path));
    assert_eq!(code, 201, "{out}\n{}", s.log());
    assert_eq!(std::fs::read(file_at(&s, &slot_path)).unwrap(), &body[..10]);

    // A browser's preflight: answered once by the server, CORS headers not doubled by the proxy.
    let (code, head) = curl(
        &n,
        &[
            "-X",
            "OPTIONS",
            "-H",
            "Origin: https://chat.example.org",
            "-H",
            "Access-Control-Request-Method: PUT",
        ],
        &target,
    );
    assert_eq!(code, 204);
    let origins = head
        .lines()
        .filter(|l| l.to_ascii_lowercase().starts_with("access-control-allow-origin:"))
        .count();
    assert_eq!(origins, 1, "{head}");

    // The upstream saw the original request paths, signatures out of its log.
    assert!(s.wait_log("status=201"), "{}", s.log());
    let log = s.log();
    assert!(!log.contains("v2="), "{log}");
}
