//! Crash safety: SIGKILL in the middle of many concurrent uploads, then a restart on the same
//! StoreDir. Every upload that got 201 is intact; nothing partial is ever visible; no temporary
//! survives the restart. (A process kill leaves the page cache alive: what this proves is
//! atomic visibility and the clean-up, while the power-cut ordering is the fsync sequence of
//! DESIGN.md §4.)
mod common;

use common::*;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SIZES: &[usize] = &[1000, 60_000, 300_000, 2 << 20];

struct Attempt {
    path: String,
    size: usize,
    seed: u64,
    created: bool,
}

/// One raw PUT; true only for a 201 that fully arrived (no client library retries here).
fn upload(s_addr: std::net::SocketAddr, target: &str, body: &[u8]) -> bool {
    let Ok(mut c) = std::net::TcpStream::connect(s_addr) else {
        return false;
    };
    let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
    if c.write_all(put_head(target, body.len(), None, "").as_bytes()).is_err() || c.write_all(body).is_err() {
        return false;
    }
    read_response(&mut c, false).is_some_and(|r| r.status == 201)
}

fn crash_during_uploads(env: &[(&str, &str)]) {
    let mut s = Server::with_config_env("", env);
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for t in 0..16u64 {
        let attempts = attempts.clone();
        let stop = stop.clone();
        let addr = s.addr;
        let targets: Vec<(String, String, usize, u64)> = (0..400u64)
            .map(|i| {
                let seed = t * 1000 + i;
                let size = SIZES[(seed % SIZES.len() as u64) as usize];
                let path = unique(&format!("crash-{t}-{i}.bin"));
                let target = s.put_target(&path, size as u64, None, Proto::V);
                (path, target, size, seed)
            })
            .collect();
        writers.push(std::thread::spawn(move || {
            for (path, target, size, seed) in targets {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let created = upload(addr, &target, &pattern(size, seed));
                attempts.lock().unwrap().push(Attempt {
                    path,
                    size,
                    seed,
                    created,
                });
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // One upload certainly in the middle of its body when the kill comes, however the
    // writers happen to be placed then: half its bytes sent, the rest never.
    let held_path = unique("crash-held.bin");
    let (held_size, held_seed) = (100_000, 7);
    let mut held = connect(s.addr);
    let head = put_head(
        &s.put_target(&held_path, held_size as u64, None, Proto::V),
        held_size,
        None,
        "",
    );
    held.write_all(head.as_bytes()).unwrap();
    held.write_all(&pattern(held_size, held_seed)[..held_size / 2]).unwrap();
    let named = env.iter().any(|(k, _)| *k == "HMAC_FILE_SERVER_NO_TMPFILE");
    if named {
        let tmp = s.tmp_dir();
        let started = std::time::Instant::now();
        while std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0
            && started.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    attempts.lock().unwrap().push(Attempt {
        path: held_path,
        size: held_size,
        seed: held_seed,
        created: false,
    });
    stop.store(true, Ordering::SeqCst);
    s.kill_hard();
    drop(held);
    for w in writers {
        w.join().expect("writer");
    }
    if named {
        let left = std::fs::read_dir(s.tmp_dir()).map(|d| d.count()).unwrap_or(0);
        assert!(left > 0, "the crash left named temporaries for the restart to remove");
    }
    s.restart();

    let attempts = attempts.lock().unwrap();
    let created = attempts.iter().filter(|a| a.created).count();
    assert!(created >= 16, "the load did run before the crash ({created} uploads)");
    assert!(attempts.iter().any(|a| !a.created), "the crash did cut uploads");
    let mut visible_without_201 = 0;
    for a in attempts.iter() {
        let on_disk = std::fs::read(file_at(&s, &a.path));
        match (a.created, on_disk) {
            (true, Ok(data)) => assert!(data == pattern(a.size, a.seed), "{} corrupted", a.path),
            (true, Err(e)) => panic!("{} got 201 but is gone: {e}", a.path),
            // Published, but the 201 was lost with the process: complete, never partial.
            (false, Ok(data)) => {
                visible_without_201 += 1;
                assert!(data == pattern(a.size, a.seed), "{} is visible but partial", a.path);
            }
            (false, Err(_)) => {}
        }
    }
    eprintln!(
        "{} attempts, {created} acknowledged, {visible_without_201} published without their 201",
        attempts.len()
    );
    assert!(s.temporaries().is_empty(), "{:?}", s.temporaries());
    // The restarted server serves and accepts as before.
    let a = attempts.iter().find(|a| a.created).expect("one acknowledged upload");
    let (status, body) = get(&s, &format!("/upload/{}", encode_path(&a.path)));
    assert_eq!((status, body.len()), (200, a.size));
    let path = unique("after-restart.txt");
    assert_eq!(put(&s, &s.put_target(&path, 5, None, Proto::V), b"again", None), 201);
}

#[test]
fn kill_9_during_uploads_loses_nothing_acknowledged() {
    crash_during_uploads(&[]);
}

#[test]
fn kill_9_with_named_temporaries_leaves_none_after_restart() {
    crash_during_uploads(&[("HMAC_FILE_SERVER_NO_TMPFILE", "1")]);
}
