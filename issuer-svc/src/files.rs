//! The issuer's files: reading the operator's (authz, TLS material, token and pid files: regular
//! files only, capped at [`MAX_FILE_BYTES`], errors naming the file), and writing its own (keys
//! 0600, certificates 0644, in private directories) through ca-core's one atomic writer,
//! [`ca_core::fsutil`].

use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ca_core::fsutil::{self, Access};

use crate::error::{AppError, Context};
use crate::limits::MAX_FILE_BYTES;

/// Reads an operator's file: regular files only, at most [`MAX_FILE_BYTES`].
pub(crate) fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, AppError> {
    let file =
        std::fs::File::open(path).ctx(|| format!("cannot read {what} {}", path.display()))?;
    let meta = file
        .metadata()
        .ctx(|| format!("cannot read {what} {}", path.display()))?;
    if !meta.is_file() {
        return Err(AppError(format!(
            "{what} {} is not a regular file",
            path.display()
        )));
    }
    let mut buf = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)
        .ctx(|| format!("cannot read {what} {}", path.display()))?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(AppError(format!(
            "{what} {} is larger than {MAX_FILE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// [`read_file`] as UTF-8 text.
pub(crate) fn read_config_file(path: &Path, what: &str) -> Result<String, AppError> {
    String::from_utf8(read_file(path, what)?)
        .map_err(|_| AppError(format!("{what} {} is not UTF-8 text", path.display())))
}

/// Writes a key file readable by the owner only (created 0600, never widened), atomically.
pub(crate) fn write_private(path: &Path, data: &[u8]) -> Result<(), AppError> {
    Ok(fsutil::write_atomic(path, data, Access::OwnerOnly)?)
}

/// Writes a certificate file (0644), atomically.
pub(crate) fn write_public(path: &Path, data: &[u8]) -> Result<(), AppError> {
    Ok(fsutil::write_atomic(path, data, Access::WorldReadable)?)
}

/// Creates `dir` (and its parents) readable by the owner only. An existing directory is the
/// operator's: one that others can read is reported, not changed.
pub(crate) fn create_private_dir(dir: &Path) -> Result<(), AppError> {
    if dir.is_dir() {
        if let Ok(meta) = std::fs::metadata(dir) {
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "directory holding keys is open to other users; chmod 700 it");
            }
        }
        return Ok(());
    }
    Ok(fsutil::create_private_dir(dir)?)
}
