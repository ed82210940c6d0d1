//! A Mesh sent over the network (`ValidateBackend`) reaches only the upstreams the operator
//! allowed, borrows nothing the server holds on the way to any other, and its validation's work
//! is bounded by the validation slots (the hostile review of issue 21, holes 1, 2, 3 and 7).
//!
//! Every upstream here is a loopback "tap" that counts the connections it gets and sees them
//! close: the server's AWS identity (env credentials, an endpoint pointing at the tap), its
//! Kubernetes identity (a kubeconfig pointing at the tap) and its network position would all show
//! up there as a connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{bounded, builtin_mesh, operator_cert, Server};
use issuer_svc::proto::issuer_client::IssuerClient;
use issuer_svc::proto::{ValidateBackendRequest, ValidateBackendResponse};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpListener;

/// A loopback listener that accepts, never answers, and counts connections opened and closed.
struct Tap {
    port: u16,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Tap {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (o, c) = (opened.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                o.fetch_add(1, Ordering::SeqCst);
                let c = c.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    // Read (and drop) whatever comes until the peer closes; never answer.
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                    c.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            opened,
            closed,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

async fn validate(
    client: &mut IssuerClient<tonic::transport::Channel>,
    yaml: &str,
) -> ValidateBackendResponse {
    client
        .validate_backend(ValidateBackendRequest {
            mesh_yaml: yaml.into(),
            skip_test_certificate: false,
        })
        .await
        .unwrap()
        .into_inner()
}

fn vault_mesh(from_cp: &str) -> String {
    format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: v\n  backends:\n    - name: v\n      type: vault\n      dpCert:\n        requestTimeout: 50s\n      conf:\n        fromCp:\n{from_cp}"
    )
}

fn indent(lines: &str) -> String {
    lines.lines().map(|l| format!("          {l}\n")).collect()
}

#[tokio::test]
async fn a_remote_mesh_contacts_no_upstream_the_operator_did_not_allow() {
    let tap = Tap::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let kubeconfig = meshca_tests::certmanager::write_kubeconfig(tmp.path(), &tap.url());
    let endpoint = format!("http://127.0.0.1:{}", tap.port);
    let authz = tmp.path().join("authz.yaml");
    std::fs::write(&authz, "callers:\n  - id: zone-cp\n    meshes: [default]\n").unwrap();
    let server = {
        let (kubeconfig, endpoint, authz) = (kubeconfig.clone(), endpoint.clone(), authz.clone());
        tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            Server::start_with_env(
                dir,
                data,
                &[(
                    "default.yaml",
                    &builtin_mesh("default", &["ca-1"], "ca-1", "1h"),
                )],
                &["--authz", authz.to_str().unwrap()],
                &[
                    // The server's own identities, all pointing at the tap.
                    ("KUBECONFIG", kubeconfig.to_str().unwrap()),
                    ("AWS_ENDPOINT_URL", endpoint.as_str()),
                    ("AWS_ACCESS_KEY_ID", "AKIASERVERIDENTITY00"),
                    (
                        "AWS_SECRET_ACCESS_KEY",
                        "server/secret/key/never/lent/0000000000",
                    ),
                    ("AWS_REGION", "eu-west-1"),
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                ],
            )
        })
        .await
        .unwrap()
    };
    bounded(120, async {
        // An operator allowed on `default` only, as the review was.
        let (c, k) = operator_cert(&server, "zone-cp");
        let mut zone = server.client_with(&c, &k).await;
        let address = tap.url();

        // 1. Vault AWS auth: the server's AWS identity, signed for a caller-chosen header and
        //    role, posted to the caller's address. Not contacted; nothing signed or sent.
        let aws = vault_mesh(&indent(&format!(
            "address: {address}\npki: kuma-pki-default\nrole: dp\nauth:\n  aws:\n    role: victim\n    iamServerIdHeader: vault.corp.example\n"
        )));
        // 2. The mesh's own Vault token (`secret:`) toward any address: not read, not sent.
        let secret = vault_mesh(&indent(&format!(
            "address: {address}\npki: kuma-pki-default\nrole: dp\ntls:\n  caCert:\n    inlineString: x\nauth:\n  token:\n    secret: vault-token\n"
        )));
        // 3. agentAddress: a POST to any host.
        let agent = vault_mesh(&indent(&format!(
            "agentAddress: {address}\npki: kuma-pki-default\nrole: dp\n"
        )));
        // ACM PCA with the server's AWS credentials, cert-manager with its service account
        // (and autoApprove).
        let acmpca = "type: Mesh\nname: default\nmtls:\n  enabledBackend: a\n  backends:\n    - name: a\n      type: acmpca\n      conf:\n        arn: arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/0f1e2d3c-aaaa-bbbb-cccc-000000000000\n";
        let certmanager = "type: Mesh\nname: default\nmtls:\n  enabledBackend: c\n  backends:\n    - name: c\n      type: certmanager\n      conf:\n        issuerRef:\n          kind: ClusterIssuer\n          name: corp-ca\n        autoApprove: true\n";
        for (what, yaml, flag) in [
            ("vault aws auth", aws.as_str(), "--allow-vault-address"),
            ("vault secret token", secret.as_str(), "--allow-vault-address"),
            ("vault agent", agent.as_str(), "--allow-vault-address"),
            ("acmpca", acmpca, "--allow-acmpca-arn"),
            ("certmanager", certmanager, "--allow-certmanager-issuer"),
        ] {
            let r = validate(&mut zone, yaml).await;
            assert!(r.violations.is_empty(), "{what}: {r:?}");
            assert!(r.test_certificate.is_none(), "{what}: {r:?}");
            assert_eq!(r.not_contacted.len(), 1, "{what}: {r:?}");
            let n = &r.not_contacted[0];
            assert_eq!(n.field, "mtls.backends[0]", "{what}");
            assert!(n.reason.contains("not contacted") && n.reason.contains(flag), "{what}: {n:?}");
            assert!(
                r.warnings.iter().any(|w| w.contains(flag)),
                "{what}: the answer says so in its warnings too: {r:?}"
            );
        }

        // Whatever the allow-list: no http://, no skipVerify, no path tricks.
        let http = vault_mesh(&indent(
            "address: http://127.0.0.1:1\npki: kuma-pki-default\nrole: dp\nauth:\n  token:\n    inlineString: s.x\n",
        ));
        let r = validate(&mut zone, &http).await;
        assert!(!r.ok);
        assert!(
            r.violations.iter().any(|v| v.field == "mtls.backends[0].conf.fromCp.address"
                && v.message.contains("http:// is not accepted")),
            "{r:?}"
        );
        let skip = vault_mesh(&indent(&format!(
            "address: {address}\npki: kuma-pki-default\nrole: dp\ntls:\n  skipVerify: true\nauth:\n  token:\n    inlineString: s.x\n"
        )));
        let r = validate(&mut zone, &skip).await;
        assert!(
            r.violations.iter().any(|v| v.field == "mtls.backends[0].conf.fromCp.tls.skipVerify"),
            "{r:?}"
        );
        for (pki, role) in [
            ("'../../sys/raw?x='", "dp"),
            ("kuma-pki-default", "'dp?list=true'"),
            ("'pki/%2e%2e/sys'", "dp"),
            ("'pki#frag'", "dp"),
            ("'pki//x'", "dp"),
            ("kuma-pki-default", "'a/../b'"),
        ] {
            let yaml = vault_mesh(&indent(&format!(
                "agentAddress: {address}\npki: {pki}\nrole: {role}\n"
            )));
            let r = validate(&mut zone, &yaml).await;
            assert!(!r.ok, "{pki} {role}: {r:?}");
            assert!(
                r.violations.iter().any(|v| v.field.ends_with("fromCp.pki")
                    || v.field.ends_with("fromCp.role")),
                "{pki} {role}: {r:?}"
            );
        }
        // file: and env: stay refused for a backend that is not built.
        let file = vault_mesh(&indent(&format!(
            "address: {address}\npki: kuma-pki-default\nrole: dp\nauth:\n  token:\n    file: /etc/hostname\n"
        )));
        let r = validate(&mut zone, &file).await;
        assert!(
            r.violations.iter().any(|v| v.field == "mtls.backends[0].conf.fromCp.auth.token"
                && v.message.contains("file data sources are not allowed")),
            "{r:?}"
        );

        // Nothing reached the tap: no STS signature, no token, no CertificateRequest.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(tap.opened(), 0, "a remote Mesh made the server connect");
        // The operator's own Mesh is not restricted: the CLI validates the same YAML locally
        // (and so would reach the tap) — not run here, the point is the server's answer above.
    })
    .await;
    drop(server);
}

