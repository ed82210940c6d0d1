//! `Manager::validate` checks every backend of a Mesh, enabled or not, and reports each problem
//! at its field, as Kuma's mesh validator does (`ValidateMTLSBackends` runs every backend's
//! `ValidateBackend` under `mtls.backends[i].conf`). Cases from Kuma v2.14.3
//! `pkg/plugins/ca/provided/manager_test.go`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use meshca::config::Mesh;
use meshca::{Error, Manager};
use meshca::{OverlaySecretStore, SourcePolicy};

fn manager() -> Manager {
    Manager::builder(meshca::registry(), Arc::new(OverlaySecretStore::new(None))).build()
}

fn violations(result: Result<meshca::Validation, Error>) -> Vec<String> {
    match result {
        Err(Error::InvalidConfig(v)) => v.iter().map(ToString::to_string).collect(),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

const NO_PEM: &str =
    "not a valid TLS key pair: tls: failed to find any PEM data in certificate input";

#[tokio::test]
async fn every_backend_is_checked_and_the_test_certificate_comes_from_the_enabled_one() {
    // Kuma "config with invalid cert" as the second, disabled backend; an unreadable file as the
    // third: both are reported, at their own paths.
    let yaml = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n  - name: ca-2\n    type: provided\n    conf:\n      cert:\n        inline: dGVzdA==\n      key:\n        inline: dGVzdA==\n  - name: ca-3\n    type: provided\n    conf:\n      cert:\n        file: /tmp/non-existing-file-meshca\n      key:\n        file: /tmp/non-existing-file-meshca\n";
    let mesh = Mesh::from_yaml(yaml, &meshca::registry()).unwrap();
    let got = violations(manager().validate(&mesh, SourcePolicy::local(), true).await);
    assert_eq!(got.len(), 3, "{got:#?}");
    assert_eq!(got[0], format!("mtls.backends[1].conf.cert: {NO_PEM}"));
    assert!(got[1].starts_with("mtls.backends[2].conf.cert: could not load data: "));
    assert!(got[2].starts_with("mtls.backends[2].conf.key: could not load data: "));

    // Without the broken backends the enabled one issues the test certificate.
    let ok = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-2\n  backends:\n  - name: ca-1\n    type: builtin\n  - name: ca-2\n    type: builtin\n";
    let mesh = Mesh::from_yaml(ok, &meshca::registry()).unwrap();
    let v = manager()
        .validate(&mesh, SourcePolicy::local(), true)
        .await
        .unwrap();
    assert_eq!(
        v.backend.as_ref().map(|(i, n)| (*i, n.as_str())),
        Some((1, "ca-2"))
    );
    assert!(matches!(v.test_certificate, Some(Ok(_))), "{v:?}");
}

#[tokio::test]
async fn a_broken_backend_is_found_while_mtls_is_off() {
    // Before: "valid" with the warning "no enabled backend: mTLS is off".
    let yaml = "type: Mesh\nname: default\nmtls:\n  backends:\n  - name: ca-1\n    type: provided\n    conf:\n      cert:\n        inlineString: CERT\n      key:\n        inlineString: KEY\n";
    let mesh = Mesh::from_yaml(yaml, &meshca::registry()).unwrap();
    assert_eq!(
        violations(manager().validate(&mesh, SourcePolicy::local(), true).await),
        [format!("mtls.backends[0].conf.cert: {NO_PEM}")]
    );
}

#[tokio::test]
async fn a_backend_type_this_build_lacks_is_reported_even_when_disabled() {
    // Kuma: `mtls.backends[i].type: could not find installed plugin for this type`.
    let yaml = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n  - name: ca-2\n    type: certmanager\n    conf:\n      issuerRef: {name: x}\n";
    // Whatever features this build has, a registry without certmanager: the Mesh is refused
    // when it is decoded, before anything is built.
    let err = Mesh::from_yaml(yaml, &meshca::registry().without("certmanager")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid mesh configuration: mtls.backends[1].type: backend type certmanager is not available in this build yet"
    );
}
