//! Disk trouble: a full filesystem before and during the body, write errors in the kernel's
//! writeback, a StoreDir remounted read-only or deleted under the running server. The small
//! filesystems are real tmpfs and loop-device ext4 mounts (root only).
mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("tempdir");
        mount(&["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"], dir.path());
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, mode: &str) {
        mount(&["-o", &format!("remount,{mode}")], self.path());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

fn mount(args: &[&str], at: &Path) {
    let ok = Command::new("mount")
        .args(args)
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mount {args:?} {}", at.display());
}

/// Mounting needs root (CI runs as root); elsewhere these tests say they skipped.
fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    require(
        "root, for tmpfs mounts",
        unsafe { libc::geteuid() } == 0 && on_path("mount"),
    )
}

/// ext4 (without a journal as on this machine's root, or with one) on a loop device whose backing
/// file lives in a small tmpfs. While `fill` has filled that tmpfs, writing a block the backing file never
/// held fails, so the kernel's writeback of new data gets write errors; `unfill` ends them.
/// (No device-mapper here to inject errors otherwise.)
struct FailingExt4 {
    mnt: tempfile::TempDir,
    device: String,
    back: Tmpfs,
}

impl FailingExt4 {
    fn new(journal: bool) -> FailingExt4 {
        let back = Tmpfs::mount("64m");
        let image = back.path().join("disk.img");
        std::fs::File::create(&image).unwrap().set_len(1 << 30).unwrap();
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", if journal { "has_journal" } else { "^has_journal" }])
            .arg(&image)
            .status();
        assert!(made.is_ok_and(|s| s.success()), "mkfs.ext4");
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&image)
            .output()
            .expect("losetup");
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let mnt = tempfile::tempdir().unwrap();
        // errors=continue: ext4 keeps going after a failed metadata write, as a server's
        // filesystem would until its operator looks.
        mount(&["-o", "errors=continue", &device], mnt.path());
        FailingExt4 { mnt, device, back }
    }

    fn path(&self) -> &Path {
        self.mnt.path()
    }

    fn fill(&self) {
        let mut filler = std::fs::File::create(self.back.path().join("filler")).unwrap();
        let block = vec![1u8; 1 << 20];
        while filler.write_all(&block).is_ok() {}
    }

    fn unfill(&self) {
        std::fs::remove_file(self.back.path().join("filler")).unwrap();
    }
}

impl Drop for FailingExt4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.mnt.path()).status();
        let _ = Command::new("losetup").args(["-d", &self.device]).status();
    }
}

/// `path` holds `want` on the disk itself (its cached pages are dropped first).
fn assert_on_disk(path: &Path, want: &[u8], what: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    // SAFETY: plain syscall on an open file.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let got = std::fs::read(path).unwrap();
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let last = got.iter().zip(want).rposition(|(a, b)| a != b);
    assert!(
        got == want,
        "{what}: {} bytes on disk of {}, differing from {first:?} to {last:?}",
        got.len(),
        want.len()
    );
}

/// The content of the one temporary the server holds open, read through its descriptor.
fn temporary_content(s: &Server, store: &Path) -> Option<Vec<u8>> {
    let tmp = store.join(".hmac-file-server/tmp");
    let fds = std::fs::read_dir(format!("/proc/{}/fd", s.pid())).ok()?;
    let fd = fds
        .flatten()
        .find(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t != tmp && t.starts_with(&tmp)))?;
    std::fs::read(fd.path()).ok()
}

fn server_on(store: &Path) -> Server {
    Server::with_config(&format!("StoreDir = \"{}\"", store.display()))
}

/// Files the server holds open in the store's temporary directory.
fn open_temporaries(s: &Server, store: &Path) -> usize {
    let tmp = store.join(".hmac-file-server/tmp");
    std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
        .map(|fds| {
            fds.flatten()
                .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t != tmp && t.starts_with(&tmp)))
                .count()
        })
        .unwrap_or(0)
}

