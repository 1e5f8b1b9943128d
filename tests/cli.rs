//! The command line: start-up validation that names the offending key, `--check-config`,
//! the Go-style `-config` flag, and `sign` producing URLs the server accepts.

mod common;
use common::*;

/// The example is valid in every key but its placeholder `Secret`, which is refused until a
/// real one replaces it (here through the environment, as the README's quick start does).
#[test]
fn shipped_example_config_is_valid_once_given_a_secret() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml.example");
    let (code, _, err) = run(&["--check-config", "--config", example]);
    assert_eq!(code, 2, "the placeholder secret must be refused: {err}");
    assert!(err.contains("`Secret`") && err.contains("openssl rand"), "{err}");
    let out = std::process::Command::new(bin())
        .args(["--check-config", "--config", example])
        .env("HMAC_FILE_SERVER_SECRET", "0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("configuration OK"));
    assert!(stderr.is_empty(), "a 32-byte secret draws no warning: {stderr}");
}

#[test]
fn config_errors_name_the_key() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("s");
    let cases = [
        (
            format!(
                "Secret = \"x\"\nStoreDir = \"{}\"\nListenPortt = \":1\"\n",
                store.display()
            ),
            "ListenPortt",
        ),
        (
            format!("Secret = \"x\"\nStoreDir = \"{}\"\nChunkSize = true\n", store.display()),
            "ChunkSize",
        ),
        (
            format!(
                "Secret = \"x\"\nStoreDir = \"{}\"\nUploadMaxSize = \"lots\"\n",
                store.display()
            ),
            "UploadMaxSize",
        ),
        (format!("Secret = \"\"\nStoreDir = \"{}\"\n", store.display()), "Secret"),
        (
            format!(
                "Secret = \"x\"\nStoreDir = \"{}\"\nLogLevel = \"loud\"\n",
                store.display()
            ),
            "LogLevel",
        ),
        (
            format!(
                "Secret = \"x\"\nStoreDir = \"{}\"\nListenPort = \"nowhere\"\n",
                store.display()
            ),
            "ListenPort",
        ),
    ];
    for (body, key) in cases {
        let cfg = write_config(d.path(), &body);
        for args in [vec!["--check-config", "--config", &cfg], vec!["--config", &cfg]] {
            let (code, _, err) = run(&args);
            assert_ne!(code, 0, "{body}");
            assert!(err.contains(key), "error for {key} should name it: {err}");
        }
    }
    // A StoreDir that is a file: both --check-config and a real start refuse, naming StoreDir.
    let file = d.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "Secret = \"x\"\nStoreDir = \"{}\"\nListenPort = \"127.0.0.1:0\"\n",
            file.display()
        ),
    );
    let (code, _, err) = run(&["--check-config", "--config", &cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("StoreDir"), "{err}");
    let (code, _, err) = run(&["--config", &cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("StoreDir"), "{err}");
    // A missing config file.
    let (code, _, err) = run(&["--config", "/nonexistent/config.toml"]);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/config.toml"), "{err}");
}

#[test]
fn go_style_flag_and_sign_command() {
    let s = Server::start();
    let cfg = s.dir.path().join("config.toml").display().to_string();
    let path = unique("signed by cli ü.txt");
    for (proto, ct) in [("v", None), ("v2", Some("text/plain")), ("token", Some("image/png"))] {
        let p = format!("{path}.{proto}");
        let mut args = vec!["sign", "-config", &cfg, "--path", &p, "--size", "4", "--proto", proto];
        if let Some(ct) = ct {
            args.extend(["--type", ct]);
        }
        let (code, out, err) = run(&args);
        assert_eq!(code, 0, "{err}");
        let url = out.trim();
        assert!(url.starts_with(&format!("http://{}/upload/", s.addr)), "{url}");
        assert!(url.contains(&format!("?{proto}=")), "{url}");
        let target = url.trim_start_matches(&format!("http://{}", s.addr));
        assert_eq!(put(&s, target, b"data", ct), 201, "{url}");
        assert_eq!(std::fs::read(file_at(&s, &p)).unwrap(), b"data");
    }
}

#[test]
fn port_in_use_is_an_error() {
    let s = Server::start();
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "Secret = \"x\"\nStoreDir = \"{}\"\nListenPort = \"{}\"\n",
            d.path().join("s").display(),
            s.addr
        ),
    );
    let (code, _, err) = run(&["--config", &cfg]);
    assert_ne!(code, 0);
    assert!(err.contains("ListenPort"), "{err}");
}

