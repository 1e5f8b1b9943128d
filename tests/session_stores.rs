//! Shared session stores: two nodes on one store and one StoreDir, Redis failing over to a
//! database and coming back, and stores that cannot be reached.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn create(server: &Server, path: &str, len: usize) -> Response {
    let target = server.put_target(path, len as u64, None, Proto::V);
    tus(server, "POST", &target, &format!("Upload-Length: {len}\r\n"), b"")
}

fn patch(server: &Server, loc: &str, offset: usize, body: &[u8]) -> Response {
    tus_patch(server, loc, offset as u64, body, "")
}

/// An upload started on one node is finished on another that shares the store and StoreDir.
fn two_nodes(store: &StoreFixture) {
    let a = Server::with_config(&store.config);
    let b = Server::with_config(&format!("{}StoreDir = \"{}\"\n", store.config, a.store().display()));
    let data = pattern(3 << 20, 11);
    let path = unique("shared.bin");
    let r = create(&a, &path, data.len());
    assert_eq!(r.status, 201, "{r:?}");
    let loc = r.header("Location").unwrap().to_owned();
    assert_eq!(patch(&a, &loc, 0, &data[..1 << 20]).status, 204);
    // Node b knows the upload and its offset, continues and finishes it.
    let r = tus(&b, "HEAD", &loc, "", b"");
    assert_eq!(r.header("Upload-Offset"), Some("1048576"), "{r:?}");
    assert_eq!(patch(&b, &loc, 1 << 20, &data[1 << 20..]).status, 204);
    // Both serve the file; neither can start a second upload to the path.
    let target = format!("/upload/{}", encode_path(&path));
    assert!(get(&a, &target).1 == data);
    assert!(get(&b, &target).1 == data);
    assert_eq!(create(&a, &path, data.len()).status, 409);
    // Two nodes racing to create one path: exactly one gets it.
    let path2 = unique("race.bin");
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| create(&a, &path2, 10).status);
        let tb = s.spawn(|| create(&b, &path2, 10).status);
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let mut got = [ra, rb];
    got.sort();
    assert_eq!(got, [201, 409]);
}

#[test]
fn two_nodes_share_redis() {
    if let Some(store) = StoreFixture::redis() {
        two_nodes(&store);
    }
}

#[test]
fn two_nodes_share_postgres() {
    if let Some(store) = StoreFixture::postgres() {
        two_nodes(&store);
    }
}

#[test]
fn two_nodes_share_mysql() {
    if let Some(store) = StoreFixture::mysql() {
        two_nodes(&store);
    }
}

/// Redis stops mid-upload: the upload completes through the fallback database; Redis back:
/// new sessions go to it again.
fn redis_fails_over_to(db: StoreFixture) {
    let Some(mut redis) = StoreFixture::redis() else { return };
    let (server, metrics) =
        Server::with_metrics(&format!("{}{}ResumableExpiration = 20\n", redis.config, db.config), &[]);
    let data = pattern(2 << 20, 12);
    let path = unique("failover.bin");
    let r = create(&server, &path, data.len());
    assert_eq!(r.status, 201, "{r:?}");
    let loc = r.header("Location").unwrap().to_owned();
    assert_eq!(patch(&server, &loc, 0, &data[..1 << 20]).status, 204);
    let id = loc.rsplit('/').next().unwrap().to_owned();
    assert!(db
        .sql(&format!(
            "SELECT upload_offset FROM hfs_upload_sessions WHERE id = '{id}'"
        ))
        .contains("1048576"));

    redis.stop_redis();
    let r = patch(&server, &loc, 1 << 20, &data[1 << 20..]);
    assert_eq!(r.status, 204, "{r:?}\n{}", server.log());
    assert!(get(&server, &format!("/upload/{}", encode_path(&path))).1 == data);
    assert!(server.wait_log("session store failed over"));
    let ready = raw(metrics, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = String::from_utf8_lossy(&ready.body).into_owned();
    assert!(
        body.contains(&format!(
            "\"backend\":\"{}\"",
            if db.config.contains("mysql") {
                "mysql"
            } else {
                "postgres"
            }
        )),
        "{body}"
    );

    redis.start_redis();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log().contains("the primary answers again") {
        assert!(Instant::now() < deadline, "never went back to Redis\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let path2 = unique("after.bin");
    let r = create(&server, &path2, 5);
    assert_eq!(r.status, 201);
    let id2 = r.header("Location").unwrap().rsplit('/').next().unwrap().to_owned();
    let out = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.redis_port().to_string(),
            "exists",
            &format!("hmac-file-server:session:{id2}"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1",
        "new session not in Redis"
    );
}

#[test]
fn redis_stopped_mid_upload_continues_on_postgres() {
    if let Some(db) = StoreFixture::postgres() {
        redis_fails_over_to(db);
    }
}

#[test]
fn redis_stopped_mid_upload_continues_on_mysql() {
    if let Some(db) = StoreFixture::mysql() {
        redis_fails_over_to(db);
    }
}

#[test]
fn unreachable_stores_give_503_and_a_log_line_never_a_hang() {
    let cases = [
        ("RedisAddr = \"127.0.0.1:1\"\nMaxRetries = 0\nRetryDelay = 1\n", "Redis"),
        (
            "FallbackEnabled = true\nFallbackDBType = \"postgres\"\nFallbackDBHost = \"127.0.0.1:5432\"\nFallbackDBUser = \"nobody_here\"\nFallbackDBPassword = \"wrong\"\nFallbackDBName = \"test\"\nMaxRetries = 0\nRetryDelay = 1\n",
            "nobody_here@127.0.0.1:5432/test",
        ),
        (
            "FallbackEnabled = true\nFallbackDBType = \"mysql\"\nFallbackDBHost = \"127.0.0.1:3306\"\nFallbackDBUser = \"root\"\nFallbackDBPassword = \"wrong\"\nFallbackDBName = \"test\"\nMaxRetries = 0\nRetryDelay = 1\n",
            "root@127.0.0.1:3306/test",
        ),
    ];
    for (config, named) in cases {
        let server = Server::with_config(config);
        let started = Instant::now();
        let r = create(&server, &unique("x.bin"), 10);
        assert_eq!(r.status, 503, "{config}: {r:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "took {:?}",
            started.elapsed()
        );
        assert!(server.wait_log(named), "{config}\n{}", server.log());
        // Plain uploads never wait on the session store.
        let target = server.put_target(&unique("plain.txt"), 2, None, Proto::V);
        assert_eq!(put(&server, &target, b"ok", None), 201);
    }
}
