//! The access log: one line per request, in the same text or JSON shape as every other log line
//! (tracing-subscriber's `Full` and `Json` formats), but formatted here and handed to the log
//! writer in batches. Through `tracing` the line's formatting and its hand-off to the writer
//! thread (a channel send and a futex wake per request) took 13 % of a worker's CPU under a
//! small-GET load (`perf`); this is nginx's buffered access log, with a deadline.

use std::cell::RefCell;
use std::fmt::Display;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::Level;
use tracing_appender::non_blocking::NonBlocking;
use tracing_subscriber::filter::LevelFilter;

use super::escape::{json_str, push_escaped};
use crate::http::response::push_decimal;
use crate::sync::lock;

/// The longest a line waits before it is handed to the writer thread.
const FLUSH_AFTER: Duration = Duration::from_millis(20);
/// A worker that finds this much queued hands it over itself rather than let it grow.
const FLUSH_AT: usize = 1 << 20;

/// One request's line.
pub struct Line<'a> {
    /// None on a Unix socket.
    pub peer: Option<SocketAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub bytes: u64,
    pub us: u64,
    pub error: Option<&'a dyn Display>,
}

struct Log {
    json: bool,
    level: LevelFilter,
    queued: Mutex<Vec<u8>>,
    filled: Condvar,
    writer: Mutex<NonBlocking>,
}

static LOG: OnceLock<Log> = OnceLock::new();

/// Start the access log on `writer` (the one every other line goes through, so SIGHUP reopens
/// both) and its flusher thread.
pub(super) fn init(writer: NonBlocking, json: bool, level: LevelFilter) -> std::io::Result<()> {
    let log = Log {
        json,
        level,
        queued: Mutex::new(Vec::with_capacity(64 * 1024)),
        filled: Condvar::new(),
        writer: Mutex::new(writer),
    };
    if LOG.set(log).is_err() {
        return Ok(()); // a second init (tests in one process) keeps the first
    }
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(flusher)
        .map(drop)
}

/// Hand everything queued to the writer thread now (at exit, before the writer stops). Taking
/// the writer lock first waits out a batch the flusher has taken but not yet handed over.
pub fn flush() {
    if let Some(log) = LOG.get() {
        let mut writer = lock(&log.writer);
        let batch = std::mem::take(&mut *lock(&log.queued));
        let _ = writer.write_all(&batch);
    }
}

/// Log one request: at info, or at error for a 5xx, when `LogLevel` lets that level through.
pub fn record(line: &Line) {
    let Some(log) = LOG.get() else { return };
    let level = if line.status >= 500 { Level::ERROR } else { Level::INFO };
    if level > log.level {
        return;
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let Scratch {
            line: out,
            clock,
            thread,
        } = &mut *s;
        out.clear();
        let stamp = clock.now();
        if log.json {
            format_json(out, stamp, level, thread, line);
        } else {
            format_text(out, stamp, level, thread, line);
        }
        let mut queued = lock(&log.queued);
        let was_empty = queued.is_empty();
        queued.extend_from_slice(out);
        if queued.len() >= FLUSH_AT {
            let batch = std::mem::take(&mut *queued);
            drop(queued);
            // NonBlocking never blocks: it queues the batch for the writer thread.
            let _ = lock(&log.writer).write_all(&batch);
        } else if was_empty {
            drop(queued);
            log.filled.notify_one();
        }
    });
}

/// Wait for a first line, let more gather for `FLUSH_AFTER`, hand them over; the writer thread
/// is then woken once per batch instead of once per request.
fn flusher() {
    let Some(log) = LOG.get() else { return };
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let mut queued = lock(&log.queued);
        while queued.is_empty() {
            queued = crate::sync::wait(&log.filled, queued);
        }
        drop(queued);
        std::thread::sleep(FLUSH_AFTER);
        // Writer before queue, as in `flush`, so an exit never misses a batch in our hands.
        let mut writer = lock(&log.writer);
        std::mem::swap(&mut *lock(&log.queued), &mut spare);
        let _ = writer.write_all(&spare);
        drop(writer);
        spare.clear();
    }
}

struct Scratch {
    line: Vec<u8>,
    clock: Clock,
    thread: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        line: Vec::with_capacity(512),
        clock: Clock::default(),
        thread: std::thread::current().name().unwrap_or("").to_owned(),
    });
}

/// RFC 3339 UTC timestamps with microseconds, as tracing-subscriber writes them; the date and
/// time of day are formatted once per second.
#[derive(Default)]
struct Clock {
    second: u64,
    prefix: String,
    stamp: String,
}

impl Clock {
    /// "2026-11-23T08:01:02.123456Z" for now.
    fn now(&mut self) -> &str {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.at(since.as_secs(), since.subsec_micros())
    }

