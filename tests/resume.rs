//! Resumable uploads pick up at once after a crash or a broken connection, on every session
//! store: a restarted node takes over its own locks, another node takes over a dead one's
//! within a lease, a HEAD right after a cut PATCH reports the offset that PATCH left (never one
//! about to move), and the primary store is used again within seconds of its return.
mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use rstest::rstest;
use rstest_reuse::apply;

fn head_offset(server: &Server, loc: &str) -> (u16, u64) {
    let r = tus(server, "HEAD", loc, "", b"");
    let offset = r
        .header("Upload-Offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX);
    (r.status, offset)
}

/// Open a PATCH of `body.len()` bytes at `offset` and send only its first `sent` bytes.
fn half_patch(server: &Server, loc: &str, offset: u64, body: &[u8], sent: usize) -> std::net::TcpStream {
    let mut c = connect(server.addr);
    c.write_all(tus_patch_head(loc, offset, body.len()).as_bytes()).unwrap();
    c.write_all(&body[..sent]).unwrap();
    c
}

/// Begin an upload of `data` on `server` (its first MiB acknowledged), then kill the server
/// hard while a PATCH of the rest holds the upload with `sent` bytes of it sent. The upload's
/// location.
fn crash_mid_patch(server: &mut Server, path: &str, data: &[u8], sent: usize) -> String {
    let loc = tus_begin(server, path, data, 1 << 20);
    let c = half_patch(server, &loc, 1 << 20, &data[1 << 20..], sent);
    // The PATCH's lease is fresh when the process dies.
    std::thread::sleep(Duration::from_millis(200));
    server.kill_hard();
    drop(c);
    loc
}

#[apply(every_store)]
fn a_node_killed_mid_patch_and_restarted_resumes_at_once(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let mut server = Server::with_config(&store.config);
    let data = pattern(3 << 20, 21);
    let path = unique("crash.bin");
    let loc = crash_mid_patch(&mut server, &path, &data, 256 << 10);
    server.restart();
    // The restarted node is the same node in a later generation: the dead process's lock is
    // its own, taken over at once, not waited out.
    let started = Instant::now();
    let (status, offset) = head_offset(&server, &loc);
    assert_eq!((status, offset), (200, 1 << 20), "{}", server.log());
    let r = tus_patch(&server, &loc, offset, &data[offset as usize..], "");
    assert_eq!(r.status, 204, "{r:?}\n{}", server.log());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} for a dead lock",
        started.elapsed()
    );
    assert_eq!(get(&server, &format!("/upload/{}", encode_path(&path))).1, data);
}

#[apply(shared_stores)]
fn another_node_continues_within_a_lease_of_a_crash(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let (mut a, b) = store.two_nodes();
    let data = pattern(2 << 20, 22);
    let path = unique("handover.bin");
    let loc = crash_mid_patch(&mut a, &path, &data, 128 << 10);
    // Node b waits out a's lease (5 s) inside its request and goes on: no 423 to the client.
    let started = Instant::now();
    let (status, offset) = head_offset(&b, &loc);
    assert_eq!((status, offset), (200, 1 << 20), "{}", b.log());
    let r = tus_patch(&b, &loc, offset, &data[offset as usize..], "");
    assert_eq!(r.status, 204, "{r:?}\n{}", b.log());
    let took = started.elapsed();
    assert!(took < Duration::from_secs(7), "took {took:?}");
    assert_eq!(get(&b, &format!("/upload/{}", encode_path(&path))).1, data);
}

#[apply(every_store)]
fn a_head_right_after_a_cut_patch_reports_what_it_kept(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let server = Server::with_config(&store.config);
    const ROUNDS: usize = 200;
    const PIECE: usize = 16 << 10;
    let data = pattern(ROUNDS * PIECE, 23);
    let path = unique("cut.bin");
    let loc = tus_begin(&server, &path, &data, 0);
    let mut offset = 0u64;
    for round in 0..ROUNDS {
        let end = (round + 1) * PIECE;
        // Half of the piece, then the connection is gone; the client asks at once where to go on.
        let c = half_patch(&server, &loc, offset, &data[offset as usize..end], PIECE / 2);
        drop(c);
        let (status, reported) = head_offset(&server, &loc);
        assert_eq!(status, 200, "round {round}");
        assert!(
            reported >= offset && reported <= end as u64,
            "round {round}: {reported}"
        );
        let r = tus_patch(&server, &loc, reported, &data[reported as usize..end], "");
        assert_eq!(
            r.status,
            204,
            "round {round}: offset {reported} refused: {r:?}\n{}",
            server.log()
        );
        offset = end as u64;
    }
    assert_eq!(get(&server, &format!("/upload/{}", encode_path(&path))).1, data);
}

#[rstest]
#[case::postgres(StoreKind::Postgres)]
#[case::mysql(StoreKind::Mysql)]
fn sessions_go_back_to_redis_within_seconds_of_its_return(#[case] kind: StoreKind) {
    let Some(db) = kind.fixture() else { return };
    let Some(mut redis) = StoreFixture::redis() else { return };
    // A day of ResumableExpiration: the sweeper comes by once a minute, the probe every 2 s.
    let server = Server::with_config(&format!("{}{}", redis.config, db.config));
    let data = pattern(1 << 20, 24);
    let loc = tus_begin(&server, &unique("across.bin"), &data, 256 << 10);
    redis.stop_redis();
    assert_eq!(
        tus_patch(&server, &loc, 256 << 10, &data[256 << 10..512 << 10], "").status,
        204
    );
    assert!(server.wait_log("session store failed over"));
    let path = unique("during.bin");
    assert_eq!(tus_create(&server, &path, 10).status, 201);
    redis.start_redis();
    let back = Instant::now();
    loop {
        let r = tus_create(&server, &unique("after.bin"), 10);
        assert_eq!(r.status, 201, "{r:?}");
        let id = r.header("Location").unwrap().rsplit('/').next().unwrap().to_owned();
        if redis
            .redis_cli(&["exists", &format!("hmac-file-server:session:{id}")])
            .trim()
            == "1"
        {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(8),
            "still not in Redis\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("back in Redis after {:?}", back.elapsed());
    assert!(back.elapsed() < Duration::from_secs(6), "took {:?}", back.elapsed());
    // The upload that progressed on the database goes on from its offset, never an older one.
    let (status, offset) = head_offset(&server, &loc);
    assert_eq!((status, offset), (200, 512 << 10));
    assert_eq!(tus_patch(&server, &loc, offset, &data[512 << 10..], "").status, 204);
}
