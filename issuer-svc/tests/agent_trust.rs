//! `meshca agent` against a fake issuer: a tonic server in this test, over TLS with a certificate
//! of a test CA the agent gets as `--ca-cert`, answering what each test scripts — a certificate
//! for another identity, for another key, an attacker's CA after a good first delivery, an
//! expired certificate whose answer claims a long life. Each time nothing is written and
//! `--on-change` does not run; an honest answer is written. Also: `--server http://…` with TLS
//! material or a token is refused before any connection, the out-dir is created 0700, and a token
//! file open to other users is reported.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bounded, openssl_verify, BIN, NO_KUBECONFIG};
use issuer_svc::proto::issuer_server::{Issuer, IssuerServer};
use issuer_svc::proto::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use tonic::{Request, Response, Status};

/// A CA made for the test.
struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(p, key),
            cert,
        }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A mesh leaf for `key` with `sans`, valid from `from` to `until` seconds from now.
    fn leaf(
        &self,
        key: &impl rcgen::PublicKeyData,
        sans: &[SanType],
        from: i64,
        until: i64,
    ) -> String {
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans.to_vec();
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::seconds(from);
        p.not_after = now + time::Duration::seconds(until);
        p.signed_by(key, &self.issuer).unwrap().pem()
    }

    /// A TLS certificate and key for `sans` (`127.0.0.1`, `localhost`), for `eku`.
    fn tls_pair(&self, eku: ExtendedKeyUsagePurpose) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// What the fake issuer is asked: the call (issue or watch), its number among calls of that
/// kind, and the CSR.
struct Call {
    watch: bool,
    n: usize,
    csr: CertificateSigningRequestParams,
}

impl Call {
    /// The SANs the agent asked for.
    fn sans(&self) -> Vec<SanType> {
        self.csr.params.subject_alt_names.clone()
    }
}

type Script = dyn Fn(&Call) -> Vec<IssuedCertificate> + Send + Sync;

struct FakeIssuer {
    script: Arc<Script>,
    issues: AtomicUsize,
    watches: AtomicUsize,
}

type WatchStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<WatchCertificateResponse, Status>> + Send>>;

impl FakeIssuer {
    fn call(&self, watch: bool, req: Request<IssueCertificateRequest>) -> Vec<IssuedCertificate> {
        let counter = if watch { &self.watches } else { &self.issues };
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let csr = CertificateSigningRequestParams::from_der(&req.into_inner().csr.into()).unwrap();
        (self.script)(&Call { watch, n, csr })
    }
}

#[tonic::async_trait]
impl Issuer for FakeIssuer {
    async fn issue_certificate(
        &self,
        req: Request<IssueCertificateRequest>,
    ) -> Result<Response<IssueCertificateResponse>, Status> {
        Ok(Response::new(IssueCertificateResponse {
            certificate: self.call(false, req).into_iter().next(),
        }))
    }

    type WatchCertificateStream = WatchStream;

    async fn watch_certificate(
        &self,
        req: Request<IssueCertificateRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        use tokio_stream::StreamExt as _;
        let msgs: Vec<_> = self
            .call(true, req)
            .into_iter()
            .map(|c| {
                Ok(WatchCertificateResponse {
                    certificate: Some(c),
                    reason: "rotation".into(),
                })
            })
            .collect();
        // Then the stream stays open, as a real issuer's does between rotations.
        Ok(Response::new(Box::pin(
            tokio_stream::iter(msgs).chain(tokio_stream::pending()),
        )))
    }

    async fn get_trust_bundle(
        &self,
        _: Request<GetTrustBundleRequest>,
    ) -> Result<Response<GetTrustBundleResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn validate_backend(
        &self,
        _: Request<ValidateBackendRequest>,
    ) -> Result<Response<ValidateBackendResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn create_token(
        &self,
        _: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }

