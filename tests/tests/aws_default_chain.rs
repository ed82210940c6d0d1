//! The acmpca backend and `awsSecretsManager` sources with the *default* AWS chain, as a pod on
//! EKS gets them: no `auth.awsCredentials`, no SDK config handed in; EKS Pod Identity (the
//! container credentials endpoint, `AWS_CONTAINER_CREDENTIALS_FULL_URI` +
//! `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`) serving temporary credentials of an IAM role
//! assumed in moto (IAM enforced), and the endpoints from the service-specific variables
//! `AWS_ENDPOINT_URL_ACM_PCA` / `AWS_ENDPOINT_URL_SECRETS_MANAGER` every AWS SDK reads.
//!
//! One test in its own binary: it sets the process environment the chain reads.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::{validate, SourcePolicy};
use meshca_aws::SecretsManager;
use meshca_peers::{isolate_aws_env, PodIdentityEndpoint};
use meshca_tests::acmpca::{moto_sdk, policy, Peer, REGION};
use meshca_tests::checks::mesh;
use meshca_tests::vault::chain;

/// `awsSecretsManager` through the default chain, as `meshca::local_sources()` sets it up.
fn default_sources() -> SourcePolicy {
    SourcePolicy::local().with_aws_secrets_manager(Arc::new(SecretsManager::new()))
}

/// Loads `yaml` as the registry does (default chain, default sources) and validates it, which
/// must fail.
async fn validate_err(yaml: &str) -> ca_core::Error {
    let backend = Peer::build_with(yaml, DEFAULT_DP_CERT_EXPIRATION, None, &default_sources())
        .await
        .unwrap();
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_identity_credentials_and_endpoint_variables() {
    let peer = Peer::start().await;
    let moto = &peer.moto;
    let ca = peer.ca_for("default").await;

    // The CA certificate is kept in Secrets Manager, as the EKS deployments keep theirs.
    let admin = moto_sdk(moto, Some(moto.admin()), REGION);
    aws_sdk_secretsmanager::Client::new(&admin)
        .create_secret()
        .name("meshca/acmpca-root")
        .secret_string(serde_json::json!({ "cert": ca.root_pem }).to_string())
        .send()
        .await
        .unwrap();

    // The role the pod's service account is associated with: the four ACM PCA actions and
    // reading secrets.
    let mut actions = backend_acmpca::ACTIONS.to_vec();
    actions.push("secretsmanager:GetSecretValue");
    let (temp, session) = moto
        .assume_role_with_policy("meshca-pod", &policy(&actions))
        .await;
    let agent = PodIdentityEndpoint::start_with_session(temp, Some(session), "pod-sa-token").await;

    isolate_aws_env(REGION);
    std::env::set_var("AWS_CONTAINER_CREDENTIALS_FULL_URI", agent.url());
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", agent.token_file());
    std::env::set_var("AWS_ENDPOINT_URL_ACM_PCA", moto.endpoint());
    std::env::set_var("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint());

    let yaml = format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: acmpca-1\n  backends:\n  - name: acmpca-1\n    type: acmpca\n    dpCert:\n      rotation:\n        expiration: 24h\n      requestTimeout: 10s\n    conf:\n      arn: {}\n      caCert:\n        awsSecretsManager:\n          secretId: meshca/acmpca-root\n          key: cert\n",
        ca.arn
    );
    let backend = Peer::build_with(&yaml, DEFAULT_DP_CERT_EXPIRATION, None, &default_sources())
        .await
        .unwrap_or_else(|e| panic!("pod identity, loading: {}", chain(&e)));
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("pod identity, validating: {}", chain(&e)));
    assert!(
        agent.requests() >= 2,
        "both clients took their credentials from the agent ({} requests)",
        agent.requests()
    );

    // Credentials are cached until shortly before their Expiration, never past it: with an
    // hour left, a second validation asks the agent nothing; credentials that expire within
    // the SDK's refresh buffer are fetched again for each call.
    let backend = Peer::build_with(&yaml, DEFAULT_DP_CERT_EXPIRATION, None, &default_sources())
        .await
        .unwrap();
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap();
    let before = agent.requests();
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap();
    assert_eq!(agent.requests(), before, "an hour left: no refresh");
    agent.set_credential_lifetime(std::time::Duration::from_secs(2));
    let backend = Peer::build_with(&yaml, DEFAULT_DP_CERT_EXPIRATION, None, &default_sources())
        .await
        .unwrap();
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("short-lived credentials: {}", chain(&e)));
    let before = agent.requests();
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap();
    assert!(
        agent.requests() >= before + 2,
        "expiring credentials are fetched again ({} -> {})",
        before,
        agent.requests()
    );
    agent.set_credential_lifetime(std::time::Duration::from_secs(3600));

    // A wrong token file: the agent refuses; both errors say the default chain had nothing.
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), "not-the-token").unwrap();
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", bad.path());
    let err = Peer::build_with(&yaml, DEFAULT_DP_CERT_EXPIRATION, None, &default_sources())
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("no AWS credentials from the default AWS credential chain"),
        "secrets manager: {}",
        chain(&err)
    );
    let inline = Peer::mesh_yaml("default", &ca.arn, &ca.root_pem, "");
    let err = validate_err(&inline).await;
    assert!(
        chain(&err).contains("no AWS credentials from the default AWS credential chain"),
        "acmpca: {}",
        chain(&err)
    );

    // The endpoint is the variable's: pointed at a closed port, the backend is unreachable
    // there (and says which variables set it).
    std::env::set_var("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", agent.token_file());
    std::env::set_var("AWS_ENDPOINT_URL_ACM_PCA", "http://127.0.0.1:9");
    let err = validate_err(&inline).await;
    assert!(
        chain(&err).contains("AWS_ENDPOINT_URL_ACM_PCA"),
        "an unreachable endpoint names the variable: {}",
        chain(&err)
    );
}
