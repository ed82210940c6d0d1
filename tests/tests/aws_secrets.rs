//! `awsSecretsManager` data sources against moto's Secrets Manager with IAM auth enforced: a
//! provided CA whose certificate and key live in the Kong layout (`{"cert": …}`, `{"key": …}`),
//! acmpca keys kept in a secret, and the errors a user meets (no permission, no such secret, a
//! missing JSON field, rejected keys). The default chain (EKS Pod Identity) is in
//! `aws_default_chain.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use backend_provided::ProvidedCa;
use ca_core::config::{Mesh, Timing, DEFAULT_DP_CERT_EXPIRATION, DEFAULT_REQUEST_TIMEOUT};
use ca_core::{
    issue_certificate, BuildSpec, DataSource, Error, IssueParams, KeySource, OverlaySecretStore,
    SourcePolicy,
};
use meshca_aws::SecretsManager;
use meshca_peers::{AwsKey, Moto};
use meshca_tests::acmpca::{self, moto_sdk, Peer};
use meshca_tests::checks::{identity, openssl_verify};
use meshca_tests::fixtures::self_signed_ca;
use meshca_tests::vault::chain;

const REGION: &str = "us-east-1";

fn sdk(moto: &Moto, key: &AwsKey) -> SdkConfig {
    moto_sdk(moto, Some(key), REGION)
}

/// Creates `name` holding `value` (as the admin); returns its ARN.
async fn put_secret(moto: &Moto, name: &str, value: &str) -> String {
    aws_sdk_secretsmanager::Client::new(&sdk(moto, moto.admin()))
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .unwrap()
        .arn()
        .unwrap()
        .to_owned()
}

/// Sources that read Secrets Manager as `key` (no value cache unless `ttl`).
fn sources(moto: &Moto, key: &AwsKey, ttl: Duration) -> SourcePolicy {
    SourcePolicy::local().with_aws_secrets_manager(Arc::new(
        SecretsManager::new()
            .with_aws_sdk_config(sdk(moto, key))
            .with_ttl(ttl),
    ))
}

fn get_secret_policy(resource: &str) -> String {
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":["secretsmanager:GetSecretValue"],"Resource":"{resource}"}}]}}"#
    )
}

async fn load_provided(yaml: &str, sources: &SourcePolicy) -> Result<ProvidedCa, Error> {
    let mesh = Mesh::from_yaml(yaml, &meshca_tests::all_backends())?;
    let backend = mesh.enabled_backend().unwrap();
    let conf: &backend_provided::ProvidedConf = backend.conf_as().unwrap();
    let spec = BuildSpec::from_parts(
        "mtls.backends[0].conf",
        &mesh.name,
        &backend.name,
        Timing::new(
            DEFAULT_REQUEST_TIMEOUT,
            DEFAULT_REQUEST_TIMEOUT,
            DEFAULT_DP_CERT_EXPIRATION,
        ),
        Arc::new(OverlaySecretStore::new(None)),
        sources,
    );
    ProvidedCa::load_at(&spec, conf).await
}

