//! meshca's error: one [`Error`] that nests an error per concern — [`CsrError`],
//! [`IssuedProblem`] (why core refused a backend's certificate), [`UpstreamError`] (an upstream CA
//! failed or refused, with its [`UpstreamKind`]), [`ManagerError`], the [`Violations`] of a Mesh
//! configuration — and one classifier, [`Error::kind`]. [`echo`] cuts the caller's input an
//! error repeats.

use std::fmt;
use std::path::PathBuf;

mod concerns;
mod issued;

pub use concerns::{BoxError, CsrError, ManagerError, UpstreamError, UpstreamKind};
pub use issued::IssuedProblem;

/// Everything that can go wrong in meshca.
///
/// Messages name the offending field or the reason, never a secret value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A Mesh configuration has one or more violations; all of them are listed.
    #[error("invalid mesh configuration: {0}")]
    InvalidConfig(Violations),

    /// A name, tag or other argument of a request is not acceptable.
    #[error("{field}: {reason}")]
    InvalidArgument {
        /// The field or argument at fault (`mesh`, `tags["kuma.io/service"]`, ...).
        field: String,
        /// Why it is rejected.
        reason: String,
    },

    /// A common-name template could not be parsed or rendered.
    #[error("common name template `{template}`: {reason}")]
    InvalidTemplate {
        /// The template as written by the user.
        template: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A certificate signing request is malformed, badly signed, or asks for something refused.
    #[error(transparent)]
    Csr(#[from] CsrError),

    /// A key (in a CSR, a provided CA or a config) has a type or size meshca does not support.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),

    /// A CA certificate or key supplied by the user is not usable.
    #[error("{field}: {reason}")]
    InvalidCa {
        /// The config field the CA came from (`mtls.backends[0].conf.cert`, ...).
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A backend answered with a certificate that core refused to hand out.
    #[error("backend `{backend}` returned an unacceptable certificate: {problem}")]
    InvalidIssued {
        /// The backend's name.
        backend: String,
        /// What core found wrong with it.
        problem: IssuedProblem,
    },

    /// A mesh-scoped secret does not exist.
    #[error("secret `{name}` not found in mesh `{mesh}`")]
    SecretNotFound {
        /// The mesh.
        mesh: String,
        /// The secret's name.
        name: String,
    },

    /// A data source could not be read (file, environment variable, inline base64).
    #[error("data source {source_desc}: {reason}")]
    DataSource {
        /// A description of the source that names it without its value (`file /etc/ca.pem`).
        source_desc: String,
        /// Why it could not be read.
        reason: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },

    /// The secret store failed to read or write.
    #[error("secret store at {}: {reason}", path.display())]
    Store {
        /// The file or directory involved.
        path: PathBuf,
        /// What the store was doing.
        reason: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The persisted state of a backend is inconsistent and meshca refuses to repair it on its own
    /// (for example a builtin CA certificate that does not match its key).
    #[error("inconsistent state: {0}")]
    Inconsistent(String),

    /// Certificate generation or signing failed inside the crypto library. The library's error
    /// is the `source()`; its type is not part of ca-core's API.
    #[error("certificate generation failed")]
    Crypto(#[source] BoxError),

    /// An upstream CA (Vault, AWS, cert-manager, a Kubernetes API) failed or refused.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),

    /// The manager does not hand the request to a backend: the mesh is not served, its mTLS is
    /// off, the backend's circuit is open, or it is shutting down.
    #[error(transparent)]
    Manager(#[from] ManagerError),
}

/// What kind of failure an [`Error`] is: the one classification metrics, the guard's circuit,
/// retries and the gRPC status all follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's request (or the Mesh it sent) is at fault; asking again unchanged fails again.
    InvalidArgument,
    /// The backend's configuration or persisted state must be fixed first (a missing secret,
    /// an upstream policy that refuses, an inconsistent CA).
    FailedPrecondition,
    /// An upstream cannot be reached or failed; retrying may help. Counts against the circuit.
    Unavailable,
    /// An operation ran out of its configured time; retrying may help. Counts against the
    /// circuit.
    DeadlineExceeded,
    /// The mesh is not served.
    MeshNotFound,
    /// The mesh has mTLS off.
    MtlsDisabled,
    /// The backend's circuit is open: calls fail fast for a while.
    CircuitOpen,
    /// A fault of meshca or of what it runs on (the store, the crypto library, a backend that
    /// answered with a certificate core refused).
    Internal,
}

impl ErrorKind {
    /// A short, stable label (metrics: `reason="unavailable"`).
    pub fn label(self) -> &'static str {
        match self {
            Self::InvalidArgument => "invalid_argument",
            Self::FailedPrecondition => "failed_precondition",
            Self::Unavailable => "unavailable",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::MeshNotFound => "mesh_not_found",
            Self::MtlsDisabled => "mtls_disabled",
            Self::CircuitOpen => "circuit_open",
            Self::Internal => "internal",
        }
    }

    /// Whether the upstream failed (not the caller, not the config): what opens the circuit.
    pub fn is_upstream_failure(self) -> bool {
        matches!(self, Self::Unavailable | Self::DeadlineExceeded)
    }

    /// Whether asking again later, unchanged, may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Unavailable | Self::DeadlineExceeded | Self::CircuitOpen
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidConfig(_)
            | Self::InvalidArgument { .. }
            | Self::InvalidTemplate { .. }
            | Self::Csr(_)
            | Self::UnsupportedKey(_) => ErrorKind::InvalidArgument,
            Self::InvalidCa { .. }
            | Self::SecretNotFound { .. }
            | Self::DataSource { .. }
            | Self::Inconsistent(_) => ErrorKind::FailedPrecondition,
            Self::Upstream(e) => match e.kind() {
                UpstreamKind::Unavailable | UpstreamKind::BadAnswer => ErrorKind::Unavailable,
                UpstreamKind::Timeout(_) => ErrorKind::DeadlineExceeded,
                UpstreamKind::Refused => ErrorKind::FailedPrecondition,
            },
            Self::Manager(e) => match e {
                ManagerError::MeshNotFound(_) => ErrorKind::MeshNotFound,
                ManagerError::MtlsDisabled(_) => ErrorKind::MtlsDisabled,
                ManagerError::CircuitOpen { .. } => ErrorKind::CircuitOpen,
                ManagerError::Stopped { .. } => ErrorKind::Unavailable,
            },
            Self::InvalidIssued { .. } | Self::Crypto(_) | Self::Store { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// The [`UpstreamError`] inside, if this is one.
    pub fn as_upstream(&self) -> Option<&UpstreamError> {
        match self {
            Self::Upstream(e) => Some(e),
            _ => None,
        }
    }

    /// The kind of the [`UpstreamError`] inside, if this is one.
    pub fn upstream_kind(&self) -> Option<UpstreamKind> {
        self.as_upstream().map(UpstreamError::kind)
    }

    /// An [`Error::InvalidArgument`] for `field`.
    pub fn invalid_argument(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Crypto`] wrapping the crypto library's error: what a backend that builds
    /// certificates with rcgen maps its errors with (`.map_err(Error::crypto)?`).
    pub fn crypto(source: impl Into<BoxError>) -> Self {
        Self::Crypto(source.into())
    }

    /// An [`Error::InvalidCa`] for `field`.
    pub fn invalid_ca(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidCa {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// `e` and its causes, `: `-joined, each cause left out when the text so far already says it
/// (libraries often repeat their source in their own message). For logs, CLI output and status
/// messages; meshca's errors never carry secret values.
pub fn error_chain(e: &dyn std::error::Error) -> String {
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

/// How many characters of a caller's input a message repeats at most.
pub const ECHO_LIMIT: usize = 64;

/// `input` for an error message: escaped, and cut after [`ECHO_LIMIT`] characters with a note of
/// its full length, so that a hostile 10,000-character name never comes back whole.
pub fn echo(input: &str) -> String {
    let mut out: String = input.chars().take(ECHO_LIMIT).collect::<String>();
    out = out.escape_debug().to_string();
    if input.chars().nth(ECHO_LIMIT).is_some() {
        out.push_str(&format!("… ({} bytes)", input.len()));
    }
    out
}

/// One violation of a Mesh configuration: the path of the field and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The field path, as Kuma writes it (`mtls.backends[0].conf.caCert.RSAbits`).
    pub field: String,
    /// The message.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All violations of a Mesh configuration, in document order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(pub Vec<Violation>);

impl Violations {
    /// Records one violation.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Moves every violation of `other` to the end of these.
    pub fn append(&mut self, other: Violations) {
        self.0.extend(other.0);
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The recorded violations.
    pub fn iter(&self) -> impl Iterator<Item = &Violation> {
        self.0.iter()
    }

    /// `Ok(())` when empty, otherwise [`Error::InvalidConfig`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with every recorded violation.
    pub fn into_result(self) -> Result<(), Error> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidConfig(self))
        }
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod kind_tests {
    use super::*;

    #[test]
    fn one_classification_for_metrics_the_circuit_and_status() {
        let down = Error::from(
            UpstreamError::unavailable("v", "POST pki/sign/r")
                .with_source(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        );
        assert_eq!(down.kind(), ErrorKind::Unavailable);
        assert!(down.kind().is_upstream_failure() && down.kind().is_retryable());
        assert!(
            std::error::Error::source(&down).is_some(),
            "the client's error stays the source"
        );
        assert_eq!(
            error_chain(&down),
            "backend `v` unavailable: POST pki/sign/r: connection refused"
        );
        // A policy that refuses is the operator's to fix: it must not open the circuit.
        let refused = Error::from(UpstreamError::refused(
            "v",
            "permission denied on pki/issue/r",
        ));
        assert_eq!(refused.kind(), ErrorKind::FailedPrecondition);
        assert!(!refused.kind().is_upstream_failure() && !refused.kind().is_retryable());
        let slow = Error::from(UpstreamError::timeout(
            "v",
            "issuing",
            std::time::Duration::from_secs(5),
        ));
        assert_eq!(slow.kind(), ErrorKind::DeadlineExceeded);
        assert_eq!(
            slow.to_string(),
            "backend `v`: issuing did not finish within 5s"
        );
        let caller = Error::from(CsrError::TrailingBytes);
        assert_eq!(caller.kind().label(), "invalid_argument");
        assert_eq!(
            caller.to_string(),
            "invalid CSR: trailing bytes after the request"
        );
        let open = Error::from(ManagerError::CircuitOpen {
            backend: "v".into(),
        });
        assert!(open.kind().is_retryable() && !open.kind().is_upstream_failure());
        assert_eq!(
            Error::from(ManagerError::MeshNotFound("m".into()))
                .kind()
                .to_string(),
            "mesh_not_found"
        );
    }
}