#[test]
fn leftover_temporaries_are_removed_at_start() {
    let d = tempfile::tempdir().unwrap();
    let store = d.path().join("store");
    let tmp = store.join(".hmac-file-server").join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    std::fs::write(tmp.join(format!("{host}.1.2.3.part")), "partial").unwrap();
    // The store is opened (and cleaned) before the listener binds, so a start that fails on
    // a busy port shows the cleaning without leaving a server running.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = write_config(
        d.path(),
        &format!(
            "Secret = \"x\"\nStoreDir = \"{}\"\nListenPort = \"{}\"\n",
            store.display(),
            blocker.local_addr().unwrap()
        ),
    );
    let (code, _, _) = run(&["--config", &cfg]);
    assert_ne!(code, 0);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
}

/// `--version` needs no configuration and names the I/O driver this machine gives a worker.
#[test]
fn version_prints_the_version_and_the_io_driver() {
    let (code, out, err) = run(&["--version", "--config", "/nonexistent/config.toml"]);
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(concat!("hmac-file-server ", env!("CARGO_PKG_VERSION")))
    );
    // This machine has io_uring (tests/driver.rs runs the fallback under a seccomp filter).
    assert_eq!(lines.next(), Some("I/O driver: io_uring"), "{out}");
    // Where io_uring is refused, it says so (monoio's switch stands in for a refusing kernel).
    let out = std::process::Command::new(bin())
        .arg("--version")
        .env("MONOIO_FORCE_LEGACY_DRIVER", "1")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("I/O driver: epoll (io_uring is unavailable"),
        "{text}"
    );
}

/// The man pages and completions in contrib/ (which the Debian package ships) are what the
/// binary renders from its clap definitions today. After changing the command line:
/// `cargo run -- man --dir contrib/man` and `cargo run -- completions SHELL > contrib/completions/...`
/// (docs/install.md lists the three).
#[test]
fn shipped_man_pages_and_completions_are_up_to_date() {
    let contrib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib");
    let d = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["man", "--dir", d.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let names = |dir: &std::path::Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let rendered = names(d.path());
    assert_eq!(names(&contrib.join("man")), rendered, "regenerate contrib/man");
    for name in &rendered {
        let want = std::fs::read(d.path().join(name)).unwrap();
        let have = std::fs::read(contrib.join("man").join(name)).unwrap();
        assert!(
            have == want,
            "contrib/man/{name} is stale: cargo run -- man --dir contrib/man"
        );
    }
    let (_, main_page, _) = run(&["man"]);
    assert_eq!(
        main_page.as_bytes(),
        std::fs::read(d.path().join("hmac-file-server.1")).unwrap()
    );
    for (shell, file) in [
        ("bash", "hmac-file-server.bash"),
        ("zsh", "_hmac-file-server"),
        ("fish", "hmac-file-server.fish"),
    ] {
        let (code, script, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{err}");
        assert!(script.contains("check-config"), "{shell}: {script}");
        let have = std::fs::read_to_string(contrib.join("completions").join(file)).unwrap();
        assert!(
            have == script,
            "contrib/completions/{file} is stale: cargo run -- completions {shell} > contrib/completions/{file}"
        );
    }
}

/// Every page renders with the real man (as `man hmac-file-server` would show it), and the bash
/// completion loads into a real bash and completes the subcommands.
#[test]
fn man_pages_render_and_bash_completion_completes() {
    if !require("man", on_path("man")) {
        return;
    }
    let man_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/man");
    for e in std::fs::read_dir(&man_dir).unwrap() {
        let path = e.unwrap().path();
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{}:\n{text}",
            path.display()
        );
        assert!(
            out.stderr.is_empty(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/completions/hmac-file-server.bash");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {script}; f=$(complete -p hmac-file-server | sed 's/.*-F \\([^ ]*\\).*/\\1/'); \
             COMP_WORDS=(hmac-file-server fi); COMP_CWORD=1; $f hmac-file-server fi hmac-file-server; \
             echo \"${{COMPREPLY[@]}}\""
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "files",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
