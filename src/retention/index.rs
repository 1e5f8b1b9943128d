//! The index of stored files (docs/operations.md, "Retention, quotas and deletion"): one
//! SQLite database per node beside the files, with each file's size, uploader, upload time and
//! expiry, and the usage per uploader kept in step in the same transactions. It answers what
//! the sweeper, the quotas and the `files` command ask without walking StoreDir: the next
//! expiry and what is due (indexed), an uploader's oldest files, the totals (one row per
//! uploader). The files' own attributes stay the truth it is rebuilt from (`scan`).

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

use super::totals::Usage;

/// One stored file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Its store path (below `UploadSubDir`, decoded).
    pub path: String,
    pub size: u64,
    pub uploader: Option<String>,
    /// Unix seconds.
    pub uploaded: u64,
    /// Unix seconds from which it is not served and is deleted, besides `FileTTL`.
    pub expires: Option<u64>,
}

/// Which files a listing or a purge means.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    pub uploader: Option<String>,
    /// Uploaded before this Unix time.
    pub before: Option<u64>,
}

/// The page size of a new index's database.
const PAGE_SIZE: u32 = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS files (
    path     TEXT PRIMARY KEY,
    size     INTEGER NOT NULL,
    uploader TEXT,
    uploaded INTEGER NOT NULL,
    expires  INTEGER,
    -- The scan generation that last saw or recorded it.
    seen     INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_expires ON files (expires) WHERE expires IS NOT NULL;
CREATE INDEX IF NOT EXISTS files_uploaded ON files (uploaded);
CREATE INDEX IF NOT EXISTS files_uploader ON files (uploader, uploaded) WHERE uploader IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage (
    uploader TEXT PRIMARY KEY,
    files    INTEGER NOT NULL,
    bytes    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
";

pub struct Index {
    conn: Connection,
    /// The current scan generation (`begin_scan`), written into every row recorded.
    generation: i64,
}

fn entry(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        path: r.get(0)?,
        size: r.get::<_, i64>(1)? as u64,
        uploader: r.get(2)?,
        uploaded: r.get::<_, i64>(3)? as u64,
        expires: r.get::<_, Option<i64>>(4)?.map(|e| e as u64),
    })
}

const COLUMNS: &str = "path, size, uploader, uploaded, expires";
/// The statements every upload or deletion runs, prepared once and kept by the connection's
/// statement cache: preparing them anew for each upload was most of the retention thread's
/// CPU under a small-upload load.
const BY_PATH: &str = "SELECT path, size, uploader, uploaded, expires FROM files WHERE path = ?1";
const INSERT_NEW: &str =
    "INSERT INTO files (path, size, uploader, uploaded, expires, seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
     ON CONFLICT (path) DO NOTHING";
const REPLACE: &str =
    "INSERT OR REPLACE INTO files (path, size, uploader, uploaded, expires, seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const COUNT: &str = "INSERT INTO usage (uploader, files, bytes) VALUES (?1, ?2, ?3)
     ON CONFLICT (uploader) DO UPDATE SET files = files + ?2, bytes = bytes + ?3";
const DROP_EMPTY_USAGE: &str = "DELETE FROM usage WHERE uploader = ?1 AND files <= 0";

impl Index {
    /// Open (creating) the database at `path`. WAL with `synchronous = NORMAL`: a commit is
    /// one append to the log (no fsync; a killed process loses nothing), and a power cut can
    /// lose the last commits but never leaves the database inconsistent; the start after one
    /// rebuilds what the files say (`scan`).
    pub fn open(path: &Path) -> rusqlite::Result<Index> {
        let conn = Connection::open(path)?;
        // One process owns the index (`node::hold_exclusive`), through this one connection:
        // holding SQLite's lock from the first write on spares every transaction its fcntl
        // locks, and keeps the WAL index in this process's memory instead of a shared file.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        // Small pages for a new index (an existing one keeps the size it was made with): each
        // upload's row lands on a leaf of its own (paths are random), and every page a commit
        // touches is written whole, to the log and again at the checkpoint, and our commit
        // rounds write the index back with the uploads: 1 KiB pages took 11-15 % off all an
        // upload writes to the disk (docs/benchmarks.md, "Fewer bytes per upload").
        conn.pragma_update(None, "page_size", PAGE_SIZE)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // Well inside the memory budget, whatever the number of files.
        conn.pragma_update(None, "cache_size", -2048)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        let mut idx = Index { conn, generation: 0 };
        idx.generation = idx.state("generation")?.and_then(|g| g.parse().ok()).unwrap_or(0);
        Ok(idx)
    }

