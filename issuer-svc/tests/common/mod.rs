//! Starts the real `meshca` binary on free loopback ports and talks to it over mTLS.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use issuer_svc::proto::issuer_client::IssuerClient;
use issuer_svc::proto::{CertificateProfile, GetTrustBundleRequest, IssueCertificateRequest, Tag};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub const BIN: &str = env!("CARGO_BIN_EXE_meshca");

/// A running `meshca serve`; killed on drop.
pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub grpc: String,
    pub metrics: String,
    pub data_dir: PathBuf,
    pub mesh_dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log =
                std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
            eprintln!("---- meshca stderr ----\n{log}");
        }
    }
}

impl Server {
    /// Starts `meshca serve` with `extra` arguments. `meshes` are written into a mesh config
    /// directory first (name, yaml); when empty no --mesh-config is passed.
    pub fn start(meshes: &[(&str, &str)], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Self::start_in(dir, data_dir, meshes, extra)
    }

    /// [`Server::start`] with its data directory at `data_dir` (which may be shared).
    pub fn start_in(
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        meshes: &[(&str, &str)],
        extra: &[&str],
    ) -> Self {
        Self::start_with_env(dir, data_dir, meshes, extra, &[])
    }

    /// [`Server::start`] under `ulimit -n nofile` (soft and hard), through `sh`.
    pub fn start_limited(nofile: u64, meshes: &[(&str, &str)], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        Self::start_wrapped(dir, data_dir, meshes, extra, &[], Some(nofile))
    }

    /// [`Server::start_in`] with extra environment variables (set after the defaults).
    pub fn start_with_env(
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        meshes: &[(&str, &str)],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_wrapped(dir, data_dir, meshes, extra, env, None)
    }

    fn start_wrapped(
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        meshes: &[(&str, &str)],
        extra: &[&str],
        env: &[(&str, &str)],
        nofile: Option<u64>,
    ) -> Self {
        let mesh_dir = dir.path().join("meshes");
        std::fs::create_dir_all(&mesh_dir).unwrap();
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--metrics-listen".into(),
            "127.0.0.1:0".into(),
            "--reload-interval".into(),
            "200ms".into(),
        ];
        if !meshes.is_empty() {
            for (name, yaml) in meshes {
                std::fs::write(mesh_dir.join(name), yaml).unwrap();
            }
            args.push("--mesh-config".into());
            args.push(mesh_dir.display().to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut command = match nofile {
            None => Command::new(BIN),
            Some(n) => {
                // `exec` keeps the pid: the server is the child we kill and measure.
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(BIN);
                c
            }
        };
        let mut child = command
            .args(&args)
            .env("KUBECONFIG", NO_KUBECONFIG)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut grpc = None;
        let mut metrics = None;
        let mut server = Server {
            child,
            dir,
            grpc: String::new(),
            metrics: String::new(),
            data_dir,
            mesh_dir,
        };
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(l) => l,
                Err(_) => {
                    let log = std::fs::read_to_string(server.dir.path().join("stderr.log"))
                        .unwrap_or_default();
                    panic!("meshca did not become ready; stderr:\n{log}");
                }
            };
            if let Some(rest) = line.strip_prefix("meshca: grpc listening on ") {
                grpc = rest.split_whitespace().next().map(str::to_owned);
            }
            if let Some(rest) = line.strip_prefix("meshca: metrics listening on ") {
                metrics = rest.split_whitespace().next().map(str::to_owned);
            }
            if line == "meshca: ready" {
                break;
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        server.grpc = grpc.expect("grpc address printed");
        server.metrics = metrics.expect("metrics address printed");
        server
    }

    /// Descriptors the server process holds.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// The server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak and current resident set size of the server process, in MiB (`VmHWM`, `VmRSS`).
    pub fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap()
        };
        (kib("VmHWM:") / 1024.0, kib("VmRSS:") / 1024.0)
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.data_dir.join("tls")
    }

    /// A client authenticated as the bootstrap admin.
    pub async fn admin(&self) -> IssuerClient<Channel> {
        let tls = self.tls_dir();
        self.client_with(&tls.join("admin.pem"), &tls.join("admin-key.pem"))
            .await
    }

    /// A client with the given certificate and key (PEM files).
    pub async fn client_with(&self, cert: &Path, key: &Path) -> IssuerClient<Channel> {
        IssuerClient::new(self.channel_with(cert, key).await)
    }

    pub async fn channel_with(&self, cert: &Path, key: &Path) -> Channel {
        self.try_channel_with(cert, key).await.unwrap()
    }

    /// A channel with the given certificate (chain) and key, or the connection error.
    pub async fn try_channel_with(
        &self,
        cert: &Path,
        key: &Path,
    ) -> Result<Channel, tonic::transport::Error> {
        let ca = std::fs::read(self.tls_dir().join("ca.pem")).unwrap();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(
                std::fs::read(cert).unwrap(),
                std::fs::read(key).unwrap(),
            ));
        Endpoint::from_shared(format!("https://{}", self.grpc))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
    }

    /// A client that verifies the server but presents no certificate (a data plane with a
    /// bootstrap token, or a stranger).
    #[allow(dead_code)]
    pub async fn anonymous(&self) -> IssuerClient<Channel> {
        let ca = std::fs::read(self.tls_dir().join("ca.pem")).unwrap();
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        let channel = Endpoint::from_shared(format!("https://{}", self.grpc))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
        IssuerClient::new(channel)
    }

    /// The server's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// GET on the metrics port: (status line, body).
    pub fn http_get(&self, path: &str) -> (String, String) {
        http_get(&self.metrics, path)
    }

    /// The value of one metric line (exact name with labels).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
    }

    /// Writes a mesh config file atomically (so the poller never sees half a file).
    pub fn write_mesh(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.mesh_dir.join(name)).unwrap();
    }
}

