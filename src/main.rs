use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use hmac_file_server::auth::{self, Proto};
use hmac_file_server::config::Config;
use hmac_file_server::runtime;
use hmac_file_server::storage::{Modes, Store};

#[derive(Parser)]
#[command(
    name = "hmac-file-server",
    version,
    about = "HMAC-signed file uploads for XMPP servers, on io_uring"
)]
struct Cli {
    /// Configuration file (TOML). `-config PATH` works too, as with the Go server.
    #[arg(long, global = true, default_value = "config.toml")]
    config: PathBuf,
    /// Validate the configuration and StoreDir, print the result and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print a signed PUT URL, as an XMPP server would hand it to a client; with `--proto
    /// bearer`, the URL and the `Authorization` header of a Prosody mod_http_file_share slot.
    Sign {
        /// Path below the upload prefix, not percent-encoded (e.g. "uuid/photo 1.jpg"). For
        /// bearer, "slot/filename".
        #[arg(long)]
        path: String,
        /// Exact size of the upload in bytes.
        #[arg(long)]
        size: u64,
        /// Content-Type the client will send (v2 and token sign it). Default: what an absent
        /// header means, application/octet-stream.
        #[arg(long = "type")]
        content_type: Option<String>,
        #[arg(long, value_enum, default_value_t = ProtoArg::V)]
        proto: ProtoArg,
        /// Base URL the server is reached at; default http://127.0.0.1:<port>.
        #[arg(long)]
        base_url: Option<String>,
        /// bearer: the uploader's bare JID (the token's `sub`).
        #[arg(long)]
        sub: Option<String>,
        /// bearer: how long the token may be used, e.g. "300s" or "10m".
        #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
        valid: std::time::Duration,
        /// bearer: when the file is to be deleted, from now (the token's `expires`), e.g. "7d".
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<std::time::Duration>,
    },
    /// The stored files: statistics, listing, removal, purges. Works against a running
    /// server (through its control socket) or, when none runs, on the store directly.
    Files {
        #[command(subcommand)]
        command: FilesCommand,
    },
}

#[derive(Subcommand)]
enum FilesCommand {
    /// Files and bytes stored, in all and per uploader.
    Stats,
    /// Stored files, oldest first: upload time, size, uploader, expiry, path.
    List {
        /// Only this uploader's files (a bare JID, or UploaderFromPath's segment).
        #[arg(long)]
        user: Option<String>,
        /// Only files uploaded longer ago than this, e.g. "30d".
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
    /// Delete files, by store path (below UploadSubDir, not percent-encoded) or URL.
    Rm {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Delete every file of an uploader (an account deletion, a privacy request) or older
    /// than a duration.
    Purge {
        #[arg(long, required_unless_present = "older_than")]
        user: Option<String>,
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ProtoArg {
    V,
    V2,
    Token,
    /// A Bearer token, as Prosody's mod_http_file_share issues them.
    Bearer,
}

fn main() -> ExitCode {
    // Before any thread exists, so every thread inherits it: stop signals are only ever taken
    // by the main thread's graceful drain, never by a thread that would die of them.
    let _ = runtime::drain::signal_set().thread_block();
    // The Go server took single-dash long flags (-config); clap wants two.
    let args = std::env::args_os().map(|a| match a.to_str() {
        Some("-config") => "--config".into(),
        Some(s) if s.starts_with("-config=") => format!("-{s}").into(),
        _ => a,
    });
    let cli = Cli::parse_from(args);
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hmac-file-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Files { command }) = cli.command {
        return files(&config, command);
    }
    if let Some(Command::Sign {
        path,
        size,
        content_type,
        proto,
        base_url,
        sub,
        valid,
        expires_in,
    }) = cli.command
    {
        let base = base_url.unwrap_or_else(|| match config.listen_addr() {
            Ok(a) if a.ip().is_unspecified() => format!("http://127.0.0.1:{}", a.port()),
            Ok(a) => format!("http://{a}"),
            Err(_) => "http://127.0.0.1:8080".into(),
        });
        let url = format!(
            "{}{}{}",
            base.trim_end_matches('/'),
            config.url_prefix(),
            hmac_file_server::path::percent_encode(&path)
        );
        let proto = match proto {
            ProtoArg::V => Proto::V,
            ProtoArg::V2 => Proto::V2,
            ProtoArg::Token => Proto::Token,
            ProtoArg::Bearer => {
                let token = bearer(&config, &path, size, content_type.as_deref(), sub, valid, expires_in);
                return match token {
                    Ok(token) => {
                        println!("{url}\nAuthorization: Bearer {token}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("hmac-file-server: {e}");
                        ExitCode::from(2)
                    }
                };
            }
        };
        let ct = content_type
            .as_deref()
            .map_or(auth::DEFAULT_CONTENT_TYPE, str::as_bytes);
        let sig = auth::sign(config.secret.as_bytes(), proto, &path, size, ct);
        println!("{url}?{}={sig}", proto.param());
        return ExitCode::SUCCESS;
    }
    if cli.check_config {
        for w in config.warnings() {
            eprintln!("hmac-file-server: warning: {w}");
        }
        return match check_store_dir(&config.store_dir) {
            Ok(()) => {
                println!("configuration OK: {}", cli.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hmac-file-server: config key `StoreDir`: {e}");
                ExitCode::from(2)
            }
        };
    }
    let _log_guard = match hmac_file_server::logging::init(&config) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("hmac-file-server: {e}");
            return ExitCode::from(2);
        }
    };
    for w in config.warnings() {
        tracing::warn!("{w}");
    }
    let modes = Modes {
        file: config.file_mode,
        dir: config.dir_mode,
    };
    let store = match Store::open(&config.store_dir, config.sync_writes, modes) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("config key `StoreDir` ({}): {e}", config.store_dir.display());
            eprintln!(
                "hmac-file-server: config key `StoreDir` ({}): {e}",
                config.store_dir.display()
            );
            return ExitCode::from(2);
        }
    };
    match runtime::run(config, store) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("hmac-file-server: {e}");
            ExitCode::from(1)
        }
    }
}

