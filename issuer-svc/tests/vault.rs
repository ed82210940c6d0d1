//! The vault backend through the real `meshca` binary: `meshca validate` (what the global control
//! plane runs) and `meshca serve` issuing over gRPC, against real OpenBao.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use meshca_tests::openbao::Peer;
use meshca_tests::vault::{Auth, Role};

const ISSUE: Role = Role {
    mode: "issue",
    key_type: "ec",
    allowed_uri_sans: None,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_and_serve_a_vault_mesh() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let auth = peer.auth_yaml(Auth::Token).await;
    let dir = tempfile::tempdir().unwrap();

    // meshca validate issues a test certificate through Vault.
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, peer.mesh_yaml("default", "issue", &auth, "")).unwrap();
    let g = good.clone();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_cli(&["validate", "--config", g.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("mesh default: OK"), "{stdout}");
    assert!(
        peer.bao
            .request_paths()
            .iter()
            .any(|p| p == "pki-default/issue/dataplane-proxies"),
        "the test certificate came from Vault"
    );

    // A role that forbids the mesh's SPIFFE IDs: refused, with the fix.
    peer.mount(
        "strict",
        Role {
            allowed_uri_sans: Some("spiffe://elsewhere/*"),
            ..ISSUE
        },
    )
    .await;
    let strict = dir.path().join("strict.yaml");
    std::fs::write(
        &strict,
        peer.mesh_yaml("strict", "issue", &auth, "")
            .replace("name: strict\n", "name: default\n"),
    )
    .unwrap();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_cli(&["validate", "--config", strict.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert!(!ok, "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("allowed_uri_sans=\"spiffe://<mesh>/*,kuma://*\""),
        "{stdout}{stderr}"
    );

    // meshca serve with the vault mesh hands out Vault's certificates over gRPC.
    let yaml = peer.mesh_yaml("default", "issue", &auth, "");
    let server =
        tokio::task::spawn_blocking(move || Server::start(&[("default.yaml", &yaml)], &[]))
            .await
            .unwrap();
    let mut client = server.admin().await;
    peer.bao.clear_requests();
    let resp = bounded(
        30,
        client.issue_certificate(request("default", &[("kuma.io/service", "web")])),
    )
    .await
    .unwrap()
    .into_inner();
    let cert = resp.certificate.unwrap();
    assert!(cert.cert_chain_pem.contains("BEGIN CERTIFICATE"));
    assert!(
        !cert.private_key_pem.is_empty(),
        "Vault made the key (issue mode)"
    );
    assert_eq!(cert.backend, "vault-1");
    assert!(
        peer.bao
            .request_paths()
            .iter()
            .any(|p| p == "pki-default/issue/dataplane-proxies"),
        "issued by Vault"
    );
}
