//! The issuer's files: reading the operator's (authz, TLS material, token and pid files: regular
//! files only, capped at [`MAX_FILE_BYTES`], errors naming the file), and writing its own (keys
//! 0600, certificates 0644, in private directories) through ca-core's one atomic writer,
//! [`ca_core::fsutil`].

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use ca_core::fsutil::{self, Access, FileError};

use crate::limits::MAX_FILE_BYTES;

/// Why an operator's file cannot be used. `what` says which file it is (`authz file`, `key
/// file`, ...), so the message reads `cannot read authz file /etc/meshca/authz.yaml: ...`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ReadError {
    /// Opening or reading failed.
    #[error("cannot read {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A directory, device or pipe where a file was expected.
    #[error("{what} {} is not a regular file", path.display())]
    NotAFile { what: &'static str, path: PathBuf },
    /// Over [`MAX_FILE_BYTES`].
    #[error("{what} {} is larger than {MAX_FILE_BYTES} bytes", path.display())]
    TooLarge { what: &'static str, path: PathBuf },
    /// Text was expected.
    #[error("{what} {} is not UTF-8 text", path.display())]
    NotUtf8 {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::string::FromUtf8Error,
    },
}

/// A file system operation other than reading an operator's file or writing through
/// [`fsutil`] failed: `cannot {action} {path}: {source}`.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}", path.display())]
pub(crate) struct IoError {
    /// What was being done: `create`, `restrict`, `lock`, ...
    pub(crate) action: &'static str,
    pub(crate) path: PathBuf,
    #[source]
    pub(crate) source: std::io::Error,
}

impl IoError {
    /// A `map_err` adapter: `fs::op(p).map_err(IoError::at("create", p))`.
    pub(crate) fn at(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| Self {
            action,
            path,
            source,
        }
    }
}

/// Reads an operator's file: regular files only, at most [`MAX_FILE_BYTES`].
pub(crate) fn read_file(path: &Path, what: &'static str) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        what,
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile {
            what,
            path: path.to_owned(),
        });
    }
    let mut buf = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge {
            what,
            path: path.to_owned(),
        });
    }
    Ok(buf)
}

/// [`read_file`] as UTF-8 text.
pub(crate) fn read_config_file(path: &Path, what: &'static str) -> Result<String, ReadError> {
    String::from_utf8(read_file(path, what)?).map_err(|source| ReadError::NotUtf8 {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Writes a key file readable by the owner only (created 0600, never widened), atomically.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), FileError> {
    fsutil::write_atomic(path, data, Access::OwnerOnly)
}

/// Writes a certificate file (0644), atomically.
pub(crate) fn write_public(path: &Path, data: &[u8]) -> Result<(), FileError> {
    fsutil::write_atomic(path, data, Access::WorldReadable)
}

/// Creates `dir` (and its parents) readable by the owner only. An existing directory is the
/// operator's: one that others can read is reported, not changed.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), FileError> {
    if dir.is_dir() {
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "directory holding keys is open to other users; chmod 700 it");
            }
        }
        return Ok(());
    }
    fsutil::create_private_dir(dir)
}
