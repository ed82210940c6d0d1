//! The [`CertificateAuthority`] trait every backend implements.

use std::fmt;

use async_trait::async_trait;

use crate::bundle::TrustBundle;
use crate::name::SecretName;
use crate::request::{IssueRequest, UncheckedCertificate};
use crate::Error;

/// A certificate authority backend of a mesh.
///
/// Object safe (`Arc<dyn CertificateAuthority>`). Backends implement [`trust_bundle`] and
/// [`issue`]; everything a caller gets goes through [`issue_certificate`], which checks the
/// backend's answer before handing it out.
///
/// [`trust_bundle`]: CertificateAuthority::trust_bundle
/// [`issue`]: CertificateAuthority::issue
/// [`issue_certificate`]: crate::issue_certificate
#[async_trait]
pub trait CertificateAuthority: fmt::Debug + Send + Sync {
    /// The backend's name in the Mesh (`mtls.backends[].name`).
    fn name(&self) -> &str;

    /// Creates whatever the backend must persist (the builtin backend: its CA). Idempotent: a
    /// second call, a restart or a racing process never replaces what exists.
    ///
    /// # Errors
    /// Store errors, or [`Error::Inconsistent`] when persisted state is damaged.
    async fn ensure(&self) -> Result<(), Error> {
        Ok(())
    }

    /// The certificates a data plane of this mesh must trust for this backend's leaves: the
    /// root, and intermediates where the backend has them.
    ///
    /// May be cached: a wrapper that keeps the upstream's answer for a while overrides this and
    /// [`refresh_trust_bundle`](CertificateAuthority::refresh_trust_bundle).
    ///
    /// # Errors
    /// [`UpstreamKind::Unavailable`](crate::UpstreamKind::Unavailable) when an upstream cannot be
    /// reached; backend-specific errors.
    async fn trust_bundle(&self) -> Result<TrustBundle, Error>;

    /// The trust bundle fetched from upstream now, bypassing any cache (and refreshing it).
    ///
    /// [`issue_certificate`] calls it once when a leaf passes every check but does not chain to
    /// [`trust_bundle`](CertificateAuthority::trust_bundle)'s answer, which happens when a
    /// cached bundle predates a CA rotation upstream; the leaf is then checked against the fresh
    /// bundle. Contract: `trust_bundle` may be cached; `refresh_trust_bundle` must go upstream.
    /// The default, for backends that do not cache, is `trust_bundle`.
    ///
    /// # Errors
    /// As [`trust_bundle`](CertificateAuthority::trust_bundle).
    ///
    /// [`issue_certificate`]: crate::issue_certificate
    async fn refresh_trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.trust_bundle().await
    }

    /// Issues one data plane certificate for `request`. Callers use [`issue_certificate`], which
    /// checks the result.
    ///
    /// # Errors
    /// Backend-specific errors; [`UpstreamKind::Unavailable`](crate::UpstreamKind::Unavailable) for
    /// an upstream outage.
    ///
    /// [`issue_certificate`]: crate::issue_certificate
    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error>;

    /// Names of mesh-scoped secrets this backend reads, so a control plane can refuse to delete
    /// them.
    fn used_secrets(&self) -> Vec<SecretName> {
        Vec::new()
    }

    /// Whether [`issue`](CertificateAuthority::issue) reads [`IssueRequest::csr_der`]. Backends
    /// that sign the public key themselves return `false`, and core then skips making a CSR for
    /// keys it generates (one signature less per certificate).
    fn needs_csr(&self) -> bool {
        true
    }

    /// Problems that do not fail a request yet but will (a credential that cannot be renewed
    /// and ends within a certificate's lifetime). [`validate`](crate::validate) reports
    /// them as its error; backends log them when they learn of them.
    ///
    /// # Errors
    /// The problem, saying what to fix.
    async fn health(&self) -> Result<(), Error> {
        Ok(())
    }

    /// Whether the backend's upstream makes data plane keys itself (a vault backend on Vault's
    /// `issue` endpoint). Core then generates no key: the [`IssueRequest`] has no
    /// [`subject_key`](IssueRequest::subject_key), the backend returns the upstream's key with
    /// [`UncheckedCertificate::with_upstream_key`], and a caller's CSR is refused (its key
    /// could not be certified).
    fn generates_keys(&self) -> bool {
        false
    }

    /// What to check when [`issue`](CertificateAuthority::issue) runs out of time, for the
    /// timeout's message (`is an approver running?`). Backends do not bound `issue` themselves:
    /// whoever holds them does, once (meshca's `Deadline` wrapper, with the backend's
    /// `dpCert.requestTimeout`), and cancels the call; a backend that leaves something behind
    /// when cancelled cleans it up on drop.
    fn timeout_hint(&self) -> Option<String> {
        None
    }
}