/// `meshca token create --out FILE` as the admin of `server`, for `default`/`service`, 10 minutes.
#[allow(dead_code)]
pub fn token_file(server: &Server, service: &str, file: &Path) {
    let (ok, _, stderr) = run_cli(&[
        "token",
        "create",
        "--server",
        &server.grpc,
        "--data-dir",
        server.data_dir.to_str().unwrap(),
        "--mesh",
        "default",
        "--tag",
        &format!("kuma.io/service={service}"),
        "--valid-for",
        "10m",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(ok, "meshca token create: {stderr}");
    assert!(stderr.contains("valid until"), "{stderr}");
}

/// `req` carrying a bootstrap token (`authorization: Bearer <token>`).
#[allow(dead_code)]
pub fn bearer<T>(req: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(req);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

pub fn request(mesh: &str, tags: &[(&str, &str)]) -> IssueCertificateRequest {
    IssueCertificateRequest {
        mesh: mesh.into(),
        tags: tags
            .iter()
            .map(|(k, v)| Tag {
                name: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        csr: Vec::new(),
        profile: CertificateProfile::Kuma.into(),
    }
}

/// A mesh with builtin backends `names`, the first enabled unless `enabled` says otherwise.
pub fn builtin_mesh(mesh: &str, names: &[&str], enabled: &str, expiration: &str) -> String {
    let mut y =
        format!("type: Mesh\nname: {mesh}\nmtls:\n  enabledBackend: {enabled}\n  backends:\n");
    for n in names {
        y.push_str(&format!(
            "    - name: {n}\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: {expiration}\n"
        ));
    }
    y
}

/// A kubeconfig path that does not exist: the certmanager backend then finds no Kubernetes,
/// whatever the machine running the tests has.
pub const NO_KUBECONFIG: &str = "/nonexistent/meshca-tests/kubeconfig";

/// What a certmanager backend says without any Kubernetes configuration.
pub const NO_KUBERNETES: &str =
    "no Kubernetes client: neither an in-cluster service account nor a kubeconfig is usable";

/// Runs `meshca` with `args`; returns (status success, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("KUBECONFIG", NO_KUBECONFIG)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Bounds a test.
pub async fn bounded<F: std::future::Future>(secs: u64, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test timed out")
}

/// Checks a leaf against roots, leaf first in `chain_pem`, with `openssl verify`.
pub fn openssl_verify(dir: &Path, chain_pem: &str, bundle_pem: &str) {
    let chain = pem::parse_many(chain_pem).unwrap();
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, pem::encode(&chain[0])).unwrap();
    let untrusted = dir.join("untrusted.pem");
    let inter: String = chain[1..].iter().map(pem::encode).collect();
    std::fs::write(&untrusted, &inter).unwrap();
    let bundle = dir.join("bundle-check.pem");
    std::fs::write(&bundle, bundle_pem).unwrap();
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&bundle);
    if !inter.is_empty() {
        cmd.arg("-untrusted").arg(&untrusted);
    }
    let out = cmd.arg(&leaf).output().expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl verify failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs a client certificate with CN `cn` by the bootstrap CA of `server`; returns (cert, key)
/// paths.
pub fn operator_cert(server: &Server, cn: &str) -> (PathBuf, PathBuf) {
    let tls = server.tls_dir();
    let ca_pem = std::fs::read_to_string(tls.join("ca.pem")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(tls.join("ca-key.pem")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let c = server.dir.path().join(format!("{cn}.pem"));
    let k = server.dir.path().join(format!("{cn}-key.pem"));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

/// GET on a plain HTTP address: (status line, body).
pub fn http_get(addr: &str, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// Mesh `default`'s trust bundle from `server`, asked with `admin_of`'s admin certificate (of
/// another replica: one bootstrap CA makes that work).
pub async fn bundle_of(server: &Server, admin_of: &Server) -> String {
    let tls = admin_of.tls_dir();
    let mut client = server
        .client_with(&tls.join("admin.pem"), &tls.join("admin-key.pem"))
        .await;
    client
        .get_trust_bundle(GetTrustBundleRequest {
            mesh: "default".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .trust_bundle_pem
}

/// A certificate from `servers[2]`, asked for with `servers[0]`'s admin certificate, verified by
/// openssl against `bundle` (another replica's): replicas look like one service.
pub async fn issue_across_replicas(servers: &[Server], bundle: &str, dir: &Path) {
    let tls = servers[0].tls_dir();
    let issued = servers[2]
        .client_with(&tls.join("admin.pem"), &tls.join("admin-key.pem"))
        .await
        .issue_certificate(request("default", &[("kuma.io/service", "web")]))
        .await
        .unwrap()
        .into_inner()
        .certificate
        .unwrap();
    openssl_verify(dir, &issued.cert_chain_pem, bundle);
}

/// The Python of the peer-backed suites: `$MESHCA_PYTHON`, default
/// `<workspace>/target/py-venv/bin/python` (scripts/test creates it). Missing: a failure when `CI`
/// is set, `None` (the test is skipped, saying so) otherwise.
#[allow(dead_code)]
pub fn python() -> Option<PathBuf> {
    let p = match std::env::var_os("MESHCA_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-venv/bin/python"),
    };
    if p.exists() {
        Some(p)
    } else if std::env::var_os("CI").is_some() {
        panic!(
            "Python interpreter {} is missing; run scripts/test (it creates target/py-venv) or set MESHCA_PYTHON",
            p.display()
        );
    } else {
        eprintln!(
            "SKIPPED: Python interpreter {} is missing (set MESHCA_PYTHON or run scripts/test)",
            p.display()
        );
        None
    }
}
