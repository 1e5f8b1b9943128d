//! `hmac-file-server files` (docs/operations.md, "The files command"): statistics, listing,
//! removal and purges against a running server (what it removes stops being served at once,
//! the stats follow), and on the store directly when no server runs.
mod common;

use common::*;

fn files(s: &Server, args: &[&str]) -> (i32, String, String) {
    let cfg = s.dir.path().join("config.toml").display().to_string();
    let mut all = vec!["files", "--config", &cfg];
    all.extend_from_slice(args);
    run(&all)
}

fn upload_as(s: &Server, uploader: Option<&str>, path: &str, size: usize) {
    let status = match uploader {
        Some(u) => {
            let mut claims = slot_claims(path, size as u64, "application/octet-stream");
            claims["sub"] = u.into();
            put_bearer(s, &slot_target(path), &pattern(size, 1), &slot_token(SECRET, &claims)).status
        }
        None => put(
            s,
            &s.put_target(path, size as u64, None, Proto::V),
            &pattern(size, 1),
            None,
        ),
    };
    assert_eq!(status, 201);
}

#[test]
fn stats_list_rm_and_purge_against_a_running_server() {
    let s = Server::with_config("OpenFileCacheSeconds = 60");
    let (a1, a2, anon) = (unique("a1.bin"), unique("a2.bin"), unique("anon.bin"));
    upload_as(&s, Some("alice@localhost"), &a1, 100);
    upload_as(&s, Some("alice@localhost"), &a2, 200);
    upload_as(&s, None, &anon, 50);

    let (code, out, err) = files(&s, &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("3 files, 350 bytes\n"), "{out}");
    assert!(
        out.contains("alice@localhost\t2\t300\n") && out.contains("(unknown)\t1\t50\n"),
        "{out}"
    );

    let (code, out, _) = files(&s, &["list", "--user", "alice@localhost"]);
    assert_eq!(code, 0);
    let listed: Vec<&str> = out.lines().map(|l| l.rsplit('\t').next().unwrap()).collect();
    assert_eq!(listed, vec![a1.as_str(), a2.as_str()], "{out}");
    assert!(out.lines().all(|l| l.contains("\talice@localhost\t")), "{out}");

    // Removed through the server: not served a moment longer, even from its cache.
    let target = format!("/upload/{}", encode_path(&anon));
    assert_eq!(get(&s, &target).0, 200);
    let url = s.url(&target);
    let (code, out, _) = files(&s, &["rm", &url]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("removed\t50\t"), "{out}");
    assert_eq!(get(&s, &target).0, 404);
    let (code, out, _) = files(&s, &["rm", &anon]);
    assert_eq!(code, 1, "a path that is not there: {out}");
    assert!(out.starts_with("not found"), "{out}");

    let (code, out, _) = files(&s, &["purge", "--user", "alice@localhost"]);
    assert_eq!(code, 0);
    assert_eq!(out, "purged 2 files, 300 bytes\n");
    assert_eq!(get(&s, &format!("/upload/{}", encode_path(&a1))).0, 404);
    let (_, out, _) = files(&s, &["stats"]);
    assert_eq!(out, "0 files, 0 bytes\n");
    assert!(s.wait_log("reason=\"admin\""), "{}", s.log());

    // By age.
    let old = unique("old.bin");
    upload_as(&s, None, &old, 10);
    // Upload times are whole seconds: a clear three apart, so "older than 2s" splits them.
    std::thread::sleep(std::time::Duration::from_millis(3100));
    let new = unique("new.bin");
    upload_as(&s, None, &new, 20);
    let (_, out, _) = files(&s, &["purge", "--older-than", "2s"]);
    assert_eq!(out, "purged 1 files, 10 bytes\n");
    assert!(!file_at(&s, &old).exists() && file_at(&s, &new).exists());
}

#[test]
fn without_a_server_the_command_works_on_the_store() {
    let mut s = Server::start();
    let (one, two) = (unique("one.bin"), unique("two.bin"));
    upload_as(&s, Some("bob@localhost"), &one, 30);
    upload_as(&s, None, &two, 40);
    s.stop_graceful();
    let (code, out, err) = files(&s, &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("2 files, 70 bytes"), "{out}");
    let (code, out, _) = files(&s, &["rm", &two]);
    assert_eq!(code, 0, "{out}");
    assert!(!file_at(&s, &two).exists());
    // The server comes back to the same numbers.
    s.restart();
    let (_, out, _) = files(&s, &["stats"]);
    assert_eq!(out, "1 files, 30 bytes\nbob@localhost\t1\t30\n");
}
