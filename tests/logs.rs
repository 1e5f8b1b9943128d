//! Operator-grade logs: JSON lines on request, and SIGHUP reopening LogFile for logrotate
//! without losing or duplicating a line.
mod common;

use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

#[test]
fn json_log_lines() {
    let s = Server::with_config("LogFormat = \"json\"");
    let path = unique("logged.txt");
    let target = s.put_target(&path, 2, None, Proto::V);
    assert_eq!(put(&s, &target, b"hi", None), 201);
    assert!(s.wait_log("\"status\":201"), "{}", s.log());
    let mut access = None;
    for line in s.log().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
        if v["target"] == "access" && v["method"] == "PUT" {
            access = Some(v);
        }
    }
    let access = access.expect("an access line for the PUT");
    assert_eq!(access["status"], 201);
    assert_eq!(access["bytes"], 2);
    assert!(access["path"].as_str().unwrap().starts_with("/upload/"), "{access}");
    assert!(!s.log().contains("v="), "no signature in the log");
}

#[test]
fn unknown_log_format_is_a_config_error() {
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "Secret = \"x\"\nStoreDir = \"{}\"\nLogFormat = \"xml\"\n",
            d.path().join("s").display()
        ),
    );
    let (code, _, err) = run(&["--check-config", "--config", &cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("LogFormat"), "{err}");
}

/// Paths of the access lines for PUTs in `text`.
fn put_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("method=PUT") && l.contains("status=201"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn sighup_reopens_the_log_file_and_loses_nothing() {
    let s = Server::start();
    let log = s.dir.path().join("server.log");
    let rotated = s.dir.path().join("server.log.1");
    // Uploads keep coming from another thread while the file is rotated under the server.
    let addr = s.addr;
    let targets: Vec<String> = (0..300)
        .map(|i| s.put_target(&unique(&format!("rot-{i}.txt")), 2, None, Proto::V))
        .collect();
    let load = std::thread::spawn(move || {
        let mut ok = 0;
        for t in targets {
            let r = raw(addr, format!("{}hi", put_head(&t, 2, None, "")).as_bytes());
            assert_eq!(r.status, 201);
            ok += 1;
            std::thread::sleep(Duration::from_millis(2));
        }
        ok
    });
    std::thread::sleep(Duration::from_millis(150));
    // What logrotate does: move the file, then signal the server.
    std::fs::rename(&log, &rotated).unwrap();
    kill(Pid::from_raw(s.pid() as i32), Signal::SIGHUP).unwrap();
    let uploads = load.join().expect("load");
    assert!(s.wait_log("SIGHUP: log file reopened"), "a new log file was opened");
    let deadline = Instant::now() + Duration::from_secs(5);
    let count = || {
        put_lines(&std::fs::read_to_string(&rotated).unwrap()).len()
            + put_lines(&std::fs::read_to_string(&log).unwrap_or_default()).len()
    };
    while count() < uploads && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let old = put_lines(&std::fs::read_to_string(&rotated).unwrap());
    let new = put_lines(&std::fs::read_to_string(&log).unwrap());
    assert!(
        !old.is_empty() && !new.is_empty(),
        "lines on both sides of the rotation"
    );
    assert_eq!(old.len() + new.len(), uploads, "every access line once, none lost");
    // The server is still alive and logging (SIGHUP is not a stop signal).
    let path = unique("after-rotation.txt");
    assert_eq!(put(&s, &s.put_target(&path, 2, None, Proto::V), b"ok", None), 201);
    assert!(s.wait_log("after-rotation.txt"));
}
