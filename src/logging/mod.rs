//! Logs to `LogFile` or the console at `LogLevel`, as text or JSON (`LogFormat`), through a
//! background writer thread so a slow disk or terminal never stalls a worker. SIGHUP reopens
//! `LogFile` (logrotate moves it, then signals us).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::LevelFilter;

use crate::config::Config;

pub mod access;
mod escape;

pub use escape::Escaped;

/// Set by SIGHUP; the writer thread reopens the file before its next write.
static REOPEN: AtomicBool = AtomicBool::new(false);
/// Whether there is a file to reopen (false when logging to the console).
static TO_FILE: AtomicBool = AtomicBool::new(false);

/// Ask for `LogFile` to be reopened. The line logged here is the first in the new file, so the
/// switch happens at once rather than at the next request.
pub fn reopen() {
    if TO_FILE.load(Ordering::Relaxed) {
        REOPEN.store(true, Ordering::Release);
        tracing::info!("SIGHUP: log file reopened");
    } else {
        tracing::info!("SIGHUP: logging to the console, nothing to reopen");
    }
}

/// `LogFile`, reopened by path when asked. Only the writer thread touches it, so switching
/// files needs no lock: everything written before the switch is flushed to the old file
/// (which logrotate has renamed), everything after goes to the new one; nothing is lost.
struct LogFile {
    path: PathBuf,
    file: BufWriter<File>,
}

impl LogFile {
    fn open(path: &PathBuf) -> io::Result<BufWriter<File>> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(BufWriter::with_capacity(64 * 1024, file))
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if REOPEN.swap(false, Ordering::Acquire) {
            self.file.flush()?;
            match LogFile::open(&self.path) {
                Ok(f) => self.file = f,
                // Keep writing to the old file rather than lose lines.
                Err(e) => eprintln!("hmac-file-server: cannot reopen LogFile {}: {e}", self.path.display()),
            }
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Keeps the log writer running; dropping it hands over the queued access lines, then flushes
/// and stops the writer thread.
pub struct LogGuard(#[allow(dead_code)] WorkerGuard);

impl Drop for LogGuard {
    fn drop(&mut self) {
        access::flush();
    }
}

/// Install the global subscriber and the access log. Keep the guard alive until exit.
pub fn init(config: &Config) -> io::Result<LogGuard> {
    let level = match config.log_level.to_ascii_lowercase().as_str() {
        "debug" => LevelFilter::DEBUG,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    // The writer thread drains everything queued, then flushes: behind a BufWriter, lines that
    // arrived together cost one write() instead of one each (an access line per request).
    let (writer, guard) = if config.log_file.is_empty() {
        tracing_appender::non_blocking(BufWriter::with_capacity(64 * 1024, io::stderr()))
    } else {
        let path = PathBuf::from(&config.log_file);
        let file = LogFile::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open LogFile {}: {e}", config.log_file)))?;
        TO_FILE.store(true, Ordering::Relaxed);
        tracing_appender::non_blocking(LogFile { path, file })
    };
    // Drop monoio's own chatter below warn unless we are debugging. The session-store drivers
    // log statements with their parameters at debug (upload ids, which are capabilities):
    // never below info.
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("tokio_postgres", level.min(LevelFilter::INFO))
        .with_target("mysql_async", level.min(LevelFilter::INFO))
        .with_target("fred", level.min(LevelFilter::INFO))
        .with_default(level)
        .with_target(
            "monoio",
            if level == LevelFilter::DEBUG {
                level
            } else {
                LevelFilter::WARN
            },
        );
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let json = config.log_format.eq_ignore_ascii_case("json");
    access::init(writer.clone(), json, level)?;
    let text_layer = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(writer.clone())
            .with_ansi(false)
            .with_thread_names(true)
    });
    let json_layer = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .with_thread_names(true)
    });
    tracing_subscriber::registry()
        .with(text_layer)
        .with(json_layer)
        .with(filter)
        .try_init()
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(LogGuard(guard))
}
