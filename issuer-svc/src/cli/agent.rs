//! `meshca agent`: keeps one identity's certificate fresh in files a proxy reads (nginx, Kong).
//!
//! The key is generated here (P-256) and never leaves this process but into `key.pem`; the
//! issuer gets a CSR. The agent holds a `WatchCertificate` stream and writes every certificate it
//! pushes (rotation, CA change) to the files sink — `cert.pem` (leaf, then chain), `key.pem`
//! (0600), `bundle.pem` — each written atomically (temp file, fsync, rename), then runs
//! `--on-change`. A certificate that is already expired is never written. When the issuer is
//! away the files keep the current certificate and the agent reconnects with jittered backoff.
//! `--once` writes one certificate and exits (init containers, cron).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ca_core::{Identity, KeyType, MeshName, PrivateKey};
use clap::Args;

use super::client::{connect, ClientTls};
use crate::error::{AppError, Context};
use crate::proto::{IssueCertificateRequest, IssuedCertificate, Tag};
use crate::serve::bootstrap::{write_private, write_public, BootstrapPaths};

/// The longest pause between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long `--on-change` may run.
const ON_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// The issuer's gRPC address (`127.0.0.1:5680` or `https://host:port`).
    #[arg(long, default_value = "127.0.0.1:5680")]
    server: String,
    /// The mesh.
    #[arg(long, default_value = "default")]
    mesh: String,
    /// A tag of the identity, KEY=VALUE; repeat it. `kuma.io/service` is required.
    #[arg(long = "tag", value_name = "KEY=VALUE", required = true)]
    tags: Vec<String>,
    /// Files sink: where cert.pem, key.pem (0600) and bundle.pem are kept.
    #[arg(long, required_unless_present_any = ["k8s_secret", "aws_cert_secret"])]
    out_dir: Option<PathBuf>,
    /// AWS Secrets Manager sink: the secret holding `{"cert": "<leaf + chain PEM>"}`, as Kong
    /// data planes read it (`{vault://aws/NAME/cert}`); NAME:FIELD for another field (an ARN:
    /// ARN#FIELD). Created the first time (CreateSecret), a new version after (PutSecretValue).
    #[arg(long, value_name = "NAME[:FIELD]", requires = "aws_key_secret")]
    aws_cert_secret: Option<String>,
    /// The secret holding `{"key": "<PEM>"}` for --aws-cert-secret.
    #[arg(long, value_name = "NAME[:FIELD]", requires = "aws_cert_secret")]
    aws_key_secret: Option<String>,
    /// Kubernetes sink: a `kubernetes.io/tls` Secret (tls.crt, tls.key, ca.crt) created or
    /// updated with optimistic concurrency (in-cluster config, else kubeconfig).
    #[arg(long, value_name = "NAME")]
    k8s_secret: Option<String>,
    /// Namespace of --k8s-secret. Default: $MESHCA_NAMESPACE, else the pod's namespace, else
    /// `kuma-system`.
    #[arg(long, value_name = "NS", requires = "k8s_secret")]
    k8s_namespace: Option<String>,
    /// Command run (`sh -c`) after every new certificate is in place, e.g. `nginx -s reload`.
    #[arg(long, value_name = "CMD")]
    on_change: Option<String>,
    /// Write one certificate and exit.
    #[arg(long)]
    once: bool,
    /// Data directory holding client credentials (DATA_DIR/tls/), as `meshca issue`.
    #[arg(long, default_value = "./meshca-data")]
    data_dir: PathBuf,
    /// CA that signed the server certificate (default DATA_DIR/tls/ca.pem).
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Client certificate (default DATA_DIR/tls/admin.pem).
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// Client key (default DATA_DIR/tls/admin-key.pem).
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
}