/// A fresh upload of `size` bytes into the store at `root`: 201 and byte-exact on disk.
fn upload_fits(s: &Server, root: &Path, size: usize, seed: u64) {
    let path = unique("fits.bin");
    let body = pattern(size, seed);
    let target = s.put_target(&path, body.len() as u64, None, Proto::V);
    assert_eq!(put(s, &target, &body, None), 201);
    assert_eq!(std::fs::read(root.join(&path)).unwrap(), body);
}

fn wait_no_temporaries(s: &Server, store: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while open_temporaries(s, store) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(open_temporaries(s, store), 0, "a temporary is still open");
    let named: Vec<PathBuf> = std::fs::read_dir(store.join(".hmac-file-server/tmp"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(named.is_empty(), "{named:?}");
}

#[test]
fn no_space_for_the_declared_size_is_507_before_the_body() {
    if !can_mount() {
        return;
    }
    let fs = Tmpfs::mount("2m");
    let s = server_on(fs.path());
    let path = unique("too-big.bin");
    let target = s.put_target(&path, 4 << 20, None, Proto::V);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, 4 << 20, None, "Expect: 100-continue\r\n").as_bytes())
        .unwrap();
    let r = read_response(&mut c, false).expect("answer");
    assert_eq!(r.status, 507, "no 100 Continue first: the body is never sent");
    assert!(!fs.path().join(&path).exists());
    wait_no_temporaries(&s, fs.path());
    // The space was not taken: a file that fits goes in.
    upload_fits(&s, fs.path(), 1 << 20, 1);
}

