//! Issue, health, CLI, validation and authorization against the real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use issuer_svc::proto::{GetTrustBundleRequest, ValidateBackendRequest};
use tonic::Code;

#[tokio::test]
async fn zero_config_issue_verifies_with_openssl() {
    let server = Server::start(&[], &[]);
    bounded(60, async {
        // The CLI with its defaults (bootstrap admin from the data dir).
        let out = server.dir.path().join("certs");
        let (ok, stdout, stderr) = run_cli(&[
            "issue",
            "--server",
            &server.grpc,
            "--data-dir",
            server.data_dir.to_str().unwrap(),
            "--mesh",
            "default",
            "--tag",
            "kuma.io/service=web",
            "--tag",
            "version=v1",
            "--out-dir",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "{stdout}{stderr}");
        assert!(stdout.contains("spiffe://default/web"), "{stdout}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let verify = std::process::Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(out.join("bundle.pem"))
            .arg(out.join("cert.pem"))
            .output()
            .unwrap();
        assert!(verify.status.success(), "{verify:?}");

        let (ok, stdout, _) = run_cli(&[
            "inspect",
            out.join("cert.pem").to_str().unwrap(),
            "--bundle",
            out.join("bundle.pem").to_str().unwrap(),
        ]);
        assert!(ok, "{stdout}");
        assert!(stdout.contains("URI:kuma://version/v1"), "{stdout}");
        assert!(stdout.contains("chains to"), "{stdout}");
        assert!(stdout.contains("SHA-256:"), "{stdout}");
        // A bundle it does not chain to: non-zero.
        let (ok, _, _) = run_cli(&[
            "inspect",
            out.join("cert.pem").to_str().unwrap(),
            "--bundle",
            server.tls_dir().join("ca.pem").to_str().unwrap(),
        ]);
        assert!(!ok);

        // gRPC directly: generated key, bundle, rotate time inside the lifetime.
        let mut client = server.admin().await;
        let c = client
            .issue_certificate(request("default", &[("kuma.io/service", "api")]))
            .await
            .unwrap()
            .into_inner()
            .certificate
            .unwrap();
        assert!(c.private_key_pem.contains("PRIVATE KEY"));
        assert!(c.not_before < c.rotate_at && c.rotate_at < c.not_after);
        assert_eq!(c.uri_sans[0], "spiffe://default/api");
        openssl_verify(server.dir.path(), &c.cert_chain_pem, &c.trust_bundle_pem);

        // Bad input maps to InvalidArgument / NotFound.
        let err = client
            .issue_certificate(request("default", &[("version", "v1")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("kuma.io/service"), "{err:?}");
        let mut bad_csr = request("default", &[("kuma.io/service", "api")]);
        bad_csr.csr = b"not a csr".to_vec();
        let err = client.issue_certificate(bad_csr).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        let err = client
            .issue_certificate(request("other", &[("kuma.io/service", "api")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{err:?}");

        // Standard health service.
        let channel = server
            .channel_with(
                &server.tls_dir().join("admin.pem"),
                &server.tls_dir().join("admin-key.pem"),
            )
            .await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "meshca.v1.Issuer".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );

        // Server reflection lists the API.
        use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1::ServerReflectionRequest;
        let channel = server
            .channel_with(
                &server.tls_dir().join("admin.pem"),
                &server.tls_dir().join("admin-key.pem"),
            )
            .await;
        let mut reflection = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut resp = reflection
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::ListServicesResponse(list)) =
            resp.message().await.unwrap().unwrap().message_response
        else {
            panic!("unexpected reflection answer");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        assert!(names.contains(&"meshca.v1.Issuer".to_string()), "{names:?}");

        // Metrics and probes.
        assert_eq!(server.http_get("/readyz").0, "HTTP/1.1 200 OK");
        assert_eq!(server.http_get("/healthz").0, "HTTP/1.1 200 OK");
        let issued = server
            .metric("meshca_issue_duration_seconds_count{mesh=\"default\",backend=\"ca-1\"}")
            .unwrap();
        assert!(issued >= 2.0, "{issued}");
        let failures = server
            .metric("meshca_issue_failures_total{mesh=\"default\",reason=\"invalid_argument\"}")
            .unwrap();
        assert!(failures >= 1.0);
    })
    .await;
}

#[tokio::test]
async fn plaintext_only_on_loopback_and_kubernetes_store_refused() {
    let (ok, _, stderr) = run_cli(&[
        "serve",
        "--insecure-plaintext",
        "--listen",
        "0.0.0.0:0",
        "--data-dir",
        "/nonexistent/never",
    ]);
    assert!(!ok);
    assert!(stderr.contains("only on a loopback address"), "{stderr}");
    // --store kubernetes without any Kubernetes configuration: says so before writing anything.
    let (ok, _, stderr) = run_cli(&[
        "serve",
        "--store",
        "kubernetes",
        "--data-dir",
        "/nonexistent/x",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("--store kubernetes: ") && stderr.contains("kubeconfig"),
        "{stderr}"
    );
}

const GOOD: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n";
const BAD: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-9\n  backends:\n    - name: ca-1\n      type: builtin\n      conf:\n        caCert:\n          RSAbits: 1000\n";
/// A certmanager backend on a machine without Kubernetes (the tests' binary gets a kubeconfig
/// path that does not exist): refused by the test certificate, saying so.
const CERTMANAGER: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: v\n  backends:\n    - name: v\n      type: certmanager\n      conf:\n        issuerRef:\n          name: mesh-issuer\n";

/// A valid enabled builtin backend and a disabled provided one whose `cert` is no PEM (Kuma's
/// provided manager_test "config with invalid cert").
const BROKEN_DISABLED: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n  - name: ca-2\n    type: provided\n    conf:\n      cert:\n        inline: dGVzdA==\n      key:\n        inline: dGVzdA==\n";

#[tokio::test]
async fn validate_backend_over_grpc_and_cli() {
    // The certmanager Mesh below names an issuer the operator allows, so it is contacted (and
    // fails: there is no Kubernetes here); see remote_mesh.rs for the issuers it does not allow.
    let server = Server::start(&[], &["--allow-certmanager-issuer", "Issuer/mesh-issuer"]);
    bounded(60, async {
        let mut client = server.admin().await;
        let ok = client
            .validate_backend(ValidateBackendRequest {
                mesh_yaml: GOOD.into(),
                skip_test_certificate: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ok.ok, "{ok:?}");
        let t = ok.test_certificate.unwrap();
        assert_eq!(t.backend, "ca-1");
        assert_eq!(t.uri_sans[0], "spiffe://default/meshca-validation");

        let bad = client
            .validate_backend(ValidateBackendRequest {
                mesh_yaml: BAD.into(),
                skip_test_certificate: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!bad.ok);
        let fields: Vec<&str> = bad.violations.iter().map(|v| v.field.as_str()).collect();
        assert!(fields.contains(&"mtls.enabledBackend"), "{bad:?}");
        assert!(
            fields.contains(&"mtls.backends[0].conf.caCert.RSAbits"),
            "{bad:?}"
        );

        let certmanager = client
            .validate_backend(ValidateBackendRequest {
                mesh_yaml: CERTMANAGER.into(),
                skip_test_certificate: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!certmanager.ok);
        assert!(
            format!("{certmanager:?}").contains(NO_KUBERNETES),
            "{certmanager:?}"
        );
        assert!(certmanager.not_contacted.is_empty(), "{certmanager:?}");
        // Another issuer: checked, not contacted, no test certificate.
        let other = client
            .validate_backend(ValidateBackendRequest {
                mesh_yaml: CERTMANAGER.replace("mesh-issuer", "other-issuer"),
                skip_test_certificate: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(other.violations.is_empty(), "{other:?}");
        assert!(other.test_certificate.is_none(), "{other:?}");
        assert_eq!(other.not_contacted.len(), 1, "{other:?}");

        // Kuma parity: a disabled provided backend is checked too, at its field.
        let disabled = client
            .validate_backend(ValidateBackendRequest {
                mesh_yaml: BROKEN_DISABLED.into(),
                skip_test_certificate: false,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!disabled.ok, "{disabled:?}");
        assert_eq!(disabled.violations.len(), 1, "{disabled:?}");
        assert_eq!(disabled.violations[0].field, "mtls.backends[1].conf.cert");
        assert_eq!(
            disabled.violations[0].message,
            "not a valid TLS key pair: tls: failed to find any PEM data in certificate input"
        );
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    for (name, text, want_ok, want) in [
        ("good.yaml", GOOD, true, "mesh default: OK"),
        (
            "bad.yaml",
            BAD,
            false,
            "mtls.backends[0].conf.caCert.RSAbits",
        ),
        ("certmanager.yaml", CERTMANAGER, false, NO_KUBERNETES),
        (
            "disabled.yaml",
            BROKEN_DISABLED,
            false,
            "  mtls.backends[1].conf.cert: not a valid TLS key pair",
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let (ok, stdout, stderr) = run_cli(&["validate", "--config", p.to_str().unwrap()]);
        assert_eq!(ok, want_ok, "{name}: {stdout}{stderr}");
        assert!(stdout.contains(want), "{name}: {stdout}");
    }
    let p = dir.path().join("good.yaml");
    let (ok, stdout, _) = run_cli(&[
        "validate",
        "--config",
        p.to_str().unwrap(),
        "--no-test-cert",
    ]);
    assert!(ok);
    assert!(!stdout.contains("test certificate"), "{stdout}");
}

#[tokio::test]
async fn authorization_refuses_strangers_and_other_identities() {
    let authz_dir = tempfile::tempdir().unwrap();
    let authz = authz_dir.path().join("authz.yaml");
    std::fs::write(&authz, "callers:\n  - id: zone-cp\n    meshes: [default]\n").unwrap();
    let server = Server::start(
        &[
            (
                "default.yaml",
                &builtin_mesh("default", &["ca-1"], "ca-1", "1h"),
            ),
            (
                "other.yaml",
                &builtin_mesh("other", &["ca-1"], "ca-1", "1h"),
            ),
        ],
        &["--authz", authz.to_str().unwrap()],
    );
    bounded(60, async {
        // An operator on the list, for its mesh only.
        let (c, k) = operator_cert(&server, "zone-cp");
        let mut zone = server.client_with(&c, &k).await;
        zone.issue_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap();
        let err = zone
            .issue_certificate(request("other", &[("kuma.io/service", "web")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

        // A certificate from the right CA but not on the list.
        let (c, k) = operator_cert(&server, "stranger");
        let mut stranger = server.client_with(&c, &k).await;
        let err = stranger
            .issue_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        let err = stranger
            .get_trust_bundle(GetTrustBundleRequest {
                mesh: "default".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);

        // A data plane with its mesh certificate: its own identity only.
        let mut admin = server.admin().await;
        let tags = [("kuma.io/service", "web"), ("version", "v1")];
        let dp = admin
            .issue_certificate(request("default", &tags))
            .await
            .unwrap()
            .into_inner()
            .certificate
            .unwrap();
        let cert = server.dir.path().join("dp.pem");
        let key = server.dir.path().join("dp-key.pem");
        std::fs::write(&cert, &dp.cert_chain_pem).unwrap();
        std::fs::write(&key, &dp.private_key_pem).unwrap();
        let mut me = server.client_with(&cert, &key).await;
        let renewed = me
            .issue_certificate(request(
                "default",
                &[("version", "v1"), ("kuma.io/service", "web")],
            ))
            .await
            .unwrap()
            .into_inner()
            .certificate
            .unwrap();
        assert_eq!(renewed.uri_sans, dp.uri_sans);
        me.get_trust_bundle(GetTrustBundleRequest {
            mesh: "default".into(),
        })
        .await
        .unwrap();
        for (mesh, tags) in [
            ("default", vec![("kuma.io/service", "db")]),
            ("default", vec![("kuma.io/service", "web")]),
            (
                "default",
                vec![("kuma.io/service", "web"), ("version", "v2")],
            ),
            ("other", vec![("kuma.io/service", "web"), ("version", "v1")]),
        ] {
            let err = me
                .issue_certificate(request(mesh, &tags))
                .await
                .unwrap_err();
            assert_eq!(
                err.code(),
                Code::PermissionDenied,
                "{mesh} {tags:?}: {err:?}"
            );
        }
        let err = me
            .validate_backend(ValidateBackendRequest {
                mesh_yaml: GOOD.into(),
                skip_test_certificate: true,
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    })
    .await;
}

#[tokio::test]
async fn mtls_is_mandatory_and_plaintext_is_explicit() {
    let server = Server::start(&[], &[]);
    bounded(60, async {
        // TLS without a client certificate (and without a bootstrap token): refused.
        let ca = std::fs::read(server.tls_dir().join("ca.pem")).unwrap();
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        let result = async {
            let channel =
                tonic::transport::Endpoint::from_shared(format!("https://{}", server.grpc))
                    .unwrap()
                    .tls_config(tls)
                    .unwrap()
                    .connect()
                    .await
                    .map_err(|e| e.to_string())?;
            issuer_svc::proto::issuer_client::IssuerClient::new(channel)
                .issue_certificate(request("default", &[("kuma.io/service", "web")]))
                .await
                .map_err(|e| format!("{:?}: {}", e.code(), e.message()))
        }
        .await;
        let err = result.expect_err("a client without a certificate was served");
        assert!(err.starts_with("PermissionDenied"), "{err}");
    })
    .await;
    drop(server);

    let server = Server::start(&[], &["--insecure-plaintext"]);
    let out = server.dir.path().join("certs");
    let (ok, stdout, stderr) = run_cli(&[
        "issue",
        "--server",
        &server.grpc,
        "--plaintext",
        "--tag",
        "kuma.io/service=web",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(out.join("key.pem").exists());
}

/// `meshca issue --svid`: an X.509-SVID, from the server and locally from a Mesh file; an
/// identity an SVID cannot carry is refused naming the tags.
#[tokio::test]
async fn issue_svid_gives_one_spiffe_id() {
    let server = Server::start(&[], &[]);
    let mesh = server.dir.path().join("mesh.yaml");
    std::fs::write(&mesh, builtin_mesh("default", &["ca-1"], "ca-1", "1h")).unwrap();
    bounded(60, async {
        for (how, extra) in [
            ("server", vec!["--server", server.grpc.as_str()]),
            ("local", vec!["--config", mesh.to_str().unwrap()]),
        ] {
            let out = server.dir.path().join(format!("svid-{how}"));
            let mut args = vec!["issue", "--svid", "--tag", "kuma.io/service=web"];
            args.extend(&extra);
            args.extend([
                "--data-dir",
                server.data_dir.to_str().unwrap(),
                "--out-dir",
                out.to_str().unwrap(),
            ]);
            let (ok, stdout, stderr) = run_cli(&args);
            assert!(ok, "{how}: {stdout}{stderr}");
            let chain = std::fs::read_to_string(out.join("cert.pem")).unwrap();
            let leaf = pem::parse_many(&chain).unwrap().remove(0);
            let sans = ca_core::x509::describe_sans(leaf.contents()).unwrap();
            assert_eq!(sans, ["URI:spiffe://default/web"], "{how}");

            args.extend(["--tag", "version=v1"]);
            let (ok, _, stderr) = run_cli(&args);
            assert!(!ok, "{how}");
            assert!(
                stderr.contains("an X.509-SVID carries exactly one SPIFFE ID"),
                "{how}: {stderr}"
            );
        }
    })
    .await;
}

#[test]
fn a_first_start_says_once_that_it_created_the_ca() {
    // The dry runs before applying a Mesh build its backends over an in-memory overlay; they
    // used to log "created builtin CA key" as if they had persisted it, three times for one CA.
    let server = Server::start(
        &[(
            "default.yaml",
            &builtin_mesh("default", &["ca-1"], "ca-1", "1h"),
        )],
        &[],
    );
    let log = server.log();
    for said in ["created builtin CA key", "created builtin CA certificate"] {
        assert_eq!(log.matches(said).count(), 1, "{said:?} in:\n{log}");
    }
    drop(server);
}
