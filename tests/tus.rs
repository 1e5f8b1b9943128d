//! Resumable uploads (tus 1.0): a real tus client (tuspy, tests/interop/tus_client.py) cut off
//! and resuming, a SIGKILL mid-upload, and the protocol's refusals over raw HTTP.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rstest_reuse::apply;

const MIB: usize = 1 << 20;

/// Send a raw HEAD request and read its answer's head.
fn raw_head(server: &Server, request: &str) -> Response {
    let mut s = connect(server.addr);
    s.write_all(request.as_bytes()).expect("write request");
    read_response(&mut s, true).expect("a response")
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Create an upload of `len` bytes at `path` signed for `len` and `ctype`; returns its URL path.
fn create(server: &Server, path: &str, len: u64, ctype: Option<&str>) -> String {
    let target = server.put_target(path, len, ctype, Proto::V2);
    let meta = match ctype {
        Some(t) => format!("Upload-Metadata: filename {},filetype {}\r\n", b64("x"), b64(t)),
        None => String::new(),
    };
    let r = tus(server, "POST", &target, &format!("Upload-Length: {len}\r\n{meta}"), b"");
    assert_eq!(r.status, 201, "{r:?}\n{}", server.log());
    let loc = r.header("Location").expect("Location").to_owned();
    assert!(loc.starts_with("/upload/.hmac-file-server/tus/"), "{loc}");
    loc
}

fn offset_of(server: &Server, loc: &str) -> u64 {
    let r = tus(server, "HEAD", loc, "", b"");
    assert_eq!(r.status, 200, "{r:?}");
    r.header("Upload-Offset").unwrap().parse().unwrap()
}

fn tus_client(args: &[&str]) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/tus_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "tus client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from the tus client")
}

fn have_tuspy() -> bool {
    require("tuspy (PyPI)", runs("python3", &["-c", "import tusclient"]))
}

/// The part files of resumable uploads in the reserved directory.
fn parts(server: &Server) -> Vec<String> {
    std::fs::read_dir(server.tmp_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("tus_"))
                .collect()
        })
        .unwrap_or_default()
}