pub(crate) async fn agent(a: AgentArgs) -> Result<(), AppError> {
    let tags = super::parse_tags(&a.tags)?;
    let mesh = MeshName::new(a.mesh.as_str()).map_err(|e| AppError(format!("--mesh: {e}")))?;
    let identity = Identity::new(mesh, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| AppError(format!("--tag: {e}")))?;
    let key = KeyType::EcdsaP256
        .generate()
        .map_err(|e| AppError(format!("cannot generate a key: {e}")))?;
    let csr = key
        .csr_der_with_dns(identity.uri_sans(), identity.dns_sans())
        .map_err(|e| AppError(format!("cannot make a CSR: {e}")))?;
    let request = IssueCertificateRequest {
        mesh: a.mesh.clone(),
        tags: tags
            .iter()
            .map(|(k, v)| Tag {
                name: k.clone(),
                value: v.clone(),
            })
            .collect(),
        csr,
    };
    let paths = BootstrapPaths::new(&a.data_dir);
    let tls = ClientTls {
        ca: a.ca_cert.clone().unwrap_or(paths.ca.clone()),
        cert: a.client_cert.clone().unwrap_or(paths.admin.clone()),
        key: a.client_key.clone().unwrap_or(paths.admin_key.clone()),
    };
    if let Some(dir) = &a.out_dir {
        std::fs::create_dir_all(dir).ctx(|| format!("cannot create {}", dir.display()))?;
    }
    let k8s = match &a.k8s_secret {
        Some(name) => {
            let name = ca_core::SecretName::new(name.as_str())
                .map_err(|e| AppError(format!("--k8s-secret {name:?}: {e}")))?;
            let ns = a
                .k8s_namespace
                .clone()
                .unwrap_or_else(ca_core::system_namespace);
            if !ca_core::is_namespace_name(&ns) {
                return Err(AppError(format!(
                    "--k8s-namespace {ns:?} is not a Kubernetes namespace name"
                )));
            }
            let client = store_kubernetes::default_client()
                .await
                .map_err(|e| AppError(format!("--k8s-secret: {}", ca_core::error_chain(&e))))?;
            Some(store_kubernetes::TlsSecretSink::new(client, &ns, &name))
        }
        None => None,
    };
    let aws = match (&a.aws_cert_secret, &a.aws_key_secret) {
        (Some(cert), Some(key)) => {
            let cert = meshca_aws::SecretTarget::parse(cert, "cert")
                .map_err(|e| AppError(format!("--aws-cert-secret {e}")))?;
            let key = meshca_aws::SecretTarget::parse(key, "key")
                .map_err(|e| AppError(format!("--aws-key-secret {e}")))?;
            Some(meshca_aws::SecretsManagerSink::new(
                meshca_aws::SecretsManager::new(),
                cert,
                key,
            ))
        }
        _ => None,
    };
    let sink = Sinks {
        dir: a.out_dir.clone(),
        k8s,
        aws,
        key,
        on_change: a.on_change.clone(),
    };

    if a.once {
        let mut client = connect(&a.server, Some(&tls)).await?;
        let c = client
            .issue_certificate(request)
            .await
            .map_err(|s| {
                AppError(format!(
                    "the issuer refused: {:?}: {}",
                    s.code(),
                    s.message()
                ))
            })?
            .into_inner()
            .certificate
            .ok_or_else(|| AppError("the issuer answered without a certificate".into()))?;
        sink.deliver(&c).await?;
        println!("meshca agent: wrote {}", describe(&c));
        return Ok(());
    }

    let mut backoff = Duration::from_secs(1);
    loop {
        let mut delivered = false;
        let result = watch(&a.server, &tls, &request, &sink, &mut delivered).await;
        if delivered {
            // The issuer was there: start the backoff over.
            backoff = Duration::from_secs(1);
        }
        match result {
            Ok(()) => tracing::warn!("the issuer ended the watch; watching again"),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "watch failed; the current certificate stays in place")
            }
        }
        let jitter = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tokio::time::sleep(jitter).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One watch: every certificate it pushes is delivered. Returns when the stream ends.
