//! `meshca agent`: keeps one identity's certificate fresh in files a proxy reads (nginx, Kong).
//!
//! The key is generated here (P-256) and never leaves this process but into `key.pem`; the
//! issuer gets a CSR. The agent holds a `WatchCertificate` stream and writes every certificate it
//! pushes (rotation, CA change) to the files sink — `cert.pem` (leaf, then chain), `key.pem`
//! (0600), `bundle.pem`, in a directory created 0700 — each written atomically (temp file,
//! fsync, rename), then runs `--on-change`. Every answer is checked first ([`super::trust`]): the
//! leaf is for our key and exactly our identity, valid by its own dates, and chains to a bundle
//! that keeps a root we already trust; an answer that fails is written nowhere, `--on-change`
//! does not run, and the error names the reason. When the issuer is away (or refused) the files
//! keep the current certificate and the agent reconnects with jittered backoff. `--once` writes
//! one certificate and exits (init containers, cron).
//!
//! With `--workload-api-socket` the agent asks for an X.509-SVID (one URI SAN, its SPIFFE ID)
//! and also serves it on the SPIFFE Workload API ([`super::workload`]), alone or besides the
//! other sinks.
//!
//! The issuer is reached over TLS only (`--server http://…` is refused), unless `--plaintext`
//! names a loopback issuer started with `--insecure-plaintext` (no token then).
//!
//! It authenticates with a client certificate (`--client-cert`, default the bootstrap admin's)
//! or, with `--token-file`, with a bootstrap token for its first certificate only: from then on
//! it presents its own mesh certificate, as a data plane renewing its identity. A restarted agent
//! with a files sink picks up its key and still-valid certificate and needs no token again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ca_core::{
    ChainUsage, Identity, IssuedProblem, KeyType, MeshName, PrivateKey, SanProfile, TrustBundle,
};
use clap::Args;
use tonic::Code;

use ca_core::fsutil::FileError;

use super::client::{
    connect, refused, server_endpoint, with_token, ClientError, ClientIdentity, ClientTls,
    ConnArgs, Rpc,
};
use super::trust::{read_held_bundle, Expected, Refusal, Verified};
use super::workload::{WorkloadApi, WorkloadSocket, WorkloadSocketError};
use crate::api::token::TokenFileError;
use crate::files::{create_private_dir, write_private, write_public, ReadError};
use crate::flags::{parse_tags, Flag, UsageError};
use crate::proto::{IssueCertificateRequest, IssuedCertificate};

