//! The one conversion from meshca's errors to gRPC status codes.

use ca_core::Error;
use tonic::{Code, Status};

/// An error the API returns: a core error, or one of the few the service itself raises.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Anything from ca-core or a backend.
    #[error(transparent)]
    Core(#[from] Error),
    /// The mesh is not served by this issuer.
    #[error("mesh `{0}` is not served by this issuer (check --mesh-config)")]
    MeshNotFound(String),
    /// The mesh has no enabled backend.
    #[error("mesh `{0}` has mTLS disabled (mtls.enabledBackend is not set)")]
    MtlsDisabled(String),
    /// The caller is not allowed.
    #[error("permission denied: {0}")]
    Denied(String),
    /// The backend's circuit is open after repeated upstream failures.
    #[error("backend `{0}` is failing; not calling it for a while (circuit open)")]
    CircuitOpen(String),
    /// Shutting down or otherwise unable to serve.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::Core(core) => core_code(core),
            ApiError::MeshNotFound(_) => Code::NotFound,
            ApiError::MtlsDisabled(_) => Code::FailedPrecondition,
            ApiError::Denied(_) => Code::PermissionDenied,
            ApiError::CircuitOpen(_) | ApiError::Unavailable(_) => Code::Unavailable,
        };
        Status::new(code, crate::limits::cut_message(message(&e)))
    }
}

fn core_code(e: &Error) -> Code {
    match e {
        Error::InvalidConfig(_)
        | Error::InvalidArgument { .. }
        | Error::InvalidTemplate { .. }
        | Error::InvalidCsr { .. }
        | Error::UnsupportedKey(_) => Code::InvalidArgument,
        Error::InvalidCa { .. }
        | Error::SecretNotFound { .. }
        | Error::DataSource { .. }
        | Error::Inconsistent(_) => Code::FailedPrecondition,
        Error::Denied(_) => Code::PermissionDenied,
        Error::Unavailable { .. } => Code::Unavailable,
        Error::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        Error::InvalidIssued { .. } | Error::Crypto(_) | Error::Store { .. } => Code::Internal,
        Error::Backend { .. } => Code::Unavailable,
        _ => Code::Internal,
    }
}

/// The error and its causes, `: `-joined. Core errors never carry secret values.
pub(crate) fn message(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Whether a failure says the upstream CA is down (counts toward the circuit), rather than a bad
/// request.
pub(crate) fn is_upstream_failure(e: &ApiError) -> bool {
    matches!(
        e,
        ApiError::Core(
            Error::Unavailable { .. } | Error::DeadlineExceeded { .. } | Error::Backend { .. }
        )
    )
}

/// A short label for the failures metric.
pub(crate) fn reason_label(e: &ApiError) -> &'static str {
    match e {
        ApiError::Core(core) => match core_code(core) {
            Code::InvalidArgument => "invalid_argument",
            Code::FailedPrecondition => "failed_precondition",
            Code::PermissionDenied => "permission_denied",
            Code::Unavailable => "unavailable",
            Code::DeadlineExceeded => "deadline_exceeded",
            _ => "internal",
        },
        ApiError::MeshNotFound(_) => "mesh_not_found",
        ApiError::MtlsDisabled(_) => "mtls_disabled",
        ApiError::Denied(_) => "permission_denied",
        ApiError::CircuitOpen(_) => "circuit_open",
        ApiError::Unavailable(_) => "unavailable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let s: Status = ApiError::from(Error::invalid_csr("bad")).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "invalid CSR: bad");
        let s: Status = ApiError::Core(Error::Unavailable {
            backend: "v".into(),
            source: "connection refused".into(),
        })
        .into();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "backend `v` unavailable: connection refused");
        let s: Status = ApiError::Denied("no".into()).into();
        assert_eq!(s.code(), Code::PermissionDenied);
        let s: Status = ApiError::MeshNotFound("x".into()).into();
        assert_eq!(s.code(), Code::NotFound);
    }
}
