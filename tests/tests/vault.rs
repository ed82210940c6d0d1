//! What real OpenBao alone (openbao.rs) cannot show, against OpenBao behind the hand-written
//! front (`meshca_peers::VaultFront`): injected faults (5xx/429 answers, refusals, resets) and
//! AWS IAM auth, which is not among OpenBao's built-in auth methods.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use ca_core::UpstreamKind;
use std::time::Duration;

use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::{
    issue_certificate, validate, CertificateAuthority, Error, IssueParams, KeySource, KeyType,
};
use meshca_tests::checks::{identity, mesh};
use meshca_tests::vault::{chain, Auth, Peer, Role};

const ISSUE: Role = Role {
    mode: "issue",
    key_type: "ec",
    allowed_uri_sans: None,
};

async fn issue(
    ca: &dyn CertificateAuthority,
    lifetime: Duration,
) -> Result<ca_core::IssuedCertificate, Error> {
    issue_certificate(
        ca,
        IssueParams::new(
            identity("default", "web"),
            KeySource::Generate(KeyType::EcdsaP256),
            lifetime,
        ),
    )
    .await
}

async fn check(ca: &dyn CertificateAuthority) -> Result<(), Error> {
    validate(ca, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .map(|_| ())
}

fn token_yaml(token: &str) -> String {
    format!("        auth:\n          token:\n            inlineString: {token}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_within_the_request_timeout() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();

    // Transient failures are retried (with jittered backoff) ...
    for status in [500, 502, 429] {
        peer.vault.clear_requests();
        peer.vault.fail_next(2, status);
        issue(&ca, DEFAULT_DP_CERT_EXPIRATION)
            .await
            .unwrap_or_else(|e| panic!("{status}: {}", chain(&e)));
        assert_eq!(
            peer.vault.requests().len(),
            3,
            "{status}: two failures and a success"
        );
    }
    // ... a refusal is not.
    peer.vault.clear_requests();
    peer.vault.fail_next(1, 400);
    let err = issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
    assert_eq!(peer.vault.requests().len(), 1);
    // ... and retries stop at the request timeout.
    peer.vault.clear_requests();
    peer.vault.fail_next(1000, 503);
    let yaml_fast = yaml.replace("    dpCert:\n", "    dpCert:\n      requestTimeout: 1s\n");
    let fast = peer
        .build(&yaml_fast, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let err = issue(&fast, DEFAULT_DP_CERT_EXPIRATION).await.unwrap_err();
    let attempts = peer.vault.requests().len();
    assert!(
        (2..100).contains(&attempts),
        "retried, with backoff, then given up: {attempts} attempts"
    );
    // Nothing goes on retrying after the caller has its answer.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        peer.vault.requests().len(),
        attempts,
        "no retry outlives the request"
    );
    assert!(
        matches!(
            err.upstream_kind(),
            Some(UpstreamKind::Unavailable | UpstreamKind::Timeout(_))
        ),
        "{err}"
    );
    peer.vault.fail_next(0, 500);

    // Connections closed before the TLS handshake (a fresh client: no pooled connection) are
    // retried too.
    peer.vault.reset_next(2);
    let fresh = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    issue(&fresh, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap_or_else(|e| panic!("resets: {}", chain(&e)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_badly_signed_aws_login_fails_at_sts() {
    let peer = Peer::start(Auth::Aws).await;
    peer.mount("default", ISSUE).await;
    let yaml = peer.mesh_yaml("default", "issue", &peer.auth_yaml(Auth::Aws).await, "");
    // The right key logs in (moto checks the signature Vault replays) ...
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    check(&ca).await.unwrap();
    // ... a wrong secret is refused by STS, and the message says where to look.
    let mut bad = peer.aws_key.clone().unwrap();
    bad.secret_access_key = "not-the-secret".into();
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(peer.moto.as_ref().unwrap().endpoint())
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new(
                    bad.access_key_id,
                    bad.secret_access_key,
                    None,
                    None,
                    "bad",
                ),
            ),
        )
        .build();
    let mesh_ = ca_core::config::Mesh::from_yaml(&yaml, &meshca_tests::all_backends()).unwrap();
    let backend = mesh_.enabled_backend().unwrap();
    let conf: &backend_vault::VaultConf = backend.conf_as().unwrap();
    let sources = ca_core::SourcePolicy::local();
    let spec = ca_core::BuildSpec::from_parts(
        "mtls.backends[0].conf",
        &mesh_.name,
        &backend.name,
        backend_vault::Timing::new(
            Duration::from_secs(10),
            Duration::from_secs(10),
            DEFAULT_DP_CERT_EXPIRATION,
        ),
        std::sync::Arc::new(ca_core::OverlaySecretStore::new(None)),
        &sources,
    );
    let ca = backend_vault::VaultCa::load_at(&spec, conf)
        .await
        .unwrap()
        .with_aws_sdk_config(sdk);
    let err = check(&ca).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("STS rejected") && text.contains("SignatureDoesNotMatch"),
        "{text}"
    );

    // The server ID header must match Vault's iam_server_id_header_value.
    let other = yaml.replace(
        "iamServerIdHeader: vault.example.com",
        "iamServerIdHeader: other.example.com",
    );
    let ca = peer
        .build(&other, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
}
