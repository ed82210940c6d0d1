//! The vault backend against a real OpenBao dev server (`bao server -dev -dev-tls`, started by
//! each test): the conformance suite, token auth over TLS, `mode: sign`, role and policy
//! mistakes, what a certificate costs (counted from OpenBao's audit log), token renewal and
//! expiry, TLS settings, an agent proxy, namespaces, sealed and stopped. What OpenBao cannot do
//! (aws auth, injected faults) is in vault.rs, against OpenBao behind the hand-written front.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Duration;

use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::{
    issue_certificate, validate, CertificateAuthority, Error, IssueParams, KeySource, KeyType,
    UpstreamKind,
};
use meshca_tests::checks::{caller_csr, identity, mesh};
use meshca_tests::openbao::{OpenBaoFixture, Peer};
use meshca_tests::vault::{chain, client_cert, indent, token_auth_yaml, Auth, Role};
use rcgen::PublicKeyData;

meshca_tests::conformance_suite!(
    openbao_token_issue,
    OpenBaoFixture::issue(Auth::Token, "ec")
);
meshca_tests::conformance_suite!(openbao_token_sign, OpenBaoFixture::sign(Auth::Token));
meshca_tests::conformance_suite!(openbao_cert_issue, OpenBaoFixture::issue(Auth::Cert, "rsa"));
meshca_tests::conformance_suite!(openbao_cert_sign, OpenBaoFixture::sign(Auth::Cert));

const ISSUE: Role = Role {
    mode: "issue",
    key_type: "ec",
    allowed_uri_sans: None,
};

const SIGN: Role = Role {
    mode: "sign",
    key_type: "any",
    allowed_uri_sans: None,
};

async fn issue(
    ca: &dyn CertificateAuthority,
    key: KeySource<'_>,
) -> Result<ca_core::IssuedCertificate, Error> {
    issue_certificate(
        ca,
        IssueParams::new(identity("default", "web"), key, DEFAULT_DP_CERT_EXPIRATION),
    )
    .await
}

fn generated() -> KeySource<'static> {
    KeySource::Generate(KeyType::EcdsaP256)
}

