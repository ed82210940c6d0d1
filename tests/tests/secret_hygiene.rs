//! Secret hygiene across backends: a full issuance cycle (load, validate, issue, a failure) of
//! the provided, vault (token auth, the token read from AWS Secrets Manager), acmpca (static
//! keys), builtin (on the Kubernetes secret store) and certmanager (a bearer-token client)
//! backends with every log record at TRACE captured — meshca's own and its libraries'
//! (the AWS SDK, reqwest, hyper, rustls through `log`) — then the logs, the `Debug` output of
//! every config, backend and certificate, and every error message are searched for each key,
//! token and secret key the test put in. None may appear.
//!
//! One test in its own binary: it installs the global subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use ca_core::config::{Mesh, DEFAULT_DP_CERT_EXPIRATION};
use ca_core::{
    issue_certificate, validate, IssueParams, KeySource, KeyType, OverlaySecretStore, SourcePolicy,
};
use meshca_aws::SecretsManager;
use meshca_tests::acmpca::{moto_sdk, Peer as AcmpcaPeer, REGION};
use meshca_tests::checks::{identity, mesh};
use meshca_tests::fixtures::self_signed_ca;
use meshca_tests::vault::{chain, indent, Auth, Peer as VaultPeer, Role};

/// Everything every subscriber wrote.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(|| Mutex::new(Vec::new()))
}

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_everything() {
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(|| Capture)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    // Libraries that log through `log` (reqwest, rustls) too.
    tracing_log::LogTracer::init().unwrap();
}

