//! Regression tests for the hostile review (issue 8): each hole, reproduced against the real
//! binary over gRPC where it was reachable that way.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{bounded, builtin_mesh, operator_cert, request, run_cli, Server, BIN};
use issuer_svc::proto::issuer_client::IssuerClient;
use issuer_svc::proto::{GetTrustBundleRequest, ValidateBackendRequest};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use tonic::Code;

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d
}

/// A CA of our own (what an operator passes as `--client-ca`), optionally a sub-CA of `parent`.
struct TestCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn root(cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).unwrap();
        let pem = cert.pem();
        Self {
            issuer: Issuer::from_ca_cert_pem(&pem, key).unwrap(),
            cert_pem: pem,
        }
    }

    /// The bootstrap CA of a running server, from its data directory.
    fn bootstrap_of(server: &Server) -> Self {
        let tls = server.tls_dir();
        let pem = std::fs::read_to_string(tls.join("ca.pem")).unwrap();
        let key =
            KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca-key.pem")).unwrap()).unwrap();
        Self {
            issuer: Issuer::from_ca_cert_pem(&pem, key).unwrap(),
            cert_pem: pem,
        }
    }

    fn sub_ca(&self, cn: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let pem = cert.pem();
        Self {
            issuer: Issuer::from_ca_cert_pem(&pem, key).unwrap(),
            cert_pem: pem,
        }
    }

    /// A client certificate with CN `cn`; the file holds the leaf and then `chain`.
    fn client(&self, dir: &Path, cn: &str, chain: &[&TestCa]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = dn(cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let mut pem = cert.pem();
        for c in chain {
            pem.push_str(&c.cert_pem);
        }
        let n = rand_name();
        let (c, k) = (
            dir.join(format!("{n}.pem")),
            dir.join(format!("{n}-key.pem")),
        );
        std::fs::write(&c, pem).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }
}

