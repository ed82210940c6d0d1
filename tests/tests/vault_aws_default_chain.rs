//! The vault backend's AWS IAM login with credentials from the *default* AWS chain, as a pod
//! gets them: EKS Pod Identity (the container credentials endpoint,
//! `AWS_CONTAINER_CREDENTIALS_FULL_URI` + `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`) serving
//! temporary credentials of an IAM role assumed in moto, then plain environment keys. Vault
//! replays the signed request to moto's STS with IAM auth enforced.
//!
//! One test in its own binary: it sets the process environment the chain reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use backend_vault::{Timing, VaultCa};
use ca_core::config::{Mesh, DEFAULT_DP_CERT_EXPIRATION};
use ca_core::{validate, BuildSpec, OverlaySecretStore, SourcePolicy};
use meshca_peers::{isolate_aws_env, PodIdentityEndpoint};
use meshca_tests::checks::mesh;
use meshca_tests::vault::{chain, Auth, Peer, Role};
use serde_json::json;

/// Builds the backend exactly as the registry does: no AWS config given, so the default chain.
async fn build(yaml: &str) -> VaultCa {
    let mesh = Mesh::from_yaml(yaml, &meshca_tests::all_backends()).unwrap();
    let backend = mesh.enabled_backend().unwrap();
    let conf: &backend_vault::VaultConf = backend.conf_as().unwrap();
    let sources = SourcePolicy::local();
    let spec = BuildSpec::from_parts(
        "mtls.backends[0].conf",
        &mesh.name,
        &backend.name,
        Timing::new(
            Duration::from_secs(15),
            Duration::from_secs(15),
            DEFAULT_DP_CERT_EXPIRATION,
        ),
        Arc::new(OverlaySecretStore::new(None)),
        &sources,
    );
    VaultCa::load_at(&spec, conf).await.unwrap()
}

fn clear_aws_env() {
    isolate_aws_env("us-east-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_login_with_the_default_credential_chain() {
    let peer = Peer::start(Auth::Aws).await;
    let moto = peer.moto.as_ref().unwrap();
    peer.mount(
        "default",
        Role {
            mode: "issue",
            key_type: "ec",
            allowed_uri_sans: None,
        },
    )
    .await;

    // An IAM role the pod's service account is associated with, assumed for temporary keys
    // (what the Pod Identity agent hands out).
    let allow = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"sts:GetCallerIdentity","Resource":"*"}]}"#;
    let (temp, session) = moto.assume_role_with_policy("meshca-pod", allow).await;
    let role_arn = temp.arn.clone();
    let agent = PodIdentityEndpoint::start_with_session(temp, Some(session), "pod-sa-token").await;
    peer.vault
        .write(
            "auth/aws/role/meshca-pod",
            json!({ "auth_type": "iam", "bound_iam_principal_arn": [role_arn], "token_policies": "meshca", "token_ttl": "1h" }),
        )
        .await;

    // 1. EKS Pod Identity: the container credentials endpoint with its token file.
    clear_aws_env();
    std::env::set_var("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.url());
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", agent.token_file());
    std::env::set_var("AWS_ENDPOINT_URL_STS", moto.endpoint());
    let auth = peer
        .auth_yaml(Auth::Aws)
        .await
        .replace("role: meshca\n", "role: meshca-pod\n");
    let yaml = peer.mesh_yaml("default", "issue", &auth, "");
    let ca = build(&yaml).await;
    validate(&ca, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("pod identity: {}", chain(&e)));
    assert!(agent.requests() >= 1, "credentials came from the agent");
    let logins = |peer: &Peer| {
        peer.vault
            .requests()
            .iter()
            .filter(|r| r.path == "auth/aws/login")
            .count()
    };
    assert_eq!(logins(&peer), 1);

    // A wrong token file: the agent refuses, and the error says where credentials came from.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "not-the-token").unwrap();
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", bad.path());
    let ca = build(&yaml).await;
    let err = validate(&ca, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("no AWS credentials from the default chain"),
        "{}",
        chain(&err)
    );

    // 2. Environment keys of the IAM user bound to the `meshca` role.
    clear_aws_env();
    let key = peer.aws_key.clone().unwrap();
    std::env::set_var("AWS_ACCESS_KEY_ID", &key.access_key_id);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &key.secret_access_key);
    std::env::set_var("AWS_ENDPOINT_URL_STS", moto.endpoint());
    let yaml = peer.mesh_yaml("default", "issue", &peer.auth_yaml(Auth::Aws).await, "");
    let ca = build(&yaml).await;
    validate(&ca, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("env keys: {}", chain(&e)));

    // The pod's role is not bound to the user's Vault role: Vault refuses.
    let yaml = yaml.replace("role: meshca\n", "role: meshca-pod\n");
    let ca = build(&yaml).await;
    let err = validate(&ca, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("does not belong to the role"),
        "{}",
        chain(&err)
    );
}
