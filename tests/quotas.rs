//! Quotas (docs/operations.md, "Retention, quotas and deletion"): `StoreMaxSize` refuses the
//! upload that would take the store above it before its body, racing uploads never overshoot,
//! a deletion frees the room; `UserQuota` per uploader, refusing or evicting the oldest files;
//! the accounting holds across restarts.
mod common;

use std::io::Write;

use common::*;

fn upload(s: &Server, path: &str, size: usize) -> u16 {
    let target = s.put_target(path, size as u64, None, Proto::V);
    put(s, &target, &pattern(size, 3), None)
}

/// A Bearer upload of `size` bytes by `uploader`.
fn upload_as(s: &Server, uploader: &str, path: &str, size: usize) -> u16 {
    let mut claims = slot_claims(path, size as u64, "application/octet-stream");
    claims["sub"] = uploader.into();
    put_bearer(s, &slot_target(path), &pattern(size, 4), &slot_token(SECRET, &claims)).status
}

fn served(s: &Server, path: &str) -> u16 {
    get(s, &format!("/upload/{}", encode_path(path))).0
}

#[test]
fn store_max_size_refuses_before_the_body_and_a_deletion_frees_room() {
    let (s, metrics) = Server::with_metrics("StoreMaxSize = 10000\nDeleteSecret = \"d\"", &[]);
    let (a, b, c) = (unique("a.bin"), unique("b.bin"), unique("c.bin"));
    assert_eq!(upload(&s, &a, 4000), 201);
    assert_eq!(upload(&s, &b, 6000), 201, "exactly full is allowed");
    // Refused from the head alone: no 100 Continue, the body never sent.
    let target = s.put_target(&c, 1, None, Proto::V);
    let mut conn = connect(s.addr);
    conn.write_all(put_head(&target, 1, None, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    let r = read_response(&mut conn, false).expect("answer");
    assert_eq!(r.status, 507, "{r:?}");
    assert!(!file_at(&s, &c).exists());
    assert!(s.wait_log("StoreMaxSize"), "the refusal names the limit:\n{}", s.log());
    let token = hmac_file_server::auth::sign_deletion(SECRET.as_bytes(), &a, "d");
    let r = raw(
        s.addr,
        format!(
            "DELETE /upload/{}?token={token} HTTP/1.1\r\nHost: x\r\n\r\n",
            encode_path(&a)
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 204);
    assert_eq!(upload(&s, &c, 4000), 201, "the deletion freed the room");
    let text = scrape(metrics);
    assert!(
        text.contains("hmac_file_server_quota_refusals_total{quota=\"store\"} 1"),
        "{text}"
    );
    assert!(text.contains("hmac_file_server_stored_bytes 10000"), "{text}");
}

#[test]
fn racing_uploads_never_overshoot() {
    let s = Server::with_config("StoreMaxSize = \"100KB\"");
    let paths: Vec<String> = (0..12).map(|i| unique(&format!("race-{i}.bin"))).collect();
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = paths.iter().map(|p| scope.spawn(|| upload(&s, p, 20 << 10))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = statuses.iter().filter(|&&c| c == 201).count();
    assert_eq!(stored, 5, "{statuses:?}");
    assert!(statuses.iter().all(|&c| c == 201 || c == 507), "{statuses:?}");
    let on_disk: u64 = paths
        .iter()
        .filter_map(|p| std::fs::metadata(file_at(&s, p)).ok())
        .map(|m| m.len())
        .sum();
    assert_eq!(on_disk, 5 * (20 << 10));
    // Chunked bodies count as they arrive, and are cut at the limit.
    let path = unique("chunked.bin");
    let target = s.put_target(&path, 30 << 10, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes())
        .unwrap();
    let body = pattern(30 << 10, 5);
    for part in body.chunks(8 << 10) {
        let _ = c.write_all(format!("{:x}\r\n", part.len()).as_bytes());
        let _ = c.write_all(part);
        let _ = c.write_all(b"\r\n");
    }
    let _ = c.write_all(b"0\r\n\r\n");
    assert_eq!(read_response(&mut c, false).map(|r| r.status), Some(507));
    assert!(!file_at(&s, &path).exists());
}

#[test]
fn user_quotas_refuse_per_uploader() {
    let s = Server::with_config("UserQuota = 5000");
    // A new store is indexed before the server listens: no upload meets "quotas wait" (503).
    let log = s.log();
    let (indexed, listening) = (log.find("file index rebuilt"), log.find("listening"));
    assert!(indexed.is_some() && indexed < listening, "{log}");
    let (a1, a2, b1) = (unique("a1.bin"), unique("a2.bin"), unique("b1.bin"));
    assert_eq!(upload_as(&s, "alice@localhost", &a1, 3000), 201);
    assert_eq!(upload_as(&s, "alice@localhost", &a2, 3000), 507, "alice is over");
    assert!(!file_at(&s, &a2).exists());
    assert_eq!(upload_as(&s, "bob@localhost", &b1, 3000), 201, "bob has his own quota");
    // Unknown uploaders (signed URLs) are not counted per user.
    assert_eq!(upload(&s, &unique("anon.bin"), 6000), 201);
    assert!(s.wait_log("UserQuota of alice@localhost"), "{}", s.log());
}

#[test]
fn user_quotas_evict_the_oldest_files() {
    let s = Server::with_config("UserQuota = 5000\nUserQuotaEvictOldest = true");
    let (f1, f2, f3, g1) = (unique("f1.bin"), unique("f2.bin"), unique("f3.bin"), unique("g1.bin"));
    assert_eq!(upload_as(&s, "alice@localhost", &f1, 2000), 201);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(upload_as(&s, "alice@localhost", &f2, 2000), 201);
    assert_eq!(upload_as(&s, "bob@localhost", &g1, 4000), 201);
    assert_eq!(upload_as(&s, "alice@localhost", &f3, 3000), 201, "{}", s.log());
    assert_eq!(served(&s, &f1), 404, "alice's oldest file made room");
    assert!(!file_at(&s, &f1).exists());
    assert_eq!(served(&s, &f2), 200);
    assert_eq!(served(&s, &f3), 200);
    assert_eq!(served(&s, &g1), 200, "bob's files are not alice's quota");
    // More than the quota itself cannot be made room for.
    assert_eq!(upload_as(&s, "alice@localhost", &unique("huge.bin"), 5001), 507);
    assert_eq!(served(&s, &f2), 200, "nothing evicted for an upload that cannot fit");
}

#[test]
fn the_accounting_holds_across_restarts_and_resumable_uploads() {
    let mut s = Server::with_config("StoreMaxSize = 10000");
    assert_eq!(upload(&s, &unique("kept.bin"), 6000), 201);
    // A resumable upload holds its whole size from its creation on, across a restart.
    let path = unique("resumable.bin");
    let r = tus_create(&s, &path, 3000);
    assert_eq!(r.status, 201, "{r:?}");
    let loc = r.header("Location").unwrap().to_owned();
    assert_eq!(
        upload(&s, &unique("too-much.bin"), 1001),
        507,
        "6000 stored + 3000 reserved"
    );
    s.kill_hard();
    s.restart();
    assert_eq!(upload(&s, &unique("still-too-much.bin"), 1001), 507, "{}", s.log());
    assert_eq!(tus_patch(&s, &loc, 0, &pattern(3000, 1), "").status, 204);
    assert_eq!(upload(&s, &unique("fits.bin"), 1000), 201, "exactly full again");
    s.restart_graceful();
    assert_eq!(upload(&s, &unique("over.bin"), 1), 507);
}
