//! The one conversion from meshca's errors to gRPC status codes.

use ca_core::{Error, ErrorKind};
use tonic::{Code, Status};

/// An error the API returns: a core or library error, or a refusal of the edge's own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ApiError {
    /// Anything from ca-core, a backend or the library.
    #[error(transparent)]
    Core(#[from] Error),
    /// The caller is not allowed.
    #[error("permission denied: {0}")]
    Denied(String),
    /// A bound is reached (streams of a connection, watches of an identity, validations in
    /// progress); `what` says which, and what to do.
    #[error("{what}")]
    Busy {
        /// The bound reached, and what to do.
        what: String,
    },
    /// The request cannot be decoded.
    #[error("{what}")]
    Undecodable {
        /// What could not be decoded, and the decoder's message (echoed).
        what: String,
    },
    /// The server is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// Work the request started on a blocking thread stopped without an answer.
    #[error("{0} stopped")]
    Stopped(&'static str),
    /// The caller went away while its validation ran.
    #[error("the validation was cancelled")]
    Cancelled,
    /// A validation ran out of its time.
    #[error("validation did not finish within {0:?}")]
    ValidationTimeout(std::time::Duration),
    /// The token signing key could not be rotated; the store's or the key's error is the
    /// source.
    #[error("cannot rotate the token signing key")]
    TokenKey(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::Core(core) => core_code(core),
            ApiError::Denied(_) => Code::PermissionDenied,
            ApiError::Busy { .. } => Code::ResourceExhausted,
            ApiError::Undecodable { .. } => Code::InvalidArgument,
            ApiError::ShuttingDown | ApiError::TokenKey(_) => Code::Unavailable,
            ApiError::Stopped(_) => Code::Internal,
            ApiError::Cancelled => Code::Cancelled,
            ApiError::ValidationTimeout(_) => Code::DeadlineExceeded,
        };
        Status::new(code, crate::limits::cut_message(message(&e)))
    }
}

/// The gRPC code of each kind of core error: the one mapping.
fn core_code(e: &Error) -> Code {
    match e.kind() {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition | ErrorKind::MtlsDisabled => Code::FailedPrecondition,
        ErrorKind::MeshNotFound => Code::NotFound,
        ErrorKind::Unavailable | ErrorKind::CircuitOpen => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// The error and its causes, `: `-joined. Core errors never carry secret values.
pub(crate) fn message(e: &dyn std::error::Error) -> String {
    ca_core::error_chain(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_core::{CsrError, ManagerError, UpstreamError};

    #[test]
    fn codes() {
        let s: Status = ApiError::from(Error::from(CsrError::TrailingBytes)).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "invalid CSR: trailing bytes after the request");
        let s: Status = ApiError::Core(Error::from(UpstreamError::timeout(
            "v",
            "issuing",
            std::time::Duration::from_secs(2),
        )))
        .into();
        assert_eq!(s.code(), Code::DeadlineExceeded);
        let s: Status = ApiError::Core(Error::from(UpstreamError::unavailable(
            "v",
            "connection refused",
        )))
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "backend `v` unavailable: connection refused");
        let s: Status = ApiError::Denied("no".into()).into();
        assert_eq!(s.code(), Code::PermissionDenied);
        let s: Status = ApiError::from(Error::from(ManagerError::MeshNotFound("x".into()))).into();
        assert_eq!(s.code(), Code::NotFound);
        let s: Status = ApiError::from(Error::from(ManagerError::CircuitOpen {
            backend: "b".into(),
        }))
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("circuit open"));
        let s: Status = ApiError::ValidationTimeout(std::time::Duration::from_secs(30)).into();
        assert_eq!(s.code(), Code::DeadlineExceeded);
        let io = std::io::Error::other("disk full");
        let s: Status = ApiError::TokenKey(Box::new(io)).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(
            s.message(),
            "cannot rotate the token signing key: disk full"
        );
    }
}