#[tokio::test]
async fn an_allowed_vault_is_contacted_and_a_cancelled_validation_lets_go_of_it() {
    let tap = Tap::start().await;
    let allow = tap.url();
    let server =
        tokio::task::spawn_blocking(move || Server::start(&[], &["--allow-vault-address", &allow]))
            .await
            .unwrap();
    bounded(120, async {
        let admin = server.admin().await;
        // A Vault that accepts and never answers: a validation waits on it (requestTimeout 50s).
        let yaml = vault_mesh(&indent(&format!(
            "address: {}\npki: kuma-pki-default\nrole: dp\nauth:\n  token:\n    inlineString: s.inline-token\n",
            tap.url()
        )));
        // Two callers start a validation each (the server runs two at once) and give up.
        for round in 1..=2 {
            let mut c = admin.clone();
            let y = yaml.clone();
            let call = tokio::spawn(async move { validate(&mut c, &y).await });
            // Allowed: the server does contact it.
            let mut waited = 0;
            while tap.opened() < round && waited < 300 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                waited += 1;
            }
            assert_eq!(tap.opened(), round, "the allowed Vault was not contacted");
            call.abort();
        }
        // The cancelled validations let go of the upstream: their connections close long before
        // the 50 s requestTimeout (or the 60 s validation limit) would have ended them.
        let mut waited = 0;
        while tap.closed() < 2 && waited < 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            waited += 1;
        }
        assert_eq!(
            tap.closed(),
            2,
            "cancelled validations kept their upstream connections open"
        );
        // And their slots are free again: a third validation is answered.
        let mut c = admin.clone();
        let r = c
            .validate_backend(ValidateBackendRequest {
                mesh_yaml: builtin_mesh("default", &["ca-1"], "ca-1", "1h"),
                skip_test_certificate: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.ok, "{r:?}");
    })
    .await;
}

#[tokio::test]
async fn hostile_yaml_is_refused_by_depth_whatever_hides_it() {
    let server = tokio::task::spawn_blocking(|| Server::start(&[], &[]))
        .await
        .unwrap();
    bounded(120, async {
        let mut admin = server.admin().await;
        // The review's bypass: a quote inside a plain scalar hid the nesting from the pre-check.
        let deep = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
        let bypass = format!("type: Mesh\nname: x '\nmtls: {deep}\nlabels: {{a: 'y'}}\n");
        // And the largest input accepted, all of it nesting behind a quote.
        let filler = (super_size() - 64) / 2;
        let big = format!(
            "type: Mesh\nname: x '\nmtls: {}{}\n",
            "[".repeat(filler),
            "]".repeat(filler)
        );
        for yaml in [bypass, big] {
            let r = validate(&mut admin, &yaml).await;
            assert!(!r.ok);
            assert_eq!(r.violations[0].field, "(yaml)", "{r:?}");
            assert!(r.violations[0].message.contains("deeper than 64"), "{r:?}");
        }
        assert_eq!(server.http_get("/healthz").0, "HTTP/1.1 200 OK");
    })
    .await;
}

fn super_size() -> usize {
    ca_core::config::MAX_YAML_BYTES
}
