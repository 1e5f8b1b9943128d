//! What is kept with a stored file besides its bytes, as extended attributes of the file: they
//! are written on the temporary before its body, so they are published together with the data
//! by the one no-replace link, and survive any restart.

use std::fs::File;
use std::io;
use std::path::Path;

use xattr::FileExt;

/// The uploaded Content-Type: the shared-mime-info convention, so `getfattr` and file
/// managers understand it.
const TYPE_XATTR: &str = "user.mime_type";
/// The uploader's bare JID, when a Bearer token named one.
const UPLOADER_XATTR: &str = "user.hmac-file-server.uploader";
/// Unix seconds after which the file is no longer served, in decimal.
const EXPIRES_XATTR: &str = "user.hmac-file-server.expires";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMeta {
    pub content_type: Vec<u8>,
    pub uploader: Option<String>,
    pub expires: Option<u64>,
}

impl FileMeta {
    /// A file known only by its content type.
    pub fn typed(content_type: &[u8]) -> FileMeta {
        FileMeta {
            content_type: content_type.to_vec(),
            ..FileMeta::default()
        }
    }

    /// Store it on `file`; what is None is left as it is.
    pub(super) fn write(&self, file: &File) -> io::Result<()> {
        file.set_xattr(TYPE_XATTR, &self.content_type)?;
        if let Some(uploader) = &self.uploader {
            file.set_xattr(UPLOADER_XATTR, uploader.as_bytes())?;
        }
        if let Some(expires) = self.expires {
            file.set_xattr(EXPIRES_XATTR, expires.to_string().as_bytes())?;
        }
        Ok(())
    }
}

/// Every attribute stored on `file` (an absent content type reads as empty).
pub fn read(file: &File) -> FileMeta {
    let (content_type, expires) = for_download(file);
    let uploader = file
        .get_xattr(UPLOADER_XATTR)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok());
    FileMeta {
        content_type: content_type.unwrap_or_default(),
        uploader,
        expires,
    }
}

/// What a download needs of a stored file's attributes: its content type and its expiry.
pub(super) fn for_download(file: &File) -> (Option<Vec<u8>>, Option<u64>) {
    let content_type = file.get_xattr(TYPE_XATTR).ok().flatten();
    let expires = file
        .get_xattr(EXPIRES_XATTR)
        .ok()
        .flatten()
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok());
    (content_type, expires)
}

/// Why the attributes could not be stored, naming the xattrs and the directory.
pub(super) fn xattr_error(e: io::Error, dir: &Path) -> io::Error {
    io::Error::new(
        e.kind(),
        format!(
            "cannot store a file's content type as xattr {TYPE_XATTR} in {}: {e}",
            dir.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_absent_ones_are_left() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("f")).unwrap();
        let full = FileMeta {
            content_type: b"image/png".to_vec(),
            uploader: Some("alice@example.org".into()),
            expires: Some(1_700_604_800),
        };
        full.write(&file).unwrap();
        assert_eq!(for_download(&file), (Some(b"image/png".to_vec()), Some(1_700_604_800)));
        // A resumable upload's later piece stores the type again, and nothing else.
        FileMeta::typed(b"text/plain").write(&file).unwrap();
        assert_eq!(for_download(&file), (Some(b"text/plain".to_vec()), Some(1_700_604_800)));
        assert_eq!(
            file.get_xattr(UPLOADER_XATTR).unwrap().as_deref(),
            Some(&b"alice@example.org"[..])
        );
        let plain = File::create(dir.path().join("g")).unwrap();
        assert_eq!(for_download(&plain), (None, None));
    }
}