#[test]
fn disk_full_during_the_body_is_500_and_leaves_nothing() {
    if !can_mount() {
        return;
    }
    let fs = Tmpfs::mount("2m");
    let s = server_on(fs.path());
    // Chunked: no size up front, so nothing is preallocated and the disk fills mid-body.
    let path = unique("fills-the-disk.bin");
    let body = pattern(3 << 20, 2);
    let target = s.put_target(&path, body.len() as u64, None, Proto::V);
    let mut c = connect(s.addr);
    let _ = c.write_all(format!("PUT {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes());
    for part in body.chunks(256 << 10) {
        let sent = c
            .write_all(format!("{:x}\r\n", part.len()).as_bytes())
            .and_then(|_| c.write_all(part))
            .and_then(|_| c.write_all(b"\r\n"));
        if sent.is_err() {
            break; // the server answered and closed
        }
    }
    let _ = c.write_all(b"0\r\n\r\n");
    if let Some(r) = read_response(&mut c, false) {
        assert_eq!(r.status, 500);
    }
    drop(c);
    wait_no_temporaries(&s, fs.path());
    assert!(!fs.path().join(&path).exists(), "nothing visible");
    assert!(s.wait_log("status=500"), "{}", s.log());
    // The partial data went with the temporary: the space is free again.
    upload_fits(&s, fs.path(), 1500 << 10, 3);
}

#[test]
fn read_only_store_answers_503_and_recovers() {
    if !can_mount() {
        return;
    }
    let fs = Tmpfs::mount("8m");
    // The file index keeps its database open for writing, and `mount -o remount,ro` refuses
    // a filesystem with files open for writing (the kernel's own errors=remount-ro does not
    // ask): the index lives elsewhere here.
    let index = tempfile::tempdir().unwrap();
    let (s, metrics) = Server::with_metrics(
        &format!(
            "StoreDir = \"{}\"\nIndexDir = \"{}\"",
            fs.path().display(),
            index.path().display()
        ),
        &[],
    );
    let ready = || raw(metrics, b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").status;
    assert_eq!(ready(), 200);
    let kept = unique("kept.txt");
    assert_eq!(put(&s, &s.put_target(&kept, 4, None, Proto::V), b"kept", None), 201);
    fs.remount("ro");
    let path = unique("refused.txt");
    let target = s.put_target(&path, 4, None, Proto::V);
    let r = raw(s.addr, format!("{}data", put_head(&target, 4, None, "")).as_bytes());
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(s.wait_log("StoreDir is not writable"), "{}", s.log());
    assert_eq!(ready(), 503, "/ready follows the store");
    // Downloads go on.
    assert_eq!(
        get(&s, &format!("/upload/{}", encode_path(&kept))),
        (200, b"kept".to_vec())
    );
    fs.remount("rw");
    assert_eq!(ready(), 200);
    assert_eq!(put(&s, &target, b"data", None), 201);
}

#[test]
fn deleted_store_answers_503() {
    let s = Server::start();
    std::fs::remove_dir_all(s.store()).expect("remove StoreDir");
    let path = unique("nowhere.txt");
    let target = s.put_target(&path, 4, None, Proto::V);
    let r = raw(s.addr, format!("{}data", put_head(&target, 4, None, "")).as_bytes());
    assert_eq!(r.status, 503);
    assert!(s.wait_log("StoreDir is not writable"), "{}", s.log());
    assert_eq!(get(&s, &format!("/upload/{}", encode_path(&path))).0, 404);
}

/// The kernel reports a writeback error once, to whichever flush asks first. Here the group
/// commit round of another upload writes this upload's first half, fails, and takes the error;
/// this upload's own flush then succeeds. It must still not get a 201: its first half is not on
/// the disk. Both ways to durability: 512 KiB shares the group commit, 2 MiB fsyncs its own file;
/// then a resumable upload, whose refused bytes the client sends again.
#[test]
fn a_write_error_reported_to_another_uploads_flush_refuses_this_upload_too() {
    let Some((fs, s, store)) = failing_store(false) else {
        return;
    };
    for (size, seed) in [(512 << 10, 21), (2 << 20, 31)] {
        half_lost_put_is_refused(&fs, &s, &store, size, seed);
        goes_in_again(&s, &store, size, seed + 2);
    }

    // A resumable upload: the PATCH that carried the lost half is not acknowledged, and the
    // offset the server reports counts no lost byte.
    let path = unique("resumed.bin");
    let body = pattern(512 << 10, 41);
    let (first, rest) = body.split_at(body.len() / 2);
    let r = tus_create(&s, &path, body.len());
    assert_eq!(r.status, 201, "{r:?}");
    let loc = r.header("Location").unwrap().to_owned();
    let mut c = connect(s.addr);
    fs.fill();
    c.write_all(tus_patch_head(&loc, 0, body.len()).as_bytes()).unwrap();
    c.write_all(first).unwrap();
    lose_in_writeback(&fs, &s, &store, first);
    c.write_all(rest).unwrap();
    let r = read_response(&mut c, false).expect("an answer");
    assert_eq!(r.status, 500, "the PATCH is not acknowledged");
    let head = tus(&s, "HEAD", &loc, "", b"");
    let offset: usize = head
        .header("Upload-Offset")
        .and_then(|o| o.parse().ok())
        .expect("an offset");
    assert!(offset < first.len(), "offset {offset} counts lost bytes");
    // The first PATCH after the error may be refused too: ext4 reports a failed metadata write
    // at the next change that needs metadata. A few tries, then it is in.
    let mut tries = 0;
    loop {
        let r = tus_patch(&s, &loc, offset as u64, &body[offset..], "");
        if r.status == 204 {
            break;
        }
        tries += 1;
        assert!(r.status == 500 && tries < 3, "{r:?}");
    }
    assert_on_disk(&store.join(&path), &body, "the resumed upload");

    assert!(
        s.wait_log("upload refused: the kernel reported a write error"),
        "{}",
        s.log()
    );
}

/// With a journal the same error aborts it, and ext4 turns read-only: the upload is refused all
/// the same, and the next ones get 503 until an operator repairs the filesystem.
#[test]
fn a_write_error_on_journaled_ext4_refuses_the_upload_and_then_the_store() {
    let Some((fs, s, store)) = failing_store(true) else {
        return;
    };
    half_lost_put_is_refused(&fs, &s, &store, 512 << 10, 51);
    let path = unique("after.bin");
    let body = pattern(4096, 52);
    assert_eq!(put(&s, &s.put_target(&path, 4096, None, Proto::V), &body, None), 503);
    assert!(s.wait_log("StoreDir is not writable"), "{}", s.log());
}

/// A server whose StoreDir is on a fresh `FailingExt4`, writing bodies 64 KiB at a time (the
/// default chunk would hold a first half back), after one upload that went in.
fn failing_store(journal: bool) -> Option<(FailingExt4, Server, PathBuf)> {
    if !can_mount() || !require("losetup and mkfs.ext4", on_path("losetup") && on_path("mkfs.ext4")) {
        return None;
    }
    let fs = FailingExt4::new(journal);
    let store = fs.path().join("store");
    let s = Server::with_config(&format!("StoreDir = \"{}\"\nChunkSize = 65536", store.display()));
    upload_fits(&s, &store, 4096, 20);
    Some((fs, s, store))
}

/// An upload of `size` whose first half another upload's flush wrote back and failed on: 500,
/// nothing visible, no temporary left.
fn half_lost_put_is_refused(fs: &FailingExt4, s: &Server, store: &Path, size: usize, seed: u64) {
    fs.fill();
    // Preallocated: its blocks exist in ext4 but were never written to the backing file.
    let path = unique("half-lost.bin");
    let body = pattern(size, seed);
    let (first, rest) = body.split_at(size / 2);
    let mut c = connect(s.addr);
    let target = s.put_target(&path, size as u64, None, Proto::V);
    c.write_all(put_head(&target, size, None, "").as_bytes()).unwrap();
    c.write_all(first).unwrap();
    lose_in_writeback(fs, s, store, first);
    c.write_all(rest).unwrap();
    let r = read_response(&mut c, false).expect("an answer");
    if r.status == 201 {
        assert_on_disk(&store.join(&path), &body, &format!("{size} B, acknowledged"));
    }
    assert_eq!(r.status, 500, "{size} B");
    assert!(!store.join(&path).exists(), "nothing visible");
    wait_no_temporaries(s, store);
}

/// Once the space is back, an upload of `size` goes in and is on the disk. The first may still be
/// refused: ext4 reports a failed metadata write at the next change that needs metadata, and
/// counts it as an error, which refuses every upload in flight.
fn goes_in_again(s: &Server, store: &Path, size: usize, seed: u64) {
    for attempt in 0..3 {
        let path = unique("after.bin");
        let body = pattern(size, seed + attempt);
        let status = put(s, &s.put_target(&path, size as u64, None, Proto::V), &body, None);
        if status == 201 {
            assert_on_disk(&store.join(&path), &body, &format!("{size} B after the errors"));
            return;
        }
        assert_eq!(status, 500);
        assert!(!store.join(&path).exists(), "nothing visible");
    }
    panic!("{size} B uploads still refused after the errors:\n{}", s.log());
}

/// With the backing tmpfs full, wait until the server holds `first` in its one open temporary,
/// then have another upload's flush write it back and fail; then free the space again.
fn lose_in_writeback(fs: &FailingExt4, s: &Server, store: &Path, first: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while temporary_content(s, store).is_none_or(|t| t.get(..first.len()) != Some(first)) {
        assert!(Instant::now() < deadline, "the server never wrote the first half");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Its round writes back everything dirty, the first half too, and fails.
    let other = unique("other.bin");
    let other_body = pattern(4096, 7);
    assert_eq!(
        put(s, &s.put_target(&other, 4096, None, Proto::V), &other_body, None),
        500
    );
    assert!(!store.join(&other).exists());
    fs.unfill();
}
