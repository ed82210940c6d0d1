//! Reading the operator's files (authz, TLS material, token and pid files): regular files only,
//! capped at [`MAX_FILE_BYTES`], errors naming the file.

use std::io::Read as _;
use std::path::Path;

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