/// A token with the claims Prosody's mod_http_file_share signs, for `path` = "slot/filename".
fn bearer(
    config: &Config,
    path: &str,
    size: u64,
    content_type: Option<&str>,
    sub: Option<String>,
    valid: std::time::Duration,
    expires_in: Option<std::time::Duration>,
) -> Result<String, String> {
    let (slot, filename) = path
        .split_once('/')
        .ok_or("--proto bearer needs --path \"slot/filename\"")?;
    let now = hmac_file_server::session::unix_now();
    let mut claims = serde_json::json!({
        "slot": slot,
        "filename": filename,
        "filesize": size,
        "filetype": content_type.unwrap_or("application/octet-stream"),
        "iat": now,
        "exp": now + valid.as_secs(),
    });
    if let Some(sub) = sub {
        claims["sub"] = sub.into();
    }
    if let Some(e) = expires_in {
        claims["expires"] = (now + e.as_secs()).into();
    }
    Ok(auth::jwt::mint(config.secret.as_bytes(), &claims.to_string()))
}

fn files(config: &Config, command: FilesCommand) -> ExitCode {
    use hmac_file_server::retention::control::{Reply, Request};
    use hmac_file_server::retention::{command, Filter};
    let filter = |user: Option<String>, older_than: Option<std::time::Duration>| Filter {
        uploader: user,
        before: older_than.map(|d| hmac_file_server::session::unix_now().saturating_sub(d.as_secs())),
    };
    let mut requests = match command {
        FilesCommand::Stats => vec![Request::Stats],
        FilesCommand::List { user, older_than } => vec![Request::List {
            filter: filter(user, older_than),
            after: None,
            limit: 1000,
        }],
        FilesCommand::Rm { paths } => {
            let prefix = config.url_prefix();
            let mut store_paths = Vec::new();
            for p in paths {
                match store_path_of(&p, &prefix) {
                    Some(sp) => store_paths.push(sp),
                    None => {
                        eprintln!("hmac-file-server: {p:?} is not a store path or a URL below {prefix}");
                        return ExitCode::from(2);
                    }
                }
            }
            vec![Request::Rm { paths: store_paths }]
        }
        FilesCommand::Purge { user, older_than } => vec![Request::Purge {
            filter: filter(user, older_than),
        }],
    };
    let mut status = ExitCode::SUCCESS;
    while let Some(req) = requests.pop() {
        let reply = match command::run(config, req.clone()) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("hmac-file-server: {e}");
                return ExitCode::from(1);
            }
        };
        print!("{}", command::render(&reply));
        match (&reply, req) {
            (Reply::Error(_), _) => return ExitCode::from(1),
            (Reply::Removed(r), _) if r.iter().any(|(_, n)| n.is_none()) => status = ExitCode::from(1),
            // A full page: the next one follows the last file.
            (Reply::Files(f), Request::List { filter, limit, .. }) if f.len() == limit => {
                let last = &f[f.len() - 1];
                requests.push(Request::List {
                    filter,
                    after: Some((last.uploaded, last.path.clone())),
                    limit,
                });
            }
            _ => {}
        }
    }
    status
}

/// A file named on the command line: a store path as is, or a URL (or its path) below the
/// upload prefix, percent-decoded.
fn store_path_of(arg: &str, prefix: &str) -> Option<String> {
    let target = match arg.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/')?..],
        None if arg.starts_with('/') => arg,
        None => return Some(arg.to_owned()),
    };
    let (raw, _) = hmac_file_server::path::split_target(target);
    hmac_file_server::path::store_path(raw, prefix)
        .ok()
        .map(|p| p.as_str().to_owned())
}

/// StoreDir must be a writable directory, or creatable below a writable one.
fn check_store_dir(dir: &Path) -> Result<(), String> {
    use nix::unistd::{access, AccessFlags};
    let mut p = dir;
    loop {
        if p.exists() {
            if !p.is_dir() {
                return Err(format!("{} is not a directory", p.display()));
            }
            return access(p, AccessFlags::W_OK | AccessFlags::X_OK)
                .map_err(|e| format!("{} is not writable: {e}", p.display()));
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return Ok(()),
        }
    }
}