    fn at(&mut self, secs: u64, micros: u32) -> &str {
        if secs != self.second || self.prefix.is_empty() {
            self.second = secs;
            self.prefix = date_time(secs);
        }
        self.stamp.clear();
        self.stamp.push_str(&self.prefix);
        self.stamp.push('.');
        let mut digits = [b'0'; 6];
        let mut rest = micros.min(999_999);
        for d in digits.iter_mut().rev() {
            *d = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        self.stamp.extend(digits.iter().map(|&d| char::from(d)));
        self.stamp.push('Z');
        &self.stamp
    }
}

/// "YYYY-MM-DDTHH:MM:SS" of a Unix time.
fn date_time(secs: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    let mut s = humantime::format_rfc3339_seconds(t).to_string();
    s.pop(); // the "Z"
    s
}

/// `2026-11-23T08:01:02.123456Z  INFO worker-0 access: peer=… method=GET path=/… status=200
/// bytes=4096 us=12`, tracing-subscriber's `Full` format of the same event. Pushed piece by
/// piece: through `write!` the line cost a small GET more than its response head.
fn format_text(out: &mut Vec<u8>, stamp: &str, level: Level, thread: &str, l: &Line) {
    out.extend_from_slice(stamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(padded(level).as_bytes());
    out.push(b' ');
    out.extend_from_slice(thread.as_bytes());
    out.extend_from_slice(b" access: peer=");
    push_peer(out, l.peer);
    out.extend_from_slice(b" method=");
    push_escaped(out, l.method);
    out.extend_from_slice(b" path=");
    push_escaped(out, l.path);
    out.extend_from_slice(b" status=");
    push_decimal(out, l.status.into());
    out.extend_from_slice(b" bytes=");
    push_decimal(out, l.bytes);
    out.extend_from_slice(b" us=");
    push_decimal(out, l.us);
    if let Some(e) = l.error {
        out.extend_from_slice(b" error=");
        push_escaped(out, &e.to_string());
    }
    out.push(b'\n');
}

/// The level as tracing-subscriber right-aligns it, five wide.
fn padded(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => " WARN",
        Level::INFO => " INFO",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

/// The client's address as `SocketAddr` shows it (`unix` on a Unix socket); IPv4, the usual
/// case, without the formatting machinery.
fn push_peer(out: &mut Vec<u8>, peer: Option<SocketAddr>) {
    match peer {
        Some(SocketAddr::V4(a)) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_decimal(out, octet.into());
            }
            out.push(b':');
            push_decimal(out, a.port().into());
        }
        Some(a) => {
            let _ = write!(out, "{a}");
        }
        None => out.extend_from_slice(b"unix"),
    }
}

/// tracing-subscriber's flattened `Json` format of the same event: one object per line.
fn format_json(out: &mut Vec<u8>, stamp: &str, level: Level, thread: &str, l: &Line) {
    let _ = write!(out, "{{\"timestamp\":\"{stamp}\",\"level\":\"{level}\",\"peer\":\"");
    push_peer(out, l.peer); // digits, dots, colons and brackets: nothing to escape
    out.push(b'"');
    out.extend_from_slice(b",\"method\":");
    json_str(out, l.method);
    out.extend_from_slice(b",\"path\":");
    json_str(out, l.path);
    let _ = write!(out, ",\"status\":{},\"bytes\":{},\"us\":{}", l.status, l.bytes, l.us);
    if let Some(e) = l.error {
        out.extend_from_slice(b",\"error\":");
        json_str(out, &e.to_string());
    }
    out.extend_from_slice(b",\"target\":\"access\",\"threadName\":");
    json_str(out, thread);
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(date_time(0), "1970-01-01T00:00:00");
        assert_eq!(date_time(951_782_400), "2000-02-29T00:00:00");
        assert_eq!(date_time(1_795_392_062), "2026-11-23T00:01:02");
        assert_eq!(date_time(4_107_542_399), "2100-02-28T23:59:59");
        let mut c = Clock::default();
        assert_eq!(c.at(1_795_392_062, 7), "2026-11-23T00:01:02.000007Z");
        assert_eq!(c.at(1_795_392_062, 999_999), "2026-11-23T00:01:02.999999Z");
        assert_eq!(c.at(1_795_392_063, 0), "2026-11-23T00:01:03.000000Z");
    }

    fn line<'a>(error: Option<&'a dyn Display>) -> Line<'a> {
        Line {
            peer: Some(([127, 0, 0, 1], 5000).into()),
            method: "PUT",
            path: "/upload/a \"b\"/c",
            status: 403,
            bytes: 0,
            us: 42,
            error,
        }
    }

    #[test]
    fn text_is_tracings_full_format() {
        let mut out = Vec::new();
        let stamp = "2026-11-23T00:01:02.000007Z";
        format_text(&mut out, stamp, Level::INFO, "worker-0", &line(Some(&"forbidden: x")));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-23T00:01:02.000007Z  INFO worker-0 access: peer=127.0.0.1:5000 method=PUT \
             path=/upload/a \"b\"/c status=403 bytes=0 us=42 error=forbidden: x\n"
        );
    }

    #[test]
    fn peers_read_as_socket_addresses_show_them() {
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        for (peer, shown) in [
            (Some(([10, 0, 255, 7], 65535).into()), "10.0.255.7:65535"),
            (Some(v6), "[2001:db8::1]:443"),
            (None, "unix"),
        ] {
            let mut out = Vec::new();
            push_peer(&mut out, peer);
            assert_eq!(String::from_utf8(out).unwrap(), shown);
        }
        let mut out = Vec::new();
        let l = Line {
            peer: Some(v6),
            ..line(None)
        };
        format_json(&mut out, "", Level::INFO, "w", &l);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["peer"], "[2001:db8::1]:443");
    }

    #[test]
    fn json_is_one_valid_object() {
        let mut out = Vec::new();
        let stamp = "2026-11-23T00:01:02.000007Z";
        format_json(&mut out, stamp, Level::ERROR, "worker-1", &line(Some(&"bad \"x\"\n")));
        assert_eq!(out.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["target"], "access");
        assert_eq!(v["threadName"], "worker-1");
        assert_eq!(v["path"], "/upload/a \"b\"/c");
        assert_eq!(v["status"], 403);
        assert_eq!(v["us"], 42);
        assert_eq!(v["error"], "bad \"x\"\n");
        assert_eq!(v["timestamp"], "2026-11-23T00:01:02.000007Z");
        let mut out = Vec::new();
        format_json(&mut out, "", Level::INFO, "w", &line(None));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(v.get("error").is_none());
    }
}