    pub fn state(&self, key: &str) -> rusqlite::Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| r.get(0))
            .optional()
    }

    pub fn set_state(&self, key: &str, value: &str) -> rusqlite::Result<()> {
        self.conn.execute(
            "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = ?2",
            params![key, value],
        )?;
        Ok(())
    }

    /// Record `entries` in one transaction; the entries they replaced (same path), if any.
    /// A new path (what an upload almost always is) costs one insert; the usage rows are
    /// updated once per uploader per batch.
    pub fn upsert(&mut self, entries: &[Entry]) -> rusqlite::Result<Vec<Option<Entry>>> {
        let generation = self.generation;
        // A savepoint: a transaction of its own, or a part of a scan's batch.
        let tx = self.conn.savepoint()?;
        let mut replaced = Vec::with_capacity(entries.len());
        for e in entries {
            let row = params![
                e.path,
                e.size as i64,
                e.uploader,
                e.uploaded as i64,
                e.expires.map(|x| x as i64),
                generation
            ];
            let old = if tx.prepare_cached(INSERT_NEW)?.execute(row)? == 1 {
                None
            } else {
                let old = by_path(&tx, &e.path)?;
                tx.prepare_cached(REPLACE)?.execute(row)?;
                old
            };
            replaced.push(old);
        }
        let mut usage: HashMap<Option<&str>, (i64, i64)> = HashMap::new();
        for (old, e) in replaced.iter().zip(entries) {
            if let Some(old) = old {
                let u = usage.entry(old.uploader.as_deref()).or_default();
                *u = (u.0 - 1, u.1 - old.size as i64);
            }
            let u = usage.entry(e.uploader.as_deref()).or_default();
            *u = (u.0 + 1, u.1 + e.size as i64);
        }
        for (uploader, (files, bytes)) in usage {
            count(&tx, uploader, files, bytes)?;
        }
        tx.commit()?;
        Ok(replaced)
    }

    /// Forget `path`; the entry it had.
    pub fn remove(&mut self, path: &str) -> rusqlite::Result<Option<Entry>> {
        let tx = self.conn.savepoint()?;
        let old = by_path(&tx, path)?;
        if let Some(old) = &old {
            tx.prepare_cached("DELETE FROM files WHERE path = ?1")?
                .execute([path])?;
            count(&tx, old.uploader.as_deref(), -1, -(old.size as i64))?;
        }
        tx.commit()?;
        Ok(old)
    }

    pub fn get(&self, path: &str) -> rusqlite::Result<Option<Entry>> {
        by_path(&self.conn, path)
    }

    /// When the next file expires: its own expiry, or its upload time plus `ttl` (0 = none).
    pub fn next_due(&self, ttl: u64) -> rusqlite::Result<Option<u64>> {
        let own: Option<i64> =
            self.conn
                .query_row("SELECT MIN(expires) FROM files WHERE expires IS NOT NULL", [], |r| {
                    r.get(0)
                })?;
        let by_age: Option<i64> = match ttl {
            0 => None,
            _ => self
                .conn
                .query_row("SELECT MIN(uploaded) FROM files", [], |r| r.get(0))?,
        };
        let by_age = by_age.map(|u| (u as u64).saturating_add(ttl));
        Ok(match (own.map(|e| e as u64), by_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Up to `limit` files expired at `now`, soonest first.
    pub fn due(&self, now: u64, ttl: u64, limit: usize) -> rusqlite::Result<Vec<Entry>> {
        let mut out = self.query(
            &format!(
                "SELECT {COLUMNS} FROM files WHERE expires IS NOT NULL AND expires <= ?1 ORDER BY expires LIMIT ?2"
            ),
            params![now as i64, limit as i64],
        )?;
        if ttl > 0 && out.len() < limit {
            let before = now.saturating_sub(ttl) as i64;
            let more = self.query(
                &format!("SELECT {COLUMNS} FROM files WHERE uploaded <= ?1 ORDER BY uploaded LIMIT ?2"),
                params![before, (limit - out.len()) as i64],
            )?;
            out.extend(more.into_iter().filter(|e| e.expires.is_none_or(|x| x > now)));
        }
        Ok(out)
    }

    /// Up to `limit` files of `uploader`, oldest first.
    pub fn oldest_of(&self, uploader: &str, limit: usize) -> rusqlite::Result<Vec<Entry>> {
        self.query(
            &format!("SELECT {COLUMNS} FROM files WHERE uploader = ?1 ORDER BY uploaded LIMIT ?2"),
            params![uploader, limit as i64],
        )
    }

    /// The files `filter` means, oldest first, after `after` (upload time and path of the
    /// last one of the previous page) when given, at most `limit`.
    pub fn list(&self, filter: &Filter, after: Option<(u64, &str)>, limit: usize) -> rusqlite::Result<Vec<Entry>> {
        let before = filter.before.map_or(i64::MAX, |b| b as i64);
        let (at, path) = after.map_or((-1, ""), |(t, p)| (t as i64, p));
        let uploader = filter.uploader.as_deref();
        self.query(
            &format!(
                "SELECT {COLUMNS} FROM files WHERE (?1 IS NULL OR uploader = ?1) AND uploaded < ?2
                 AND (uploaded, path) > (?3, ?4) ORDER BY uploaded, path LIMIT ?5"
            ),
            params![uploader, before, at, path, limit as i64],
        )
    }

    /// Files and bytes per uploader ("" for files without one).
    pub fn usage(&self) -> rusqlite::Result<HashMap<String, Usage>> {
        let mut stmt = self.conn.prepare("SELECT uploader, files, bytes FROM usage")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                Usage {
                    files: r.get::<_, i64>(1)? as u64,
                    bytes: r.get::<_, i64>(2)? as u64,
                },
            ))
        })?;
        rows.collect()
    }

    /// Start a scan: from now on every row recorded or seen carries a new generation.
    pub fn begin_scan(&mut self) -> rusqlite::Result<()> {
        self.generation += 1;
        self.set_state("generation", &self.generation.to_string())
    }

    /// The walk found this file (already recorded: its row is marked seen, else recorded).
    pub fn seen(&mut self, e: &Entry) -> rusqlite::Result<()> {
        let marked = self
            .conn
            .prepare_cached("UPDATE files SET seen = ?2 WHERE path = ?1 AND size = ?3")?
            .execute(params![e.path, self.generation, e.size as i64])?;
        if marked == 0 {
            self.upsert(std::slice::from_ref(e))?;
        }
        Ok(())
    }

    /// End a scan: drop the rows neither seen nor recorded since it began (their files are
    /// gone) and count the usage again from the rows; how many were dropped.
    pub fn finish_scan(&mut self) -> rusqlite::Result<usize> {
        let tx = self.conn.transaction()?;
        let gone = tx.execute("DELETE FROM files WHERE seen < ?1", [self.generation])?;
        tx.execute("DELETE FROM usage", [])?;
        tx.execute(
            "INSERT INTO usage (uploader, files, bytes) SELECT COALESCE(uploader, ''), COUNT(*), SUM(size) FROM files GROUP BY COALESCE(uploader, '')",
            [],
        )?;
        tx.commit()?;
        Ok(gone)
    }

    /// Run `f` in one transaction (a scan's batch of `seen`).
    pub fn batch<T>(&mut self, f: impl FnOnce(&mut Index) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        self.conn.execute_batch("BEGIN")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    fn query(&self, sql: &str, args: impl rusqlite::Params) -> rusqlite::Result<Vec<Entry>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(args, entry)?;
        rows.collect()
    }
}

