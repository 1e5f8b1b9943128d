//! The Debian package: `cargo deb` builds it from this checkout, `dpkg -i` installs it on this
//! machine, and it leaves a working service: every file in place, a generated Secret that
//! passes `--check-config`, the unit's own command lines serving uploads and downloads as the
//! unit's user, a reinstall that keeps the operator's configuration, and a removal and a purge
//! that never take the uploaded files. systemd is not PID 1 here, so the unit's ExecStartPre
//! and ExecStart run as the unit says (User=, UMask=) under setpriv instead of systemctl.
//!
//! The package is built from the binary this test run built (`cargo deb --no-build --profile
//! dev`), so CI compiles one profile; an operator's `cargo deb` builds the release binary.
mod common;

use common::*;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const PKG: &str = "hmac-file-server";
const USER: &str = "hmac-file-server";
const CONF: &str = "/etc/hmac-file-server/config.toml";
const UNIT: &str = "/usr/lib/systemd/system/hmac-file-server.service";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/hmac-file-server.service";
const STATE: &str = "/var/lib/hmac-file-server";
const LOGS: &str = "/var/log/hmac-file-server";
/// Left in StateDirectory by this test, so a later run knows a package it finds installed is
/// its own leftover (an interrupted run) and not an operator's.
const MARKER: &str = "/var/lib/hmac-file-server/.installed-by-tests";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Run `cmd` to completion; panics with its output unless it succeeds.
fn ok(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn dpkg(args: &[&str]) -> String {
    ok(Command::new("dpkg").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// dpkg's status of the package: "install ok installed", "deinstall ok config-files", or "".
fn status() -> String {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", PKG])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn secret_of(config: &str) -> String {
    config
        .lines()
        .find_map(|l| l.strip_prefix("Secret = \""))
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or_else(|| panic!("no Secret line in {CONF}"))
        .to_owned()
}

/// The installed unit's value of `key` (the first one).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
        .to_owned()
}

/// A unit command line run as the unit runs it: as User=/Group= with its UMask=.
fn as_unit(unit: &str, command_line: &str) -> Command {
    let user = unit_value(unit, "User");
    let group = unit_value(unit, "Group");
    let umask = unit_value(unit, "UMask");
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "umask {umask} && exec setpriv --reuid={user} --regid={group} --init-groups -- {command_line}"
    ));
    c
}

/// The server started from the unit's ExecStart, once its ExecStartPre passed; stopped with
/// the unit's KillSignal (SIGTERM) when dropped.
struct Service(std::process::Child, std::net::SocketAddr);

