//! A private nginx on a free loopback port in front of a test server: the README's TLS proxy
//! block, or a plain proxy that keeps its upstream connections alive.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use super::{free_port, wait_accepting, Server};

pub struct Nginx {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
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

impl Nginx {
    /// A TLS server block (docs/operations.md's, between its markers) in front of `upstream`, with a
    /// fresh self-signed certificate for `localhost`.
    pub fn tls(upstream: &Server, server_block: &str) -> Nginx {
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
        let block = server_block
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
        Nginx::launch(dir, port, &block)
    }

    /// A plain HTTP proxy that keeps its connections to `upstream` alive and reuses them for
    /// every client: where a request smuggled in one client's body would run as another's.
    pub fn keepalive_proxy(upstream: &Server) -> Nginx {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let block = format!(
            "upstream hfs {{ server {}; keepalive 4; }}\n\
             server {{\n  listen 127.0.0.1:{port};\n  client_max_body_size 1g;\n\
               location / {{\n    proxy_pass http://hfs;\n    proxy_http_version 1.1;\n\
                 proxy_set_header Connection \"\";\n    proxy_request_buffering off;\n  }}\n}}\n",
            upstream.addr
        );
        Nginx::launch(dir, port, &block)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What nginx logged at `info` and above.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn launch(dir: tempfile::TempDir, port: u16, server_block: &str) -> Nginx {
        let d = dir.path();
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
        let addr = n.addr();
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
}
