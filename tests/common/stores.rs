#![allow(unused_macros)]
//! The session stores a test server can use: embedded, a private Redis, or a fresh database
//! on the local PostgreSQL or MariaDB, each isolated from every other test.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, nanos, on_path, require, runs, Server};

/// The session stores, for tests that run once against each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Embedded,
    Redis,
    Postgres,
    Mysql,
}

/// A test that runs once against each session store: `#[apply(every_store)]`.
#[rstest_reuse::template]
#[rstest::rstest]
#[case::embedded(StoreKind::Embedded)]
#[case::redis(StoreKind::Redis)]
#[case::postgres(StoreKind::Postgres)]
#[case::mysql(StoreKind::Mysql)]
pub fn every_store(#[case] kind: StoreKind) {}

/// A test that runs once against each store several nodes can share: `#[apply(shared_stores)]`.
#[rstest_reuse::template]
#[rstest::rstest]
#[case::redis(StoreKind::Redis)]
#[case::postgres(StoreKind::Postgres)]
#[case::mysql(StoreKind::Mysql)]
pub fn shared_stores(#[case] kind: StoreKind) {}

impl StoreKind {
    /// A fresh store of this kind, or None (SKIPPED) where it is not installed outside CI.
    pub fn fixture(self) -> Option<StoreFixture> {
        match self {
            StoreKind::Embedded => StoreFixture::embedded(),
            StoreKind::Redis => StoreFixture::redis(),
            StoreKind::Postgres => StoreFixture::postgres(),
            StoreKind::Mysql => StoreFixture::mysql(),
        }
    }
}

/// A session store for a test server, isolated from every other test: a private Redis on a
/// free port, or a fresh PostgreSQL / MariaDB database on the local server. Dropping it
/// stops the Redis or drops the database.
pub struct StoreFixture {
    /// Config lines that select it.
    pub config: String,
    redis: Option<Child>,
    redis_port: u16,
    database: Option<(&'static str, String)>,
}

impl StoreFixture {
    pub fn embedded() -> Option<StoreFixture> {
        Some(StoreFixture {
            config: String::new(),
            redis: None,
            redis_port: 0,
            database: None,
        })
    }

    /// A private redis-server (nothing persisted), or None (SKIPPED) where it is not installed.
    pub fn redis() -> Option<StoreFixture> {
        if !require("redis-server", on_path("redis-server")) {
            return None;
        }
        let port = free_port();
        let mut f = StoreFixture {
            config: format!("RedisAddr = \"127.0.0.1:{port}\"\nRetryDelay = 1\n"),
            redis: None,
            redis_port: port,
            database: None,
        };
        f.start_redis();
        Some(f)
    }

    /// Two server processes on this store and one StoreDir, as nodes "a" and "b" of one host.
    pub fn two_nodes(&self) -> (Server, Server) {
        let a = Server::with_config(&format!("{}NodeId = \"a\"\n", self.config));
        let b = Server::with_config(&format!(
            "{}NodeId = \"b\"\nStoreDir = \"{}\"\n",
            self.config,
            a.store().display()
        ));
        (a, b)
    }

    pub fn redis_port(&self) -> u16 {
        self.redis_port
    }

    /// How the server's log lines name this store: Redis by its address, a database as
    /// `user@host:port` (the database name follows).
    pub fn named_in_logs(&self) -> String {
        match &self.database {
            _ if self.redis_port != 0 => format!("127.0.0.1:{}", self.redis_port),
            Some(("postgres", _)) => "postgres@127.0.0.1:5432".to_owned(),
            Some(_) => "root@127.0.0.1:3306".to_owned(),
            None => "embedded".to_owned(),
        }
    }

    /// A redis-cli command against the private Redis; what it printed.
    pub fn redis_cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.redis_port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// (Re)start the private Redis on its port.
    pub fn start_redis(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.redis_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.redis = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !runs("redis-cli", &["-p", &self.redis_port.to_string(), "ping"]) {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop_redis(&mut self) {
        if let Some(mut c) = self.redis.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A fresh database on the local PostgreSQL (127.0.0.1:5432, trust) for this test.
    pub fn postgres() -> Option<StoreFixture> {
        let name = fresh_db_name();
        let created = db_client("postgres", "test", &format!("CREATE DATABASE {name}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !require("PostgreSQL on 127.0.0.1:5432 (psql)", created) {
            return None;
        }
        Some(StoreFixture {
            config: format!(
                "FallbackEnabled = true\nFallbackDBType = \"postgres\"\nFallbackDBHost = \"127.0.0.1:5432\"\nFallbackDBUser = \"postgres\"\nFallbackDBName = \"{name}\"\nRetryDelay = 1\n"
            ),
            redis: None,
            redis_port: 0,
            database: Some(("postgres", name)),
        })
    }

    /// A fresh database on the local MariaDB (127.0.0.1:3306, root) for this test.
    pub fn mysql() -> Option<StoreFixture> {
        let name = fresh_db_name();
        let created = db_client("mysql", "test", &format!("CREATE DATABASE {name}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !require("MariaDB on 127.0.0.1:3306 (mysql)", created) {
            return None;
        }
        Some(StoreFixture {
            config: format!(
                "FallbackEnabled = true\nFallbackDBType = \"mysql\"\nFallbackDBHost = \"127.0.0.1:3306\"\nFallbackDBUser = \"root\"\nFallbackDBName = \"{name}\"\nRetryDelay = 1\n"
            ),
            redis: None,
            redis_port: 0,
            database: Some(("mysql", name)),
        })
    }

    /// Cut every connection the server under test holds to this store, the way a restarted
    /// proxy or an administrator would; how many were cut.
    pub fn drop_connections(&self) -> usize {
        if self.redis_port != 0 {
            return self
                .redis_cli(&["CLIENT", "KILL", "TYPE", "normal"])
                .trim()
                .parse()
                .unwrap_or(0);
        }
        match &self.database {
            Some(("postgres", name)) => self
                .sql(&format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()"
                ))
                .lines()
                .filter(|l| l.trim() == "t")
                .count(),
            Some((_, name)) => {
                let ids = self.sql(&format!(
                    "SELECT id FROM information_schema.processlist WHERE db = '{name}' AND id <> CONNECTION_ID()"
                ));
                ids.lines()
                    .filter(|id| !id.trim().is_empty())
                    .filter(|id| {
                        db_client("mysql", "test", &format!("KILL CONNECTION {}", id.trim()))
                            .status()
                            .is_ok_and(|s| s.success())
                    })
                    .count()
            }
            None => 0,
        }
    }

    /// Make the store hang for `secs` without closing anything: Redis pauses every client,
    /// a database holds the row of upload `id` locked. The stall runs in the background.
    pub fn stall(&self, id: &str, secs: u32) -> Child {
        if self.redis_port != 0 {
            let c = Command::new("redis-cli")
                .args(["-p", &self.redis_port.to_string(), "CLIENT", "PAUSE"])
                .args([(secs * 1000).to_string(), "ALL".into()])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-cli");
            std::thread::sleep(Duration::from_millis(300));
            return c;
        }
        let (kind, name) = self.database.as_ref().expect("a store to stall");
        let hold = format!("SELECT id FROM hfs_upload_sessions WHERE id = '{id}' FOR UPDATE");
        let sleep = if *kind == "postgres" {
            format!("SELECT pg_sleep({secs})")
        } else {
            format!("DO SLEEP({secs})")
        };
        let child = db_client(kind, name, &format!("BEGIN; {hold}; {sleep}; COMMIT;"))
            .stdout(Stdio::null())
            .spawn()
            .expect("database client");
        // Until the row is locked.
        std::thread::sleep(Duration::from_millis(500));
        child
    }

    /// Run SQL in this fixture's database; its output.
    pub fn sql(&self, statement: &str) -> String {
        let Some((kind, name)) = &self.database else {
            return String::new();
        };
        db_client(kind, name, statement)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// The command-line client of the local PostgreSQL (`kind` "postgres") or MariaDB running
/// `statement` in database `db`, printing bare values (no headers, no alignment).
fn db_client(kind: &str, db: &str, statement: &str) -> Command {
    let mut c;
    if kind == "postgres" {
        c = Command::new("psql");
        c.args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qtAc", statement]);
    } else {
        c = Command::new("mysql");
        c.args(["-h", "127.0.0.1", "-u", "root", "-N", "-e", statement, db]);
    }
    c
}

fn fresh_db_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "hfs_test_{}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        nanos() % 1_000_000
    )
}

impl Drop for StoreFixture {
    fn drop(&mut self) {
        self.stop_redis();
        match &self.database {
            Some(("postgres", name)) => {
                let _ = db_client(
                    "postgres",
                    "test",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                )
                .output();
            }
            Some((kind, name)) => {
                let _ = db_client(kind, "test", &format!("DROP DATABASE IF EXISTS {name}")).output();
            }
            None => {}
        }
    }
}
