//! Rebuilding the index from the files themselves: a depth-first walk of StoreDir (its own
//! directory left out) that reads each regular file's size, modification time and attributes.
//! It runs in steps between the retention thread's other work, holding one directory reader
//! per level, so a store of millions of files costs no memory and never holds up an upload.

use std::fs::{self, ReadDir};
use std::path::{Path, PathBuf};

use super::index::Entry;
use crate::path::RESERVED_DIR;

pub struct Scan {
    root: PathBuf,
    /// The directories being read, outermost first, with their store paths.
    stack: Vec<(ReadDir, String)>,
    pub found: u64,
}

impl Scan {
    pub fn new(root: &Path) -> std::io::Result<Scan> {
        let top = fs::read_dir(root)?;
        Ok(Scan {
            root: root.to_owned(),
            stack: vec![(top, String::new())],
            found: 0,
        })
    }

    /// Up to `n` more files; an empty vector once the walk is over.
    pub fn step(&mut self, n: usize) -> Vec<Entry> {
        let mut out = Vec::new();
        while out.len() < n {
            let Some((dir, prefix)) = self.stack.last_mut() else {
                break;
            };
            let Some(next) = dir.next() else {
                self.stack.pop();
                continue;
            };
            let Ok(entry) = next else { continue };
            // Names that are not UTF-8 cannot be store paths: no URL reaches them.
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if prefix.is_empty() && name.eq_ignore_ascii_case(RESERVED_DIR) {
                continue;
            }
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                if let Ok(sub) = fs::read_dir(self.root.join(&path)) {
                    self.stack.push((sub, path));
                }
            } else if kind.is_file() {
                if let Some(e) = read_entry(&self.root.join(&path), path) {
                    out.push(e);
                }
            }
        }
        self.found += out.len() as u64;
        out
    }
}

/// The index entry of the file at `full` (store path `path`), from its own metadata.
pub fn read_entry(full: &Path, path: String) -> Option<Entry> {
    use std::os::unix::fs::MetadataExt;
    let md = fs::symlink_metadata(full).ok()?;
    if !md.file_type().is_file() {
        return None;
    }
    let file = fs::File::open(full).ok()?;
    let attrs = crate::storage::read_meta(&file);
    Some(Entry {
        path,
        size: md.len(),
        uploader: attrs.uploader,
        uploaded: md.mtime().max(0) as u64,
        expires: attrs.expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_everything_but_the_reserved_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for p in ["a/b/one", "a/two", "three", ".hmac-file-server/tmp/x"] {
            let full = root.join(p);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, p).unwrap();
        }
        std::os::unix::fs::symlink(root.join("three"), root.join("link")).unwrap();
        let mut scan = Scan::new(root).unwrap();
        let mut found = Vec::new();
        loop {
            let step = scan.step(1);
            if step.is_empty() {
                break;
            }
            found.extend(step.into_iter().map(|e| (e.path, e.size)));
        }
        found.sort();
        assert_eq!(
            found,
            vec![("a/b/one".into(), 7), ("a/two".into(), 5), ("three".into(), 5)]
        );
        assert_eq!(scan.found, 3);
    }
}