/// Why `meshca agent` stopped, or why one delivery failed (the agent then keeps the current
/// certificate and tries again).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AgentError {
    /// A flag cannot be used as given.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// The issuer cannot be reached, or refused.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `--token-file` cannot be used.
    #[error(transparent)]
    TokenFile(#[from] TokenFileError),
    /// `--signal-pid-file` cannot be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A file of the files sink cannot be written.
    #[error(transparent)]
    File(#[from] FileError),
    /// The agent's key could not be generated.
    #[error("cannot generate a key")]
    Key(#[source] ca_core::Error),
    /// The CSR could not be made.
    #[error("cannot make a CSR")]
    Csr(#[source] ca_core::Error),
    /// The key's PEM is not text (it always is: PEM is ASCII).
    #[error("the key PEM is not text")]
    KeyNotText(#[source] std::str::Utf8Error),
    /// The issuer's answer failed a check; nothing was written and `--on-change` did not run.
    #[error("refused the issuer's answer, nothing written{hint}")]
    Refused {
        /// What to do about it, when the agent can tell (` (...)`, or empty).
        hint: &'static str,
        #[source]
        source: Refusal,
    },
    /// A sink other than files (Kubernetes, AWS Secrets Manager) failed; named by its flag.
    #[error("{sink}")]
    Sink {
        sink: &'static str,
        #[source]
        source: ca_core::Error,
    },
    /// The Workload API socket cannot be set up.
    #[error(transparent)]
    WorkloadSocket(#[from] WorkloadSocketError),
    /// The SVID cannot be served on the Workload API.
    #[error("--workload-api-socket: cannot serve the SVID: {0}")]
    WorkloadApi(String),
    /// The pid file holds no process id.
    #[error("{} does not hold a process id", path.display())]
    NoPid { path: PathBuf },
    /// The process could not be signalled.
    #[error("cannot send {signal:?} to pid {pid} (from {})", path.display())]
    Signal {
        signal: ReloadSignal,
        pid: i32,
        path: PathBuf,
        #[source]
        source: rustix::io::Errno,
    },
}

/// The longest pause between reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long `--on-change` may run.
const ON_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// A certificate of our own is used to renew only while it has this much life left.
const OWN_CERT_MARGIN_SECS: i64 = 1;

#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    #[command(flatten)]
    conn: ConnArgs,
    /// A bootstrap token (`meshca token create`) for the first certificate, instead of a client
    /// certificate; afterwards the agent renews with its own mesh certificate.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["client_cert", "plaintext"])]
    token_file: Option<PathBuf>,
    /// The mesh.
    #[arg(long, default_value = "default")]
    mesh: String,
    /// A tag of the identity, KEY=VALUE; repeat it or separate with commas. `kuma.io/service` is required.
    #[arg(
        long = "tag",
        value_name = "KEY=VALUE",
        required = true,
        value_delimiter = ','
    )]
    tags: Vec<String>,
    /// A DNS SAN the mesh's backend adds to every certificate (its `dnsNames`); repeat it or separate with commas. A
    /// certificate whose DNS SANs are not exactly these is refused.
    #[arg(long = "dns-name", value_name = "DNS", value_delimiter = ',')]
    dns_names: Vec<String>,
    /// Files sink: where cert.pem, key.pem (0600) and bundle.pem are kept (created 0700). The
    /// bundle.pem found there at start is the trust the next answer must keep a root of.
    #[arg(long, required_unless_present_any = ["k8s_secret", "aws_cert_secret", "workload_api_socket"])]
    out_dir: Option<PathBuf>,
    /// SPIFFE Workload API sink: serve the agent's X.509-SVID (only the SPIFFE ID
    /// `spiffe://<mesh>/<service>` as URI SAN; the tags must be one `kuma.io/service` value), its
    /// key and the bundle on this Unix socket, for go-spiffe, py-spiffe, java-spiffe or
    /// spiffe-helper (point their `SPIFFE_ENDPOINT_SOCKET` at `unix://PATH`). Its directory is
    /// created 0755 when missing and the socket is 0777, as SPIRE's agent does; callers are
    /// admitted by uid (the agent's own and --workload-api-allow-uid).
    #[arg(long, value_name = "PATH", conflicts_with = "once")]
    workload_api_socket: Option<PathBuf>,
    /// A uid, besides the agent's own, whose processes may call --workload-api-socket (e.g. the
    /// workload container's runAsUser); repeat it or separate with commas.
    #[arg(
        long = "workload-api-allow-uid",
        value_name = "UID",
        value_delimiter = ',',
        requires = "workload_api_socket"
    )]
    workload_api_allow_uids: Vec<u32>,
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
    /// (outside a pod) the kubeconfig context's namespace, as kubectl.
    #[arg(long, value_name = "NS", requires = "k8s_secret")]
    k8s_namespace: Option<String>,
    /// Command run (`sh -c`) after every new certificate is in place, e.g. `nginx -s reload`.
    #[arg(long, value_name = "CMD")]
    on_change: Option<String>,
    /// After every new certificate is in place, send --signal to the process whose pid this file
    /// holds (e.g. nginx's pid file: HUP reloads it), besides or instead of --on-change.
    #[arg(long, value_name = "FILE")]
    signal_pid_file: Option<PathBuf>,
    /// The signal for --signal-pid-file.
    #[arg(long, value_enum, default_value_t = ReloadSignal::Hup, requires = "signal_pid_file")]
    signal: ReloadSignal,
    /// Write one certificate and exit.
    #[arg(long)]
    once: bool,
}

