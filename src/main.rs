use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use hmac_file_server::auth::{self, Proto};
use hmac_file_server::cli::{Cli, Command, FilesCommand, ProtoArg};
use hmac_file_server::config::Config;
use hmac_file_server::runtime;
use hmac_file_server::storage::{Modes, Store};

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
    // What needs no configuration.
    if cli.version {
        println!("hmac-file-server {}", env!("CARGO_PKG_VERSION"));
        match runtime::io_driver() {
            "epoll" => println!(
                "I/O driver: epoll (io_uring is unavailable here: seccomp, io_uring_disabled or an old kernel)"
            ),
            d => println!("I/O driver: {d}"),
        }
        return ExitCode::SUCCESS;
    }
    match cli.command {
        Some(Command::Man { dir }) => return man(dir.as_deref()),
        Some(Command::Completions { shell }) => return print(&hmac_file_server::cli::completions(shell)),
        _ => {}
    }
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

/// The main page on stdout, or every page into `dir`.
fn man(dir: Option<&Path>) -> ExitCode {
    let pages = hmac_file_server::cli::man_pages();
    let Some(dir) = dir else {
        return print(&pages[0].1);
    };
    for (name, page) in pages {
        if let Err(e) = std::fs::write(dir.join(&name), page) {
            eprintln!("hmac-file-server: {}: {e}", dir.join(name).display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn print(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(1),
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