#[apply(every_store)]
fn tuspy_upload_cut_in_the_middle_resumes_byte_exact(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    if !have_tuspy() {
        return;
    }
    let server = Server::with_config(&store.config);
    let data = pattern(64 * MIB, 71);
    let src = server.dir.path().join("video.mp4");
    std::fs::write(&src, &data).unwrap();
    let path = unique("video.mp4");
    let endpoint = server.url(&server.put_target(&path, data.len() as u64, Some("video/mp4"), Proto::V2));
    // 4 MiB PATCHes; the proxy drops the connection 30 MiB in, inside the eighth PATCH.
    let cut = 30 * MIB;
    let out = tus_client(&[
        "upload",
        &endpoint,
        src.to_str().unwrap(),
        &(4 * MIB).to_string(),
        "--cut",
        &cut.to_string(),
        "--type",
        "video/mp4",
    ]);
    assert_eq!(out["cuts"], 1, "{out}");
    assert_eq!(out["offset"], data.len() as u64, "{out}");
    // The client resumed from what the server had kept of the broken PATCH: beyond the last
    // whole PATCH (28 MiB), not beyond what went up the wire.
    let resumed = out["resumed_from"][0].as_u64().expect("a resume");
    assert!(
        resumed > 28 * MIB as u64 && resumed <= cut as u64,
        "resumed from {resumed}: {out}"
    );
    let (status, body) = get(&server, &format!("/upload/{}", encode_path(&path)));
    assert_eq!(status, 200);
    assert!(body == data, "the downloaded file differs from the upload");
    let r = raw_head(
        &server,
        &format!("HEAD /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(&path)),
    );
    assert_eq!(r.header("Content-Type"), Some("video/mp4"));
    assert!(parts(&server).is_empty(), "{:?}", parts(&server));
    // The upload URL is a write capability: the access log keeps only the start of its id.
    let url = out["url"].as_str().unwrap();
    let id = url.rsplit('/').next().unwrap();
    assert!(!server.log().contains(id), "the log holds a whole upload URL");
}

#[apply(every_store)]
fn sigkill_mid_upload_then_the_client_resumes_from_the_reported_offset(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    if !have_tuspy() {
        return;
    }
    let mut server = Server::with_config(&store.config);
    let data = pattern(64 * MIB, 72);
    let src = server.dir.path().join("backup.tar");
    std::fs::write(&src, &data).unwrap();
    let path = unique("backup.tar");
    let endpoint = server.url(&server.put_target(&path, data.len() as u64, None, Proto::V2));
    let first = tus_client(&[
        "partial",
        &endpoint,
        src.to_str().unwrap(),
        &(8 * MIB).to_string(),
        &(24 * MIB).to_string(),
    ]);
    let url = first["url"].as_str().unwrap().to_owned();
    let loc = url.trim_start_matches(&format!("http://{}", server.addr)).to_owned();
    assert_eq!(offset_of(&server, &loc), 24 * MIB as u64);

    // One long PATCH for the rest; 20 of its 40 MiB go up, then the server is killed while
    // the PATCH is still open. Its durable checkpoint (every 16 MiB) is what survives.
    let rest = &data[24 * MIB..];
    let mut s = connect(server.addr);
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: {}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        24 * MIB,
        rest.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&rest[..20 * MIB]).unwrap();
    // The checkpoint, seen in the log (a HEAD would wait for the open PATCH).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log().contains(&format!("offset={}", 40 * MIB)) {
        assert!(Instant::now() < deadline, "no checkpoint recorded\n{}", server.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill_hard();
    drop(s);
    server.restart();

    assert_eq!(
        offset_of(&server, &loc),
        40 * MIB as u64,
        "the checkpoint survived the kill"
    );
    let url = server.url(&loc);
    let second = tus_client(&["resume", &url, src.to_str().unwrap(), &(8 * MIB).to_string()]);
    assert_eq!(second["started_at"], 40 * MIB as u64, "{second}");
    assert_eq!(second["offset"], data.len() as u64);
    let (status, body) = get(&server, &format!("/upload/{}", encode_path(&path)));
    assert_eq!(status, 200);
    assert!(body == data, "the downloaded file differs from the upload");
}

#[apply(every_store)]
fn protocol_discovery_creation_head_patch_and_completion(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    let server = Server::with_config(&store.config);
    // Discovery.
    let r = raw(server.addr, b"OPTIONS /upload/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Tus-Version"), Some("1.0.0"));
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"));
    assert_eq!(
        r.header("Tus-Extension"),
        Some("creation,creation-with-upload,termination,checksum,expiration")
    );
    assert_eq!(r.header("Tus-Checksum-Algorithm"), Some("sha256"));
    assert_eq!(r.header("Tus-Max-Size"), Some("1073741824"));
    // A plain preflight keeps the plain CORS answer; a tus one is told about the tus headers.
    assert_eq!(
        r.header("Access-Control-Allow-Methods"),
        Some("GET, HEAD, PUT, OPTIONS")
    );
    let r = raw(
        server.addr,
        b"OPTIONS /upload/a HTTP/1.1\r\nHost: x\r\nOrigin: https://chat.example\r\nAccess-Control-Request-Method: PATCH\r\nAccess-Control-Request-Headers: tus-resumable, upload-offset, content-type\r\n\r\n",
    );
    assert_eq!(r.status, 204);
    assert!(r.header("Access-Control-Allow-Methods").unwrap().contains("PATCH"));
    assert!(r
        .header("Access-Control-Allow-Headers")
        .unwrap()
        .contains("Upload-Offset"));
    assert!(r.header("Access-Control-Expose-Headers").unwrap().contains("Location"));

    let data = pattern(3 * MIB + 17, 5);
    let path = unique("photo.jpg");
    let loc = create(&server, &path, data.len() as u64, Some("image/jpeg"));
    let r = tus(&server, "HEAD", &loc, "", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Upload-Offset"), Some("0"));
    assert_eq!(r.header("Upload-Length"), Some(data.len().to_string().as_str()));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert!(r.header("Upload-Expires").unwrap().ends_with("GMT"));
    assert!(r.header("Upload-Metadata").unwrap().contains("filetype"));
    // Nothing visible before the last byte.
    assert_eq!(get(&server, &format!("/upload/{}", encode_path(&path))).0, 404);

    let (a, b) = data.split_at(MIB);
    let r = tus_patch(&server, &loc, 0, a, "");
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("Upload-Offset"), Some(MIB.to_string().as_str()));
    assert_eq!(r.header("Tus-Resumable"), Some("1.0.0"));
    // Wrong offset: 409, nothing written.
    let r = tus_patch(&server, &loc, 0, a, "");
    assert_eq!(r.status, 409);
    assert_eq!(offset_of(&server, &loc), MIB as u64);
    // Wrong content type: 415; no Tus-Resumable: 412 with Tus-Version.
    let r = tus(
        &server,
        "PATCH",
        &loc,
        &format!("Upload-Offset: {MIB}\r\nContent-Type: application/octet-stream\r\n"),
        b,
    );
    assert_eq!(r.status, 415);
    let r = raw_head(&server, &format!("HEAD {loc} HTTP/1.1\r\nHost: x\r\n\r\n"));
    assert_eq!(r.status, 412);
    assert_eq!(r.header("Tus-Version"), Some("1.0.0"));
    // More than the signed length: 413.
    let mut too_much = b.to_vec();
    too_much.push(0);
    assert_eq!(tus_patch(&server, &loc, MIB as u64, &too_much, "").status, 413);
    // The rest, with a correct checksum: published.
    let sum = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b))
    };
    let r = tus_patch(
        &server,
        &loc,
        MIB as u64,
        b,
        &format!("Upload-Checksum: sha256 {sum}\r\n"),
    );
    assert_eq!(r.status, 204, "{r:?}");
    assert_eq!(r.header("Upload-Offset"), Some(data.len().to_string().as_str()));
    let (status, body) = get(&server, &format!("/upload/{}", encode_path(&path)));
    assert_eq!(status, 200);
    assert!(body == data);
    let r = raw_head(
        &server,
        &format!("HEAD /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(&path)),
    );
    assert_eq!(r.header("Content-Type"), Some("image/jpeg"));
    // Asked again, the upload says it is complete.
    assert_eq!(offset_of(&server, &loc), data.len() as u64);
    assert!(parts(&server).is_empty());
    // A PUT to the same path now is 409 like any existing file; so is a new creation.
    assert_eq!(
        put(&server, &server.put_target(&path, 3, None, Proto::V), b"abc", None),
        409
    );
    let target = server.put_target(&path, data.len() as u64, Some("image/jpeg"), Proto::V2);
    let r = tus(
        &server,
        "POST",
        &target,
        &format!(
            "Upload-Length: {}\r\nUpload-Metadata: filetype {}\r\n",
            data.len(),
            b64("image/jpeg")
        ),
        b"",
    );
    assert_eq!(r.status, 409);
}