#[cfg(test)]
impl AgentArgs {
    /// The `--tag` values as parsed.
    pub(crate) fn tags_for_test(&self) -> &[String] {
        &self.tags
    }
}

/// Signals a proxy reloads its certificates on.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub(crate) enum ReloadSignal {
    /// SIGHUP (nginx, Kong's nginx).
    Hup,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2 (HAProxy's master-worker reload).
    Usr2,
}

impl ReloadSignal {
    fn get(self) -> rustix::process::Signal {
        match self {
            Self::Hup => rustix::process::Signal::HUP,
            Self::Usr1 => rustix::process::Signal::USR1,
            Self::Usr2 => rustix::process::Signal::USR2,
        }
    }
}

pub(crate) async fn agent(a: AgentArgs) -> Result<(), AgentError> {
    // Before anything touches a credential or the network.
    server_endpoint(&a.conn.server, !a.conn.plaintext)?;
    let tags = parse_tags(&a.tags)?;
    let mesh = MeshName::new(a.mesh.as_str()).map_err(UsageError::invalid(Flag::new("--mesh")))?;
    let profile = if a.workload_api_socket.is_some() {
        SanProfile::Svid
    } else {
        SanProfile::Kuma
    };
    let identity = Identity::new(mesh, tags.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .and_then(|id| id.with_profile(profile))
        .map_err(UsageError::invalid(Flag::new("--tag")))?;
    // What a certificate must carry: the identity's URI SANs and the backend's DNS names (the
    // CSR asks for the URI SANs only; the issuer adds the DNS names itself).
    let expected_identity = if a.dns_names.is_empty() {
        identity.clone()
    } else {
        identity
            .clone()
            .with_dns_names(a.dns_names.iter().cloned())
            .map_err(UsageError::invalid(Flag::new("--dns-name")))?
    };
    let token = match &a.token_file {
        Some(p) => Some(crate::api::token::read_token_file(p)?),
        None => None,
    };
    // The trust a previous run left: the next bundle must keep one of its roots.
    let held = a
        .out_dir
        .as_ref()
        .and_then(|dir| read_held_bundle(&dir.join("bundle.pem")));
    // With a token, a files sink that still holds our key and a valid certificate for this
    // identity lets a restarted agent renew without the token.
    let kept = match (&token, &a.out_dir, &held) {
        (Some(_), Some(dir), Some(held)) => kept_credentials(dir, &identity, held),
        _ => None,
    };
    let (key, own) = match kept {
        Some((key, chain, not_after)) => (key, Some((chain, not_after))),
        None => (
            KeyType::EcdsaP256.generate().map_err(AgentError::Key)?,
            None,
        ),
    };
    let csr = key
        .csr_der_with_dns(&identity.uri_sans(), identity.dns_sans())
        .map_err(AgentError::Csr)?;
    let request = IssueCertificateRequest {
        mesh: a.mesh.clone(),
        tags: super::proto_tags(&tags),
        csr,
        profile: super::proto_profile(profile),
    };
    let auth = match token {
        Some(token) => Auth::Token {
            token,
            ca: a.conn.ca(),
        },
        None => Auth::Client(a.conn.client_tls()),
    };
    if let Some(dir) = &a.out_dir {
        create_private_dir(dir)?;
    }
    let k8s = match &a.k8s_secret {
        Some(name) => {
            let name = ca_core::SecretName::new(name.as_str())
                .map_err(UsageError::invalid(Flag::quoted("--k8s-secret", name)))?;
            if let Some(ns) = a
                .k8s_namespace
                .as_ref()
                .filter(|ns| !ca_core::is_namespace_name(ns))
            {
                return Err(UsageError::refused(
                    Flag::quoted("--k8s-namespace", ns),
                    "is not a Kubernetes namespace name",
                )
                .into());
            }
            let client =
                store_kubernetes::default_client()
                    .await
                    .map_err(|source| AgentError::Sink {
                        sink: "--k8s-secret",
                        source,
                    })?;
            let ns = a
                .k8s_namespace
                .clone()
                .unwrap_or_else(|| store_kubernetes::default_namespace(&client));
            Some(store_kubernetes::TlsSecretSink::new(client, &ns, &name))
        }
        None => None,
    };
    let aws = match (&a.aws_cert_secret, &a.aws_key_secret) {
        (Some(cert), Some(key)) => {
            let cert = meshca_aws::SecretTarget::parse(cert, "cert")
                .map_err(|e| UsageError::refused(Flag::new("--aws-cert-secret"), e))?;
            let key = meshca_aws::SecretTarget::parse(key, "key")
                .map_err(|e| UsageError::refused(Flag::new("--aws-key-secret"), e))?;
            Some(meshca_aws::SecretsManagerSink::new(
                meshca_aws::SecretsManager::new(),
                cert,
                key,
            ))
        }
        _ => None,
    };
    let workload = match &a.workload_api_socket {
        Some(path) => {
            let socket = WorkloadSocket::bind(path, &a.workload_api_allow_uids)?;
            let api = WorkloadApi::new();
            tokio::spawn(super::workload::serve(socket, Arc::clone(&api)));
            crate::output::say_as(
                "meshca agent",
                &format!("Workload API listening on unix://{}", path.display()),
            );
            Some(api)
        }
        None => None,
    };
    let sink = Sinks {
        dir: a.out_dir.clone(),
        k8s,
        aws,
        workload,
        expected: Expected::new(&expected_identity, key.spki_der()),
        key,
        held: Mutex::new(held),
        own: Mutex::new(own),
        on_change: a.on_change.clone(),
        signal: a.signal_pid_file.clone().map(|p| (p, a.signal)),
    };
    let server = a.conn.server.as_str();

    if a.once {
        let c = match &auth {
            Auth::Token { token, ca } => issue_with_token(server, ca, token, &request).await?,
            Auth::Client(tls) => connect(server, tls.as_ref())
                .await?
                .issue_certificate(request)
                .await
                .map_err(refused)?
                .into_inner()
                .certificate
                .ok_or(ClientError::NoCertificate)?,
        };
        let v = sink.deliver(&c).await?;
        crate::output::say_as("meshca agent", &format!("wrote {}", describe(&v)));
        return Ok(());
    }

    let mut backoff = Duration::from_secs(1);
    loop {
        let mut delivered = false;
        let result = watch(server, &auth, &request, &sink, &mut delivered).await;
        if delivered {
            // The issuer was there: start the backoff over.
            backoff = Duration::from_secs(1);
        }
        match result {
            Ok(()) => tracing::warn!("the issuer ended the watch; watching again"),
            Err(e) => {
                tracing::warn!(error = %ca_core::error_chain(&e), retry_in = ?backoff, "watch failed; the current certificate stays in place")
            }
        }
        let jitter = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        tokio::time::sleep(jitter).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// How the agent authenticates.
enum Auth {
    /// A client certificate (an operator's, or a data plane's own from files); `None`: plaintext
    /// to a loopback issuer (`--plaintext`).
    Client(Option<ClientTls>),
    /// A bootstrap token for the first certificate, then our own certificate.
    Token { token: String, ca: PathBuf },
}

/// The first certificate, on the strength of a bootstrap token (TLS without a client
/// certificate).
async fn issue_with_token(
    server: &str,
    ca: &Path,
    token: &str,
    request: &IssueCertificateRequest,
) -> Result<IssuedCertificate, ClientError> {
    let tls = ClientTls {
        ca: ca.to_owned(),
        identity: ClientIdentity::None,
    };
    connect(server, Some(&tls))
        .await?
        .issue_certificate(with_token(request.clone(), token)?)
        .await
        .map_err(refused)?
        .into_inner()
        .certificate
        .ok_or(ClientError::NoCertificate)
}

/// One watch: every certificate it pushes is delivered. Returns when the stream ends.
async fn watch(
    server: &str,
    auth: &Auth,
    request: &IssueCertificateRequest,
    sink: &Sinks,
    delivered: &mut bool,
) -> Result<(), AgentError> {
    let tls = match auth {
        Auth::Client(tls) => tls.clone(),
        Auth::Token { token, ca } => {
            let own = match sink.own_valid() {
                Some(chain) => chain,
                None => {
                    // No certificate of our own (yet, or any more): the token gets one.
                    let c = issue_with_token(server, ca, token, request).await?;
                    let v = sink.deliver(&c).await?;
                    *delivered = true;
                    crate::output::say_as(
                        "meshca agent",
                        &format!("wrote {} (bootstrap token)", describe(&v)),
                    );
                    v.chain_pem
                }
            };
            Some(ClientTls {
                ca: ca.clone(),
                identity: ClientIdentity::Pem {
                    cert: own,
                    key: sink.key.to_pem(),
                },
            })
        }
    };
    let mut client = connect(server, tls.as_ref()).await?;
    let mut stream = match client.watch_certificate(request.clone()).await {
        Ok(r) => r.into_inner(),
        Err(s) => {
            if s.code() == Code::PermissionDenied && matches!(auth, Auth::Token { .. }) {
                // Our certificate no longer identifies us (another identity, another CA): fall
                // back to the token next time.
                sink.forget_own();
            }
            return Err(refused(s).into());
        }
    };
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| ClientError::WatchBroke(Rpc(s)))?;
        let Some(msg) = msg else {
            return Ok(());
        };
        let Some(c) = msg.certificate else {
            continue;
        };
        let v = sink.deliver(&c).await?;
        *delivered = true;
        crate::output::say_as(
            "meshca agent",
            &format!("wrote {} ({})", describe(&v), msg.reason),
        );
    }
}

/// What was written, from the certificate itself (not from the answer's fields).
fn describe(v: &Verified) -> String {
    format!(
        "{} serial {} valid until {}",
        v.spiffe_id,
        v.serial,
        super::inspect::fmt_time(v.not_after)
    )
}

/// Where certificates go: files (`cert.pem`, `key.pem`, `bundle.pem` in one directory), a
/// Kubernetes TLS Secret, AWS Secrets Manager (Kong's layout); any of them.
struct Sinks {
    dir: Option<PathBuf>,
    k8s: Option<store_kubernetes::TlsSecretSink>,
    aws: Option<meshca_aws::SecretsManagerSink>,
    /// The SPIFFE Workload API's SVID holder.
    workload: Option<Arc<WorkloadApi>>,
    /// What an answer must be to be written.
    expected: Expected,
    key: PrivateKey,
    /// The trust bundle last written (or left by a previous run): a new one must keep a root.
    held: Mutex<Option<TrustBundle>>,
    /// The last certificate delivered (leaf + chain PEM) and its expiry, for renewing with it.
    own: Mutex<Option<(String, i64)>>,
    on_change: Option<String>,
    /// A pid file and the signal to send its process after each delivery.
    signal: Option<(PathBuf, ReloadSignal)>,
}

impl Sinks {
    /// Our last certificate, while it has life left.
    fn own_valid(&self) -> Option<String> {
        let own = self
            .own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        own.as_ref()
            .filter(|(_, not_after)| *not_after > unix_now() + OWN_CERT_MARGIN_SECS)
            .map(|(chain, _)| chain.clone())
    }

    fn forget_own(&self) {
        *self
            .own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Checks `c` ([`Expected::check`]); then writes it, the key on first use, and runs
    /// `--on-change`. A refused answer is written nowhere and runs nothing.
    async fn deliver(&self, c: &IssuedCertificate) -> Result<Verified, AgentError> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let v = self
            .expected
            .check(c, held.as_ref(), SystemTime::now())
            .map_err(|source| {
                let hint = match &source {
                    Refusal::Certificate(IssuedProblem::WrongDnsSans { extra, .. })
                        if !extra.is_empty() =>
                    {
                        " (if the mesh's backend sets dnsNames, pass each with --dns-name)"
                    }
                    _ => "",
                };
                AgentError::Refused { hint, source }
            })?;
        self.write(&v).await?;
        *self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v.bundle.clone());
        *self
            .own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((v.chain_pem.clone(), v.not_after));
        if let Some(cmd) = &self.on_change {
            run_on_change(cmd, self.dir.as_deref()).await;
        }
        if let Some((pid_file, signal)) = &self.signal {
            if let Err(e) = send_signal(pid_file, *signal) {
                tracing::warn!(error = %ca_core::error_chain(&e), "--signal-pid-file: the proxy was not signalled; the files are in place");
            }
        }
        Ok(v)
    }

    /// Writes a verified certificate to every sink.
    async fn write(&self, c: &Verified) -> Result<(), AgentError> {
        if let Some(dir) = &self.dir {
            // Key first: a proxy reading cert.pem then finds the key that matches it.
            let key_path = dir.join("key.pem");
            if std::fs::read(&key_path).ok().as_deref() != Some(self.key.to_pem().expose()) {
                write_private(&key_path, self.key.to_pem().expose())?;
            }
            write_public(&dir.join("bundle.pem"), c.bundle_pem.as_bytes())?;
            write_public(&dir.join("cert.pem"), c.chain_pem.as_bytes())?;
        }
        if let Some(k8s) = &self.k8s {
            k8s.write(
                c.chain_pem.as_bytes(),
                self.key.to_pem().expose(),
                c.bundle_pem.as_bytes(),
            )
            .await
            .map_err(|source| AgentError::Sink {
                sink: "--k8s-secret",
                source,
            })?;
        }
        if let Some(api) = &self.workload {
            api.publish(c, &self.key).map_err(AgentError::WorkloadApi)?;
        }
        if let Some(aws) = &self.aws {
            let key = std::str::from_utf8(self.key.to_pem().expose())
                .map_err(AgentError::KeyNotText)?
                .to_owned();
            aws.write(&c.chain_pem, &key)
                .await
                .map_err(|source| AgentError::Sink {
                    sink: "--aws-cert-secret",
                    source,
                })?;
        }
        Ok(())
    }
}