fn rand_name() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("client-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Issues as the client in (cert, key); the gRPC code of the answer, or of the connection error.
async fn issue_as(server: &Server, cert: &Path, key: &Path, mesh: &str) -> Code {
    let Ok(channel) = server.try_channel_with(cert, key).await else {
        return Code::Unavailable;
    };
    match IssuerClient::new(channel)
        .issue_certificate(request(mesh, &[("kuma.io/service", "web")]))
        .await
    {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn admin_and_operators_are_identified_by_key_not_by_name() {
    // Zone 1: another install, with its own bootstrap CA named exactly like ours.
    let z1 = Server::start(&[], &[]);
    let client_ca = TestCa::root("operators");
    let dir = tempfile::tempdir().unwrap();
    let client_cas = dir.path().join("client-cas.pem");
    let z1_ca = std::fs::read_to_string(z1.tls_dir().join("ca.pem")).unwrap();
    std::fs::write(&client_cas, format!("{z1_ca}{}", client_ca.cert_pem)).unwrap();
    let operators_pem = dir.path().join("operators.pem");
    std::fs::write(&operators_pem, &client_ca.cert_pem).unwrap();
    let authz = dir.path().join("authz.yaml");
    std::fs::write(
        &authz,
        "callers:\n  - id: someone\n    meshes: [default]\n  - id: zone-cp\n    meshes: [default]\n  - id: ext-cp\n    ca: operators.pem\n    meshes: [default]\n",
    )
    .unwrap();
    let z2 = Server::start(
        &[],
        &[
            "--authz",
            authz.to_str().unwrap(),
            "--client-ca",
            client_cas.to_str().unwrap(),
        ],
    );
    bounded(90, async {
        // The reproduction from the review: zone 1's admin certificate is nobody on zone 2.
        let tls1 = z1.tls_dir();
        let code = issue_as(
            &z2,
            &tls1.join("admin.pem"),
            &tls1.join("admin-key.pem"),
            "default",
        )
        .await;
        assert_eq!(code, Code::PermissionDenied);
        let (ok, _, stderr) = run_cli(&[
            "issue",
            "--server",
            &z2.grpc,
            "--ca-cert",
            z2.tls_dir().join("ca.pem").to_str().unwrap(),
            "--client-cert",
            tls1.join("admin.pem").to_str().unwrap(),
            "--client-key",
            tls1.join("admin-key.pem").to_str().unwrap(),
            "--mesh",
            "default",
            "--tag",
            "kuma.io/service=web",
            "--out-dir",
            dir.path().join("out").to_str().unwrap(),
        ]);
        assert!(!ok, "{stderr}");
        assert!(stderr.contains("permission denied"), "{stderr}");

        // A sub-CA under a --client-ca, named like the bootstrap CA, minting `meshca-admin`.
        let fake = client_ca.sub_ca("meshca bootstrap CA");
        let (c, k) = fake.client(dir.path(), "meshca-admin", &[&fake]);
        assert_eq!(
            issue_as(&z2, &c, &k, "default").await,
            Code::PermissionDenied
        );

        // The real admin still is one.
        let tls2 = z2.tls_dir();
        let code = issue_as(
            &z2,
            &tls2.join("admin.pem"),
            &tls2.join("admin-key.pem"),
            "other-mesh-is-not-served",
        )
        .await;
        assert_eq!(code, Code::NotFound, "admin passes authorization");

        // The same CN under two CAs is two callers: `zone-cp` is listed for the bootstrap CA
        // only, `ext-cp` for the operators' CA only.
        let (c, k) = operator_cert(&z2, "zone-cp");
        assert_eq!(issue_as(&z2, &c, &k, "default").await, Code::Ok);
        let (c, k) = client_ca.client(dir.path(), "zone-cp", &[]);
        assert_eq!(
            issue_as(&z2, &c, &k, "default").await,
            Code::PermissionDenied
        );
        let (c, k) = client_ca.client(dir.path(), "ext-cp", &[]);
        assert_eq!(issue_as(&z2, &c, &k, "default").await, Code::Ok);
        let (c, k) = operator_cert(&z2, "ext-cp");
        assert_eq!(
            issue_as(&z2, &c, &k, "default").await,
            Code::PermissionDenied
        );

        // The bootstrap CA has pathlen 0: a sub-CA under it is refused, as openssl refuses it.
        let bootstrap = TestCa::bootstrap_of(&z2);
        let sub = bootstrap.sub_ca("meshca bootstrap CA");
        let (c, k) = sub.client(dir.path(), "meshca-admin", &[&sub]);
        let code = issue_as(&z2, &c, &k, "default").await;
        assert_ne!(code, Code::Ok);
        assert_ne!(code, Code::NotFound);
        let sub_pem = dir.path().join("sub.pem");
        std::fs::write(&sub_pem, &sub.cert_pem).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(tls2.join("ca.pem"))
            .arg("-untrusted")
            .arg(&sub_pem)
            .arg(&c)
            .output()
            .unwrap();
        assert!(!out.status.success(), "openssl refuses it too");
    })
    .await;
}

const PROVIDED_FROM_FILES: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: provided\n      conf:\n        cert: {file: CERT}\n        key: {file: KEY}\n";

fn provided(cert: &str, key: &str) -> String {
    PROVIDED_FROM_FILES
        .replace("CERT", cert)
        .replace("KEY", key)
}

async fn validate(
    client: &mut IssuerClient<tonic::transport::Channel>,
    yaml: &str,
) -> Result<issuer_svc::proto::ValidateBackendResponse, tonic::Status> {
    client
        .validate_backend(ValidateBackendRequest {
            mesh_yaml: yaml.into(),
            skip_test_certificate: false,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_mesh_from_the_network_cannot_reach_the_servers_files_or_environment() {
    let dir = tempfile::tempdir().unwrap();
    let authz = dir.path().join("authz.yaml");
    std::fs::write(&authz, "callers:\n  - id: zone-cp\n    meshes: [default]\n").unwrap();
    let server = Server::start(
        &[
            (
                "default.yaml",
                &builtin_mesh("default", &["ca-1"], "ca-1", "1h"),
            ),
            (
                "payments.yaml",
                &builtin_mesh("payments", &["ca-1"], "ca-1", "1h"),
            ),
        ],
        &["--authz", authz.to_str().unwrap()],
    );
    let secrets = server.data_dir.join("secrets").join("payments");
    let key = secrets.join("payments.ca-builtin-key-ca-1");
    let cert = secrets.join("payments.ca-builtin-cert-ca-1");
    assert!(
        key.exists(),
        "the payments CA key is where the review found it"
    );
    bounded(60, async {
        let (c, k) = operator_cert(&server, "zone-cp");
        let mut zone = server.client_with(&c, &k).await;
        // Payments' CA key through a provided backend of mesh `default`: refused, unread.
        let r = validate(&mut zone, &provided(cert.to_str().unwrap(), key.to_str().unwrap()))
            .await
            .unwrap();
        assert!(!r.ok);
        assert!(r.test_certificate.is_none());
        assert!(
            r.violations[0].message.contains("file data sources are not allowed"),
            "{r:?}"
        );
        // /dev/zero and env: refused before anything is read.
        let r = validate(&mut zone, &provided("/dev/zero", "/dev/zero")).await.unwrap();
        assert!(r.violations[0].message.contains("file data sources are not allowed"), "{r:?}");
        let env = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: provided\n      conf:\n        cert: {env: HOME}\n        key: {env: HOME}\n";
        let r = validate(&mut zone, env).await.unwrap();
        assert!(r.violations[0].message.contains("env data sources are not allowed"), "{r:?}");
        // A Mesh for a mesh the caller is not allowed: denied, whatever it holds.
        let other = provided("/dev/zero", "/dev/zero").replace("name: default", "name: payments");
        assert_eq!(
            validate(&mut zone, &other).await.unwrap_err().code(),
            Code::PermissionDenied
        );
        // The operator's own files still work from the CLI.
        let (ok, stdout, stderr) = {
            let f = dir.path().join("local.yaml");
            std::fs::write(&f, provided(cert.to_str().unwrap(), key.to_str().unwrap()).replace("name: default", "name: payments")).unwrap();
            run_cli(&["validate", "--config", f.to_str().unwrap()])
        };
        assert!(ok, "{stdout}{stderr}");
    })
    .await;
}

#[tokio::test]
async fn allowed_file_sources_are_bounded_and_say_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let allowed = dir.path().join("allowed");
    std::fs::create_dir(&allowed).unwrap();
    let fifo = allowed.join("fifo.pem");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let outside = dir.path().join("outside.pem");
    std::fs::write(&outside, "not for callers").unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("link.pem")).unwrap();
    // The data directory inside the allowed one: refused at start.
    let (ok, _, stderr) = run_cli(&[
        "serve",
        "--data-dir",
        allowed.join("data").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--allow-file-sources",
        allowed.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(stderr.contains("overlaps the data directory"), "{stderr}");

    let server = Server::start(&[], &["--allow-file-sources", allowed.to_str().unwrap()]);
    bounded(60, async {
        let mut admin = server.admin().await;
        let canonical = allowed.canonicalize().unwrap();
        // Two FIFO validations at once: answered, and the server stays healthy meanwhile.
        let fifo = canonical.join("fifo.pem");
        let yaml = provided(fifo.to_str().unwrap(), fifo.to_str().unwrap());
        let started = Instant::now();
        let (mut c1, mut c2) = (admin.clone(), admin.clone());
        let (a, b) = tokio::join!(validate(&mut c1, &yaml), validate(&mut c2, &yaml));
        for r in [a.unwrap(), b.unwrap()] {
            assert!(!r.ok);
            assert!(r.violations[0].message.contains("cannot be used"), "{r:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(server.http_get("/healthz").0, "HTTP/1.1 200 OK");
        // A link out of the directory, a missing file: the same words, nothing about the server.
        let mut messages = Vec::new();
        for p in [canonical.join("link.pem"), canonical.join("missing.pem")] {
            let p = p.to_str().unwrap();
            let r = validate(&mut admin, &provided(p, p)).await.unwrap();
            messages.push(r.violations[0].message.replace(p, "PATH"));
        }
        assert_eq!(messages[0], messages[1]);
        // Outside the directory: refused by path.
        let o = outside.to_str().unwrap();
        let r = validate(&mut admin, &provided(o, o)).await.unwrap();
        assert!(
            r.violations[0]
                .message
                .contains("must be an absolute path inside"),
            "{r:?}"
        );
        let _ = admin
            .get_trust_bundle(GetTrustBundleRequest {
                mesh: "default".into(),
            })
            .await
            .unwrap();
    })
    .await;
}

/// Sends raw bytes as a request body, to see what the server makes of undecodable input.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, n).to_vec()))
    }
}

#[tokio::test]
async fn every_input_is_bounded() {
    let server = Server::start(&[], &[]);
    bounded(120, async {
        let mut admin = server.admin().await;

        // 100,000 tags (1.3 MB): over the message limit, refused before it is decoded.
        let tags = |n: usize| -> Vec<(String, String)> {
            (0..n)
                .map(|i| (format!("t{i}"), "v".to_owned()))
                .chain([("kuma.io/service".to_owned(), "web".to_owned())])
                .collect()
        };
        let many = tags(100_000);
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let err = admin
            .issue_certificate(request("default", &refs))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
        // 5,000 tags fit in a message: refused by the tag limits, with a short message.
        let some = tags(5_000);
        let refs: Vec<(&str, &str)> = some.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let err = admin
            .issue_certificate(request("default", &refs))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert_eq!(err.message(), "tags: more than 64 distinct tags");

        // A 10,000-character service name is not echoed whole.
        let long = "s".repeat(10_000);
        let err = admin
            .issue_certificate(request("default", &[("kuma.io/service", &long)]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().len() < 300, "{}", err.message());

        // A message over the limit.
        let huge = format!(
            "type: Mesh\nname: default\n# {}\n",
            "a".repeat(2 * 1024 * 1024)
        );
        let err = validate(&mut admin, &huge).await.unwrap_err();
        assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

        // Undecodable bytes: the caller's fault.
        let channel = server
            .try_channel_with(
                &server.tls_dir().join("admin.pem"),
                &server.tls_dir().join("admin-key.pem"),
            )
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.unwrap();
        let err = grpc
            .unary(
                tonic::Request::new(vec![0xff, 0xff, 0xff, 0xff]),
                http::uri::PathAndQuery::from_static("/meshca.v1.Issuer/IssueCertificate"),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");

        // Ed25519 keys are refused by name.
        let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let csr = CertificateParams::default().serialize_request(&ed).unwrap();
        let mut req = request("default", &[("kuma.io/service", "web")]);
        req.csr = csr.der().to_vec();
        let err = admin.issue_certificate(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains("Ed25519"), "{}", err.message());

        // Deeply nested YAML: refused quickly, and issuance goes on while validations run.
        let deep = format!("name: {}{}", "[".repeat(50_000), "]".repeat(50_000));
        let mut v1 = admin.clone();
        let mut v2 = admin.clone();
        let (a, b, issued) = tokio::join!(
            validate(&mut v1, &deep),
            validate(&mut v2, &deep),
            admin.issue_certificate(request("default", &[("kuma.io/service", "web")]))
        );
        issued.unwrap();
        for r in [a.unwrap(), b.unwrap()] {
            assert!(!r.ok);
            assert!(
                r.violations[0].message.contains("deeper than 64"),
                "{:?}",
                r.violations
            );
        }
    })
    .await;
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test]
async fn config_changes_never_lose_meshes_silently() {
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
        &[],
    );
    bounded(60, async {
        let mut admin = server.admin().await;
        let refused = || {
            server
                .metric("meshca_config_reloads_total{result=\"refused\"}")
                .unwrap_or(0.0)
        };
        let before = refused();
        // Truncated to empty: refused, logged, and the mesh stays.
        server.write_mesh("other.yaml", "");
        while refused() < before + 1.0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        admin
            .issue_certificate(request("other", &[("kuma.io/service", "web")]))
            .await
            .unwrap();
        assert!(server.log().contains("holds no Mesh"), "{}", server.log());
        // Deleted: the mesh goes, and the log says so.
        std::fs::remove_file(server.mesh_dir.join("other.yaml")).unwrap();
        loop {
            let r = admin
                .issue_certificate(request("other", &[("kuma.io/service", "web")]))
                .await;
            if r.is_err_and(|e| e.code() == Code::NotFound) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            server.log().contains("mesh config removed"),
            "{}",
            server.log()
        );
    })
    .await;

    // `validate` and `serve` agree: a file defining one mesh twice is refused by both.
    let dir = tempfile::tempdir().unwrap();
    let twice = dir.path().join("twice.yaml");
    let one = builtin_mesh("default", &["ca-1"], "ca-1", "1h");
    std::fs::write(&twice, format!("{one}---\n{one}")).unwrap();
    let (ok, stdout, _) = run_cli(&["validate", "--config", twice.to_str().unwrap()]);
    assert!(!ok);
    assert!(stdout.contains("defined twice"), "{stdout}");
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "").unwrap();
    let (ok, stdout, _) = run_cli(&["validate", "--config", empty.to_str().unwrap()]);
    assert!(!ok);
    assert!(stdout.contains("holds no Mesh"), "{stdout}");

    // `serve` writes nothing before it refuses: a good builtin mesh next to a broken one, a
    // file defining a mesh twice, a TLS key that does not fit its certificate.
    let bad_provided = "type: Mesh\nname: b\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: provided\n      conf:\n        cert: {inlineString: nope}\n        key: {inlineString: nope}\n";
    let good = builtin_mesh("a", &["ca-1"], "ca-1", "1h");
    let tls_src = tempfile::tempdir().unwrap();
    let other = Server::start(&[], &[]);
    let other_tls = other.tls_dir();
    for (files, extra) in [
        (
            vec![("a.yaml", format!("{good}---\n{bad_provided}"))],
            vec![],
        ),
        (
            vec![
                ("a.yaml", good.clone()),
                ("b.yaml", bad_provided.to_owned()),
            ],
            vec![],
        ),
        (vec![("a.yaml", format!("{one}---\n{one}"))], vec![]),
        (
            vec![("a.yaml", good.clone())],
            vec![
                "--tls-cert".to_owned(),
                other_tls.join("server.pem").display().to_string(),
                "--tls-key".to_owned(),
                other_tls.join("admin-key.pem").display().to_string(),
            ],
        ),
    ] {
        let case = tempfile::tempdir_in(tls_src.path()).unwrap();
        let meshes = case.path().join("meshes");
        std::fs::create_dir(&meshes).unwrap();
        for (n, y) in &files {
            std::fs::write(meshes.join(n), y).unwrap();
        }
        let data = case.path().join("data");
        let mut args = vec![
            "serve".to_owned(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--mesh-config".into(),
            meshes.display().to_string(),
        ];
        args.extend(extra);
        let out = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(BIN).args(&args).output(),
        )
        .await
        .expect("serve refuses quickly")
        .unwrap();
        assert!(!out.status.success(), "{files:?}");
        let written = files_under(&data);
        assert!(
            written.is_empty(),
            "{files:?}: serve wrote {written:?} before refusing: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn issuers_started_together_on_one_data_dir_agree() {
    for round in 0..4 {
        let shared = tempfile::tempdir().unwrap();
        let data = shared.path().join("data");
        let (d1, d2) = (data.clone(), data.clone());
        // Start both at once (each start blocks until ready).
        let a = std::thread::spawn(move || {
            Server::start_in(tempfile::tempdir().unwrap(), d1, &[], &[])
        });
        let b = std::thread::spawn(move || {
            Server::start_in(tempfile::tempdir().unwrap(), d2, &[], &[])
        });
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let tls = data.join("tls");
        for leaf in ["server.pem", "admin.pem"] {
            let out = std::process::Command::new("openssl")
                .args(["verify", "-CAfile"])
                .arg(tls.join("ca.pem"))
                .arg(tls.join(leaf))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "round {round}: {leaf} not signed by ca.pem"
            );
        }
        bounded(60, async {
            for s in [&a, &b] {
                s.admin()
                    .await
                    .issue_certificate(request("default", &[("kuma.io/service", "web")]))
                    .await
                    .unwrap();
            }
        })
        .await;
        let mode = |p: &Path| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(p).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&tls.join("ca-key.pem")), 0o600);
    }
}

#[test]
fn open_key_files_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().join("data");
    drop(Server::start_in(
        tempfile::tempdir().unwrap(),
        data.clone(),
        &[],
        &[],
    ));
    let key = data.join("tls").join("admin-key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let again = Server::start_in(tempfile::tempdir().unwrap(), data, &[], &[]);
    let log = again.log();
    assert!(log.contains("readable by other users"), "{log}");
    assert!(log.contains("admin-key.pem"), "{log}");
}
