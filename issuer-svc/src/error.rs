//! The CLI's error type, with context.

use std::fmt;

/// An error for the operator: what failed, why, and where useful what to do.
#[derive(Debug)]
pub(crate) struct AppError(pub(crate) String);

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AppError {}

impl From<String> for AppError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for AppError {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<ca_core::Error> for AppError {
    fn from(e: ca_core::Error) -> Self {
        Self(crate::api::status::message(&e))
    }
}

impl From<ca_core::fsutil::FileError> for AppError {
    fn from(e: ca_core::fsutil::FileError) -> Self {
        let what = e.to_string();
        Self(format!("{what}: {}", e.into_io()))
    }
}

/// Adds context to any displayable error.
pub(crate) trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, AppError>;
}

impl<T, E: fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T, AppError> {
        self.map_err(|e| AppError(format!("{}: {e}", what())))
    }
}
