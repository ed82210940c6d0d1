//! [`Deadline`]: the one request timeout, a wrapper around any backend.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ca_core::{
    CertificateAuthority, Error, IssueRequest, SecretName, TrustBundle, UncheckedCertificate,
    UpstreamError,
};

/// A backend whose [`issue`](CertificateAuthority::issue) is bounded by `timeout`
/// (`dpCert.requestTimeout`): when it runs out the call is cancelled and the caller gets
/// [`UpstreamKind::Timeout`](ca_core::UpstreamKind::Timeout), with the backend's
/// [`timeout_hint`](CertificateAuthority::timeout_hint).
///
/// Backends do not time out `issue` themselves; the manager wraps every backend it builds once,
/// so issuing, rotation and validation share this bound and no two timers race for one budget.
/// Everything else is passed through.
pub struct Deadline {
    inner: Arc<dyn CertificateAuthority>,
    timeout: Duration,
}

impl Deadline {
    /// Wraps `inner`, bounding each `issue` by `timeout`.
    pub fn new(inner: Arc<dyn CertificateAuthority>, timeout: Duration) -> Self {
        Self { inner, timeout }
    }

    /// The bound.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Debug for Deadline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deadline")
            .field("inner", &self.inner)
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[async_trait]
impl CertificateAuthority for Deadline {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn ensure(&self) -> Result<(), Error> {
        self.inner.ensure().await
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.inner.trust_bundle().await
    }

    async fn refresh_trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.inner.refresh_trust_bundle().await
    }

    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        match tokio::time::timeout(self.timeout, self.inner.issue(request)).await {
            Ok(result) => result,
            Err(_) => {
                let what = match self.inner.timeout_hint() {
                    Some(hint) => format!("issuing ({hint})"),
                    None => "issuing".to_owned(),
                };
                Err(UpstreamError::timeout(self.inner.name(), what, self.timeout).into())
            }
        }
    }

    fn used_secrets(&self) -> Vec<SecretName> {
        self.inner.used_secrets()
    }

    fn needs_csr(&self) -> bool {
        self.inner.needs_csr()
    }

    async fn health(&self) -> Result<(), Error> {
        self.inner.health().await
    }

    fn generates_keys(&self) -> bool {
        self.inner.generates_keys()
    }

    fn timeout_hint(&self) -> Option<String> {
        self.inner.timeout_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_core::{ErrorKind, Identity, IssueParams, KeySource, KeyType, MeshName, UpstreamKind};

    /// A backend that never answers, and says what to check.
    #[derive(Debug)]
    struct Stuck;

    #[async_trait]
    impl CertificateAuthority for Stuck {
        fn name(&self) -> &str {
            "stuck"
        }
        async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
            Err(Error::Inconsistent("not in this test".into()))
        }
        async fn issue(&self, _: &IssueRequest) -> Result<UncheckedCertificate, Error> {
            std::future::pending().await
        }
        fn timeout_hint(&self) -> Option<String> {
            Some("is the approver running?".into())
        }
    }

    #[tokio::test]
    async fn a_stuck_issue_is_cancelled_at_the_bound_with_the_backends_hint() {
        let ca = Deadline::new(Arc::new(Stuck), Duration::from_millis(50));
        let identity = Identity::new(
            MeshName::new("default").unwrap(),
            [("kuma.io/service", "web")],
        )
        .unwrap();
        let params = IssueParams::new(
            identity,
            KeySource::Generate(KeyType::EcdsaP256),
            Duration::from_secs(3600),
        );
        let e = ca_core::issue_certificate(&ca, params).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::DeadlineExceeded);
        assert_eq!(
            e.upstream_kind(),
            Some(UpstreamKind::Timeout(Duration::from_millis(50)))
        );
        assert_eq!(
            e.to_string(),
            "backend `stuck`: issuing (is the approver running?) did not finish within 50ms"
        );
    }
}
