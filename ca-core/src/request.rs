//! What callers ask for ([`IssueParams`]), what backends see ([`IssueRequest`]) and what they
//! answer ([`UncheckedCertificate`]); the [`IdempotencyKey`] that ties retries together.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;

use crate::error::echo;
use crate::identity::Identity;
use crate::template::CommonNameTemplate;
use crate::x509::{KeyType, PrivateKey, SubjectKey};
use crate::Error;

/// Where the data plane's key comes from.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeySource<'a> {
    /// The caller's CSR (DER); the key never leaves the caller.
    Csr(&'a [u8]),
    /// meshca generates a key of this type and returns it with the certificate.
    Generate(KeyType),
}

/// What a caller asks [`issue_certificate`](crate::issue_certificate) for.
#[derive(Debug)]
#[non_exhaustive]
pub struct IssueParams<'a> {
    /// The identity; SANs come only from it.
    pub identity: Identity,
    /// The key.
    pub key: KeySource<'a>,
    /// The requested lifetime (`dpCert.rotation.expiration`).
    pub lifetime: Duration,
    /// The common-name template, if the backend has one.
    pub common_name: Option<&'a CommonNameTemplate>,
    /// The key of the logical request this call belongs to; `None`: core makes a fresh one per
    /// [`issue_certificate`] call. See [`IdempotencyKey`].
    ///
    /// [`issue_certificate`]: crate::issue_certificate
    pub idempotency_key: Option<IdempotencyKey>,
}

impl<'a> IssueParams<'a> {
    /// A request with no common name.
    pub fn new(identity: Identity, key: KeySource<'a>, lifetime: Duration) -> Self {
        Self {
            identity,
            key,
            lifetime,
            common_name: None,
            idempotency_key: None,
        }
    }

    /// Sets the common-name template.
    #[must_use]
    pub fn with_common_name(mut self, template: Option<&'a CommonNameTemplate>) -> Self {
        self.common_name = template;
        self
    }

    /// Sets the idempotency key: pass the same key when retrying the same logical request (after
    /// a timeout, a dropped connection, a restart of the caller) so that a backend whose upstream
    /// supports it returns the first certificate instead of minting a second one.
    #[must_use]
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// The key a request is about.
#[derive(Debug)]
pub(crate) enum RequestKey {
    /// Certify this key (the caller's, or one core generated).
    Certify(SubjectKey),
    /// The backend's upstream makes a key of (about) this type and returns it with the
    /// certificate ([`CertificateAuthority::generates_keys`]).
    ///
    /// [`CertificateAuthority::generates_keys`]: crate::CertificateAuthority::generates_keys
    Upstream(KeyType),
}

/// A request as a backend sees it: a validated identity, a key whose possession was proven (or,
/// for a backend whose upstream makes keys, the key type asked for), a validity window and an
/// optional rendered CN. Built only by core.
#[derive(Debug)]
pub struct IssueRequest {
    pub(crate) identity: Identity,
    /// The identity's URI SANs, derived once per request.
    pub(crate) uri_sans: Vec<String>,
    pub(crate) key: RequestKey,
    pub(crate) csr_der: Option<Vec<u8>>,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
    pub(crate) lifetime: Duration,
    pub(crate) common_name: Option<String>,
    pub(crate) idempotency_key: IdempotencyKey,
}

impl IssueRequest {
    /// How the caller's CSR differs from the certificate's names — for upstreams that copy the
    /// CSR's subject and SANs into the certificate (ACM PCA's end-entity template,
    /// cert-manager's issuers), where such a CSR would only buy a certificate core refuses.
    /// Empty when the CSR carries exactly the identity's SANs and the common name, or when there
    /// is no caller CSR (core's own CSRs always do).
    pub fn csr_name_problems(&self) -> Vec<String> {
        use x509_parser::certification_request::X509CertificationRequest;
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        use x509_parser::prelude::FromDer;

        let Some(der) = self.csr_der() else {
            return Vec::new();
        };
        let Ok((_, csr)) = X509CertificationRequest::from_der(der) else {
            return Vec::new(); // verified when the request was made; nothing to add
        };
        let mut uris: Vec<&str> = Vec::new();
        let mut dns: Vec<&str> = Vec::new();
        if let Some(exts) = csr.requested_extensions() {
            for ext in exts {
                if let ParsedExtension::SubjectAlternativeName(san) = ext {
                    for n in &san.general_names {
                        match n {
                            GeneralName::URI(u) => uris.push(u),
                            GeneralName::DNSName(d) => dns.push(d),
                            _ => {}
                        }
                    }
                }
            }
        }
        let identity = self.identity();
        let mut problems = Vec::new();
        let missing: Vec<&str> = self
            .uri_sans
            .iter()
            .chain(identity.dns_sans())
            .map(String::as_str)
            .filter(|s| !uris.contains(s) && !dns.contains(s))
            .collect();
        if let Some(first) = missing.first() {
            problems.push(format!(
                "it lacks the SAN {first}{}",
                if missing.len() > 1 {
                    format!(" (and {} more)", missing.len() - 1)
                } else {
                    String::new()
                }
            ));
        }
        let cns: Vec<&str> = csr
            .certification_request_info
            .subject
            .iter_common_name()
            .filter_map(|c| c.as_str().ok())
            .collect();
        match (self.common_name(), cns.as_slice()) {
            (None, []) => {}
            (Some(want), [got]) if *got == want => {}
            (None, got) => problems.push(format!(
                "its subject has CN {got:?}, and the backend has no commonName template"
            )),
            (Some(want), got) => problems.push(format!(
                "its subject has CN {got:?}, not the backend's commonName {want:?}"
            )),
        }
        problems
    }
    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The identity's URI SANs ([`Identity::uri_sans`]), derived once for the request: what the
    /// certificate must carry, no more and no fewer.
    pub fn uri_sans(&self) -> &[String] {
        &self.uri_sans
    }