fn provided_yaml(cert_id: &str, key_id: &str) -> String {
    format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: provided\n    conf:\n      cert:\n        awsSecretsManager: {{secretId: {cert_id}, key: cert}}\n      key:\n        awsSecretsManager: {{secretId: {key_id}, key: key}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provided_ca_from_secrets_manager_in_the_kong_layout() {
    let moto = Moto::start().await;
    let (cert_pem, key_pem) = self_signed_ca(
        "kong mesh root",
        Duration::from_secs(86_400 * 365),
        SystemTime::now() - Duration::from_secs(60),
    );
    let json = |field: &str, pem: &str| serde_json::json!({ field: pem }).to_string();
    let cert_arn = put_secret(&moto, "kongcp1-crt", &json("cert", &cert_pem)).await;
    put_secret(&moto, "kongcp1-key", &json("key", &key_pem)).await;
    // GetSecretValue only. (moto checks actions, not resources: it evaluates Secrets Manager
    // calls against "*", so a policy scoped to these ARNs cannot be tested here.)
    let reader = moto
        .create_user_with_key("meshca-reader", Some(&get_secret_policy("*")))
        .await;
    let policy = sources(&moto, &reader, Duration::ZERO);

    // By name and by ARN.
    for cert_id in ["kongcp1-crt", cert_arn.as_str()] {
        let ca = load_provided(&provided_yaml(cert_id, "kongcp1-key"), &policy)
            .await
            .unwrap_or_else(|e| panic!("{}", chain(&e)));
        let issued = issue_certificate(
            &ca,
            IssueParams::new(
                identity("default", "web"),
                KeySource::Generate(ca_core::KeyType::EcdsaP256),
                DEFAULT_DP_CERT_EXPIRATION,
            ),
        )
        .await
        .unwrap();
        let (ok, out) = openssl_verify(&cert_pem, &issued.chain_pem(), "sslclient");
        assert!(ok, "openssl verify: {out}");
    }

    // The JSON field picked must exist; the message names the fields, never the values.
    let yaml = provided_yaml("kongcp1-crt", "kongcp1-key").replace("key: key}", "key: pem}");
    let err = load_provided(&yaml, &policy).await.unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains(
            "data source awsSecretsManager kongcp1-key key \"pem\": its JSON has no field \"pem\" (it has: key)"
        ),
        "{text}"
    );
    assert!(!text.contains("PRIVATE KEY"), "{text}");

    // A secret that is not there.
    let err = load_provided(&provided_yaml("kongcp1-crt", "kongcp1-nokey"), &policy)
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("there is no such secret in region us-east-1"),
        "{}",
        chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_refusals_and_rejected_keys_are_named() {
    let moto = Moto::start().await;
    put_secret(&moto, "token", "s.abc").await;
    let src = DataSource::AwsSecretsManager(ca_core::AwsSecretRef::new("token", None).unwrap());
    let mesh = ca_core::MeshName::new("default").unwrap();
    let store = OverlaySecretStore::new(None);

    // A principal without secretsmanager:GetSecretValue.
    let other = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["secretsmanager:DescribeSecret"],"Resource":"*"}]}"#;
    let user = moto.create_user_with_key("no-read", Some(other)).await;
    let err = src
        .resolve(&mesh, &store, &sources(&moto, &user, Duration::ZERO))
        .await
        .unwrap_err();
    let text = chain(&err);
    assert!(
        text.contains("AWS denied secretsmanager:GetSecretValue on token"),
        "{text}"
    );
    assert!(!text.contains("s.abc"), "{text}");

    // Keys AWS does not know.
    let forged = AwsKey {
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        arn: String::new(),
    };
    let err = src
        .resolve(&mesh, &store, &sources(&moto, &forged, Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        chain(&err).contains("AWS rejected the credentials"),
        "{}",
        chain(&err)
    );

    // The reader gets it; a value is reused for the TTL and read again after it.
    let reader = moto
        .create_user_with_key("reader", Some(&get_secret_policy("*")))
        .await;
    let cached = sources(&moto, &reader, Duration::from_secs(3600));
    let fresh = sources(&moto, &reader, Duration::ZERO);
    let read = |p: &SourcePolicy| {
        let p = p.clone();
        let src = src.clone();
        let mesh = mesh.clone();
        let store = OverlaySecretStore::new(None);
        async move {
            String::from_utf8(
                src.resolve(&mesh, &store, &p)
                    .await
                    .unwrap()
                    .expose()
                    .to_vec(),
            )
            .unwrap()
        }
    };
    assert_eq!(read(&cached).await, "s.abc");
    aws_sdk_secretsmanager::Client::new(&sdk(&moto, moto.admin()))
        .put_secret_value()
        .secret_id("token")
        .secret_string("s.def")
        .send()
        .await
        .unwrap();
    assert_eq!(read(&cached).await, "s.abc", "cached for the TTL");
    assert_eq!(read(&fresh).await, "s.def", "read again without a cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acmpca_keys_kept_in_secrets_manager() {
    let peer = Peer::start().await;
    let moto = &peer.moto;
    let keys = serde_json::json!({
        "accessKey": peer.user.access_key_id,
        "secretKey": peer.user.secret_access_key,
    })
    .to_string();
    put_secret(moto, "meshca/acmpca", &keys).await;
    let reader = moto
        .create_user_with_key("keys-reader", Some(&get_secret_policy("*")))
        .await;
    let ca = peer.ca_for("default").await;
    let yaml = Peer::mesh_yaml(
        "default",
        &ca.arn,
        &ca.root_pem,
        "      auth:\n        awsCredentials:\n          accessKey:\n            awsSecretsManager: {secretId: meshca/acmpca, key: accessKey}\n          accessKeySecret:\n            awsSecretsManager: {secretId: meshca/acmpca, key: secretKey}\n",
    );
    // The SDK config gives the endpoint only: the keys are the secret's.
    let backend = Peer::build_with(
        &yaml,
        DEFAULT_DP_CERT_EXPIRATION,
        Some(peer.sdk(None, acmpca::REGION)),
        &sources(moto, &reader, Duration::ZERO),
    )
    .await
    .unwrap_or_else(|e| panic!("{}", chain(&e)));
    ca_core::validate(
        &backend,
        &meshca_tests::checks::mesh("default"),
        DEFAULT_DP_CERT_EXPIRATION,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(!format!("{backend:?}").contains(&peer.user.secret_access_key));
}
