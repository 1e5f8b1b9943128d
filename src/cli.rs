//! The command line, defined once: `main` parses it, and the manual page and the shell
//! completions are rendered from the same definitions (`man`, `completions`), so they cannot
//! drift from what the program accepts.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum, ValueHint};

#[derive(Parser)]
#[command(
    name = "hmac-file-server",
    version,
    about = "HMAC-signed file uploads for XMPP servers, on io_uring",
    long_about = "HMAC-signed file uploads for XMPP servers, on io_uring.\n\n\
        Serves the uploads that Prosody (mod_http_upload_external, mod_http_file_share), ejabberd \
        (mod_http_upload with external_secret) and Metronome sign: clients PUT files with a signed \
        URL or Bearer token, the server verifies it, stores the file durably below StoreDir and \
        serves it back on GET. Without a subcommand, it serves until SIGTERM or SIGINT; SIGHUP \
        reopens LogFile.",
    disable_version_flag = true
)]
pub struct Cli {
    /// Configuration file (TOML). `-config PATH` works too, as with the Go server.
    #[arg(long, global = true, default_value = "config.toml", value_hint = ValueHint::FilePath)]
    pub config: PathBuf,
    /// Validate the configuration and StoreDir, print the result and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Print the version and the I/O driver this machine would run on (io_uring, or the epoll
    /// fallback), and exit.
    #[arg(short = 'V', long)]
    pub version: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand)]
pub enum Command {
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
    /// Print a shell completion script (the Debian package installs bash's, zsh's and fish's).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page hmac-file-server(1) in roff, as `man -l -` reads it; with
    /// `--dir`, write it and one page per subcommand (hmac-file-server-sign(1), ...) there.
    Man {
        #[arg(long, value_hint = ValueHint::DirPath)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum FilesCommand {
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
pub enum ProtoArg {
    V,
    V2,
    Token,
    /// A Bearer token, as Prosody's mod_http_file_share issues them.
    Bearer,
}

/// Sections of the manual page that clap does not know: where things are, how it stops.
const MAN_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/hmac\-file\-server/config.toml\fR
The configuration, as the Debian package installs it (TOML; the Go hmac\-file\-server's keys).
Every key is described in \fI/usr/share/doc/hmac\-file\-server/config.toml.example\fR.
.TP
\fI/var/lib/hmac\-file\-server\fR
StoreDir of the packaged configuration: the uploaded files.
.TP
\fI/var/log/hmac\-file\-server/server.log\fR
LogFile of the packaged configuration, rotated by logrotate.
.SH ENVIRONMENT
.TP
\fBHMAC_FILE_SERVER_SECRET\fR
Overrides the configuration's \fBSecret\fR.
.SH SIGNALS
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop accepting, let uploads in flight finish for up to GracefulShutdownTimeout, then exit.
.TP
\fBSIGHUP\fR
Reopen LogFile (after logrotate moved it).
.SH EXIT STATUS
0 on success, 1 when the server failed while running, 2 when the configuration or the command
line is refused (the message names the key).
.SH SEE ALSO
\fBsystemctl\fR(1), \fBjournalctl\fR(1), and the documentation in
\fI/usr/share/doc/hmac\-file\-server\fR.
"#;

/// The manual pages, file name and roff: hmac-file-server(1) first, then one per subcommand
/// (hmac-file-server-files-rm(1), ...), which the main page's SUBCOMMANDS section names.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    fn add(cmd: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut page = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = man.render(&mut page);
        pages.push((man.get_filename(), page));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            add(sub.clone(), pages);
        }
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    add(cmd, &mut pages);
    pages[0].1.extend_from_slice(MAN_EXTRA.as_bytes());
    pages
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hmac-file-server", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn man_page_names_every_subcommand_and_the_files() {
        let pages = man_pages();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names[0], "hmac-file-server.1");
        assert!(names.contains(&"hmac-file-server-files-rm.1"), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let page = String::from_utf8(pages[0].1.clone()).unwrap();
        for s in [
            "sign",
            "files",
            "completions",
            "\\-\\-check\\-config",
            ".SH FILES",
            ".SH SIGNALS",
        ] {
            assert!(page.contains(s), "{s} missing from the man page");
        }
    }
}
