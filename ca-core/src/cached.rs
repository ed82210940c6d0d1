//! [`CachedBundle`]: the one trust-bundle cache, a wrapper around any backend.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::authority::CertificateAuthority;
use crate::bundle::TrustBundle;
use crate::name::SecretName;
use crate::request::{IssueRequest, UncheckedCertificate};
use crate::Error;

/// A backend whose trust bundle is kept for `ttl` instead of fetched for every certificate:
/// for a remote backend (Vault, ACM PCA) `trust_bundle()` is an upstream call, and
/// [`issue_certificate`](crate::issue_certificate) asks for it on every issue.
///
/// Backends do not cache their bundles themselves; whoever holds a backend wraps it once (the
/// meshca manager does, for every backend it builds), as linkerd2-proxy wraps identity
/// behaviour. Callers that find the bundle expired wait together for one fetch. When an issued
/// certificate does not chain to the kept bundle (the upstream CA rotated), core calls
/// [`refresh_trust_bundle`](CertificateAuthority::refresh_trust_bundle), which fetches it again.
pub struct CachedBundle {
    inner: Arc<dyn CertificateAuthority>,
    ttl: Duration,
    /// Read on every issue, written once per TTL: readers do not wait for each other.
    slot: RwLock<Option<(TrustBundle, Instant)>>,
    gate: tokio::sync::Mutex<()>,
}

impl fmt::Debug for CachedBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachedBundle")
            .field("inner", &self.inner)
            .field("ttl", &self.ttl)
            .field("fresh", &self.fresh().is_some())
            .finish()
    }
}

impl CachedBundle {
    /// Wraps `inner`, keeping each bundle it fetches for `ttl`.
    pub fn new(inner: Arc<dyn CertificateAuthority>, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            slot: RwLock::new(None),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    /// Fetches the bundle from the backend now and keeps it.
    ///
    /// # Errors
    /// The backend's error; the kept bundle stays.
    pub async fn refresh(&self) -> Result<TrustBundle, Error> {
        let fresh = self.inner.refresh_trust_bundle().await?;
        if let Ok(mut slot) = self.slot.write() {
            *slot = Some((fresh.clone(), Instant::now()));
        }
        Ok(fresh)
    }

    /// The bundle kept less than the TTL ago.
    fn fresh(&self) -> Option<TrustBundle> {
        self.slot
            .read()
            .ok()?
            .as_ref()
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(b, _)| b.clone())
    }
}

#[async_trait]
impl CertificateAuthority for CachedBundle {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn ensure(&self) -> Result<(), Error> {
        self.inner.ensure().await
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        if let Some(b) = self.fresh() {
            return Ok(b);
        }
        let _gate = self.gate.lock().await;
        // Whoever held the gate before us may have fetched it.
        if let Some(b) = self.fresh() {
            return Ok(b);
        }
        self.refresh().await
    }

    async fn refresh_trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.refresh().await
    }

    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        self.inner.issue(request).await
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn bundle() -> TrustBundle {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TrustBundle::new(vec![cert.der().clone()]).unwrap()
    }

    /// An upstream that counts bundle fetches.
    #[derive(Debug)]
    struct Upstream {
        bundle: TrustBundle,
        fetches: AtomicUsize,
    }

    #[async_trait]
    impl CertificateAuthority for Upstream {
        fn name(&self) -> &str {
            "upstream"
        }
        async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            Ok(self.bundle.clone())
        }
        async fn issue(&self, _: &IssueRequest) -> Result<UncheckedCertificate, Error> {
            Err(Error::Inconsistent("not in this test".into()))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_callers_share_one_fetch_until_the_ttl_ends() {
        let b = bundle();
        let upstream = Arc::new(Upstream {
            bundle: b.clone(),
            fetches: AtomicUsize::new(0),
        });
        let cached = Arc::new(CachedBundle::new(
            upstream.clone(),
            Duration::from_secs(3600),
        ));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let cached = cached.clone();
            tasks.push(tokio::spawn(
                async move { cached.trust_bundle().await.unwrap() },
            ));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().certs(), b.certs());
        }
        assert_eq!(upstream.fetches.load(Ordering::SeqCst), 1);
        // A refresh goes upstream whatever the TTL says; an expired bundle is fetched again.
        cached.refresh_trust_bundle().await.unwrap();
        assert_eq!(upstream.fetches.load(Ordering::SeqCst), 2);
        let expired = CachedBundle::new(upstream.clone(), Duration::ZERO);
        expired.trust_bundle().await.unwrap();
        expired.trust_bundle().await.unwrap();
        assert_eq!(upstream.fetches.load(Ordering::SeqCst), 4);
    }
}
