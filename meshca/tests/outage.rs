//! An upstream outage, injected with a fault backend (a builtin CA behind a switch) registered in
//! the library's registry: the guard opens the backend's circuit, watchers keep their current
//! certificate (nothing is pushed, nothing expired), and the next retry after recovery pushes a
//! fresh certificate. No test hook exists in the production binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use meshca::ca_core::config::{Backend, BackendType, Mesh};
use meshca::rotation::{self, RotationPolicy, RotationReason};
use meshca::{
    BuildContext, BuildFuture, Built, CertificateAuthority, CircuitState, Error, Identity,
    IssueRequest, Limits, Manager, MeshName, Observer, OverlaySecretStore, Registry, TrustBundle,
    UncheckedCertificate,
};

/// While set, every issue fails as an unreachable upstream would.
static DOWN: AtomicBool = AtomicBool::new(false);

#[derive(Debug)]
struct Faulty(Arc<dyn CertificateAuthority>);

#[async_trait]
impl CertificateAuthority for Faulty {
    fn name(&self) -> &str {
        self.0.name()
    }
    async fn ensure(&self) -> Result<(), Error> {
        self.0.ensure().await
    }
    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.0.trust_bundle().await
    }
    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        if DOWN.load(Ordering::SeqCst) {
            return Err(Error::Unavailable {
                backend: self.name().to_owned(),
                source: "connection refused (injected)".into(),
            });
        }
        self.0.issue(request).await
    }
    fn needs_csr(&self) -> bool {
        self.0.needs_csr()
    }
}

fn build_faulty<'a>(
    ctx: &'a BuildContext,
    mesh: &'a MeshName,
    backend: &'a Backend,
) -> BuildFuture<'a> {
    Box::pin(async move {
        let built = Registry::new().build(ctx, mesh, 0, backend).await?;
        Ok(Built::new(Arc::new(Faulty(built.ca)), built.warnings))
    })
}

#[derive(Debug, Default)]
struct Recorder {
    failures: Mutex<BTreeMap<&'static str, usize>>,
}

impl Observer for Recorder {
    fn failed(&self, _mesh: &str, reason: &'static str) {
        *self.failures.lock().unwrap().entry(reason).or_default() += 1;
    }
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[tokio::test]
async fn upstream_outage_keeps_the_current_certificate() {
    let recorder = Arc::new(Recorder::default());
    let registry = Registry::empty().register(BackendType::Builtin, build_faulty);
    let manager = Arc::new(
        Manager::builder(registry, Arc::new(OverlaySecretStore::new(None)))
            .limits(Limits::default().with_circuit(2, Duration::from_secs(1)))
            .observer(recorder.clone())
            .build(),
    );
    let yaml = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: 4s\n";
    manager
        .apply("test", vec![Mesh::from_yaml(yaml).unwrap()])
        .await
        .unwrap();
    let scheduler = rotation::spawn(manager.clone(), RotationPolicy::default());
    let mesh = MeshName::new("default").unwrap();
    let id = |s: &str| Identity::new(mesh.clone(), [("kuma.io/service", s)]).unwrap();

    let first = manager.issue(id("web"), None).await.unwrap();
    let mut watch = scheduler.watch(id("web"), None, first).unwrap();
    let first = watch.recv().await.unwrap();
    assert_eq!(first.reason, RotationReason::Initial);
    DOWN.store(true, Ordering::SeqCst);

    let err = manager.issue(id("a"), None).await.unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err}");
    manager.issue(id("b"), None).await.unwrap_err();
    // Two distinct identities failed: the circuit opens and callers fail fast.
    let err = manager.issue(id("c"), None).await.unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err}");
    assert_eq!(
        manager.guard().circuit_states(),
        vec![(("default".into(), "ca-1".into()), CircuitState::Open)]
    );

    // Nothing is pushed during the outage, and nothing expired ever is.
    let left = first
        .certificate
        .not_after()
        .duration_since(now())
        .unwrap_or_default();
    let quiet = tokio::time::timeout(left.max(Duration::from_secs(1)), watch.recv()).await;
    assert!(quiet.is_err(), "something was pushed during the outage");

    // The upstream recovers: the next retry pushes a fresh certificate on the same watch.
    DOWN.store(false, Ordering::SeqCst);
    let next = tokio::time::timeout(Duration::from_secs(15), watch.recv())
        .await
        .expect("a certificate after recovery")
        .unwrap();
    assert_eq!(next.reason, RotationReason::Rotation);
    assert_ne!(
        next.certificate.serial_hex(),
        first.certificate.serial_hex()
    );
    assert!(next.certificate.not_after() > now());
    openssl_verify(&next.certificate.chain_pem(), &next.trust_bundle_pem);
    assert!(recorder.failures.lock().unwrap()["unavailable"] >= 2);
    assert!(recorder.failures.lock().unwrap()["circuit_open"] >= 1);
}

/// Checks the leaf against the bundle with `openssl verify` (not meshca's own code).
fn openssl_verify(chain_pem: &str, bundle_pem: &str) {
    let dir = tempfile::tempdir().unwrap();
    let leaf = dir.path().join("leaf.pem");
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&leaf, chain_pem).unwrap();
    std::fs::write(&bundle, bundle_pem).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&bundle)
        .arg(&leaf)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
