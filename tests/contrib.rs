//! The files in contrib/ work as shipped: the systemd unit passes `systemd-analyze verify`, is
//! rated at most 2.0 by `systemd-analyze security`, and its system-call filter lets through
//! every call the server makes (traced with strace under a workload of every kind of request);
//! the logrotate rule, run by the real logrotate against a running server, rotates its log with
//! the server writing on into the new file.
mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn contrib(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib").join(name)).expect("contrib file")
}

#[test]
fn systemd_unit_verifies() {
    if !require("systemd-analyze", on_path("systemd-analyze")) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // The unit names the installed binary; point it at the one under test.
    let unit = contrib("hmac-file-server.service").replace("/usr/local/bin/hmac-file-server", bin());
    assert!(unit.contains(&format!("ExecStart={} --config", bin())));
    let path = d.path().join("hmac-file-server.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Both units, contrib's and the Debian package's (which shares its sandboxing but runs as a
/// static user).
#[test]
fn systemd_units_are_rated_at_most_2_0_by_systemd_analyze_security() {
    if !require("systemd-analyze", on_path("systemd-analyze")) {
        return;
    }
    for unit in ["contrib/hmac-file-server.service", "debian/hmac-file-server.service"] {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("hmac-file-server.service");
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(unit)).unwrap();
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for hmac-file-server.service: "))
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{unit}: no score in:\n{text}\n{}", String::from_utf8_lossy(&out.stderr)));
        assert!(score <= 2.0, "{unit}: exposure {score}:\n{text}");
    }
}

/// Every system call in the groups `spec` names (`@system-service`, or a plain name).
fn syscalls_of(spec: &str) -> std::collections::BTreeSet<String> {
    if !spec.starts_with('@') {
        return [spec.to_owned()].into();
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", spec])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split('#').next().unwrap_or("").trim().to_owned())
        .filter(|l| !l.is_empty())
        .flat_map(|l| syscalls_of(&l))
        .collect()
}

#[test]
fn systemd_units_system_call_filter_allows_every_call_the_server_makes() {
    if !require("systemd-analyze", on_path("systemd-analyze")) || !require("strace", on_path("strace")) {
        return;
    }
    // What the unit allows: its allow lists, less its deny lists (~), as systemd combines them.
    let unit = contrib("hmac-file-server.service");
    let (mut allowed, mut denied) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for line in unit.lines().filter_map(|l| l.strip_prefix("SystemCallFilter=")) {
        let (into, specs) = match line.strip_prefix('~') {
            Some(rest) => (&mut denied, rest),
            None => (&mut allowed, line),
        };
        for spec in specs.split_whitespace() {
            into.extend(syscalls_of(spec));
        }
    }
    assert!(allowed.contains("io_uring_enter"), "io_uring must stay allowed");
    let trace = tempfile::NamedTempFile::new().unwrap();
    let trace_path = trace.path().display().to_string();
    let metrics_port = free_port();
    let extra = format!("MetricsEnabled = true\nMetricsPort = \"127.0.0.1:{metrics_port}\"\nLogLevel = \"info\"");
    let s = Server::wrapped(&extra, &[], &["strace", "-f", "-qq", "-c", "-o", &trace_path]);
    // A bit of everything: uploads of both framings, downloads small and large, a resumable
    // upload, the operator's port, SIGHUP, then a graceful stop.
    let small = unique("small.txt");
    assert_eq!(put(&s, &s.put_target(&small, 2, None, Proto::V), b"hi", None), 201);
    let large = unique("large.bin");
    let body = pattern(3 << 20, 1);
    assert_eq!(
        put(
            &s,
            &s.put_target(&large, body.len() as u64, None, Proto::V),
            &body,
            None
        ),
        201
    );
    let chunked = unique("chunked.bin");
    let target = s.put_target(&chunked, 5, None, Proto::V);
    let r = raw(
        s.addr,
        format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 201);
    assert_eq!(get(&s, &format!("/upload/{}", encode_path(&small))).1, b"hi");
    assert_eq!(get(&s, &format!("/upload/{}", encode_path(&large))).1, body);
    let resumable = unique("resumable.bin");
    let r = tus(
        &s,
        "POST",
        &s.put_target(&resumable, 4, None, Proto::V2),
        "Upload-Length: 4\r\n",
        b"",
    );
    assert_eq!(r.status, 201);
    assert_eq!(tus_patch(&s, r.header("Location").unwrap(), 0, b"data", "").status, 204);
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], metrics_port));
    assert_eq!(raw(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    assert_eq!(raw(metrics, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").status, 200);
    let server = s.wrapped_pid() as libc::pid_t;
    // SAFETY: kill(2) on the server process we started.
    unsafe { libc::kill(server, libc::SIGHUP) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe { libc::kill(server, libc::SIGTERM) };
    let mut s = s;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while s.child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the traced server did not stop");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let summary = std::fs::read_to_string(trace.path()).unwrap();
    let made: Vec<&str> = summary
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|name| {
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .filter(|name| *name != "total" && *name != "syscall")
        .collect();
    assert!(made.contains(&"io_uring_setup"), "{summary}");
    // Made only when the server runs as root, as the tests do (the unit runs it as its own
    // user): SQLite, the file index, keeps its journal's owner with fchown, and ignores the
    // EPERM the unit would answer.
    let as_root_only = ["fchown"];
    let refused: Vec<&&str> = made
        .iter()
        .filter(|c| !allowed.contains(**c) || denied.contains(**c))
        .filter(|c| !as_root_only.contains(c))
        .collect();
    assert!(refused.is_empty(), "the unit would refuse {refused:?}:\n{summary}");
}

#[test]
fn logrotate_rule_rotates_a_running_servers_log() {
    if !require(
        "logrotate",
        Path::new("/usr/sbin/logrotate").exists() || on_path("logrotate"),
    ) {
        return;
    }
    let s = Server::start();
    let logs = s.dir.path();
    // The shipped rule, aimed at this server's log and pid instead of the systemd service.
    let rule = contrib("hmac-file-server.logrotate")
        .replace(
            "/var/log/hmac-file-server/*.log",
            &logs.join("server.log").display().to_string(),
        )
        .replace(
            "systemctl kill --signal=HUP hmac-file-server.service",
            &format!("kill -HUP {}", s.pid()),
        );
    assert!(rule.contains(&format!("kill -HUP {}", s.pid())), "{rule}");
    let conf = logs.join("logrotate.conf");
    std::fs::write(&conf, rule).unwrap();
    let before = unique("before-rotation.txt");
    assert_eq!(put(&s, &s.put_target(&before, 1, None, Proto::V), b"1", None), 201);
    assert!(s.wait_log("before-rotation.txt"));
    let out = Command::new("logrotate")
        .arg("--force")
        .arg("--state")
        .arg(logs.join("logrotate.state"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // delaycompress keeps the first rotation plain.
    let rotated = std::fs::read_to_string(logs.join("server.log.1")).expect("rotated log");
    assert!(rotated.contains("before-rotation.txt"));
    let after = unique("after-rotation.txt");
    assert_eq!(put(&s, &s.put_target(&after, 1, None, Proto::V), b"2", None), 201);
    assert!(
        s.wait_log("after-rotation.txt"),
        "the server writes on into the new file"
    );
    assert!(!s.log().contains("before-rotation.txt"));
}
