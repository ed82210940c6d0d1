//! The vault backend beyond the conformance suite: what a certificate costs, token renewal and
//! expiry, role and policy mistakes, a sealed / down / flaky Vault, namespaces and TLS settings,
//! all against the Vault API test server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use ca_core::UpstreamKind;
use std::time::{Duration, Instant};

use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::{
    issue_certificate, validate, CertificateAuthority, Error, IssueParams, KeySource, KeyType,
};
use meshca_tests::checks::{identity, mesh};
use meshca_tests::vault::{chain, Auth, Peer, Role, ROLE};
use serde_json::json;

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

/// Polls `f` every 100 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < end, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vault_request_per_certificate_and_no_extra_logins() {
    let peer = Peer::start(Auth::Cert).await;
    peer.mount("default", ISSUE).await;
    let yaml = peer.mesh_yaml("default", "issue", &peer.auth_yaml(Auth::Cert).await, "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    // Not a single request while building.
    assert!(peer.vault.requests().is_empty());
    issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let first: Vec<String> = peer
        .vault
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        first,
        [
            "auth/cert/login",
            "pki-default/issue/dataplane-proxies",
            "pki-default/ca/pem",
            "pki-default/ca_chain"
        ]
    );
    assert!(peer.vault.requests().iter().all(|r| r.client_cert));
    peer.vault.clear_requests();
    for _ in 0..5 {
        issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    }
    let paths: Vec<String> = peer
        .vault
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(paths, vec!["pki-default/issue/dataplane-proxies"; 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewable_tokens_are_renewed_before_they_end() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    for ttl in [3u64, 5] {
        let token = peer.token(&format!("{ttl}s"), true, "60s").await;
        let yaml = peer.mesh_yaml("default", "issue", &token_yaml(&token), "");
        let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
        peer.vault.clear_requests();
        issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
        let start = Instant::now();
        let renewals = || {
            peer.vault
                .requests()
                .iter()
                .filter(|r| r.path == "auth/token/renew-self")
                .count()
        };
        // Renewed at 2/3 of each TTL, in a loop: after two TTLs the token still works.
        eventually(Duration::from_secs(ttl * 4), || async {
            start.elapsed() >= Duration::from_secs(ttl * 2)
        })
        .await;
        assert!(renewals() >= 2, "ttl {ttl}s: {} renewals", renewals());
        issue(&ca, DEFAULT_DP_CERT_EXPIRATION)
            .await
            .unwrap_or_else(|e| panic!("ttl {ttl}s: token lapsed: {}", chain(&e)));
        check(&ca).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_cannot_live_on_are_reported_before_they_end() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;

    // Not renewable: validate says so while the token still works.
    let token = peer.token("3s", false, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
    assert!(err.to_string().contains("not renewable"), "{err}");
    // ... and once it has ended, issuing says why.
    eventually(Duration::from_secs(10), || async {
        match issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await {
            Err(e) => {
                assert!(
                    e.to_string().contains("invalid, expired or revoked"),
                    "{}",
                    chain(&e)
                );
                true
            }
            Ok(_) => false,
        }
    })
    .await;

    // Renewable, but its explicit max TTL stops renewals: reported once a renewal falls short.
    let token = peer.token("3s", true, "4s").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    eventually(Duration::from_secs(8), || async {
        match ca.health().await {
            Err(e) => {
                assert!(e.to_string().contains("maximum TTL"), "{e}");
                true
            }
            Ok(()) => false,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_policy_mistakes_say_what_to_fix() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let peer_ = peer.clone();
    let build = move |extra: &'static str, token: String| {
        let peer = peer_.clone();
        async move {
            let yaml = peer.mesh_yaml("default", "issue", &token_yaml(&token), "");
            let yaml = yaml.replace(&format!("role: {ROLE}\n"), extra);
            peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap()
        }
    };

    // An unknown role (the policy allows any role of the mount).
    peer.vault
        .write(
            None,
            "sys/policies/acl/meshca",
            json!({ "policy": "path \"pki-default/issue/*\" { capabilities = [\"update\"] }" }),
        )
        .await;
    let ca = build("role: nope\n", token.clone()).await;
    let err = check(&ca).await.unwrap_err();
    assert!(err.to_string().contains("no role `nope`"), "{err}");

    // A policy that does not allow the path.
    peer.vault
        .write(
            None,
            "sys/policies/acl/other",
            json!({ "policy": "path \"secret/*\" { capabilities = [\"read\"] }" }),
        )
        .await;
    let other = peer
        .vault
        .write(
            None,
            "auth/token/create",
            json!({ "policies": ["other"], "ttl": "1h" }),
        )
        .await;
    let other = other["auth"]["client_token"].as_str().unwrap().to_owned();
    let ca = build("role: dataplane-proxies\n", other.clone()).await;
    let err = check(&ca).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("permission denied")
            && text.contains("path \"pki-default/issue/dataplane-proxies\""),
        "{text}"
    );
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused));

    // A role that requires a CN (Vault's default) and a backend without commonName.
    peer.vault
        .write(
            None,
            "pki-default/roles/needs-cn",
            json!({ "allowed_uri_sans": "spiffe://default/*,kuma://*", "key_type": "ec" }),
        )
        .await;
    peer.vault
        .write(
            None,
            "sys/policies/acl/meshca",
            json!({ "policy": "path \"pki-default/issue/*\" { capabilities = [\"update\"] }" }),
        )
        .await;
    let ca = build("role: needs-cn\n", token.clone()).await;
    let err = check(&ca).await.unwrap_err();
    assert!(err.to_string().contains("require_cn=false"), "{err}");

    // A lifetime over the role's max_ttl: Vault clamps, core tells the caller.
    peer.vault
        .write(None, "pki-default/roles/short", json!({ "allowed_uri_sans": "spiffe://default/*,kuma://*", "key_type": "ec", "require_cn": false, "max_ttl": "1h" }))
        .await;
    let ca = build("role: short\n", token.clone()).await;
    let issued = issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    assert!(issued.shortened());
    assert!(issued.not_after() <= std::time::SystemTime::now() + Duration::from_secs(3600));

    // A lifetime beyond the mount CA's end: refused with a hint.
    peer.vault
        .write(None, "sys/mounts/pki-brief", json!({ "type": "pki" }))
        .await;
    peer.vault
        .write(
            None,
            "pki-brief/root/generate/internal",
            json!({ "common_name": "brief", "ttl": "2h", "key_type": "ec" }),
        )
        .await;
    peer.vault
        .write(None, "pki-brief/roles/dataplane-proxies", json!({ "allowed_uri_sans": "spiffe://default/*,kuma://*", "key_type": "ec", "require_cn": false }))
        .await;
    peer.vault
        .write(
            None,
            "sys/policies/acl/meshca",
            json!({ "policy": "path \"pki-brief/issue/*\" { capabilities = [\"update\"] }" }),
        )
        .await;
    let yaml = peer
        .mesh_yaml("default", "issue", &token_yaml(&token), "")
        .replace("pki: pki-default\n", "pki: pki-brief\n");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(
        err.to_string().contains("dpCert.rotation.expiration"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_down_and_flaky_vaults() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();

    peer.vault.set_sealed(true);
    let err = issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap_err();
    assert!(
        err.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{err}"
    );
    assert!(chain(&err).contains("is sealed"), "{}", chain(&err));
    peer.vault.set_sealed(false);

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
    peer.vault.fail_next(1000, 503);
    let yaml_fast = yaml.replace("    dpCert:\n", "    dpCert:\n      requestTimeout: 1s\n");
    let fast = peer
        .build(&yaml_fast, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let started = Instant::now();
    let err = issue(&fast, DEFAULT_DP_CERT_EXPIRATION).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by requestTimeout"
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

    // A Vault that is gone. Dropping the server aborts its task, which the runtime completes
    // on its own time: wait until it no longer accepts (its connections go with it).
    let address = peer.vault.address();
    drop(peer);
    let host_port = address.trim_start_matches("https://").trim_end_matches('/');
    let gone_by = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(host_port).await.is_ok() {
        assert!(Instant::now() < gone_by, "the test server did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = issue(&ca, DEFAULT_DP_CERT_EXPIRATION).await.unwrap_err();
    assert!(
        err.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{err}"
    );
    assert!(
        chain(&err).contains(&format!("cannot connect to {address}")),
        "{}",
        chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_route_every_request() {
    let peer = Peer::start(Auth::Token).await;
    let v = &peer.vault;
    v.write(None, "sys/namespaces/team-a", json!({})).await;
    let ns = Some("team-a");
    v.write(ns, "sys/mounts/pki-default", json!({ "type": "pki" }))
        .await;
    v.write(
        ns,
        "pki-default/root/generate/internal",
        json!({ "common_name": "team-a root", "ttl": "87600h", "key_type": "ec" }),
    )
    .await;
    v.write(ns, &format!("pki-default/roles/{ROLE}"), json!({ "allowed_uri_sans": "spiffe://default/*,kuma://*", "key_type": "ec", "require_cn": false }))
        .await;
    v.write(ns, "sys/policies/acl/meshca", json!({ "policy": format!("path \"pki-default/issue/{ROLE}\" {{ capabilities = [\"create\", \"update\"] }}") }))
        .await;
    let t = v
        .write(
            ns,
            "auth/token/create",
            json!({ "policies": ["meshca"], "ttl": "1h" }),
        )
        .await;
    let token = t["auth"]["client_token"].as_str().unwrap().to_owned();

    let yaml = peer.mesh_yaml(
        "default",
        "issue",
        &token_yaml(&token),
        "        namespace: team-a\n",
    );
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    check(&ca).await.unwrap();
    let log = v.requests();
    assert!(!log.is_empty());
    assert!(
        log.iter().all(|r| r.namespace.as_deref() == Some("team-a")),
        "{log:?}"
    );

    // Without the namespace the token and the mount are unknown.
    let yaml = peer.mesh_yaml("default", "issue", &token_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ca_server_name_and_skip_verify() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let base = peer.mesh_yaml("default", "issue", &token_yaml(&token), "");
    // The certificate names vault.test and 127.0.0.1, not localhost.
    let localhost = base.replace("https://127.0.0.1:", "https://localhost:");

    let ca = peer
        .build(&localhost, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(
        err.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{err}"
    );
    assert!(chain(&err).contains("certificate"), "{}", chain(&err));
    assert!(chain(&err).contains("tls.serverName"), "{}", chain(&err));

    let named = localhost.replace(
        "        tls:\n",
        "        tls:\n          serverName: vault.test\n",
    );
    let ca = peer
        .build(&named, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    check(&ca).await.unwrap();

    // Another CA: refused.
    let (other_ca, _, _) = meshca_tests::vault::client_cert();
    let ours = meshca_tests::vault::indent(&peer.vault.tls_ca_pem(), 14);
    let wrong = base.replace(&ours, &meshca_tests::vault::indent(&other_ca, 14));
    let ca = peer
        .build(&wrong, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(
        chain(&err).contains("UnknownIssuer") || chain(&err).contains("unknown issuer"),
        "{}",
        chain(&err)
    );

    // skipVerify: works, and says so at every start.
    let skip = localhost.replace(
        "        tls:\n",
        "        tls:\n          skipVerify: true\n",
    );
    let ca = peer.build(&skip, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    assert!(
        ca.warnings().iter().any(|w| w.contains("tls.skipVerify")),
        "{:?}",
        ca.warnings()
    );
    check(&ca).await.unwrap();

    // A bad caCert is a config error naming the field.
    let garbage = base.replace(&ours, "              not a certificate\n");
    let err = peer
        .build(&garbage, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("mtls.backends[0].conf.fromCp.tls.caCert"),
        "{err}"
    );
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

/// A Vault agent's API proxy with `use_auto_auth_token = true`: forwards every request to Vault
/// adding the agent's token. Plain HTTP on loopback, as the agent listens.
async fn agent(
    vault_addr: String,
    ca_pem: String,
    token: String,
) -> (String, tokio::task::JoinHandle<()>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    let mut roots = rustls::RootCertStore::empty();
    for c in ca_core::x509::parse_pem_certs(ca_pem.as_bytes()).unwrap() {
        roots.add(c).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (http, vault_addr, token) = (http.clone(), vault_addr.clone(), token.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (http, vault_addr, token) =
                            (http.clone(), vault_addr.clone(), token.clone());
                        async move {
                            assert!(
                                req.headers().get("X-Vault-Token").is_none(),
                                "meshca sent a token to the agent"
                            );
                            let method = req.method().clone();
                            let path = req.uri().path().to_owned();
                            let ns = req.headers().get("X-Vault-Namespace").cloned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let mut out = http
                                .request(method, format!("{vault_addr}{path}"))
                                .header("X-Vault-Token", token)
                                .body(body.to_vec());
                            if let Some(ns) = ns {
                                out = out.header("X-Vault-Namespace", ns);
                            }
                            let resp = out.send().await.unwrap();
                            let status = resp.status();
                            let bytes = resp.bytes().await.unwrap();
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(Full::new(Bytes::from(bytes.to_vec())))
                                    .unwrap(),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_vault_agent_meshca_sends_no_token() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let (agent_addr, _task) = agent(peer.vault.address(), peer.vault.tls_ca_pem(), token).await;
    let yaml = peer.mesh_yaml("default", "issue", "", "").replace(
        &format!("address: {}\n", peer.vault.address()),
        &format!("agentAddress: {agent_addr}\n"),
    );
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    check(&ca).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    // Every request went through the agent; no login, no lookup.
    let paths: Vec<String> = peer
        .vault
        .requests()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    assert!(
        paths.iter().all(|p| p.starts_with("pki-default/")),
        "{paths:?}"
    );
}
