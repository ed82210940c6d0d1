//! Watched certificates: rotation, CA switch, config reload, upstream outage.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use issuer_svc::proto::{GetTrustBundleRequest, WatchCertificateResponse};
use tonic::{Code, Streaming};

async fn next(
    stream: &mut Streaming<WatchCertificateResponse>,
    secs: u64,
) -> WatchCertificateResponse {
    tokio::time::timeout(Duration::from_secs(secs), stream.message())
        .await
        .expect("no certificate pushed in time")
        .expect("stream failed")
        .expect("stream ended")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn root_count(pem_text: &str) -> usize {
    pem::parse_many(pem_text).unwrap().len()
}

#[tokio::test]
async fn watch_rotates_twice_then_follows_a_ca_switch() {
    let server = Server::start(
        &[(
            "default.yaml",
            &builtin_mesh("default", &["ca-1", "ca-2"], "ca-1", "3s"),
        )],
        &[],
    );
    bounded(90, async {
        let mut client = server.admin().await;
        let mut stream = client
            .watch_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap()
            .into_inner();
        let first = next(&mut stream, 5).await;
        assert_eq!(first.reason, "initial");
        let mut last = first.certificate.unwrap();
        assert_eq!(last.backend, "ca-1");
        for i in 0..2 {
            let m = next(&mut stream, 6).await;
            assert_eq!(m.reason, "rotation", "rotation {i}");
            let c = m.certificate.unwrap();
            assert_ne!(c.serial, last.serial);
            // Pushed before the previous one expired, valid now.
            assert!(now() <= last.not_after, "pushed after expiry");
            assert!(c.not_after > now());
            openssl_verify(server.dir.path(), &c.cert_chain_pem, &c.trust_bundle_pem);
            last = c;
        }
        let before = client
            .get_trust_bundle(GetTrustBundleRequest {
                mesh: "default".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(root_count(&before.trust_bundle_pem), 1);
        assert!(!before.switch_in_progress);

        // Switch enabledBackend: the stream gets a certificate from ca-2 at once, and the bundle
        // carries both roots while the switch is in flight.
        server.write_mesh(
            "default.yaml",
            &builtin_mesh("default", &["ca-1", "ca-2"], "ca-2", "3s"),
        );
        let mut m = next(&mut stream, 6).await;
        while m.reason == "rotation" {
            m = next(&mut stream, 6).await;
        }
        assert_eq!(m.reason, "ca-change");
        let c = m.certificate.unwrap();
        assert_eq!(c.backend, "ca-2");
        assert_eq!(root_count(&c.trust_bundle_pem), 2);
        openssl_verify(server.dir.path(), &c.cert_chain_pem, &c.trust_bundle_pem);
        let during = client
            .get_trust_bundle(GetTrustBundleRequest {
                mesh: "default".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(during.switch_in_progress);
        assert_eq!(during.backends, ["ca-2", "ca-1"]);
        assert_eq!(root_count(&during.trust_bundle_pem), 2);
        // The old root is in the new bundle: data planes holding ca-1 certificates still verify.
        openssl_verify(
            server.dir.path(),
            &last.cert_chain_pem,
            &during.trust_bundle_pem,
        );

        // Once every watched identity rotated and ca-1's certificates expired, ca-1 leaves.
        let mut done = false;
        for _ in 0..50 {
            let b = client
                .get_trust_bundle(GetTrustBundleRequest {
                    mesh: "default".into(),
                })
                .await
                .unwrap()
                .into_inner();
            if !b.switch_in_progress {
                assert_eq!(root_count(&b.trust_bundle_pem), 1);
                assert_eq!(b.backends, ["ca-2"]);
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(done, "switch never completed");
        // The stream is still open and keeps rotating.
        let m = next(&mut stream, 6).await;
        assert_eq!(m.certificate.unwrap().backend, "ca-2");
        assert!(server.metric("meshca_watched_identities").unwrap() >= 1.0);
    })
    .await;
}

#[tokio::test]
async fn reload_applies_good_configs_and_refuses_bad_ones() {
    let server = Server::start(
        &[(
            "default.yaml",
            &builtin_mesh("default", &["ca-1"], "ca-1", "1h"),
        )],
        &[],
    );
    bounded(60, async {
        let mut client = server.admin().await;
        // A bad file: refused, counted, the mesh keeps working.
        server.write_mesh(
            "default.yaml",
            "type: Mesh\nname: default\nmtls:\n  enabledBackend: nope\n  backends: []\n",
        );
        let mut refused = false;
        for _ in 0..50 {
            if server.metric("meshca_config_reloads_total{result=\"refused\"}").unwrap_or(0.0) >= 1.0 {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(refused, "bad config not refused");
        client
            .issue_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap();
        // A certmanager mesh on a machine without Kubernetes in a new file is refused through
        // the same registry (its test certificate cannot be issued).
        server.write_mesh(
            "certmanager.yaml",
            "type: Mesh\nname: v\nmtls:\n  enabledBackend: v\n  backends:\n    - name: v\n      type: certmanager\n      conf:\n        issuerRef:\n          name: mesh-issuer\n",
        );
        // A good new mesh appears.
        server.write_mesh("other.yaml", &builtin_mesh("other", &["ca-1"], "ca-1", "1h"));
        let mut ok = false;
        for _ in 0..50 {
            if client
                .issue_certificate(request("other", &[("kuma.io/service", "web")]))
                .await
                .is_ok()
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok, "new mesh never became available");
        let err = client
            .issue_certificate(request("v", &[("kuma.io/service", "web")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(server.metric("meshca_config_reloads_total{result=\"refused\"}").unwrap() >= 2.0);
        let log = std::fs::read_to_string(server.dir.path().join("stderr.log")).unwrap();
        assert!(log.contains(NO_KUBERNETES), "{log}");
        // Fixing the bad file applies it.
        server.write_mesh("default.yaml", &builtin_mesh("default", &["ca-1"], "ca-1", "2h"));
        let mut fixed = false;
        for _ in 0..50 {
            let c = client
                .issue_certificate(request("default", &[("kuma.io/service", "web")]))
                .await
                .unwrap()
                .into_inner()
                .certificate
                .unwrap();
            if c.not_after - c.not_before > 3600 + 60 {
                fixed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(fixed, "fixed config never applied");
    })
    .await;
}

fn provided_ca(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "provided test CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    let c = dir.join("provided-ca.pem");
    let k = dir.join("provided-ca-key.pem");
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn provided_mesh(cert: &std::path::Path, key: &std::path::Path, expiration: &str) -> String {
    format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-p\n  backends:\n    - name: ca-p\n      type: provided\n      dpCert:\n        rotation:\n          expiration: {expiration}\n      conf:\n        cert:\n          file: {}\n        key:\n          file: {}\n",
        cert.display(),
        key.display()
    )
}

#[tokio::test]
async fn provided_backend_whose_key_vanishes_keeps_serving_after_a_reload() {
    let files = tempfile::tempdir().unwrap();
    let (cert, key) = provided_ca(files.path());
    let server = Server::start(&[("default.yaml", &provided_mesh(&cert, &key, "1h"))], &[]);
    bounded(60, async {
        let mut client = server.admin().await;
        let c = client
            .issue_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap()
            .into_inner()
            .certificate
            .unwrap();
        assert_eq!(c.backend, "ca-p");
        openssl_verify(server.dir.path(), &c.cert_chain_pem, &c.trust_bundle_pem);
        assert_eq!(
            pem::parse_many(&c.trust_bundle_pem).unwrap()[0].contents(),
            pem::parse(std::fs::read(&cert).unwrap())
                .unwrap()
                .contents()
        );

        // The key file disappears and the config changes: rebuilding the backend fails, the
        // reload is refused, and the backend already loaded keeps issuing.
        std::fs::remove_file(&key).unwrap();
        server.write_mesh("default.yaml", &provided_mesh(&cert, &key, "2h"));
        let mut refused = false;
        for _ in 0..50 {
            if server
                .metric("meshca_config_reloads_total{result=\"refused\"}")
                .unwrap_or(0.0)
                >= 1.0
            {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(refused, "reload with a missing key was not refused");
        let log = std::fs::read_to_string(server.dir.path().join("stderr.log")).unwrap();
        assert!(log.contains("mesh config refused"), "{log}");
        assert!(!log.contains("BEGIN PRIVATE KEY"), "a key was logged");
        let c = client
            .issue_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap()
            .into_inner()
            .certificate
            .unwrap();
        assert!(
            c.not_after - c.not_before <= 3600 + 10,
            "old config still in effect"
        );
        openssl_verify(server.dir.path(), &c.cert_chain_pem, &c.trust_bundle_pem);
    })
    .await;
}
