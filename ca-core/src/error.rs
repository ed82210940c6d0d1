//! The one error type of meshca, with what it carries: [`IssuedProblem`] (why core refused a
//! backend's certificate), the [`Violations`] of a Mesh configuration, and [`echo`] for the
//! caller's input it repeats.

use std::fmt;
use std::path::PathBuf;

/// A boxed error from a client library, kept as the `source()` of [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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

    /// A certificate signing request was malformed, badly signed, or asked for something refused.
    #[error("invalid CSR: {reason}")]
    InvalidCsr {
        /// Why the CSR is refused.
        reason: String,
        /// The parser's or verifier's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },

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

    /// A required upstream (Vault, AWS, Kubernetes, ...) cannot be reached or refused to serve.
    #[error("backend `{backend}` unavailable")]
    Unavailable {
        /// The backend's name.
        backend: String,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// An operation did not finish in its configured time.
    #[error("{operation} did not finish within {timeout:?}")]
    DeadlineExceeded {
        /// What timed out.
        operation: String,
        /// The configured limit.
        timeout: std::time::Duration,
    },

    /// Certificate generation or signing failed inside the crypto library. The library's error
    /// is the `source()`; its type is not part of ca-core's API.
    #[error("certificate generation failed")]
    Crypto(#[source] BoxError),

    /// The upstream CA refused the request because of how it or the backend is set up: a policy
    /// that denies the path, an unknown role, a role that forbids a SAN or the requested TTL, a
    /// token that expired. Retrying does not help; `reason` says what to fix. Not an outage: it
    /// does not open the guard's circuit.
    #[error("backend `{backend}`: {reason}")]
    UpstreamRefused {
        /// The backend's name.
        backend: String,
        /// What the upstream said, and how to fix it.
        reason: String,
    },

    /// Any other error from a backend's client library.
    #[error("backend `{backend}`: {context}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// What the backend was doing.
        context: String,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// The mesh is not served (no config defines it).
    #[error("mesh `{0}` is not served by this issuer (check its Mesh configuration)")]
    MeshNotFound(String),

    /// The mesh has mTLS disabled: no backend is enabled.
    #[error("mesh `{0}` has mTLS disabled (mtls.enabledBackend is not set)")]
    MtlsDisabled(String),

    /// The backend failed for several identities in a row; calls fail fast for a while (the
    /// guard's circuit is open).
    #[error("backend `{backend}` is failing; not calling it for a while (circuit open)")]
    CircuitOpen {
        /// The backend's name.
        backend: String,
    },
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
            | Self::InvalidCsr { .. }
            | Self::UnsupportedKey(_) => ErrorKind::InvalidArgument,
            Self::InvalidCa { .. }
            | Self::SecretNotFound { .. }
            | Self::DataSource { .. }
            | Self::UpstreamRefused { .. }
            | Self::Inconsistent(_) => ErrorKind::FailedPrecondition,
            Self::Unavailable { .. } | Self::Backend { .. } => ErrorKind::Unavailable,
            Self::DeadlineExceeded { .. } => ErrorKind::DeadlineExceeded,
            Self::MeshNotFound(_) => ErrorKind::MeshNotFound,
            Self::MtlsDisabled(_) => ErrorKind::MtlsDisabled,
            Self::CircuitOpen { .. } => ErrorKind::CircuitOpen,
            Self::InvalidIssued { .. } | Self::Crypto(_) | Self::Store { .. } => {
                ErrorKind::Internal
            }
        }
    }

    /// An [`Error::InvalidArgument`] for `field`.
    pub fn invalid_argument(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::InvalidCsr`] without a source.
    pub fn invalid_csr(reason: impl Into<String>) -> Self {
        Self::InvalidCsr {
            reason: reason.into(),
            source: None,
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

/// What core found wrong with a backend's certificate ([`Error::InvalidIssued`]). `Display` gives
/// the message an operator reads.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IssuedProblem {
    /// The backend returned an empty chain.
    Empty,
    /// The leaf cannot be parsed as X.509.
    Unparseable(String),
    /// The leaf is a CA certificate.
    NotALeaf,
    /// The leaf certifies another key than the requested one.
    WrongKey,
    /// The leaf carries a SAN of a kind core never requests (IP, email, ...), as openssl prints it.
    UnexpectedSan(String),
    /// The leaf's URI SANs are not exactly the identity's.
    WrongUriSans {
        /// The identity's URI SANs the leaf lacks.
        missing: Vec<String>,
        /// URI SANs of the leaf the identity does not have.
        extra: Vec<String>,
    },
    /// The leaf's DNS SANs are not exactly the identity's.
    WrongDnsSans {
        /// The identity's DNS SANs the leaf lacks.
        missing: Vec<String>,
        /// DNS SANs of the leaf the identity does not have.
        extra: Vec<String>,
    },
    /// The leaf's subject common name is not the rendered template (or is there when none was
    /// asked for).
    CommonName {
        /// The rendered template, if the backend has one.
        expected: Option<String>,
        /// The leaf's common names.
        got: Vec<String>,
    },
    /// The leaf's not-before is more than a minute in the future.
    NotYetValid,
    /// The leaf's not-after has passed.
    Expired,
    /// The leaf does not verify to the trust bundle (the verifier's message).
    DoesNotChain(String),
    /// Anything else.
    Other(String),
}

impl fmt::Display for IssuedProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("no certificate"),
            Self::Unparseable(e) => write!(f, "leaf cannot be parsed: {e}"),
            Self::NotALeaf => f.write_str("leaf is a CA certificate"),
            Self::WrongKey => f.write_str("leaf certifies a different key than the one requested"),
            Self::UnexpectedSan(san) => write!(f, "leaf has SAN {san} that was not requested"),
            Self::WrongUriSans { missing, extra } => sans_message(f, "", missing, extra),
            Self::WrongDnsSans { missing, extra } => sans_message(f, "DNS:", missing, extra),
            Self::CommonName { expected, got } => write!(
                f,
                "leaf common name is {got:?}, expected {}",
                expected
                    .as_ref()
                    .map_or("none".to_string(), |w| format!("{w:?}"))
            ),
            Self::NotYetValid => f.write_str("leaf is not valid yet"),
            Self::Expired => f.write_str("leaf has already expired"),
            Self::DoesNotChain(e) => write!(f, "leaf {e}"),
            Self::Other(e) => f.write_str(e),
        }
    }
}

/// One SAN at fault, as the message has always named it: an extra one first, else a missing one.
fn sans_message(
    f: &mut fmt::Formatter<'_>,
    prefix: &str,
    missing: &[String],
    extra: &[String],
) -> fmt::Result {
    let more = |n: usize| {
        if n > 1 {
            format!(" (and {} more)", n - 1)
        } else {
            String::new()
        }
    };
    if let Some(e) = extra.first() {
        write!(
            f,
            "leaf has SAN {prefix}{e} that was not requested{}",
            more(extra.len())
        )?;
        if let Some(m) = missing.first() {
            write!(f, "; leaf lacks SAN {prefix}{m}{}", more(missing.len()))?;
        }
        Ok(())
    } else if let Some(m) = missing.first() {
        write!(f, "leaf lacks SAN {prefix}{m}{}", more(missing.len()))
    } else {
        f.write_str("leaf SANs differ from the identity's")
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
        let down = Error::Unavailable {
            backend: "v".into(),
            source: "connection refused".into(),
        };
        assert_eq!(down.kind(), ErrorKind::Unavailable);
        assert!(down.kind().is_upstream_failure() && down.kind().is_retryable());
        // A policy that refuses is the operator's to fix: it must not open the circuit.
        let refused = Error::UpstreamRefused {
            backend: "v".into(),
            reason: "permission denied on pki/issue/r".into(),
        };
        assert_eq!(refused.kind(), ErrorKind::FailedPrecondition);
        assert!(!refused.kind().is_upstream_failure() && !refused.kind().is_retryable());
        let caller = Error::invalid_csr("bad signature");
        assert_eq!(caller.kind().label(), "invalid_argument");
        let open = Error::CircuitOpen {
            backend: "v".into(),
        };
        assert!(open.kind().is_retryable() && !open.kind().is_upstream_failure());
        assert_eq!(
            Error::MeshNotFound("m".into()).kind().to_string(),
            "mesh_not_found"
        );
    }
}