/// The lines of a PEM body (what would show if a key leaked in any PEM-like form).
fn pem_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_token_or_secret_key_in_logs_debug_or_errors() {
    capture_everything();
    let mut secrets: Vec<String> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let day = DEFAULT_DP_CERT_EXPIRATION;
    let params = |service: &str| {
        IssueParams::new(
            identity("default", service),
            KeySource::Generate(KeyType::EcdsaP256),
            day,
        )
    };

    // acmpca with static keys; moto also serves Secrets Manager for the vault token below.
    let aws = AcmpcaPeer::start().await;
    secrets.push(aws.user.secret_access_key.clone());
    secrets.push(aws.moto.admin().secret_access_key.clone());
    let ca = aws.ca_for("default").await;
    let keys = format!(
        "      auth:\n        awsCredentials:\n          accessKey:\n            inlineString: {}\n          accessKeySecret:\n            inlineString: {}\n",
        aws.user.access_key_id, aws.user.secret_access_key
    );
    let yaml = AcmpcaPeer::mesh_yaml("default", &ca.arn, &ca.root_pem, &keys);
    texts.push(format!(
        "{:?}",
        Mesh::from_yaml(&yaml, &meshca_tests::all_backends()).unwrap()
    ));
    let backend = aws.backend(&yaml, None).await;
    texts.push(format!("{backend:?}"));
    validate(&backend, &mesh("default"), day, None)
        .await
        .unwrap();
    let issued = issue_certificate(&backend, params("web")).await.unwrap();
    secrets.extend(pem_lines(
        std::str::from_utf8(issued.key_pem().unwrap().expose()).unwrap(),
    ));
    texts.push(format!("{issued:?}"));
    // Keys AWS rejects: the error names the key id's source, never the secret.
    let wrong = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYHYGIENEKEY";
    secrets.push(wrong.to_owned());
    let bad = yaml.replace(&aws.user.secret_access_key, wrong);
    let backend = aws.backend(&bad, None).await;
    let err = validate(&backend, &mesh("default"), day, None)
        .await
        .unwrap_err();
    texts.push(chain(&err));
    texts.push(format!("{err:?}"));

    // vault, token auth, the token kept in Secrets Manager.
    let vault = VaultPeer::start(Auth::Token).await;
    vault
        .mount(
            "default",
            Role {
                mode: "issue",
                key_type: "ec",
                allowed_uri_sans: None,
            },
        )
        .await;
    let token = vault.token("1h", true, "").await;
    secrets.push(token.clone());
    aws_sdk_secretsmanager::Client::new(&moto_sdk(&aws.moto, Some(aws.moto.admin()), REGION))
        .create_secret()
        .name("meshca/vault-token")
        .secret_string(serde_json::json!({ "token": token }).to_string())
        .send()
        .await
        .unwrap();
    let sources = SourcePolicy::local().with_aws_secrets_manager(Arc::new(
        SecretsManager::new().with_aws_sdk_config(moto_sdk(
            &aws.moto,
            Some(aws.moto.admin()),
            REGION,
        )),
    ));
    let auth = "        auth:\n          token:\n            awsSecretsManager: {secretId: meshca/vault-token, key: token}\n";
    let yaml = vault.mesh_yaml("default", "issue", auth, "");
    let m = Mesh::from_yaml(&yaml, &meshca_tests::all_backends()).unwrap();
    texts.push(format!("{m:?}"));
    let backend_conf = m.enabled_backend().unwrap();
    let conf: &backend_vault::VaultConf = backend_conf.conf_as().unwrap();
    let spec = ca_core::BuildSpec::from_parts(
        "mtls.backends[0].conf",
        &m.name,
        &backend_conf.name,
        ca_core::config::Timing::of(backend_conf),
        Arc::new(OverlaySecretStore::new(None)),
        &sources,
    );
    let backend = backend_vault::VaultCa::load_at(&spec, conf)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    texts.push(format!("{backend:?}"));
    validate(&backend, &mesh("default"), day, None)
        .await
        .unwrap();
    let issued = issue_certificate(&backend, params("api")).await.unwrap();
    secrets.extend(pem_lines(
        std::str::from_utf8(issued.key_pem().unwrap().expose()).unwrap(),
    ));
    texts.push(format!("{issued:?}"));
    // A token Vault does not know.
    let wrong_token = "hvs.CAESIJustAWrongTokenThatMustNotLeak0123456789";
    secrets.push(wrong_token.to_owned());
    let yaml = vault.mesh_yaml(
        "default",
        "issue",
        &format!("        auth:\n          token:\n            inlineString: {wrong_token}\n"),
        "",
    );
    let err = match vault.build(&yaml, day).await {
        Ok(b) => validate(&b, &mesh("default"), day, None).await.unwrap_err(),
        Err(e) => e,
    };
    texts.push(chain(&err));
    texts.push(format!("{err:?}"));

    // provided, key inline.
    let (cert_pem, key_pem) = self_signed_ca(
        "hygiene root",
        Duration::from_secs(86_400 * 30),
        SystemTime::now() - Duration::from_secs(60),
    );
    secrets.extend(pem_lines(&key_pem));
    let yaml = format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: provided\n    conf:\n      cert:\n        inlineString: |\n{}      key:\n        inlineString: |\n{}",
        indent(&cert_pem, 10),
        indent(&key_pem, 10)
    );
    let load = |yaml: String| async move {
        let m = Mesh::from_yaml(&yaml, &meshca_tests::all_backends()).unwrap();
        let b = m.enabled_backend().unwrap();
        let conf: &backend_provided::ProvidedConf = b.conf_as().unwrap();
        let loaded = backend_provided::ProvidedCa::load(
            &m.name,
            b.name.clone(),
            conf,
            DEFAULT_DP_CERT_EXPIRATION,
            &OverlaySecretStore::new(None),
            &SourcePolicy::local(),
        )
        .await;
        (format!("{m:?}"), loaded)
    };
    let (debug, backend) = load(yaml.clone()).await;
    texts.push(debug);
    let backend = backend.unwrap();
    texts.push(format!("{backend:?}"));
    let issued = issue_certificate(&backend, params("db")).await.unwrap();
    texts.push(format!("{issued:?}"));
    // A key that does not fit the certificate: the error names the field, not the key.
    let (_, other_key) = self_signed_ca(
        "other",
        Duration::from_secs(86_400),
        SystemTime::now() - Duration::from_secs(60),
    );
    secrets.extend(pem_lines(&other_key));
    let (debug, loaded) = load(yaml.replace(&indent(&key_pem, 10), &indent(&other_key, 10))).await;
    texts.push(debug);
    let err = loaded.unwrap_err();
    assert!(chain(&err).contains("key"), "{}", chain(&err));
    texts.push(chain(&err));
    texts.push(format!("{err:?}"));

    // builtin on the Kubernetes secret store, and certmanager, through a client with a bearer
    // token: the CA key travels in a Secret (base64 of the PEM), the token in every request.
    let api = meshca_peers::KubeApiServer::start().await;
    api.add_issuer(
        backend_certmanager::DEFAULT_NAMESPACE,
        meshca_tests::certmanager::ISSUER,
    );
    let bearer = "k8s-bearer-token-that-must-not-leak-0123456789abcdef";
    secrets.push(bearer.to_owned());
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: t\n    namespace: kuma-system\ncurrent-context: t\nusers:\n- name: t\n  user:\n    token: {bearer}\n",
        api.url()
    );
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap(),
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    texts.push(format!("{config:?}"));
    let client = kube::Client::try_from(config).unwrap();
    let store = Arc::new(store_kubernetes::KubernetesSecretStore::new(
        client.clone(),
        "kuma-system",
    ));
    let builtin = backend_builtin::BuiltinCa::new(
        mesh("default"),
        ca_core::BackendName::new("ca-1").unwrap(),
        backend_builtin::BuiltinConf::default(),
        store.clone(),
    );
    validate(&builtin, &mesh("default"), day, None)
        .await
        .unwrap();
    let issued = issue_certificate(&builtin, params("queue")).await.unwrap();
    secrets.extend(pem_lines(
        std::str::from_utf8(issued.key_pem().unwrap().expose()).unwrap(),
    ));
    texts.push(format!("{issued:?}"));
    texts.push(format!("{store:?}"));
    texts.push(format!("{builtin:?}"));
    let stored = api
        .object("secrets", "kuma-system", "default.ca-builtin-key-ca-1")
        .unwrap();
    let b64 = stored["data"]["value"].as_str().unwrap().to_owned();
    let ca_key = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &b64).unwrap(),
    )
    .unwrap();
    secrets.extend(pem_lines(&ca_key));
    secrets.extend(
        b64.as_bytes()
            .chunks(40)
            .map(|c| String::from_utf8_lossy(c).into_owned()),
    );
    let cm_yaml = meshca_tests::certmanager::Peer::mesh_yaml("default", "10s", None, "");
    let cm = meshca_tests::certmanager::build_with(&cm_yaml, day, client)
        .await
        .unwrap();
    texts.push(format!("{cm:?}"));
    validate(&cm, &mesh("default"), day, None).await.unwrap();
    let issued = issue_certificate(&cm, params("mail")).await.unwrap();
    secrets.extend(pem_lines(
        std::str::from_utf8(issued.key_pem().unwrap().expose()).unwrap(),
    ));
    texts.push(format!("{issued:?}"));
    api.forbid("create");
    let err = validate(&cm, &mesh("default"), day, None)
        .await
        .unwrap_err();
    texts.push(chain(&err));
    texts.push(format!("{err:?}"));

    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    // The capture works: the libraries' trace records are there.
    assert!(logs.contains("TRACE"), "no TRACE records captured");
    assert!(logs.len() > 10_000, "only {} bytes of logs", logs.len());
    for target in ["aws_smithy_runtime", "aws_sigv4", "kube_client"] {
        assert!(logs.contains(target), "no records of {target}");
    }
    for s in &secrets {
        assert!(!s.is_empty());
        assert!(
            !logs.contains(s.as_str()),
            "a secret ({}…) is in the logs",
            &s[..6]
        );
        for t in &texts {
            assert!(
                !t.contains(s.as_str()),
                "a secret ({}…) is in: {t}",
                &s[..6]
            );
        }
    }
}
