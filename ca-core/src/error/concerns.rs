//! The errors of one concern each, nested in [`super::Error`] the way rustls nests its
//! `CertificateError`: a certificate signing request, an upstream CA, the manager.

use std::fmt;
use std::time::Duration;

/// A boxed error from a client library, kept as the `source()` of an error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a certificate signing request is refused. The caller's fault: asking again with the same
/// CSR fails again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsrError {
    /// The bytes are not a CSR in the expected encoding.
    #[error("invalid CSR: {expected}")]
    Encoding {
        /// What was expected (`not a DER-encoded PKCS#10 certification request`).
        expected: &'static str,
        /// The parser's error.
        #[source]
        source: BoxError,
    },
    /// Bytes follow the request.
    #[error("invalid CSR: trailing bytes after the request")]
    TrailingBytes,
    /// The request's signature does not verify with its own key.
    #[error(
        "invalid CSR: signature does not verify with the request's own key (no proof of possession)"
    )]
    Signature(#[source] BoxError),
    /// The request asks for a SAN the identity does not have (as openssl prints it).
    #[error("invalid CSR: asks for SAN {0} which the identity does not have; SANs come only from the identity")]
    ForeignSan(String),
}

/// An upstream CA (Vault, AWS, cert-manager, a Kubernetes API) failed or refused: which backend,
/// what kind of failure, what it was doing, and the client library's error as `source()`.
#[derive(Debug)]
pub struct UpstreamError {
    backend: String,
    kind: UpstreamKind,
    what: String,
    source: Option<BoxError>,
}

/// What kind of upstream failure an [`UpstreamError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpstreamKind {
    /// It cannot be reached, is sealed, throttles or failed; retrying may help.
    Unavailable,
    /// It did not answer within the configured time; retrying may help.
    Timeout(Duration),
    /// It refused because of how it or the backend is set up: a policy that denies the path, an
    /// unknown role, a role that forbids a SAN or the TTL, an expired token. Retrying does not
    /// help; the message says what to fix. Not an outage: it does not open the guard's circuit.
    Refused,
    /// It answered with something the backend cannot use.
    BadAnswer,
}

impl UpstreamError {
    /// The upstream of `backend` cannot be reached or failed while `what` (`"POST pki/sign/r"`,
    /// `"Vault at https://v:8200 is sealed: unseal it"`). Add the client's error with
    /// [`UpstreamError::with_source`].
    pub fn unavailable(backend: impl Into<String>, what: impl Into<String>) -> Self {
        Self::new(backend, UpstreamKind::Unavailable, what)
    }

    /// `what` did not finish within `after`.
    pub fn timeout(backend: impl Into<String>, what: impl Into<String>, after: Duration) -> Self {
        Self::new(backend, UpstreamKind::Timeout(after), what)
    }

    /// The upstream refused for `reason`, which says what to fix.
    pub fn refused(backend: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(backend, UpstreamKind::Refused, reason)
    }

    /// The upstream's answer to `what` cannot be used; `source` says why.
    pub fn bad_answer(
        backend: impl Into<String>,
        what: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::new(backend, UpstreamKind::BadAnswer, what).with_source(source)
    }

    /// The same error with the client library's error as its `source()`.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The backend's (or store's) name.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> UpstreamKind {
        self.kind
    }

    /// What the backend was doing, or the upstream's reason.
    pub fn what(&self) -> &str {
        &self.what
    }

    fn new(backend: impl Into<String>, kind: UpstreamKind, what: impl Into<String>) -> Self {
        Self {
            backend: backend.into(),
            kind,
            what: what.into(),
            source: None,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (backend, what) = (&self.backend, &self.what);
        match self.kind {
            UpstreamKind::Unavailable if what.is_empty() => {
                write!(f, "backend `{backend}` unavailable")
            }
            UpstreamKind::Unavailable => write!(f, "backend `{backend}` unavailable: {what}"),
            UpstreamKind::Timeout(after) => {
                write!(
                    f,
                    "backend `{backend}`: {what} did not finish within {after:?}"
                )
            }
            UpstreamKind::Refused | UpstreamKind::BadAnswer => {
                write!(f, "backend `{backend}`: {what}")
            }
        }
    }
}

impl std::error::Error for UpstreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Why the manager does not hand a request to a backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The mesh is not served (no config defines it). Carries the name as echoed back.
    #[error("mesh `{0}` is not served by this issuer (check its Mesh configuration)")]
    MeshNotFound(String),
    /// The mesh has mTLS disabled: no backend is enabled.
    #[error("mesh `{0}` has mTLS disabled (mtls.enabledBackend is not set)")]
    MtlsDisabled(String),
    /// The backend failed for several identities in a row; calls fail fast for a while.
    #[error("backend `{backend}` is failing; not calling it for a while (circuit open)")]
    CircuitOpen {
        /// The backend's name.
        backend: String,
    },
    /// The manager or its scheduler is shutting down; `what` stopped.
    #[error("{what} stopped")]
    Stopped {
        /// What stopped (`the rotation scheduler`, `the issuer`).
        what: &'static str,
    },
}
