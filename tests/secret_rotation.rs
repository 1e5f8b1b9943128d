//! Rotating `Secret` without downtime (docs/operations.md, "Rotating the secret"): the new
//! secret signs and verifies, `PreviousSecrets` still verify, for signed URLs, Bearer tokens
//! and resumable uploads begun before the rotation; once an old secret is dropped, what it
//! signed is refused.
mod common;

use common::*;

const OLD: &str = "the-old-secret-0123456789";
const NEW: &str = "the-new-secret-9876543210";

fn rotated() -> String {
    format!("Secret = \"{NEW}\"\nPreviousSecrets = [\"{OLD}\"]\n")
}

#[test]
fn previous_secrets_verify_every_protocol_and_the_log_says_which() {
    let s = Server::with_config(&rotated());
    for (secret, want) in [(NEW, 201), (OLD, 201), (SECRET, 403)] {
        for proto in [Proto::V, Proto::V2, Proto::Token] {
            let path = unique("rotated.txt");
            let target = signed_target(secret, &path, 2, Some("text/plain"), proto);
            assert_eq!(put(&s, &target, b"hi", Some("text/plain")), want, "{secret} {proto:?}");
        }
        let path = unique("rotated-slot.txt");
        let token = slot_token(secret, &slot_claims(&path, 2, "text/plain"));
        let want = if want == 201 { 201 } else { 401 };
        assert_eq!(
            put_bearer(&s, &slot_target(&path), b"hi", &token).status,
            want,
            "{secret}"
        );
    }
    assert!(s.wait_log("key=PreviousSecrets[0]"), "{}", s.log());
    assert!(s.wait_log("key=Secret"), "{}", s.log());
    let log = s.log();
    assert!(!log.contains(OLD) && !log.contains(NEW), "secrets never reach the log");
}

#[test]
fn a_resumable_upload_survives_the_rotation() {
    let mut s = Server::with_config(&format!("Secret = \"{OLD}\"\n"));
    let data = pattern(400_000, 7);
    let path = unique("across.bin");
    let target = signed_target(OLD, &path, data.len() as u64, None, Proto::V);
    let r = tus(&s, "POST", &target, &format!("Upload-Length: {}\r\n", data.len()), b"");
    assert_eq!(r.status, 201, "{r:?}");
    let loc = r.header("Location").unwrap().to_owned();
    assert_eq!(tus_patch(&s, &loc, 0, &data[..100_000], "").status, 204);
    let path2 = unique("dropped.bin");
    let target2 = signed_target(OLD, &path2, 10, None, Proto::V);
    let r = tus(&s, "POST", &target2, "Upload-Length: 10\r\n", b"");
    let loc2 = r.header("Location").unwrap().to_owned();

    s.restart_with(&rotated());
    assert_eq!(
        tus_patch(&s, &loc, 100_000, &data[100_000..], "").status,
        204,
        "{}",
        s.log()
    );
    assert_eq!(std::fs::read(file_at(&s, &path)).unwrap(), data);

    // The old secret dropped: what it made is refused (the upload URL is no capability now).
    s.restart_with(&format!("Secret = \"{NEW}\"\nPreviousSecrets = []\n"));
    let r = tus_patch(&s, &loc2, 0, &pattern(10, 1), "");
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(
        put(
            &s,
            &signed_target(OLD, &unique("late.txt"), 2, None, Proto::V),
            b"hi",
            None
        ),
        403
    );
}

#[test]
fn placeholders_are_refused_and_short_previous_secrets_warned() {
    let d = tempfile::tempdir().unwrap();
    let base = format!("Secret = \"{NEW}\"\nStoreDir = \"{}\"\n", d.path().join("s").display());
    for bad in ["\"\"", "\"change-me-to-a-long-random-string\""] {
        let cfg = write_config(d.path(), &format!("{base}PreviousSecrets = [{bad}]\n"));
        let (code, _, err) = run(&["--check-config", "--config", &cfg]);
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains("PreviousSecrets"), "{err}");
    }
    let cfg = write_config(d.path(), &format!("{base}PreviousSecrets = [\"short\"]\n"));
    let (code, _, err) = run(&["--check-config", "--config", &cfg]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("PreviousSecrets") && err.contains("short"), "{err}");
}
