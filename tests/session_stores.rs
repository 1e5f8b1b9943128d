//! Shared session stores: two nodes on one store and one StoreDir, Redis failing over to a
//! database and coming back, and stores that cannot be reached.

mod common;

use rstest::rstest;
use rstest_reuse::apply;

use std::time::{Duration, Instant};

use common::*;

fn create(server: &Server, path: &str, len: usize) -> Response {
    tus_create(server, path, len)
}

fn patch(server: &Server, loc: &str, offset: usize, body: &[u8]) -> Response {
    tus_patch(server, loc, offset as u64, body, "")
}

fn begin(server: &Server, path: &str, data: &[u8], first: usize) -> String {
    tus_begin(server, path, data, first)
}

/// Each shared store keeps the lock rules the embedded store's unit tests check (one
/// definition, `session::conformance::locks`): who may take, renew and release a lock, a
/// restarted node taking over its own, a lapsed lease taken over by another node.
#[rstest]
#[case::redis(StoreKind::Redis, false)]
#[case::postgres(StoreKind::Postgres, false)]
#[case::mysql(StoreKind::Mysql, false)]
#[case::redis_over_postgres(StoreKind::Postgres, true)]
#[case::redis_over_mysql(StoreKind::Mysql, true)]
fn stores_keep_the_lock_rules(#[case] kind: StoreKind, #[case] redis_in_front: bool) {
    use hmac_file_server::{config::Config, session};
    let Some(store) = kind.fixture() else { return };
    let redis = if redis_in_front { StoreFixture::redis() } else { None };
    if redis_in_front && redis.is_none() {
        return;
    }
    // Both fixtures set RetryDelay; a TOML document may set it once.
    let redis_lines = redis.as_ref().map_or(String::new(), |r| {
        r.config
            .lines()
            .filter(|l| !l.starts_with("RetryDelay"))
            .map(|l| format!("{l}\n"))
            .collect()
    });
    let text = format!("{}{redis_lines}", store.config);
    let config =
        Config::parse_with_secret(&text, Some("conformance-secret-0123456789".into())).expect("the fixture's config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let shared = session::open_shared(&config)
            .await
            .expect("open the store")
            .expect("a shared store");
        let now = session::unix_now();
        let s = session::Session {
            id: format!("conformance-{}", nanos()),
            path: unique("locks.bin"),
            length: 10,
            offset: 0,
            content_type: "application/octet-stream".into(),
            metadata: String::new(),
            expires: now + 3600,
        };
        shared.create(&s, now).await.expect("create");
        let backend = shared.backend();
        // With the database behind it, the failover store answers through Redis while it is up.
        assert_eq!(
            backend == "redis",
            redis_in_front || kind == StoreKind::Redis,
            "{backend}"
        );
        session::conformance::locks(&*shared, &s.id).await;
        shared.remove(&s.id).await.expect("remove");
    });
}

/// An upload started on one node is finished on another that shares the store and StoreDir.
#[apply(shared_stores)]
fn two_nodes_share_the_store(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    // Two processes on one host: each its own NodeId.
    let (a, b) = store.two_nodes();
    let data = pattern(3 << 20, 11);
    let path = unique("shared.bin");
    let loc = begin(&a, &path, &data, 1 << 20);
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

/// A second live process under a running node's name (same host, same NodeId, same StoreDir)
/// would take over its write locks as if it had died: it is refused at start, naming the key.
#[test]
fn a_node_name_runs_once() {
    let Some(store) = StoreFixture::redis() else { return };
    let a = Server::with_config(&format!("{}NodeId = \"same\"\n", store.config));
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "Secret = \"{SECRET}\"\nStoreDir = \"{}\"\nListenPort = \"127.0.0.1:{}\"\nNodeId = \"same\"\n{}",
            a.store().display(),
            free_port(),
            store.config
        ),
    );
    let (code, _, err) = run(&["--config", &cfg]);
    assert_ne!(code, 0, "{err}");
    assert!(err.contains("NodeId"), "{err}");
    // The node itself goes on serving; killed, its name is free at once (tests/resume.rs
    // restarts nodes after SIGKILL the same way).
    let path = unique("still.bin");
    assert_eq!(put(&a, &a.put_target(&path, 2, None, Proto::V), b"ok", None), 201);
    let mut a = a;
    a.kill_hard();
    a.restart();
    assert_eq!(get(&a, &format!("/upload/{}", encode_path(&path))).1, b"ok");
}