/// Sends `signal` to the process whose pid `pid_file` holds.
fn send_signal(pid_file: &Path, signal: ReloadSignal) -> Result<(), AgentError> {
    let text = crate::files::read_file(pid_file, "pid file")?;
    let pid = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
        .filter(|p| *p > 1)
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| AgentError::NoPid {
            path: pid_file.to_owned(),
        })?;
    rustix::process::kill_process(pid, signal.get()).map_err(|source| AgentError::Signal {
        signal,
        pid: pid.as_raw_nonzero().get(),
        path: pid_file.to_owned(),
        source,
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The key and certificate a previous run left in `dir`, if the certificate is for `identity`,
/// for that key, still valid for a while, and chains to the bundle `held` that run left.
fn kept_credentials(
    dir: &Path,
    identity: &Identity,
    held: &TrustBundle,
) -> Option<(PrivateKey, String, i64)> {
    let key = PrivateKey::from_pem(&std::fs::read(dir.join("key.pem")).ok()?).ok()?;
    let chain = String::from_utf8(std::fs::read(dir.join("cert.pem")).ok()?).ok()?;
    let certs = ca_core::x509::parse_pem_certs(chain.as_bytes()).ok()?;
    let (leaf, intermediates) = certs.split_first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let not_after = cert.validity().not_after.timestamp();
    let fits = cert.public_key().raw == key.spki_der().as_slice()
        && crate::api::authz::uri_sans(&cert) == identity.uri_sans()
        && not_after > unix_now() + OWN_CERT_MARGIN_SECS
        && held
            .verify_chain_for(
                leaf,
                intermediates,
                SystemTime::now(),
                ChainUsage::ClientAndServer,
            )
            .is_ok();
    fits.then_some((key, chain, not_after))
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
