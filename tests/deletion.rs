//! Deletion (docs/protocol.md, "Deletion"): Metronome's signed `DELETE`, on while
//! `DeleteSecret` is set; the file stops being served at once (even from the open-file cache)
//! and goes durably with the directories it leaves empty; a wrong token deletes nothing.
mod common;

use common::*;

fn delete(s: &Server, path: &str, token: &str) -> u16 {
    let req = format!(
        "DELETE /upload/{}?token={token} HTTP/1.1\r\nHost: x\r\n\r\n",
        encode_path(path)
    );
    raw(s.addr, req.as_bytes()).status
}

fn token(secret: &str, path: &str, delete_secret: &str) -> String {
    hmac_file_server::auth::sign_deletion(secret.as_bytes(), path, delete_secret)
}

fn upload(s: &Server, path: &str) {
    let target = s.put_target(path, 5, None, Proto::V);
    assert_eq!(put(s, &target, b"hello", None), 201);
}

#[test]
fn off_without_a_delete_secret() {
    let s = Server::start();
    let path = unique("kept.txt");
    upload(&s, &path);
    assert_eq!(delete(&s, &path, &token(SECRET, &path, "")), 405);
    assert!(file_at(&s, &path).exists());
}

#[test]
fn a_signed_delete_removes_the_file_at_once() {
    let s = Server::with_config("DeleteSecret = \"metronome-delete\"\nOpenFileCacheSeconds = 60");
    let path = unique("dir/gone.txt");
    upload(&s, &path);
    let target = format!("/upload/{}", encode_path(&path));
    assert_eq!(get(&s, &target), (200, b"hello".to_vec()), "now in the open-file cache");
    // Wrong tokens delete nothing: another delete secret, another path's, garbage, none.
    let other = unique("other.txt");
    for bad in [
        token(SECRET, &path, "another"),
        token(SECRET, &other, "metronome-delete"),
        token("another secret", &path, "metronome-delete"),
        "zz".to_owned(),
    ] {
        assert_eq!(delete(&s, &path, &bad), 403, "{bad}");
        assert_eq!(get(&s, &target).0, 200);
    }
    let r = raw(
        s.addr,
        format!("DELETE {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 403, "no token");
    assert_eq!(delete(&s, &path, &token(SECRET, &path, "metronome-delete")), 204);
    assert_eq!(get(&s, &target).0, 404, "not served a moment longer, cache or not");
    let top = s.store().join(path.split('/').next().unwrap());
    assert!(!top.exists(), "the emptied directories went too");
    assert_eq!(delete(&s, &path, &token(SECRET, &path, "metronome-delete")), 404);
    assert!(s.wait_log("reason=\"request\""), "{}", s.log());
}

#[test]
fn previous_secrets_sign_deletions_too() {
    let s = Server::with_config("DeleteSecret = \"d\"\nPreviousSecrets = [\"an-earlier-secret-0123\"]");
    let path = unique("rotated.txt");
    upload(&s, &path);
    assert_eq!(delete(&s, &path, &token("an-earlier-secret-0123", &path, "d")), 204);
}
