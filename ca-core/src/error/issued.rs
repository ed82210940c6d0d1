//! Why core refused a backend's certificate.

use std::fmt;

/// What core found wrong with a backend's certificate
/// ([`Error::InvalidIssued`](super::Error::InvalidIssued)). `Display` gives the message an
/// operator reads.
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
