//! The acmpca backend against moto's ACM PCA, IAM auth enforced: the conformance suite, the
//! least-privilege policy, static keys from a data source, and the clear errors of a policy
//! without `acm-pca:IssueCertificate`, wrong keys, a pending / disabled / missing CA, a CA ARN of
//! another region, a wrong `caCert` and an unreachable endpoint. Each test starts its own moto.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ca_core::UpstreamKind;
use std::time::Duration;

use aws_sdk_acmpca::types::CertificateAuthorityStatus;
use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::{validate, CertificateAuthority, Error, MeshName};
use meshca_tests::acmpca::{policy, Acmpca, Peer, REGION};
use meshca_tests::vault::chain;

meshca_tests::conformance_suite!(acmpca_moto, Acmpca::new());

fn mesh(name: &str) -> MeshName {
    MeshName::new(name).unwrap()
}

async fn validate_err(ca: &dyn CertificateAuthority, m: &str) -> Error {
    validate(ca, &mesh(m), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .expect_err("validation must fail")
}

fn refused(e: &Error) -> bool {
    e.upstream_kind() == Some(UpstreamKind::Refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_policy_validates_and_health_checks_the_root() {
    let peer = Peer::start().await;
    let ca = peer.ca_for("default").await;
    let yaml = Peer::mesh_yaml("default", &ca.arn, &ca.root_pem, "");
    let backend = peer.backend(&yaml, Some(&peer.user)).await;
    let t = validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(
        t.certificate.identity().spiffe_id(),
        "spiffe://default/meshca-validation"
    );
    backend.health().await.unwrap();

    // caCert of another CA: health says which root to use.
    let other = peer.ca_for("other").await;
    let yaml = Peer::mesh_yaml("default", &ca.arn, &other.root_pem, "");
    let wrong = peer.backend(&yaml, Some(&peer.user)).await;
    let e = wrong.health().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("caCert is not the root of certificate authority"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ca_cert_the_bundle_is_the_cas_chain() {
    let peer = Peer::start().await;
    let ca = peer.ca_for("default").await;
    let yaml = Peer::mesh_yaml("default", &ca.arn, &ca.root_pem, "");
    let start = yaml.find("      caCert:").unwrap();
    let yaml = yaml[..start].to_owned();
    assert!(!yaml.contains("caCert"));
    let backend = peer.backend(&yaml, Some(&peer.user)).await;
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    let bundle = backend.trust_bundle().await.unwrap();
    let root = pem::parse(&ca.root_pem).unwrap();
    assert_eq!(bundle.certs().len(), 1);
    assert_eq!(bundle.certs()[0].as_ref(), root.contents());
    backend.health().await.unwrap();

    // Without acm-pca:GetCertificateAuthorityCertificate the bundle cannot be fetched, and the
    // action is named.
    let key = peer
        .moto
        .create_user_with_key(
            "no-ca-cert",
            Some(&policy(&[
                "acm-pca:IssueCertificate",
                "acm-pca:GetCertificate",
                "acm-pca:DescribeCertificateAuthority",
            ])),
        )
        .await;
    let backend = peer.backend(&yaml, Some(&key)).await;
    let text = chain(&backend.trust_bundle().await.unwrap_err());
    assert!(
        text.contains("AWS denied acm-pca:GetCertificateAuthorityCertificate"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_without_issue_certificate_is_named() {
    let peer = Peer::start().await;
    let ca = peer.ca_for("default").await;
    let key = peer
        .moto
        .create_user_with_key(
            "no-issue",
            Some(&policy(&[
                "acm-pca:GetCertificate",
                "acm-pca:DescribeCertificateAuthority",
                "acm-pca:GetCertificateAuthorityCertificate",
            ])),
        )
        .await;
    let yaml = Peer::mesh_yaml("default", &ca.arn, &ca.root_pem, "");
    let backend = peer.backend(&yaml, Some(&key)).await;
    let e = validate_err(&backend, "default").await;
    let text = chain(&e);
    assert!(refused(&e), "{e:?}");
    assert!(
        text.contains("AWS denied acm-pca:IssueCertificate on"),
        "{text}"
    );
    assert!(text.contains(&ca.arn), "{text}");

    // Without DescribeCertificateAuthority, that action is named.
    let key = peer
        .moto
        .create_user_with_key("no-describe", Some(&policy(&["acm-pca:IssueCertificate"])))
        .await;
    let backend = peer.backend(&yaml, Some(&key)).await;
    let text = chain(&validate_err(&backend, "default").await);
    assert!(
        text.contains("AWS denied acm-pca:DescribeCertificateAuthority"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_keys_from_an_inline_data_source() {
    let peer = Peer::start().await;
    let ca = peer.ca_for("default").await;
    let creds = |id: &str, secret: &str| {
        format!(
            "      auth:\n        awsCredentials:\n          accessKey:\n            inlineString: {id}\n          accessKeySecret:\n            inlineString: {secret}\n"
        )
    };
    let yaml = Peer::mesh_yaml(
        "default",
        &ca.arn,
        &ca.root_pem,
        &creds(&peer.user.access_key_id, &peer.user.secret_access_key),
    );
    // The SDK config has no credentials at all: only the data sources' keys can sign.
    let backend = peer.backend(&yaml, None).await;
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));

    // A wrong secret: AWS rejects the signature, and the message says to check the keys.
    let yaml = Peer::mesh_yaml(
        "default",
        &ca.arn,
        &ca.root_pem,
        &creds(&peer.user.access_key_id, "not-the-secret"),
    );
    let backend = peer.backend(&yaml, None).await;
    let e = validate_err(&backend, "default").await;
    let text = chain(&e);
    assert!(refused(&e), "{e:?}");
    assert!(
        text.contains("AWS rejected the credentials of auth.awsCredentials"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_or_disabled_ca_says_what_to_do() {
    let peer = Peer::start().await;
    let root = peer.ca_for("default").await;
    let pending = peer.create_ca(REGION, "pending", false).await;
    let yaml = Peer::mesh_yaml("default", &pending.arn, &root.root_pem, "");
    let backend = peer.backend(&yaml, Some(&peer.user)).await;
    let e = validate_err(&backend, "default").await;
    let text = chain(&e);
    assert!(refused(&e), "{e:?}");
    assert!(
        text.contains("is PENDING_CERTIFICATE and cannot issue"),
        "{text}"
    );
    assert!(
        text.contains("import-certificate-authority-certificate"),
        "{text}"
    );

    let disabled = peer.create_ca(REGION, "disabled", true).await;
    peer.admin(REGION)
        .update_certificate_authority()
        .certificate_authority_arn(&disabled.arn)
        .status(CertificateAuthorityStatus::from("DISABLED"))
        .send()
        .await
        .unwrap();
    let yaml = Peer::mesh_yaml("default", &disabled.arn, &disabled.root_pem, "");
    let backend = peer.backend(&yaml, Some(&peer.user)).await;
    let text = chain(&validate_err(&backend, "default").await);
    assert!(text.contains("is DISABLED"), "{text}");
    assert!(text.contains("--status ACTIVE"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_names_the_arn_and_region() {
    let peer = Peer::start().await;
    let root = peer.ca_for("default").await;
    let arn = "arn:aws:acm-pca:us-east-1:123456789012:certificate-authority/0a1b2c3d-4e5f-6789-abcd-ef0123456789";
    let yaml = Peer::mesh_yaml("default", arn, &root.root_pem, "");
    let backend = peer.backend(&yaml, Some(&peer.user)).await;
    let e = validate_err(&backend, "default").await;
    let text = chain(&e);
    assert!(refused(&e), "{e:?}");
    assert!(
        text.contains(&format!(
            "there is no certificate authority {arn} in region us-east-1 of account 123456789012"
        )),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_region_is_the_arns() {
    let peer = Peer::start().await;
    // A CA in us-west-2 works with an SDK config for us-east-1: calls go to the ARN's region.
    let west = peer.create_ca("us-west-2", "west", true).await;
    assert!(west.arn.contains(":us-west-2:"), "{}", west.arn);
    let yaml = Peer::mesh_yaml("default", &west.arn, &west.root_pem, "");
    let backend = peer.backend(&yaml, Some(&peer.user)).await;
    assert_eq!(backend.region(), "us-west-2");
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));

    // The same CA with the ARN's region edited: not found there, and the message says a CA
    // lives in one region.
    let wrong = west.arn.replace(":us-west-2:", ":eu-west-1:");
    let yaml = Peer::mesh_yaml("default", &wrong, &west.root_pem, "");
    let backend = peer.backend(&yaml, Some(&peer.user)).await;
    let text = chain(&validate_err(&backend, "default").await);
    assert!(text.contains("in region eu-west-1"), "{text}");
    assert!(text.contains("lives in one region and account"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_unavailable() {
    let peer = Peer::start().await;
    let root = peer.ca_for("default").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sdk = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(REGION))
        .endpoint_url(format!("http://127.0.0.1:{closed}"))
        .credentials_provider(
            aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::new("AKIA", "secret", None, None, "test"),
            ),
        )
        .build();
    let yaml = Peer::mesh_yaml("default", &root.arn, &root.root_pem, "");
    let backend = Peer::build(&yaml, DEFAULT_DP_CERT_EXPIRATION, sdk)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let e = validate_err(&backend, "default").await;
    let text = chain(&e);
    assert!(
        e.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{e:?}"
    );
    assert!(text.contains("cannot be reached"), "{text}");
    // Bounded retries, not a storm: well within dpCert.requestTimeout.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
