//! The limits of the issuer's edge, in one place (the README's "Limits" table lists them with
//! those of ca-core).

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use crate::error::{AppError, Context};

/// Largest gRPC message the server accepts (a Mesh for `ValidateBackend` is at most
/// [`ca_core::config::MAX_YAML_BYTES`]; a CSR is a few KB).
pub(crate) const MAX_GRPC_MESSAGE: usize = 1024 * 1024;
/// `ValidateBackend` calls running at once; more wait up to [`VALIDATE_QUEUE_WAIT`].
pub(crate) const MAX_CONCURRENT_VALIDATIONS: usize = 2;
/// How long a `ValidateBackend` call waits for a free slot.
pub(crate) const VALIDATE_QUEUE_WAIT: Duration = Duration::from_secs(10);
/// How long one validation (parse, build, test certificate) may take.
pub(crate) const VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest gRPC status message sent back; longer ones are cut.
pub(crate) const MAX_STATUS_MESSAGE: usize = 2048;
/// Largest operator file read (authz, TLS material, Mesh files are also capped by
/// [`ca_core::config::MAX_YAML_BYTES`]).
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

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

/// Cuts `message` to [`MAX_STATUS_MESSAGE`] bytes at a character boundary.
pub(crate) fn cut_message(mut message: String) -> String {
    if message.len() > MAX_STATUS_MESSAGE {
        let mut end = MAX_STATUS_MESSAGE;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("… (cut)");
    }
    message
}
