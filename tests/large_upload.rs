//! A 256 MiB upload streams to disk byte-exact while the server's memory stays bounded by
//! its chunk buffer, not the file size.

mod common;
use common::*;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};

#[test]
fn upload_256_mib_byte_exact_in_bounded_memory() {
    let s = Server::start();
    let size: usize = 256 << 20;
    let path = unique("big.bin");
    let target = s.put_target(&path, size as u64, Some("video/mp4"), Proto::V2);
    let mut c = connect(s.addr);
    c.write_all(put_head(&target, size, Some("video/mp4"), "").as_bytes())
        .unwrap();
    let mut sent = Sha256::new();
    let block = pattern(4 << 20, 42);
    let mut written = 0;
    let mut i = 0u8;
    while written < size {
        let mut piece = block.clone();
        piece[0] = i; // every block differs, so a misplaced block changes the hash
        i = i.wrapping_add(1);
        c.write_all(&piece).unwrap();
        sent.update(&piece);
        written += piece.len();
    }
    let r = read_response(&mut c, false).unwrap();
    assert_eq!(r.status, 201);
    let expect = sent.finalize();

    let mut on_disk = Sha256::new();
    let mut f = std::fs::File::open(file_at(&s, &path)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        on_disk.update(&buf[..n]);
    }
    assert_eq!(on_disk.finalize(), expect, "file on disk is byte-exact");

    // And back over HTTP.
    c.write_all(format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(&path)).as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(String::from_utf8_lossy(&head).contains(&format!("Content-Length: {size}")));
    let mut got = Sha256::new();
    let mut left = size;
    while left > 0 {
        let n = c.read(&mut buf[..left.min(1 << 20)]).unwrap();
        assert!(n > 0, "download ended early");
        got.update(&buf[..n]);
        left -= n;
    }
    assert_eq!(got.finalize(), expect, "download is byte-exact");

    let peak = s.peak_rss_kib();
    assert!(peak > 0, "read VmHWM from /proc");
    assert!(peak < 64 * 1024, "peak RSS {peak} KiB must stay under 64 MiB");
}
