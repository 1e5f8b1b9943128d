//! Logs to `LogFile` or the console at `LogLevel`, through a background writer thread so a
//! slow disk or terminal never stalls a worker.

use std::fs::OpenOptions;
use std::io;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::filter::LevelFilter;

use crate::config::Config;

/// Install the global subscriber. Keep the guard alive: dropping it flushes and stops the writer.
pub fn init(config: &Config) -> io::Result<WorkerGuard> {
    let level = match config.log_level.to_ascii_lowercase().as_str() {
        "debug" => LevelFilter::DEBUG,
        "warn" => LevelFilter::WARN,
        "error" => LevelFilter::ERROR,
        _ => LevelFilter::INFO,
    };
    // The writer thread drains everything queued, then flushes: behind a BufWriter, lines that
    // arrived together cost one write() instead of one each (an access line per request).
    let (writer, guard, ansi) = if config.log_file.is_empty() {
        let (w, g) = tracing_appender::non_blocking(io::BufWriter::with_capacity(64 * 1024, io::stderr()));
        (w, g, false)
    } else {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.log_file)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot open LogFile {}: {e}", config.log_file)))?;
        let (w, g) = tracing_appender::non_blocking(io::BufWriter::with_capacity(64 * 1024, file));
        (w, g, false)
    };
    // Drop monoio's own chatter below warn unless we are debugging.
    let filter = tracing_subscriber::filter::Targets::new()
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
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(ansi)
                .with_thread_names(true),
        )
        .with(filter)
        .try_init()
        .map_err(|e| io::Error::other(e.to_string()))?;
    Ok(guard)
}
