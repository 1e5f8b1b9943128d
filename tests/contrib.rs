//! The files in contrib/ work as shipped: the systemd unit passes `systemd-analyze verify`, and
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
