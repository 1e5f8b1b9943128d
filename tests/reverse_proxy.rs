//! The README's nginx TLS reverse proxy in front of a real server, driven with curl: signed
//! paths arrive untouched (encoded non-ASCII included), large bodies stream through, refusals
//! and CORS headers reach the client unchanged.
mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The README's nginx server block (section "Behind a TLS reverse proxy"), between its markers.
fn readme_snippet() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let start = readme
        .find("# nginx-proxy-begin")
        .expect("README nginx snippet start marker");
    let end = readme
        .find("# nginx-proxy-end")
        .expect("README nginx snippet end marker");
    readme[start..end].to_owned()
}

struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Nginx {
    /// SIGTERM, so the master stops its worker too (a SIGKILLed master leaves it orphaned);
    /// SIGKILL if it has not exited within 5 s.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nginx(upstream: &Server) -> Nginx {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "openssl made no certificate");
    let port = free_port();
    let server_block = readme_snippet()
        .replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port} ssl;"))
        .replace(
            "/etc/ssl/upload.example.com/fullchain.pem",
            &d.join("cert.pem").display().to_string(),
        )
        .replace(
            "/etc/ssl/upload.example.com/privkey.pem",
            &d.join("key.pem").display().to_string(),
        )
        .replace("127.0.0.1:8080", &upstream.addr.to_string());
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let config = format!(
        "{user}worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\nevents {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{server_block}\n}}\n",
        user = if root { "user root;\n" } else { "" },
        d = d.display(),
    );
    let conf = d.join("nginx.conf");
    std::fs::write(&conf, config).expect("write nginx.conf");
    let child = Command::new("nginx")
        .arg("-p")
        .arg(d)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut n = Nginx { child, port, dir };
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let error_log = n.dir.path().join("error.log");
    let log = || std::fs::read_to_string(&error_log).unwrap_or_default();
    wait_accepting(
        addr,
        &mut n.child,
        "nginx",
        std::time::Duration::from_secs(15),
        || true,
        log,
    );
    n
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
fn uploads_and_downloads_through_the_readme_nginx_proxy() {
    if !require("nginx", Path::new("/usr/sbin/nginx").exists() || on_path("nginx"))
        || !require("curl and openssl", on_path("curl") && on_path("openssl"))
    {
        return;
    }
    let s = Server::start();
    let n = start_nginx(&s);
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
    assert_eq!(
        code,
        409,
        "{out}\nnginx: {}\n{}",
        std::fs::read_to_string(n.dir.path().join("error.log")).unwrap_or_default(),
        s.log()
    );
    let small = files.path().join("small");
    std::fs::write(&small, &body[..10]).unwrap();
    let small_arg = small.display().to_string();
    let forged_path = unique("forged.txt");
    let mut forged = s.put_target(&forged_path, 10, None, Proto::V);
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (code, _) = curl(&n, &["-T", &small_arg], &forged);
    assert_eq!(code, 403);

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