#[apply(every_store)]
fn checksum_mismatch_is_460_and_keeps_nothing(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    let server = Server::with_config(&store.config);
    let data = pattern(200_000, 9);
    let path = unique("doc.pdf");
    let loc = create(&server, &path, data.len() as u64, None);
    let wrong = {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b"something else"))
    };
    let r = tus_patch(&server, &loc, 0, &data, &format!("Upload-Checksum: sha256 {wrong}\r\n"));
    assert_eq!(r.status, 460);
    assert_eq!(offset_of(&server, &loc), 0);
    let r = tus_patch(&server, &loc, 0, &data, "Upload-Checksum: md5 AAAA\r\n");
    assert_eq!(r.status, 400, "an unsupported algorithm");
    assert_eq!(offset_of(&server, &loc), 0);
    // The same body without a checksum goes through.
    assert_eq!(tus_patch(&server, &loc, 0, &data, "").status, 204);
    assert_eq!(get(&server, &format!("/upload/{}", encode_path(&path))).1, data);
}

#[apply(every_store)]
fn creation_is_authorized_by_the_upload_signature(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    let server = Server::with_config(&store.config);
    let path = unique("a.png");
    let target = server.put_target(&path, 1000, Some("image/png"), Proto::V2);
    let meta = format!("Upload-Metadata: filetype {}\r\n", b64("image/png"));
    // Upload-Length differs from the signed size.
    let r = tus(&server, "POST", &target, &format!("Upload-Length: 1001\r\n{meta}"), b"");
    assert_eq!(r.status, 403);
    // Declared type differs from the signed one (v2 signs it); absent means octet-stream.
    let r = tus(
        &server,
        "POST",
        &target,
        &format!(
            "Upload-Length: 1000\r\nUpload-Metadata: filetype {}\r\n",
            b64("text/html")
        ),
        b"",
    );
    assert_eq!(r.status, 403);
    let r = tus(&server, "POST", &target, "Upload-Length: 1000\r\n", b"");
    assert_eq!(r.status, 403);
    // No signature; tampered path; deferred length.
    let r = tus(
        &server,
        "POST",
        &format!("/upload/{}", encode_path(&path)),
        "Upload-Length: 1000\r\n",
        b"",
    );
    assert_eq!(r.status, 403);
    let other = target.replacen(".png", ".jpg", 1);
    assert_eq!(
        tus(&server, "POST", &other, &format!("Upload-Length: 1000\r\n{meta}"), b"").status,
        403
    );
    let r = tus(
        &server,
        "POST",
        &target,
        &format!("Upload-Defer-Length: 1\r\n{meta}"),
        b"",
    );
    assert_eq!(r.status, 400);
    // Above UploadMaxSize: 413, even when signed.
    let big = server.put_target(&path, 2 << 30, None, Proto::V);
    assert_eq!(
        tus(&server, "POST", &big, "Upload-Length: 2147483648\r\n", b"").status,
        413
    );
    // Another tus version: 412 with the one we speak. Without Tus-Resumable a POST is just
    // another method (405), as DESIGN.md has it.
    let r = raw(
        server.addr,
        format!("POST {target} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 0.2.2\r\nUpload-Length: 1000\r\n{meta}\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 412);
    assert_eq!(r.header("Tus-Version"), Some("1.0.0"));
    let r = raw(
        server.addr,
        format!("POST {target} HTTP/1.1\r\nHost: x\r\nUpload-Length: 1000\r\n{meta}\r\n").as_bytes(),
    );
    assert_eq!(r.status, 405);
    // Refused creations leave nothing behind.
    assert!(parts(&server).is_empty());
    // The right one, with the whole file in the creation request (creation-with-upload).
    let data = pattern(1000, 3);
    let r = tus(
        &server,
        "POST",
        &target,
        &format!("Upload-Length: 1000\r\n{meta}Content-Type: application/offset+octet-stream\r\n"),
        &data,
    );
    assert_eq!(r.status, 201, "{r:?}");
    assert_eq!(r.header("Upload-Offset"), Some("1000"));
    assert_eq!(get(&server, &format!("/upload/{}", encode_path(&path))).1, data);
    // A second upload to a path with an unfinished one is 409 until that one ends.
    let path2 = unique("b.bin");
    let loc = create(&server, &path2, 10, None);
    let t2 = server.put_target(&path2, 10, None, Proto::V2);
    assert_eq!(tus(&server, "POST", &t2, "Upload-Length: 10\r\n", b"").status, 409);
    assert_eq!(tus(&server, "DELETE", &loc, "", b"").status, 204);
    assert!(create(&server, &path2, 10, None).contains("/tus/"));
    // An empty file is complete at creation.
    let path3 = unique("empty.txt");
    let t3 = server.put_target(&path3, 0, None, Proto::V);
    let r = tus(&server, "POST", &t3, "Upload-Length: 0\r\n", b"");
    assert_eq!(r.status, 201);
    assert_eq!(
        get(&server, &format!("/upload/{}", encode_path(&path3))),
        (200, Vec::new())
    );
}

fn id_of(loc: &str) -> &str {
    loc.rsplit('/').next().unwrap()
}

#[apply(every_store)]
fn forged_foreign_and_terminated_upload_urls_are_refused(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    let server = Server::with_config(&store.config);
    let path = unique("clip.ogg");
    let loc = create(&server, &path, 100, None);
    let id = id_of(&loc).to_owned();
    // Forged: a random id of the right shape; a valid id with one digit changed.
    let forged = format!("/upload/.hmac-file-server/tus/{}", "ab".repeat(32));
    assert_eq!(tus(&server, "HEAD", &forged, "", b"").status, 404);
    let mut flipped = id.clone().into_bytes();
    flipped[40] = if flipped[40] == b'0' { b'1' } else { b'0' };
    let flipped = format!("/upload/.hmac-file-server/tus/{}", String::from_utf8(flipped).unwrap());
    assert_eq!(tus_patch(&server, &flipped, 0, b"x", "").status, 404);
    // Foreign: an upload URL minted by a server with another secret is refused before any
    // lookup.
    let other = Server::with_config(&format!("{}Secret = \"another secret\"", store.config));
    let target = signed_target("another secret", &unique("f.bin"), 100, None, Proto::V2);
    let r = tus(&other, "POST", &target, "Upload-Length: 100\r\n", b"");
    assert_eq!(r.status, 201);
    let foreign = r.header("Location").unwrap().to_owned();
    let r = tus(
        &server,
        "HEAD",
        &format!("/upload/.hmac-file-server/tus/{}", id_of(&foreign)),
        "",
        b"",
    );
    assert_eq!(r.status, 404);
    // The upload URL space is not served by GET.
    assert_ne!(get(&server, &loc).0, 200);
    assert_eq!(offset_of(&server, &loc), 0, "the real one still works");

    // Terminated: 204, then gone with its partial data.
    let loc2 = create(&server, &unique("t.bin"), 100, None);
    let part2 = format!("tus_{}", id_of(&loc2));
    assert_eq!(tus_patch(&server, &loc2, 0, &[7u8; 40], "").status, 204);
    assert!(parts(&server).contains(&part2));
    assert_eq!(tus(&server, "DELETE", &loc2, "", b"").status, 204);
    assert_eq!(tus(&server, "HEAD", &loc2, "", b"").status, 404);
    assert_eq!(tus_patch(&server, &loc2, 40, &[7u8; 60], "").status, 404);
    assert!(!parts(&server).contains(&part2));
    assert!(parts(&server).contains(&format!("tus_{id}")));
}

#[apply(every_store)]
fn expired_uploads_are_refused_and_removed_with_their_data(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    let server = Server::with_config(&format!("{}ResumableExpiration = 2", store.config));
    let path = unique("clip.ogg");
    let loc = create(&server, &path, 100, None);
    assert_eq!(tus_patch(&server, &loc, 0, &[1u8; 10], "").status, 204);
    assert_eq!(parts(&server).len(), 1);
    // 2 s after the last progress it expires; the sweeper removes it and its data.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !parts(&server).is_empty() {
        assert!(
            Instant::now() < deadline,
            "expired partial data not removed\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = tus_patch(&server, &loc, 10, &[1u8; 90], "").status;
    assert!(status == 404 || status == 410, "{status}");
    assert!(server.wait_log("resumable upload expired and removed"));
    assert_eq!(get(&server, &format!("/upload/{}", encode_path(&path))).0, 404);
}

#[apply(every_store)]
fn concurrent_patches_to_one_upload_cannot_interleave(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    let server = Server::with_config(&store.config);
    let len = 2 * MIB;
    let path = unique("race.bin");
    let loc = create(&server, &path, len as u64, None);
    let first = pattern(len, 1);
    let second = pattern(len, 2);
    // Two live writers at offset 0: the first streams steadily for about 8 s (its lock is
    // renewed as its bytes arrive), the second sends everything at once while it does.
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {len}\r\n\r\n"
    );
    let (slow, fast) = std::thread::scope(|scope| {
        let slow = scope.spawn(|| {
            let mut s1 = connect(server.addr);
            s1.write_all(head.as_bytes()).unwrap();
            for piece in first.chunks(len / 32) {
                if s1.write_all(piece).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            read_response(&mut s1, false).map_or(0, |r| r.status)
        });
        std::thread::sleep(Duration::from_millis(500));
        let fast = scope.spawn(|| tus_patch(&server, &loc, 0, &second, "").status);
        (slow.join().unwrap(), fast.join().unwrap())
    });
    // Exactly one wins; the other is told (423 while the winner held the upload, 409 once its
    // offset had moved); the file is all of the winner's bytes.
    let mut statuses = [slow, fast];
    statuses.sort();
    assert!(
        statuses[0] == 204 && matches!(statuses[1], 409 | 423),
        "slow {slow}, fast {fast}"
    );
    assert_eq!(slow, 204, "the live writer keeps its upload");
    let (status, body) = get(&server, &format!("/upload/{}", encode_path(&path)));
    assert_eq!(status, 200);
    assert!(body == first, "bytes of the second PATCH got in");
    // Once it is done, a stale PATCH gets 409 (wrong offset), not a second write.
    assert_eq!(tus_patch(&server, &loc, 0, &second, "").status, 409);
}

#[apply(every_store)]
fn sessions_survive_a_restart_and_a_path_that_appeared_meanwhile_wins(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let store = &store;
    let mut server = Server::with_config(&store.config);
    let path = unique("report.odt");
    let data = pattern(300_000, 4);
    let loc = create(&server, &path, data.len() as u64, None);
    assert_eq!(tus_patch(&server, &loc, 0, &data[..100_000], "").status, 204);
    server.restart();
    assert_eq!(offset_of(&server, &loc), 100_000);
    assert_eq!(
        tus_patch(&server, &loc, 100_000, &data[100_000..200_000], "").status,
        204
    );
    // A plain PUT to the same path finishes first: the resumable upload's last piece is 409
    // and the PUT's file stays.
    let other = pattern(5, 8);
    assert_eq!(
        put(&server, &server.put_target(&path, 5, None, Proto::V), &other, None),
        201
    );
    assert_eq!(tus_patch(&server, &loc, 200_000, &data[200_000..], "").status, 409);
    assert_eq!(get(&server, &format!("/upload/{}", encode_path(&path))).1, other);
    assert!(parts(&server).is_empty());
    assert_eq!(tus(&server, "HEAD", &loc, "", b"").status, 404);
}

#[test]
fn switched_off_resumable_uploads_are_405() {
    let store = StoreFixture::embedded().unwrap();
    let server = Server::with_config(&format!("{}ResumableUploads = false", store.config));
    let target = server.put_target(&unique("a"), 1, None, Proto::V);
    assert_eq!(tus(&server, "POST", &target, "Upload-Length: 1\r\n", b"").status, 405);
    let r = raw(server.addr, b"OPTIONS /upload/ HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("Tus-Resumable"), None);
    // Plain uploads are unaffected.
    assert_eq!(put(&server, &target, b"x", None), 201);
}