impl Service {
    fn start(port: u16) -> Service {
        let unit = std::fs::read_to_string(UNIT).unwrap();
        ok(&mut as_unit(&unit, &unit_value(&unit, "ExecStartPre")));
        let mut child = as_unit(&unit, &unit_value(&unit, "ExecStart"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let log = || std::fs::read_to_string(Path::new(LOGS).join("server.log")).unwrap_or_default();
        wait_accepting(
            addr,
            &mut child,
            "the packaged service",
            Duration::from_secs(20),
            || true,
            log,
        );
        Service(child, addr)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.0.wait();
    }
}

fn upload(addr: std::net::SocketAddr, secret: &str, path: &str, body: &[u8]) -> u16 {
    let target = signed_target(secret, path, body.len() as u64, Some("text/plain"), Proto::V2);
    let mut req = put_head(&target, body.len(), Some("text/plain"), "").into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req).status
}

fn download(addr: std::net::SocketAddr, path: &str) -> Response {
    raw(
        addr,
        format!("GET /upload/{} HTTP/1.1\r\nHost: x\r\n\r\n", encode_path(path)).as_bytes(),
    )
}

/// Replace the configuration's ListenPort, as an operator would with an editor.
fn set_port(port: u16) {
    let config = std::fs::read_to_string(CONF).unwrap();
    let edited: String = config
        .lines()
        .map(|l| match l.starts_with("ListenPort = ") {
            true => format!("ListenPort = \"127.0.0.1:{port}\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(CONF)
        .unwrap();
    f.write_all(edited.as_bytes()).unwrap();
}

/// Remove what an earlier, interrupted run of this test left; refuse to touch an installation
/// that is not this test's.
fn clean_leftovers() {
    if !status().is_empty() && status() != "unknown ok not-installed" {
        assert!(
            Path::new(MARKER).exists(),
            "a {PKG} package ({}) that this test did not install is on this machine; the test \
             would replace it, so it stops here",
            status()
        );
        dpkg(&["--purge", PKG]);
    }
    let _ = std::fs::remove_dir_all(STATE);
    let _ = Command::new("userdel").arg(USER).stderr(Stdio::null()).status();
}

#[test]
fn package_installs_serves_reinstalls_and_uninstalls_keeping_uploads() {
    let is_root = ok(Command::new("id").arg("-u")).trim() == "0";
    if !require("root (dpkg -i)", is_root)
        || !require("dpkg", on_path("dpkg"))
        || !require("cargo-deb", runs("cargo", &["deb", "--version"]))
        || !require("systemd-analyze", on_path("systemd-analyze"))
        || !require("man", on_path("man"))
    {
        return;
    }
    clean_leftovers();

    // Build: the binary under test, packaged as an operator's `cargo deb` packages the release one.
    let out = tempfile::tempdir().unwrap();
    ok(Command::new("cargo")
        .current_dir(root())
        .args([
            "deb",
            "--no-build",
            "--profile",
            "dev",
            "--fast",
            "--no-strip",
            "-q",
            "-o",
        ])
        .arg(out.path()));
    let deb = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    let arch = ok(Command::new("dpkg").arg("--print-architecture")).trim().to_owned();
    assert_eq!(name, format!("{PKG}_{}-1_{arch}.deb", env!("CARGO_PKG_VERSION")));

    // Install.
    let log = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(log.contains("generated a Secret"), "{log}");
    std::fs::write(MARKER, "").unwrap();
    assert_eq!(status(), "install ok installed");
    for f in [
        "/usr/bin/hmac-file-server",
        UNIT,
        CONF,
        "/etc/logrotate.d/hmac-file-server",
        "/usr/share/man/man1/hmac-file-server.1.gz",
        "/usr/share/man/man1/hmac-file-server-sign.1.gz",
        "/usr/share/bash-completion/completions/hmac-file-server",
        "/usr/share/zsh/vendor-completions/_hmac-file-server",
        "/usr/share/fish/vendor_completions.d/hmac-file-server.fish",
        "/usr/share/doc/hmac-file-server/README.md",
        "/usr/share/doc/hmac-file-server/copyright",
        "/usr/share/doc/hmac-file-server/config.toml.example",
        "/usr/share/doc/hmac-file-server/operations.md",
    ] {
        assert!(Path::new(f).is_file(), "{f} is not installed");
    }
    // Enabled (deb-systemd-helper links it even where systemd is not running), so it starts at
    // the next boot; where systemd runs, the postinst starts it at once.
    assert!(
        std::fs::symlink_metadata(WANTS).is_ok_and(|m| m.file_type().is_symlink()),
        "{WANTS}"
    );
    let conffiles = std::fs::read_to_string(format!("/var/lib/dpkg/info/{PKG}.conffiles")).unwrap();
    assert!(conffiles.lines().any(|l| l == CONF), "{conffiles}");
    assert!(
        conffiles.lines().any(|l| l == "/etc/logrotate.d/hmac-file-server"),
        "{conffiles}"
    );
    let uid = ok(Command::new("id").args(["-u", USER])).trim().parse::<u32>().unwrap();
    for dir in [STATE, LOGS] {
        let m = std::fs::metadata(dir).unwrap();
        assert!(
            m.is_dir() && m.uid() == uid && m.mode() & 0o777 == 0o750,
            "{dir}: {m:?}"
        );
    }
    // The Secret is the service's and root's alone.
    let m = std::fs::metadata(CONF).unwrap();
    let gid = ok(Command::new("id").args(["-g", USER])).trim().parse::<u32>().unwrap();
    assert_eq!((m.uid(), m.gid(), m.permissions().mode() & 0o777), (0, gid, 0o640));
    let secret = secret_of(&std::fs::read_to_string(CONF).unwrap());
    assert!(
        secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit()),
        "{secret}"
    );
    let version = ok(Command::new("/usr/bin/hmac-file-server").arg("--version"));
    assert!(
        version.contains(env!("CARGO_PKG_VERSION")) && version.contains("I/O driver: io_uring"),
        "{version}"
    );
    let checked = ok(Command::new("setpriv")
        .args(["--reuid", USER, "--regid", USER, "--init-groups", "--"])
        .args(["/usr/bin/hmac-file-server", "--check-config", "--config", CONF]));
    assert!(checked.contains("configuration OK"), "{checked}");

    // The unit as installed verifies, and its command lines serve as the unit's user.
    let verify = Command::new("systemd-analyze").args(["verify", UNIT]).output().unwrap();
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let man = ok(Command::new("man")
        .args(["-l", "/usr/share/man/man1/hmac-file-server.1.gz"])
        .env("MANWIDTH", "80"));
    assert!(
        man.contains("SYNOPSIS") && man.contains("/etc/hmac-file-server/config.toml"),
        "{man}"
    );
    assert_eq!(
        ok(Command::new("man").args(["-w", "hmac-file-server"])).trim(),
        "/usr/share/man/man1/hmac-file-server.1.gz"
    );
    let port = free_port();
    set_port(port);
    let body = b"packaged hello\n";
    let path = "7d3c1c9e-debian/hello.txt";
    {
        let service = Service::start(port);
        assert_eq!(upload(service.1, &secret, path, body), 201);
        let r = download(service.1, path);
        assert_eq!((r.status, r.body.as_slice()), (200, &body[..]));
    }
    let stored = Path::new(STATE).join(path);
    assert_eq!(std::fs::read(&stored).unwrap(), body);
    assert_eq!(std::fs::metadata(&stored).unwrap().uid(), uid);
    let log = std::fs::read_to_string(Path::new(LOGS).join("server.log")).unwrap();
    assert!(log.contains("listening"), "{log}");

    // Reinstall over it: the operator's edit and the Secret stay, and so does the upload.
    let log = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(!log.contains("generated a Secret"), "{log}");
    let config = std::fs::read_to_string(CONF).unwrap();
    assert_eq!(secret_of(&config), secret);
    assert!(
        config.contains(&format!("ListenPort = \"127.0.0.1:{port}\"")),
        "the operator's edit was lost"
    );
    {
        let service = Service::start(port);
        let r = download(service.1, path);
        assert_eq!((r.status, r.body.as_slice()), (200, &body[..]));
    }

    // Remove: the program goes, the configuration and the uploads stay.
    dpkg(&["-r", PKG]);
    assert_eq!(status(), "deinstall ok config-files");
    assert!(!Path::new("/usr/bin/hmac-file-server").exists() && !Path::new(UNIT).exists());
    assert_eq!(secret_of(&std::fs::read_to_string(CONF).unwrap()), secret);
    assert_eq!(std::fs::read(&stored).unwrap(), body);

    // Purge: the configuration and the logs go, the uploads still stay.
    dpkg(&["-P", PKG]);
    assert_eq!(status(), "");
    assert!(
        !Path::new("/etc/hmac-file-server").exists(),
        "purge left /etc/hmac-file-server"
    );
    assert!(!Path::new(LOGS).exists(), "purge left the logs");
    assert!(std::fs::symlink_metadata(WANTS).is_err(), "purge left the unit enabled");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        body,
        "purge must never remove an upload"
    );

    // This machine back as it was (an operator's purge would keep these).
    clean_leftovers();
}

/// /etc/hmac-file-server/config.toml is the example configuration, every comment included,
/// with the packaged StoreDir and LogFile and a header: the two cannot drift apart.
#[test]
fn packaged_config_is_the_example_with_the_packaged_paths() {
    let example = std::fs::read_to_string(root().join("config.toml.example")).unwrap();
    let packaged = std::fs::read_to_string(root().join("debian/config.toml")).unwrap();
    let from_example = example
        .replace("StoreDir = \"./data\"\n", "StoreDir = \"/var/lib/hmac-file-server\"\n")
        .replace(
            "LogFile = \"\"\n",
            "LogFile = \"/var/log/hmac-file-server/server.log\"\n",
        );
    let header = packaged
        .strip_suffix(from_example.as_str())
        .expect("debian/config.toml is not config.toml.example with the packaged paths");
    assert!(header.lines().all(|l| l.starts_with('#')), "{header}");
    // The postinst replaces exactly this placeholder.
    assert!(packaged.contains("\nSecret = \"change-me-to-a-long-random-string\"\n"));
}

/// The packaged unit differs from contrib's in who runs it and where the files are, never in
/// its sandboxing (contrib's is the one tests/contrib.rs traces and rates).
#[test]
fn packaged_unit_keeps_the_contrib_units_sandboxing() {
    let sandbox = |file: &str| {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let start = text.find("# Sandboxing").expect("a sandboxing section");
        text[start..].to_owned()
    };
    assert_eq!(
        sandbox("debian/hmac-file-server.service"),
        sandbox("contrib/hmac-file-server.service")
    );
}