    async fn rotate_token_key(
        &self,
        _: Request<RotateTokenKeyRequest>,
    ) -> Result<Response<RotateTokenKeyResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// A running fake issuer, and the files an agent needs to reach it; stopped on drop.
struct Fake {
    addr: SocketAddr,
    work: tempfile::TempDir,
    ca_cert: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Fake {
    async fn start(
        script: impl Fn(&Call) -> Vec<IssuedCertificate> + Send + Sync + 'static,
    ) -> Self {
        let tls_ca = Ca::new("fake issuer TLS CA");
        let (cert, key) = tls_ca.tls_pair(ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert_pem, client_key_pem) =
            tls_ca.tls_pair(ExtendedKeyUsagePurpose::ClientAuth);
        let work = tempfile::tempdir().unwrap();
        let write = |name: &str, data: &str| {
            let p = work.path().join(name);
            std::fs::write(&p, data).unwrap();
            p
        };
        let ca_cert = write("issuer-ca.pem", &tls_ca.pem());
        let client_cert = write("client.pem", &client_cert_pem);
        let client_key = write("client-key.pem", &client_key_pem);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = FakeIssuer {
            script: Arc::new(script),
            issues: AtomicUsize::new(0),
            watches: AtomicUsize::new(0),
        };
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        let server = tonic::transport::Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(IssuerServer::new(service));
        let task = tokio::spawn(async move {
            server
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Fake {
            addr,
            work,
            ca_cert,
            client_cert,
            client_key,
            task,
        }
    }

    fn out(&self) -> PathBuf {
        self.work.path().join("proxy/certs")
    }

    fn changes(&self) -> PathBuf {
        self.work.path().join("changes.log")
    }

    fn log(&self) -> PathBuf {
        self.work.path().join("agent.log")
    }

    /// `meshca agent` for `default`/web with the fake's CA and a client certificate, writing to
    /// [`Fake::out`] and counting `--on-change` runs in [`Fake::changes`].
    fn agent(&self, extra: &[&str]) -> Command {
        self.command(None, extra)
    }

    /// [`Fake::agent`], with a bootstrap token instead of the client certificate when `token`.
    fn command(&self, token: Option<&Path>, extra: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(["agent", "--server", &self.addr.to_string(), "--ca-cert"])
            .arg(&self.ca_cert);
        match token {
            Some(t) => cmd.arg("--token-file").arg(t),
            None => cmd
                .arg("--client-cert")
                .arg(&self.client_cert)
                .arg("--client-key")
                .arg(&self.client_key),
        };
        cmd.args(["--mesh", "default", "--tag", "kuma.io/service=web"])
            .arg("--out-dir")
            .arg(self.out())
            .arg("--on-change")
            .arg(format!("echo changed >> {}", self.changes().display()))
            .args(["--data-dir", "/nonexistent/meshca-agent"])
            .args(extra)
            .env("KUBECONFIG", NO_KUBECONFIG)
            .env_remove("KUBERNETES_SERVICE_HOST");
        cmd
    }

    async fn run_once(&self) -> Output {
        let mut cmd = self.agent(&["--once"]);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    fn on_change_runs(&self) -> usize {
        std::fs::read_to_string(self.changes())
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Asserts the agent failed naming `reason`, wrote none of its files and ran nothing.
    fn assert_refused_clean(&self, o: &Output, reason: &str) {
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "the agent accepted it: {err}");
        assert!(err.contains("refused the issuer's answer"), "{err}");
        assert!(err.contains(reason), "{err}");
        for f in ["cert.pem", "key.pem", "bundle.pem"] {
            assert!(!self.out().join(f).exists(), "{f} was written");
        }
        assert_eq!(self.on_change_runs(), 0, "--on-change ran");
    }
}

/// A running agent, killed on drop (also when an assertion fails).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An honest answer for `call` from `ca`: the agent's key, its SANs, a fresh hour.
fn honest(call: &Call, ca: &Ca) -> IssuedCertificate {
    IssuedCertificate {
        cert_chain_pem: ca.leaf(&call.csr.public_key, &call.sans(), -60, 3600),
        trust_bundle_pem: ca.pem(),
        not_after: now() + 3600,
        serial: "01".into(),
        uri_sans: vec!["spiffe://default/web".into()],
        ..Default::default()
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The first certificate of a PEM file, DER.
fn leaf_der(pem_text: &str) -> Vec<u8> {
    pem::parse_many(pem_text).unwrap().remove(0).into_contents()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_answer_is_written_in_a_private_dir_and_open_token_files_are_reported() {
    let mesh_ca = Arc::new(Ca::new("mesh CA"));
    let ca = mesh_ca.clone();
    let fake = Fake::start(move |call| vec![honest(call, &ca)]).await;
    // A bootstrap token in a file others may read: the agent says so (the fake ignores it).
    let token = fake.work.path().join("web.token");
    std::fs::write(&token, "header.payload.signature\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut cmd = fake.command(Some(&token), &["--once"]);
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("token file is open to other users"), "{err}");
    assert!(err.contains("web.token"), "{err}");
    assert!(
        !err.contains("header.payload"),
        "the token is never logged: {err}"
    );

    let out = fake.out();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&out),
        0o700,
        "the out-dir is private whatever the umask"
    );
    assert_eq!(mode(&out.join("key.pem")), 0o600);
    let chain = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    let bundle = std::fs::read_to_string(out.join("bundle.pem")).unwrap();
    assert_eq!(leaf_der(&bundle), mesh_ca.cert.der().to_vec());
    openssl_verify(fake.work.path(), &chain, &bundle);
    assert_eq!(fake.on_change_runs(), 1);

    // A private token file: no warning.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = fake.command(Some(&token), &["--once"]);
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains("token file"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_identity_is_not_written() {
    let ca = Ca::new("mesh CA");
    let fake = Fake::start(move |call| {
        let db = [
            SanType::URI("spiffe://default/db".try_into().unwrap()),
            SanType::URI("kuma://kuma.io/service/db".try_into().unwrap()),
        ];
        vec![IssuedCertificate {
            cert_chain_pem: ca.leaf(&call.csr.public_key, &db, -60, 3600),
            ..honest(call, &ca)
        }]
    })
    .await;
    let o = fake.run_once().await;
    fake.assert_refused_clean(&o, "spiffe://default/db that was not requested");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_for_another_key_is_not_written() {
    let ca = Ca::new("mesh CA");
    let fake = Fake::start(move |call| {
        let other = KeyPair::generate().unwrap();
        vec![IssuedCertificate {
            cert_chain_pem: ca.leaf(&other, &call.sans(), -60, 3600),
            ..honest(call, &ca)
        }]
    })
    .await;
    let o = fake.run_once().await;
    fake.assert_refused_clean(&o, "different key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_judged_by_its_own_dates() {
    let ca = Ca::new("mesh CA");
    let fake = Fake::start(move |call| {
        vec![IssuedCertificate {
            cert_chain_pem: ca.leaf(&call.csr.public_key, &call.sans(), -7200, -3600),
            // The answer claims another hour.
            not_after: now() + 3600,
            ..honest(call, &ca)
        }]
    })
    .await;
    let o = fake.run_once().await;
    fake.assert_refused_clean(&o, "expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attackers_ca_after_a_good_delivery_changes_nothing() {
    let mesh_ca = Arc::new(Ca::new("mesh CA"));
    let honest_sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let (ca, sent) = (mesh_ca.clone(), honest_sent.clone());
    let evil = Ca::new("attacker CA");
    let attack = move |call: &Call| IssuedCertificate {
        cert_chain_pem: evil.leaf(&call.csr.public_key, &call.sans(), -60, 3600),
        trust_bundle_pem: evil.pem(),
        ..honest(call, &ca)
    };
    let ca = mesh_ca.clone();
    let fake = Fake::start(move |call| {
        if call.watch && call.n == 0 {
            // A good first certificate, then the attacker's CA and bundle on the same stream.
            let good = honest(call, &ca);
            sent.lock().unwrap().push(good.cert_chain_pem.clone());
            vec![good, attack(call)]
        } else {
            vec![attack(call)]
        }
    })
    .await;
    let log = std::fs::File::create(fake.log()).unwrap();
    let mut agent = Running(
        fake.agent(&[])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // The refusal on the first stream, and again after the agent reconnected.
    let refusals = || {
        std::fs::read_to_string(fake.log())
            .unwrap_or_default()
            .matches("shares no root")
            .count()
    };
    bounded(60, async {
        while refusals() < 2 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        agent.0.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    drop(agent);
    let out = fake.out();
    let good = honest_sent.lock().unwrap()[0].clone();
    let chain = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    assert_eq!(
        leaf_der(&chain),
        leaf_der(&good),
        "cert.pem is still the good one"
    );
    let bundle = std::fs::read_to_string(out.join("bundle.pem")).unwrap();
    assert_eq!(leaf_der(&bundle), mesh_ca.cert.der().to_vec());
    assert_eq!(
        fake.on_change_runs(),
        1,
        "--on-change ran for the good one only"
    );

    // Restarted, the agent still trusts only the bundle it left: the attacker is refused again.
    let o = fake.run_once().await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("shares no root"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        chain
    );
    assert_eq!(
        std::fs::read_to_string(out.join("bundle.pem")).unwrap(),
        bundle
    );
    assert_eq!(fake.on_change_runs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_with_credentials_is_refused_before_any_connection() {
    // A listener that records whether anything connected to it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let fake = Fake::start(|_| Vec::new()).await;
    let token = fake.work.path().join("web.token");
    std::fs::write(&token, "header.payload.signature\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ca, cert, key) = (
        fake.ca_cert.to_str().unwrap(),
        fake.client_cert.to_str().unwrap(),
        fake.client_key.to_str().unwrap(),
    );
    let out = fake.out();
    let out = out.to_str().unwrap();
    let tag = "kuma.io/service=web";
    let runs: Vec<Vec<&str>> = vec![
        // The agent with a bootstrap token and the issuer's CA.
        vec![
            "agent",
            "--once",
            "--server",
            &url,
            "--token-file",
            token.to_str().unwrap(),
            "--ca-cert",
            ca,
            "--tag",
            tag,
            "--out-dir",
            out,
        ],
        // The agent with a client certificate.
        vec![
            "agent",
            "--once",
            "--server",
            &url,
            "--ca-cert",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key,
            "--tag",
            tag,
            "--out-dir",
            out,
        ],
        // `meshca token` and `meshca issue` share the client.
        vec![
            "token",
            "create",
            "--server",
            &url,
            "--ca-cert",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key,
            "--tag",
            tag,
        ],
        vec![
            "issue",
            "--server",
            &url,
            "--ca-cert",
            ca,
            "--client-cert",
            cert,
            "--client-key",
            key,
            "--tag",
            tag,
            "--out-dir",
            out,
        ],
    ];
    for args in runs {
        let o = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}: {err}");
        assert!(
            err.contains("refusing plaintext http://"),
            "{args:?}: {err}"
        );
        assert!(
            matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{args:?} connected"
        );
    }
    assert!(!Path::new(out).join("cert.pem").exists());

    // Plaintext is an explicit flag, for loopback only, and never with a token.
    let o = Command::new(BIN)
        .args([
            "agent",
            "--once",
            "--plaintext",
            "--server",
            "192.0.2.1:5690",
        ])
        .args(["--tag", tag, "--out-dir", out])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("only to a loopback address"), "{err}");
    let o = Command::new(BIN)
        .args([
            "agent",
            "--once",
            "--plaintext",
            "--server",
            &url,
            "--token-file",
        ])
        .arg(&token)
        .args(["--tag", tag, "--out-dir", out])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("--token-file") && err.contains("--plaintext"),
        "{err}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "a plaintext run with a token connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_a_loopback_issuer_is_an_explicit_flag() {
    let server =
        tokio::task::spawn_blocking(|| common::Server::start(&[], &["--insecure-plaintext"]))
            .await
            .unwrap();
    let out = server.dir.path().join("certs");
    let run = |server_arg: String, plaintext: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(["agent", "--once", "--server", &server_arg])
            .args(["--data-dir", "/nonexistent/meshca-agent"])
            .args(["--tag", "kuma.io/service=web", "--out-dir"])
            .arg(&out);
        if plaintext {
            cmd.arg("--plaintext");
        }
        cmd.output().unwrap()
    };
    // http:// without the flag: refused (the agent would otherwise send its credentials).
    let o = tokio::task::block_in_place(|| run(format!("http://{}", server.grpc), false));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("refusing plaintext http://"),
        "{err}"
    );
    // With it: the certificate is checked and written like any other.
    let o = tokio::task::block_in_place(|| run(server.grpc.clone(), true));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    openssl_verify(
        server.dir.path(),
        &std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        &std::fs::read_to_string(out.join("bundle.pem")).unwrap(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_dns_names_are_accepted_only_when_declared() {
    let ca = Ca::new("mesh CA");
    let fake = Fake::start(move |call| {
        let mut sans = call.sans();
        sans.push(SanType::DnsName("web.mesh.local".try_into().unwrap()));
        vec![IssuedCertificate {
            cert_chain_pem: ca.leaf(&call.csr.public_key, &sans, -60, 3600),
            ..honest(call, &ca)
        }]
    })
    .await;
    let o = fake.run_once().await;
    fake.assert_refused_clean(&o, "DNS:web.mesh.local that was not requested");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--dns-name"));
    let mut cmd = fake.agent(&["--once", "--dns-name", "web.mesh.local"]);
    let o = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fake.out().join("cert.pem").exists());
    assert_eq!(fake.on_change_runs(), 1);
}