/// Add `files` and `bytes` (either may be negative) to `uploader`'s usage row.
fn count(tx: &Connection, uploader: Option<&str>, files: i64, bytes: i64) -> rusqlite::Result<()> {
    let key = uploader.unwrap_or("");
    tx.prepare_cached(COUNT)?.execute(params![key, files, bytes])?;
    tx.prepare_cached(DROP_EMPTY_USAGE)?.execute([key])?;
    Ok(())
}

/// The row of `path`, if any.
fn by_path(conn: &Connection, path: &str) -> rusqlite::Result<Option<Entry>> {
    conn.prepare_cached(BY_PATH)?.query_row([path], entry).optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(path: &str, size: u64, uploader: Option<&str>, uploaded: u64, expires: Option<u64>) -> Entry {
        Entry {
            path: path.into(),
            size,
            uploader: uploader.map(Into::into),
            uploaded,
            expires,
        }
    }

    fn index() -> (tempfile::TempDir, Index) {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(&dir.path().join("i.sqlite")).unwrap();
        (dir, idx)
    }

    #[test]
    fn a_new_index_has_small_pages_and_an_old_one_keeps_its_own() {
        let page_size = |idx: &Index| -> u32 { idx.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap() };
        // A path far longer than a small page holds still goes in and comes back.
        let long = format!("{}/f.bin", "d".repeat(2000));
        let (_d, mut idx) = index();
        assert_eq!(page_size(&idx), PAGE_SIZE);
        idx.upsert(&[e(&long, 1, Some("alice"), 100, None)]).unwrap();
        assert_eq!(idx.get(&long).unwrap().map(|x| x.size), Some(1));
        // An index made by an earlier version, with SQLite's default pages.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.pragma_update(None, "page_size", 4096).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            conn.execute_batch(SCHEMA).unwrap();
        }
        let mut idx = Index::open(&path).unwrap();
        assert_eq!(page_size(&idx), 4096);
        idx.upsert(&[e(&long, 2, Some("alice"), 100, None)]).unwrap();
        assert_eq!(idx.get(&long).unwrap().map(|x| x.size), Some(2));
    }

    #[test]
    fn the_by_path_lookup_reads_the_columns_entry_expects() {
        assert_eq!(BY_PATH, format!("SELECT {COLUMNS} FROM files WHERE path = ?1"));
    }

    #[test]
    fn usage_follows_every_change() {
        let (_d, mut idx) = index();
        idx.upsert(&[
            e("a/1", 10, Some("alice"), 100, None),
            e("a/2", 20, Some("alice"), 101, None),
        ])
        .unwrap();
        idx.upsert(&[e("b/1", 5, None, 102, None)]).unwrap();
        let u = idx.usage().unwrap();
        assert_eq!(u["alice"], Usage { files: 2, bytes: 30 });
        assert_eq!(u[""], Usage { files: 1, bytes: 5 });
        // The same path again replaces, and says what it replaced.
        let old = idx.upsert(&[e("a/1", 7, Some("bob"), 103, None)]).unwrap();
        assert_eq!(old[0].as_ref().map(|o| o.size), Some(10));
        let u = idx.usage().unwrap();
        assert_eq!(u["alice"], Usage { files: 1, bytes: 20 });
        assert_eq!(u["bob"], Usage { files: 1, bytes: 7 });
        assert_eq!(idx.remove("a/2").unwrap().map(|o| o.size), Some(20));
        assert_eq!(idx.remove("a/2").unwrap(), None);
        assert!(
            !idx.usage().unwrap().contains_key("alice"),
            "a user without files has no row"
        );
        // In one batch: a path recorded twice, and a replacement; usage is settled per batch.
        let old = idx
            .upsert(&[
                e("c/1", 1, Some("carol"), 104, None),
                e("c/1", 2, Some("dave"), 105, None),
                e("a/1", 3, Some("carol"), 106, None),
            ])
            .unwrap();
        let sizes: Vec<_> = old.iter().map(|o| o.as_ref().map(|o| o.size)).collect();
        assert_eq!(sizes, vec![None, Some(1), Some(7)]);
        let u = idx.usage().unwrap();
        assert_eq!(u["carol"], Usage { files: 1, bytes: 3 });
        assert_eq!(u["dave"], Usage { files: 1, bytes: 2 });
        assert!(!u.contains_key("bob"), "{u:?}");
        // It all survives reopening.
        drop(idx);
        let idx = Index::open(&_d.path().join("i.sqlite")).unwrap();
        assert_eq!(idx.get("a/1").unwrap().unwrap().uploader.as_deref(), Some("carol"));
    }

    #[test]
    fn expiry_by_date_and_by_age() {
        let (_d, mut idx) = index();
        idx.upsert(&[
            e("x/old", 1, None, 1000, None),
            e("x/claimed", 1, None, 5000, Some(2000)),
            e("x/new", 1, None, 9000, None),
        ])
        .unwrap();
        assert_eq!(
            idx.next_due(0).unwrap(),
            Some(2000),
            "without FileTTL only claims expire"
        );
        assert_eq!(idx.next_due(500).unwrap(), Some(1500), "uploaded 1000 + 500");
        let due = |now, ttl| -> Vec<String> { idx.due(now, ttl, 10).unwrap().into_iter().map(|e| e.path).collect() };
        assert_eq!(due(1999, 0), Vec::<String>::new());
        assert_eq!(due(2000, 0), vec!["x/claimed"]);
        assert_eq!(due(2000, 500), vec!["x/claimed", "x/old"]);
        assert_eq!(due(10_000, 500), vec!["x/claimed", "x/old", "x/new"]);
        assert_eq!(idx.due(10_000, 500, 1).unwrap().len(), 1, "limited");
    }

    #[test]
    fn listing_and_oldest_first() {
        let (_d, mut idx) = index();
        idx.upsert(&[
            e("a/2", 1, Some("alice"), 200, None),
            e("a/1", 1, Some("alice"), 100, None),
            e("b/1", 1, Some("bob"), 150, None),
        ])
        .unwrap();
        let paths = |v: Vec<Entry>| v.into_iter().map(|e| e.path).collect::<Vec<_>>();
        assert_eq!(paths(idx.oldest_of("alice", 10).unwrap()), vec!["a/1", "a/2"]);
        assert_eq!(
            paths(idx.list(&Filter::default(), None, 10).unwrap()),
            vec!["a/1", "b/1", "a/2"]
        );
        assert_eq!(
            paths(idx.list(&Filter::default(), Some((100, "a/1")), 1).unwrap()),
            vec!["b/1"]
        );
        let f = Filter {
            uploader: Some("alice".into()),
            before: Some(150),
        };
        assert_eq!(paths(idx.list(&f, None, 10).unwrap()), vec!["a/1"]);
    }

    #[test]
    fn a_scan_drops_what_is_gone_and_recounts() {
        let (_d, mut idx) = index();
        idx.upsert(&[
            e("a/1", 10, Some("alice"), 1, None),
            e("a/2", 20, Some("alice"), 2, None),
        ])
        .unwrap();
        idx.begin_scan().unwrap();
        idx.batch(|i| i.seen(&e("a/1", 10, Some("alice"), 1, None))).unwrap();
        idx.seen(&e("c/new", 3, None, 5, None)).unwrap();
        // Recorded while the scan runs: kept.
        idx.upsert(&[e("d/during", 4, None, 6, None)]).unwrap();
        assert_eq!(idx.finish_scan().unwrap(), 1);
        assert_eq!(idx.get("a/2").unwrap(), None);
        assert!(idx.get("c/new").unwrap().is_some() && idx.get("d/during").unwrap().is_some());
        assert_eq!(idx.usage().unwrap()["alice"], Usage { files: 1, bytes: 10 });
        idx.set_state("clean", "1").unwrap();
        assert_eq!(idx.state("clean").unwrap().as_deref(), Some("1"));
        assert_eq!(idx.state("other").unwrap(), None);
    }
}