async fn check(ca: &dyn CertificateAuthority) -> Result<(), Error> {
    validate(ca, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth_over_tls_trusts_only_the_ca_cert() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    assert!(yaml.contains("address: https://127.0.0.1:"), "{yaml}");

    // tls.caCert is OpenBao's dev CA: validates, and issues a leaf of the mount's root.
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    check(&ca).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    let issued = issue(&ca, generated()).await.unwrap();
    assert_eq!(issued.chain().len(), 1, "a leaf of the root");
    let paths = peer.bao.request_paths();
    assert!(
        paths
            .iter()
            .any(|p| p == "pki-default/issue/dataplane-proxies"),
        "{paths:?}"
    );

    // Another CA in tls.caCert: the TLS handshake fails, nothing reaches OpenBao.
    let (other_ca, _, _) = client_cert();
    let wrong = yaml.replace(&indent(&peer.bao.tls_ca_pem(), 14), &indent(&other_ca, 14));
    assert_ne!(wrong, yaml);
    let ca = peer
        .build(&wrong, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    peer.bao.clear_requests();
    let err = check(&ca).await.unwrap_err();
    assert!(
        err.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{err}"
    );
    assert!(
        chain(&err).contains("UnknownIssuer") || chain(&err).contains("unknown issuer"),
        "{}",
        chain(&err)
    );
    assert!(peer.bao.requests().is_empty(), "{:?}", peer.bao.requests());

    // A token OpenBao does not know: refused, by OpenBao.
    let bad = yaml.replace(&token, "s.not-a-token");
    let ca = peer.build(&bad, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_mode_sends_the_callers_csr_to_the_sign_endpoint() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", SIGN).await;
    let token = peer.token("1h", true, "").await;
    let yaml = peer.mesh_yaml("default", "sign", &token_auth_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();

    let f = OpenBaoFixture::sign(Auth::Token);
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = caller_csr(&f, &key, "default", "web");
    peer.bao.clear_requests();
    let issued = issue(&ca, KeySource::Csr(&csr))
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(issued.key_pem().is_none(), "the key stays with the caller");
    let (_, leaf) = x509_parser::parse_x509_certificate(issued.chain()[0].as_ref()).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice(),
        "the leaf certifies the caller's key"
    );
    let paths = peer.bao.request_paths();
    assert!(
        paths.contains(&"pki-default/sign/dataplane-proxies".to_owned()),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("/issue/")),
        "sign mode never asks OpenBao for a key: {paths:?}"
    );

    // A generated key goes the same way: meshca makes it, OpenBao signs its CSR.
    peer.bao.clear_requests();
    let issued = issue(&ca, generated()).await.unwrap();
    assert!(issued.key_pem().is_some());
    assert_eq!(
        peer.bao.request_paths(),
        ["pki-default/sign/dataplane-proxies"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_forbids_the_spiffe_id_is_refused_with_the_fix() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount(
        "default",
        Role {
            allowed_uri_sans: Some("spiffe://elsewhere/*,kuma://*"),
            ..ISSUE
        },
    )
    .await;
    let token = peer.token("1h", true, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = issue(&ca, generated()).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("allowed_uri_sans")
            && text.contains("vault write pki-default/roles/dataplane-proxies")
            // OpenBao's own words (Vault's too), passed on.
            && text.contains("not valid for this role"),
        "{}",
        chain(&err)
    );
    // Refusals are not retried: OpenBao saw the request once.
    let issues = peer
        .bao
        .request_paths()
        .into_iter()
        .filter(|p| p == "pki-default/issue/dataplane-proxies")
        .count();
    assert_eq!(issues, 1, "{:?}", peer.bao.request_paths());
    // validate says the same.
    let err = check(&ca).await.unwrap_err();
    assert!(err.to_string().contains("allowed_uri_sans"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_openbao_request_per_certificate_and_no_extra_logins() {
    let peer = Peer::start(Auth::Cert).await;
    peer.mount("default", ISSUE).await;
    let yaml = peer.mesh_yaml("default", "issue", &peer.auth_yaml(Auth::Cert).await, "");
    peer.bao.clear_requests();
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    // Not a single request while building.
    assert!(peer.bao.requests().is_empty(), "{:?}", peer.bao.requests());
    issue(&ca, generated())
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(
        peer.bao.request_paths(),
        [
            "auth/cert/login",
            "pki-default/issue/dataplane-proxies",
            "pki-default/ca/pem",
            "pki-default/ca_chain"
        ]
    );
    peer.bao.clear_requests();
    for _ in 0..5 {
        issue(&ca, generated()).await.unwrap();
    }
    assert_eq!(
        peer.bao.request_paths(),
        vec!["pki-default/issue/dataplane-proxies"; 5]
    );
    // The bundle is held: validating asks for one test certificate, nothing else.
    peer.bao.clear_requests();
    tokio::time::sleep(Duration::from_millis(10)).await;
    check(&ca).await.unwrap();
    let paths = peer.bao.request_paths();
    assert_eq!(
        paths
            .iter()
            .filter(|p| *p == "pki-default/issue/dataplane-proxies")
            .count(),
        1,
        "{paths:?}"
    );
    assert!(!paths.iter().any(|p| p.contains("login")), "{paths:?}");
}

/// Polls `f` every 100 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = std::time::Instant::now() + limit;
    while !f().await {
        assert!(std::time::Instant::now() < end, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewable_tokens_are_renewed_and_short_ones_reported() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("3s", true, "60s").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    issue(&ca, generated()).await.unwrap();
    let start = std::time::Instant::now();
    eventually(Duration::from_secs(12), || async {
        start.elapsed() >= Duration::from_secs(6)
    })
    .await;
    let renewals = peer
        .bao
        .request_paths()
        .into_iter()
        .filter(|p| p == "auth/token/renew-self")
        .count();
    assert!(renewals >= 2, "{:?}", peer.bao.request_paths());
    issue(&ca, generated())
        .await
        .unwrap_or_else(|e| panic!("token lapsed: {}", chain(&e)));

    // Not renewable: validate says so while the token still works.
    let token = peer.token("1h", false, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
    assert!(err.to_string().contains("not renewable"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_roles_and_narrow_policies_say_what_to_fix() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");

    // An unknown role (a policy allowing any role of the mount).
    peer.bao
        .write(
            None,
            "sys/policies/acl/meshca",
            serde_json::json!({ "policy": "path \"pki-default/issue/*\" { capabilities = [\"update\"] }" }),
        )
        .await;
    let nope = yaml.replace("role: dataplane-proxies\n", "role: nope\n");
    let ca = peer.held(&nope, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.to_string().contains("no role `nope`"), "{err}");

    // A policy that does not allow the path.
    peer.bao
        .write(
            None,
            "sys/policies/acl/meshca",
            serde_json::json!({ "policy": "path \"secret/*\" { capabilities = [\"read\"] }" }),
        )
        .await;
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("permission denied")
            && text.contains("path \"pki-default/issue/dataplane-proxies\""),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_route_every_request() {
    let peer = Peer::start(Auth::Token).await;
    let b = &peer.bao;
    b.write(None, "sys/namespaces/team-a", serde_json::json!({}))
        .await;
    let ns = Some("team-a");
    b.write(
        ns,
        "sys/mounts/pki-default",
        serde_json::json!({ "type": "pki" }),
    )
    .await;
    b.write(
        ns,
        "pki-default/root/generate/internal",
        serde_json::json!({ "common_name": "team-a root", "ttl": "87600h", "key_type": "ec" }),
    )
    .await;
    b.write(
        ns,
        "pki-default/roles/dataplane-proxies",
        meshca_tests::vault::role_body("default", ISSUE),
    )
    .await;
    b.write(
        ns,
        "sys/policies/acl/meshca",
        serde_json::json!({ "policy": "path \"pki-default/issue/dataplane-proxies\" { capabilities = [\"create\", \"update\"] }" }),
    )
    .await;
    let t = b
        .write(
            ns,
            "auth/token/create",
            serde_json::json!({ "policies": ["meshca"], "ttl": "1h" }),
        )
        .await;
    let token = t["auth"]["client_token"].as_str().unwrap().to_owned();

    let yaml = peer.mesh_yaml(
        "default",
        "issue",
        &token_auth_yaml(&token),
        "        namespace: team-a\n",
    );
    b.clear_requests();
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    check(&ca).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    let log = b.requests();
    assert!(
        log.iter()
            .any(|r| r.path == "pki-default/issue/dataplane-proxies"),
        "{log:?}"
    );
    assert!(log.iter().all(|r| r.namespace == "team-a/"), "{log:?}");

    // Without the namespace the token and the mount are unknown.
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_and_stopped_openbao_is_unavailable() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    issue(&ca, generated()).await.unwrap();

    peer.bao.seal().await;
    let err = issue(&ca, generated()).await.unwrap_err();
    assert!(
        err.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{}",
        chain(&err)
    );
    assert!(chain(&err).contains("sealed"), "{}", chain(&err));

    // Stopped: nothing listens any more.
    let address = peer.bao.address();
    drop(peer);
    let host_port = address.trim_start_matches("https://").to_owned();
    eventually(Duration::from_secs(5), || {
        let host_port = host_port.clone();
        async move { tokio::net::TcpStream::connect(host_port).await.is_err() }
    })
    .await;
    let err = issue(&ca, generated()).await.unwrap_err();
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
async fn tokens_that_cannot_live_on_are_reported_before_they_end() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;

    // Not renewable: validate says so while the token still works ...
    let token = peer.token("3s", false, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
    assert!(err.to_string().contains("not renewable"), "{err}");
    // ... and once OpenBao has let it expire, issuing says why.
    eventually(Duration::from_secs(10), || async {
        match issue(&ca, generated()).await {
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

    // Renewable, but its explicit max TTL stops renewals: reported once OpenBao caps a renewal.
    let token = peer.token("3s", true, "4s").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    issue(&ca, generated()).await.unwrap();
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
async fn role_cn_max_ttl_and_ca_end_say_what_to_fix() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let yaml = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    // A policy allowing every role of the mount, and of the short-lived mount below.
    peer.bao
        .write(
            None,
            "sys/policies/acl/meshca",
            serde_json::json!({ "policy": "path \"pki-default/issue/*\" { capabilities = [\"update\"] }\npath \"pki-brief/issue/*\" { capabilities = [\"update\"] }" }),
        )
        .await;
    let with_role =
        |role: &str| yaml.replace("role: dataplane-proxies\n", &format!("role: {role}\n"));

    // A role that requires a CN (OpenBao's default, as Vault's) and a backend without
    // commonName.
    let mut needs_cn = meshca_tests::vault::role_body("default", ISSUE);
    needs_cn.as_object_mut().unwrap().remove("require_cn");
    peer.bao
        .write(None, "pki-default/roles/needs-cn", needs_cn)
        .await;
    let ca = peer
        .held(&with_role("needs-cn"), DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
    assert!(
        err.to_string().contains("require_cn=false"),
        "{}",
        chain(&err)
    );

    // A lifetime over the role's max_ttl: OpenBao clamps, core tells the caller.
    let mut short = meshca_tests::vault::role_body("default", ISSUE);
    short["max_ttl"] = serde_json::json!("1h");
    short["ttl"] = serde_json::json!("1h");
    peer.bao.write(None, "pki-default/roles/short", short).await;
    let ca = peer
        .held(&with_role("short"), DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let issued = issue(&ca, generated())
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(issued.shortened());
    assert!(issued.not_after() <= std::time::SystemTime::now() + Duration::from_secs(3600));

    // A lifetime beyond the mount CA's end: refused with a hint.
    peer.bao
        .write(
            None,
            "sys/mounts/pki-brief",
            serde_json::json!({ "type": "pki" }),
        )
        .await;
    peer.bao
        .write(
            None,
            "pki-brief/root/generate/internal",
            serde_json::json!({ "common_name": "brief", "ttl": "2h", "key_type": "ec" }),
        )
        .await;
    peer.bao
        .write(
            None,
            "pki-brief/roles/dataplane-proxies",
            meshca_tests::vault::role_body("default", ISSUE),
        )
        .await;
    let brief = yaml.replace("pki: pki-default\n", "pki: pki-brief\n");
    let ca = peer.held(&brief, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(err.upstream_kind() == Some(UpstreamKind::Refused), "{err}");
    assert!(
        err.to_string().contains("dpCert.rotation.expiration"),
        "{}",
        chain(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_name_skip_verify_and_a_bad_ca_cert() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    // The address is https://127.0.0.1:<port>; the dev certificate names localhost and
    // 127.0.0.1.
    let base = peer.mesh_yaml("default", "issue", &token_auth_yaml(&token), "");
    let server_name = |name: &str| {
        base.replace(
            "        tls:\n",
            &format!("        tls:\n          serverName: {name}\n"),
        )
    };

    // A name the certificate does not have: the handshake fails, and the message says where
    // to look.
    let ca = peer
        .build(&server_name("vault.test"), DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let err = check(&ca).await.unwrap_err();
    assert!(
        err.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{err}"
    );
    assert!(chain(&err).contains("certificate"), "{}", chain(&err));
    assert!(chain(&err).contains("tls.serverName"), "{}", chain(&err));

    // The name it has, while connecting to the IP address: works.
    let ca = peer
        .build(&server_name("localhost"), DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    check(&ca).await.unwrap_or_else(|e| panic!("{}", chain(&e)));

    // skipVerify, with the wrong name: works, and says so at every start.
    let skip = server_name("vault.test").replace(
        "        tls:\n",
        "        tls:\n          skipVerify: true\n",
    );
    let ca = peer.build(&skip, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    assert!(
        ca.warnings().iter().any(|w| w.contains("tls.skipVerify")),
        "{:?}",
        ca.warnings()
    );
    check(&ca).await.unwrap_or_else(|e| panic!("{}", chain(&e)));

    // A bad caCert is a config error naming the field.
    let garbage = base.replace(
        &indent(&peer.bao.tls_ca_pem(), 14),
        "              not a certificate\n",
    );
    assert_ne!(garbage, base);
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

/// A Vault (OpenBao) agent's API proxy with `use_auto_auth_token = true`: forwards every
/// request to the server adding the agent's token. Plain HTTP on loopback, as the agent listens.
async fn agent(
    server_addr: String,
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
            let (http, server_addr, token) = (http.clone(), server_addr.clone(), token.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (http, server_addr, token) =
                            (http.clone(), server_addr.clone(), token.clone());
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
                                .request(method, format!("{server_addr}{path}"))
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
async fn behind_an_agent_meshca_sends_no_token() {
    let peer = Peer::start(Auth::Token).await;
    peer.mount("default", ISSUE).await;
    let token = peer.token("1h", true, "").await;
    let (agent_addr, _task) = agent(peer.bao.address(), peer.bao.tls_ca_pem(), token).await;
    let yaml = peer.mesh_yaml("default", "issue", "", "").replace(
        &format!("address: {}\n", peer.bao.address()),
        &format!("agentAddress: {agent_addr}\n"),
    );
    assert!(yaml.contains("agentAddress: http://127.0.0.1:"), "{yaml}");
    let ca = peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    peer.bao.clear_requests();
    check(&ca).await.unwrap_or_else(|e| panic!("{}", chain(&e)));
    issue(&ca, generated()).await.unwrap();
    // Every request went through the agent with its token: no login, no lookup, no renewal.
    let paths = peer.bao.request_paths();
    assert!(
        paths.contains(&"pki-default/issue/dataplane-proxies".to_owned()),
        "{paths:?}"
    );
    assert!(
        paths.iter().all(|p| p.starts_with("pki-default/")),
        "{paths:?}"
    );
}
