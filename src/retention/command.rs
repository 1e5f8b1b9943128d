//! `hmac-file-server files …`: the operator's view of the store (docs/operations.md, "The
//! files command"). Sent to the running server when there is one (so what it removes stops
//! being served at once), carried out on the index directly when there is none.

use std::io;
use std::sync::Arc;

use super::catalog::{Catalog, StartError};
use super::control::{self, Reply, Request};
use super::index::Entry;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::storage::{Modes, Store};

/// Carry out `req` for the server `config` describes.
pub fn run(config: &Config, req: Request) -> io::Result<Reply> {
    let node = crate::node::Node::this(&config.node_id).name;
    let settings = super::Settings::of(config, &node);
    let socket = super::catalog::socket_of(&settings);
    if let Some(reply) = control::call(&socket, &req)? {
        return Ok(reply);
    }
    // No server answers: work on the index here, holding it so none starts meanwhile.
    let modes = Modes {
        file: config.file_mode,
        dir: config.dir_mode,
    };
    let store = Arc::new(Store::open(&config.store_dir, config.sync_writes, modes)?);
    let metrics = Arc::new(Metrics::new(1));
    let catalog = Catalog::start(store, metrics, settings).map_err(|e| match e {
        StartError::InUse(_) => io::Error::other(format!(
            "{e}: the server is running but does not answer on {}",
            socket.display()
        )),
        e => io::Error::other(e.to_string()),
    })?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    let reply = rt.block_on(async {
        catalog.complete().await;
        control::execute(&catalog, req).await
    });
    catalog.stop();
    Ok(reply)
}

/// `reply` as the command prints it.
pub fn render(reply: &Reply) -> String {
    let mut out = String::new();
    match reply {
        Reply::Stats { total, users } => {
            out.push_str(&format!("{} files, {} bytes\n", total.files, total.bytes));
            for (u, usage) in users {
                let who = if u.is_empty() { "(unknown)" } else { u };
                out.push_str(&format!("{who}\t{}\t{}\n", usage.files, usage.bytes));
            }
        }
        Reply::Files(files) => {
            for e in files {
                out.push_str(&line(e));
            }
        }
        Reply::Removed(paths) => {
            for (p, n) in paths {
                match n {
                    Some(n) => out.push_str(&format!("removed\t{n}\t{p}\n")),
                    None => out.push_str(&format!("not found\t-\t{p}\n")),
                }
            }
        }
        Reply::Purged { files, bytes } => out.push_str(&format!("purged {files} files, {bytes} bytes\n")),
        Reply::Error(e) => out.push_str(&format!("error: {e}\n")),
    }
    out
}

/// One file of a listing: upload time, size, uploader, expiry, path (tab-separated).
fn line(e: &Entry) -> String {
    let time = |t: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t));
    format!(
        "{}\t{}\t{}\t{}\t{}\n",
        time(e.uploaded),
        e.size,
        e.uploader.as_deref().unwrap_or("-"),
        e.expires.map_or("-".to_owned(), |x| time(x).to_string()),
        e.path
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retention::Usage;

    #[test]
    fn rendering() {
        let stats = Reply::Stats {
            total: Usage { files: 3, bytes: 30 },
            users: vec![
                ("".into(), Usage { files: 1, bytes: 5 }),
                ("a@b".into(), Usage { files: 2, bytes: 25 }),
            ],
        };
        assert_eq!(render(&stats), "3 files, 30 bytes\n(unknown)\t1\t5\na@b\t2\t25\n");
        let files = Reply::Files(vec![Entry {
            path: "x/y.txt".into(),
            size: 4,
            uploader: None,
            uploaded: 0,
            expires: Some(86400),
        }]);
        assert_eq!(
            render(&files),
            "1970-01-01T00:00:00Z\t4\t-\t1970-01-02T00:00:00Z\tx/y.txt\n"
        );
        let removed = Reply::Removed(vec![("a".into(), Some(3)), ("b".into(), None)]);
        assert_eq!(render(&removed), "removed\t3\ta\nnot found\t-\tb\n");
    }
}
