//! Retention (docs/operations.md, "Retention, quotas and deletion"): `FileTTL` and the token's
//! `expires` make files 404 from their expiry and gone from disk, with their directories,
//! within seconds; expiry survives restarts, and a restart deletes what expired while the
//! server was down; an existing StoreDir is indexed by a walk while the server serves.
mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Poll `cond` every 50 ms for up to `secs` seconds.
fn within(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

fn upload(s: &Server, path: &str, body: &[u8]) {
    let target = s.put_target(path, body.len() as u64, None, Proto::V);
    assert_eq!(put(s, &target, body, None), 201, "{}", s.log());
}

fn served(s: &Server, path: &str) -> u16 {
    get(s, &format!("/upload/{}", encode_path(path))).0
}

#[test]
fn file_ttl_expires_and_deletes_with_the_directories() {
    let (s, metrics) = Server::with_metrics("FileTTL = \"2s\"", &[]);
    let path = unique("deep/er/short-lived.txt");
    upload(&s, &path, b"bye soon");
    assert_eq!(served(&s, &path), 200);
    let uploaded = Instant::now();
    assert!(within(4, || served(&s, &path) == 404), "served after its expiry");
    assert!(
        uploaded.elapsed() >= Duration::from_millis(1000),
        "404 before its expiry"
    );
    let top = s.store().join(path.split('/').next().unwrap());
    assert!(
        within(5, || !top.exists()),
        "{} and its directories stay",
        top.display()
    );
    assert!(s.wait_log("reason=\"expired\""), "{}", s.log());
    let text = scrape(metrics);
    assert!(
        text.contains("hmac_file_server_files_deleted_total{reason=\"expired\"} 1"),
        "{text}"
    );
    assert!(text.contains("hmac_file_server_stored_files 0"), "{text}");
}

#[test]
fn a_tokens_expires_claim_is_honoured_without_file_ttl() {
    let s = Server::start();
    let now = hmac_file_server::session::unix_now();
    let (past, soon, kept) = (unique("past.txt"), unique("soon.txt"), unique("kept.txt"));
    for (path, expires) in [(&past, Some(now - 5)), (&soon, Some(now + 2)), (&kept, None)] {
        let mut claims = slot_claims(path, 3, "text/plain");
        match expires {
            Some(e) => claims["expires"] = json!(e),
            None => {
                claims.as_object_mut().unwrap().remove("expires");
            }
        }
        assert_eq!(
            put_bearer(&s, &slot_target(path), b"abc", &slot_token(SECRET, &claims)).status,
            201
        );
    }
    assert_eq!(served(&s, &past), 404);
    assert_eq!(served(&s, &soon), 200);
    assert!(
        within(5, || !file_at(&s, &past).exists()),
        "an expired upload is deleted"
    );
    assert!(within(6, || !file_at(&s, &soon).exists()), "deleted once it expires");
    assert_eq!(served(&s, &kept), 200, "no expiry, no FileTTL: kept");
}

#[test]
fn expiry_survives_restarts_and_what_expired_meanwhile_goes_at_start() {
    let mut s = Server::with_config("FileTTL = \"3s\"");
    let (early, late) = (unique("early.txt"), unique("late.txt"));
    upload(&s, &early, b"1");
    // A clean stop, as systemd does it.
    s.restart_graceful();
    assert_eq!(served(&s, &early), 200, "kept across a restart");
    assert!(
        within(5, || !file_at(&s, &early).exists()),
        "its expiry came through the restart"
    );
    upload(&s, &late, b"2");
    // Killed, down until after the expiry, then started again.
    s.kill_hard();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(file_at(&s, &late).exists(), "nothing deletes while the server is down");
    s.restart();
    assert!(
        within(3, || !file_at(&s, &late).exists()),
        "deleted at start:\n{}",
        s.log()
    );
}

#[test]
fn an_existing_store_is_indexed_while_serving() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    // Files that were there before the index: one recent, one uploaded two days ago.
    for (p, age) in [("old/one.bin", 2 * 86400), ("new/two.bin", 0)] {
        let f = store.join(p);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, pattern(1000, 1)).unwrap();
        let t = std::time::SystemTime::now() - Duration::from_secs(age);
        std::fs::File::options()
            .write(true)
            .open(&f)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
    let s = Server::with_config(&format!("StoreDir = \"{}\"\nFileTTL = \"1d\"", store.display()));
    assert!(
        within(5, || !store.join("old").exists()),
        "uploaded 2 days ago, FileTTL 1 day:\n{}",
        s.log()
    );
    assert_eq!(get(&s, "/upload/new/two.bin").0, 200);
    assert!(s.wait_log("file index rebuilt"), "{}", s.log());
    let (code, out, err) = run(&[
        "files",
        "--config",
        &s.dir.path().join("config.toml").display().to_string(),
        "stats",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("1 files, 1000 bytes"), "{out}");
}