async fn watch(
    server: &str,
    tls: &ClientTls,
    request: &IssueCertificateRequest,
    sink: &Sinks,
    delivered: &mut bool,
) -> Result<(), AppError> {
    let mut client = connect(server, Some(tls)).await?;
    let mut stream = client
        .watch_certificate(request.clone())
        .await
        .map_err(|s| {
            AppError(format!(
                "the issuer refused: {:?}: {}",
                s.code(),
                s.message()
            ))
        })?
        .into_inner();
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| AppError(format!("the watch broke: {:?}: {}", s.code(), s.message())))?;
        let Some(msg) = msg else {
            return Ok(());
        };
        let Some(c) = msg.certificate else {
            continue;
        };
        sink.deliver(&c).await?;
        *delivered = true;
        println!("meshca agent: wrote {} ({})", describe(&c), msg.reason);
    }
}

fn describe(c: &IssuedCertificate) -> String {
    format!(
        "{} serial {} valid until {}",
        c.uri_sans.first().map_or("?", String::as_str),
        c.serial,
        super::inspect::fmt_time(c.not_after)
    )
}

/// Where certificates go: files (`cert.pem`, `key.pem`, `bundle.pem` in one directory), a
/// Kubernetes TLS Secret, AWS Secrets Manager (Kong's layout); any of them.
struct Sinks {
    dir: Option<PathBuf>,
    k8s: Option<store_kubernetes::TlsSecretSink>,
    aws: Option<meshca_aws::SecretsManagerSink>,
    key: PrivateKey,
    on_change: Option<String>,
}

impl Sinks {
    /// Writes `c` (never an expired one), the key on first use, then runs `--on-change`.
    async fn deliver(&self, c: &IssuedCertificate) -> Result<(), AppError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if c.not_after <= now {
            tracing::warn!(serial = %c.serial, "the issuer sent an expired certificate; not writing it");
            return Ok(());
        }
        if !c.private_key_pem.is_empty() {
            return Err(AppError(
                "the issuer generated a key although a CSR was sent; refusing it".into(),
            ));
        }
        if let Some(dir) = &self.dir {
            // Key first: a proxy reading cert.pem then finds the key that matches it.
            let key_path = dir.join("key.pem");
            if std::fs::read(&key_path).ok().as_deref() != Some(self.key.to_pem().expose()) {
                write_private(&key_path, self.key.to_pem().expose())?;
            }
            write_public(&dir.join("bundle.pem"), c.trust_bundle_pem.as_bytes())?;
            write_public(&dir.join("cert.pem"), c.cert_chain_pem.as_bytes())?;
        }
        if let Some(k8s) = &self.k8s {
            k8s.write(
                c.cert_chain_pem.as_bytes(),
                self.key.to_pem().expose(),
                c.trust_bundle_pem.as_bytes(),
            )
            .await
            .map_err(|e| AppError(ca_core::error_chain(&e)))?;
        }
        if let Some(aws) = &self.aws {
            let key = std::str::from_utf8(self.key.to_pem().expose())
                .map_err(|_| AppError("the key PEM is not text".into()))?
                .to_owned();
            aws.write(&c.cert_chain_pem, &key)
                .await
                .map_err(|e| AppError(ca_core::error_chain(&e)))?;
        }
        if let Some(cmd) = &self.on_change {
            run_on_change(cmd, self.dir.as_deref()).await;
        }
        Ok(())
    }
}

/// Runs `cmd` with `sh -c` (bounded in time); a failure is logged, the files stay.
async fn run_on_change(cmd: &str, dir: Option<&Path>) {
    let mut command = tokio::process::Command::new("sh");
    command.arg("-c").arg(cmd).kill_on_drop(true);
    if let Some(dir) = dir {
        command.env("MESHCA_CERT_DIR", dir);
    }
    let child = command.status();
    match tokio::time::timeout(ON_CHANGE_TIMEOUT, child).await {
        Ok(Ok(s)) if s.success() => {}
        Ok(Ok(s)) => tracing::warn!(command = cmd, status = %s, "--on-change failed"),
        Ok(Err(e)) => tracing::warn!(command = cmd, error = %e, "--on-change could not run"),
        Err(_) => tracing::warn!(command = cmd, "--on-change did not finish in 30 s; killed"),
    }
}