/// Redis stops mid-upload: the upload completes through the fallback database; Redis back:
/// new sessions go to it again.
#[rstest]
#[case::postgres(StoreKind::Postgres)]
#[case::mysql(StoreKind::Mysql)]
fn redis_stopped_mid_upload_continues_on_the_database(#[case] kind: StoreKind) {
    let Some(db) = kind.fixture() else { return };
    let Some(mut redis) = StoreFixture::redis() else { return };
    let (server, metrics) =
        Server::with_metrics(&format!("{}{}ResumableExpiration = 20\n", redis.config, db.config), &[]);
    let data = pattern(2 << 20, 12);
    let path = unique("failover.bin");
    let loc = begin(&server, &path, &data, 1 << 20);
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
    let fallback = if db.config.contains("mysql") {
        "mysql"
    } else {
        "postgres"
    };
    let ready = raw(metrics, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = String::from_utf8_lossy(&ready.body).into_owned();
    assert!(body.contains(&format!("\"backend\":\"{fallback}\"")), "{body}");
    wait_metric(
        metrics,
        &format!("hmac_file_server_session_store_up{{backend=\"{fallback}\"}} 1"),
    );

    redis.start_redis();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.log().contains("the primary answers again") {
        assert!(Instant::now() < deadline, "never went back to Redis\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_metric(metrics, "hmac_file_server_session_store_up{backend=\"redis\"} 1");
    let path2 = unique("after.bin");
    let r = create(&server, &path2, 5);
    assert_eq!(r.status, 201);
    let id2 = r.header("Location").unwrap().rsplit('/').next().unwrap().to_owned();
    assert_eq!(
        redis
            .redis_cli(&["exists", &format!("hmac-file-server:session:{id2}")])
            .trim(),
        "1",
        "new session not in Redis"
    );
}

/// The sweeper refreshes the gauge every round (2 s with ResumableExpiration = 20).
fn wait_metric(metrics: std::net::SocketAddr, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = raw(metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let body = String::from_utf8_lossy(&r.body).into_owned();
        if body.lines().any(|l| l == line) {
            return;
        }
        assert!(Instant::now() < deadline, "no {line:?} in\n{body}");
        std::thread::sleep(Duration::from_millis(200));
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

/// Every connection to the store is cut between two requests: the next ones get an answer
/// (204, or 503 while it reconnects) within seconds, the acknowledged offset is kept, a log
/// line says what happened, and the upload finishes byte-exact without a restart. `lost`:
/// the line a driver that notices the loss by itself writes (mysql_async's pool instead
/// tests an idle connection before use and replaces it silently).
#[rstest]
#[case::redis(StoreKind::Redis, Some("Redis session store connection lost"))]
#[case::postgres(StoreKind::Postgres, Some("PostgreSQL session store connection lost"))]
#[case::mysql(StoreKind::Mysql, None)]
fn a_dropped_store_connection_reconnects(#[case] kind: StoreKind, #[case] lost: Option<&str>) {
    let Some(store) = kind.fixture() else { return };
    let names = &store.named_in_logs();
    let server = Server::with_config(&format!("{}ResumableExpiration = 20\n", store.config));
    let data = pattern(2 << 20, 13);
    let path = unique("dropped.bin");
    let loc = begin(&server, &path, &data, 1 << 20);

    assert!(store.drop_connections() > 0, "no connection to cut");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut refused = 0;
    loop {
        assert!(Instant::now() < deadline, "never recovered\n{}", server.log());
        let started = Instant::now();
        let head = tus(&server, "HEAD", &loc, "", b"");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "HEAD took {:?}",
            started.elapsed()
        );
        if head.status == 503 {
            refused += 1;
            std::thread::sleep(Duration::from_millis(300));
            continue;
        }
        assert_eq!(head.status, 200, "{head:?}");
        let offset: usize = head.header("Upload-Offset").unwrap().parse().unwrap();
        assert!(offset >= 1 << 20, "lost an acknowledged offset: {offset}");
        let started = Instant::now();
        let r = patch(&server, &loc, offset, &data[offset..]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "PATCH took {:?}",
            started.elapsed()
        );
        match r.status {
            204 => break,
            503 => refused += 1,
            _ => panic!("{r:?}\n{}", server.log()),
        }
    }
    assert!(get(&server, &format!("/upload/{}", encode_path(&path))).1 == data);
    if let Some(lost) = lost {
        assert!(server.wait_log(lost), "no line saying {lost:?}\n{}", server.log());
    }
    // Every refusal was explained in the log, naming the store.
    if refused > 0 {
        assert!(
            server.log().contains(names),
            "503 without naming {names}\n{}",
            server.log()
        );
    }
    eprintln!("requests refused while reconnecting: {refused}");
}

/// The store hangs (Redis paused, the session's row locked by someone else): the request that
/// needs it gets 503 within seconds and a log line naming the store, and the upload goes on
/// once the store answers again.
#[apply(shared_stores)]
fn a_stalled_store_gives_503_within_seconds(#[case] kind: StoreKind) {
    let Some(store) = kind.fixture() else { return };
    let names = &store.named_in_logs();
    let server = Server::with_config(&store.config);
    let data = pattern(1 << 20, 14);
    let path = unique("stalled.bin");
    let loc = begin(&server, &path, &data, 0);
    let id = loc.rsplit('/').next().unwrap().to_owned();

    let mut stall = store.stall(&id, 6);
    let started = Instant::now();
    let r = patch(&server, &loc, 0, &data);
    let took = started.elapsed();
    assert_eq!(r.status, 503, "{r:?}\n{}", server.log());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(server.wait_log(names), "no line naming {names}\n{}", server.log());
    let _ = stall.wait();

    let deadline = Instant::now() + Duration::from_secs(40);
    let mut answers = Vec::new();
    loop {
        let r = patch(&server, &loc, 0, &data);
        answers.push(r.status);
        if r.status == 204 {
            eprintln!("answers after the stall: {answers:?}");
            break;
        }
        // 423 while a lease taken by the timed-out request runs out (see Lock::try_take).
        assert!(matches!(r.status, 423 | 503), "{r:?}");
        assert!(Instant::now() < deadline, "never recovered\n{}", server.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(get(&server, &format!("/upload/{}", encode_path(&path))).1 == data);
}
