//! An upstream outage, injected with a fault backend (a builtin CA behind a switch) registered in
//! the library's registry: the guard opens the backend's circuit, watchers keep their current
//! certificate (nothing is pushed, nothing expired), and the next retry after recovery pushes a
//! fresh certificate. No test hook exists in the production binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use meshca::{ErrorKind, UpstreamKind};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshca::config::Mesh;
use meshca::rotation::{self, RotationPolicy, RotationReason};
use meshca::{CircuitState, Identity, Limits, Manager, MeshName, Observer, OverlaySecretStore};

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
    let faults = common::Faults::default();
    let manager = Arc::new(
        Manager::builder(faults.registry(), Arc::new(OverlaySecretStore::new(None)))
            .limits(Limits::default().with_circuit(2, Duration::from_secs(1)))
            .observer(recorder.clone())
            .build(),
    );
    let yaml = common::mesh_yaml("default", "4s");
    manager
        .apply(
            "test",
            vec![Mesh::from_yaml(&yaml, &meshca::registry()).unwrap()],
        )
        .await
        .unwrap();
    let scheduler = rotation::spawn(manager.clone(), RotationPolicy::default());
    let mesh = MeshName::new("default").unwrap();
    let id = |s: &str| Identity::new(mesh.clone(), [("kuma.io/service", s)]).unwrap();

    let first = manager.issue(id("web"), None).await.unwrap();
    let mut watch = scheduler.watch(id("web"), None, first).unwrap();
    let first = watch.recv().await.unwrap().unwrap();
    assert_eq!(first.reason, RotationReason::Initial);
    faults.set_down("default", true);

    let err = manager.issue(id("a"), None).await.unwrap_err();
    assert!(
        err.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{err}"
    );
    manager.issue(id("b"), None).await.unwrap_err();
    // Two distinct identities failed: the circuit opens and callers fail fast.
    let err = manager.issue(id("c"), None).await.unwrap_err();
    assert!(err.kind() == ErrorKind::CircuitOpen, "{err}");
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
    faults.set_down("default", false);
    let next = tokio::time::timeout(Duration::from_secs(15), watch.recv())
        .await
        .expect("a certificate after recovery")
        .unwrap()
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