    /// The public key to certify; `None` when the backend's upstream makes the key
    /// ([`CertificateAuthority::generates_keys`]): the backend then returns it with
    /// [`UncheckedCertificate::with_upstream_key`].
    ///
    /// [`CertificateAuthority::generates_keys`]: crate::CertificateAuthority::generates_keys
    pub fn subject_key(&self) -> Option<&SubjectKey> {
        match &self.key {
            RequestKey::Certify(k) => Some(k),
            RequestKey::Upstream(_) => None,
        }
    }

    /// The key type: of the key to certify, or the one the caller asked the upstream for.
    pub fn key_type(&self) -> KeyType {
        match &self.key {
            RequestKey::Certify(k) => k.key_type(),
            RequestKey::Upstream(t) => *t,
        }
    }

    /// A CSR for the key (the caller's, or one core made for a generated key), for backends that
    /// forward CSRs upstream.
    /// `None` only for a generated key and a backend whose
    /// [`needs_csr`](crate::CertificateAuthority::needs_csr) is `false`.
    pub fn csr_der(&self) -> Option<&[u8]> {
        self.csr_der.as_deref()
    }

    /// The CSR as PEM.
    pub fn csr_pem(&self) -> Option<String> {
        self.csr_der
            .as_ref()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone())))
    }

    /// The requested not-before (now, backdated 10 s).
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The requested not-after.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The requested lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The rendered common name, if the backend has a template.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }

    /// The key of the logical request: the caller's ([`IssueParams::with_idempotency_key`]), or
    /// one core made for this [`issue_certificate`] call. A backend whose upstream deduplicates
    /// requests passes it on (ACM PCA's `IdempotencyToken`, a cert-manager `CertificateRequest`
    /// named after it) so that a retried request never mints twice.
    ///
    /// [`issue_certificate`]: crate::issue_certificate
    pub fn idempotency_key(&self) -> &IdempotencyKey {
        &self.idempotency_key
    }
}

/// What a backend returns: the leaf first, then any intermediates. Nobody but core sees it.
#[derive(Debug)]
pub struct UncheckedCertificate {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) signed_by: Option<Arc<LocalSigner>>,
    pub(crate) upstream_key: Option<PrivateKey>,
}

impl UncheckedCertificate {
    /// Wraps a chain (leaf first).
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        Self {
            chain,
            signed_by: None,
            upstream_key: None,
        }
    }

    /// A chain whose key the upstream made (Vault's `issue` endpoint), with that key as PEM.
    /// Only for requests without a [`subject_key`](IssueRequest::subject_key); core checks that
    /// the leaf certifies this key and hands the key to the caller.
    ///
    /// # Errors
    /// [`Error::UnsupportedKey`] when the key cannot be parsed or is of a type meshca does not
    /// accept.
    pub fn with_upstream_key(
        chain: Vec<CertificateDer<'static>>,
        key_pem: &[u8],
    ) -> Result<Self, Error> {
        Ok(Self {
            chain,
            signed_by: None,
            upstream_key: Some(PrivateKey::from_pem(key_pem)?),
        })
    }

    /// A chain whose leaf core's own [`crate::LocalCa`] signed.
    pub(crate) fn signed_locally(
        chain: Vec<CertificateDer<'static>>,
        signer: Arc<LocalSigner>,
    ) -> Self {
        Self {
            chain,
            signed_by: Some(signer),
            upstream_key: None,
        }
    }
}

/// Proof that a leaf was signed by core's own [`crate::LocalCa`] with the key of `ca_cert`
/// (checked to match when the `LocalCa` was built). Only core can make one.
#[derive(Debug)]
pub(crate) struct LocalSigner {
    pub(crate) ca_cert: CertificateDer<'static>,
    pub(crate) ca_subject: Vec<u8>,
}

/// The key of one logical issue request, stable across its retries.
///
/// A caller that retries a request (its RPC timed out, its connection dropped, it restarted) sends
/// the same key again; a backend whose upstream supports deduplication hands the key on (ACM PCA
/// `IdempotencyToken`, a deterministic cert-manager `CertificateRequest` name), so the upstream
/// returns the certificate it already made instead of minting a second one. Backends whose
/// upstream has no such thing ignore it.
///
/// At most [`IdempotencyKey::MAX_LEN`] ASCII letters, digits, `-` and `_`: it fits ACM PCA's
/// `IdempotencyToken` (1-64 characters) and a Kubernetes object name once lower-cased.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The most characters a key may have.
    pub const MAX_LEN: usize = 64;

    /// A fresh random key: 128 bits from a CSPRNG, as 32 lower-case hex digits.
    #[expect(
        clippy::new_without_default,
        reason = "a random value is not a default"
    )]
    pub fn new() -> Self {
        Self(format!("{:032x}", rand::random::<u128>()))
    }

    /// A caller's key (a request id it already has).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `idempotency key`) when `key` is empty, longer than
    /// [`IdempotencyKey::MAX_LEN`] or has characters other than ASCII letters, digits, `-`, `_`.
    pub fn from_string(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        let bad = |reason: &str| {
            Error::invalid_argument("idempotency key", format!("`{}` {reason}", echo(&key)))
        };
        if key.is_empty() {
            return Err(bad("must not be empty"));
        }
        if key.len() > Self::MAX_LEN {
            return Err(bad("must be at most 64 characters"));
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(bad("must consist of ASCII letters, digits, '-' and '_'"));
        }
        Ok(Self(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_string(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys() {
        let a = IdempotencyKey::new();
        let b = IdempotencyKey::new();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(IdempotencyKey::from_string(a.to_string()).unwrap(), a);
        let ok = IdempotencyKey::from_string("req-1_ABC").unwrap();
        assert_eq!(ok.to_string(), "req-1_ABC");
        assert!(IdempotencyKey::from_string("x".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "a.b", "é", "a\n"] {
            assert!(IdempotencyKey::from_string(bad).is_err(), "{bad:?}");
        }
        let long = IdempotencyKey::from_string("x".repeat(65)).unwrap_err();
        assert!(long.to_string().len() < 200, "{long}");
    }
}
