//! The `meshca` command line: arguments and dispatch here; the gRPC client in [`client`], work
//! on local files in [`local`], certificate summaries in [`inspect`].

mod agent;
mod client;
pub(crate) mod inspect;
mod local;
mod token;
mod trust;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use self::client::issue_remote;
use self::local::{issue_local, validate};
use crate::error::{AppError, Context};
use crate::serve::bootstrap::{write_private, write_public};

const EXAMPLES: &str = "\
Examples:
  # Run a zone issuer with zero configuration: mesh `default`, builtin CA, mTLS with a bootstrap
  # CA and an admin client certificate in ./meshca-data.
  meshca serve

  # Ask it for a certificate (uses ./meshca-data/tls/admin*.pem to authenticate).
  meshca issue --mesh default --tag kuma.io/service=web --out-dir ./certs

  # Look at what you got, and check it against the trust bundle.
  meshca inspect ./certs/cert.pem --bundle ./certs/bundle.pem

  # Check a Mesh before applying it: every violation, then a test certificate.
  meshca validate --config mesh.yaml

  # Keep a proxy's certificate fresh, bootstrapped with a one-identity token (no operator key on
  # the proxy's side): mint the token, then run the agent beside nginx.
  meshca token create --tag kuma.io/service=web --valid-for 1h --out web.token
  meshca agent --token-file web.token --ca-cert ./meshca-data/tls/ca.pem \\
    --tag kuma.io/service=web --out-dir /etc/nginx/mesh --on-change 'nginx -s reload'

Exit status: 0 on success, 1 on any failure or violation, 2 on a usage error.";

/// meshca: a certificate authority for Kuma-style service meshes.
///
/// `meshca serve` runs the per-zone issuer (gRPC API `meshca.v1.Issuer`, mTLS by default);
/// the other commands talk to it or work on files.
#[derive(Debug, Parser)]
#[command(name = "meshca", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format (logs go to stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log level or filter (`info`, `debug`, `issuer_svc=debug`); RUST_LOG overrides it.
    /// Default: `info` for serve, `warn` for the other commands.
    #[arg(long, global = true)]
    log_level: Option<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the zone issuer.
    ///
    /// With no arguments: mesh `default` with a builtin CA `ca-1`, data in ./meshca-data, gRPC
    /// (mTLS) on 127.0.0.1:5680, metrics on 127.0.0.1:5681. On first start it creates a bootstrap
    /// CA, a server certificate for localhost and an admin client certificate in
    /// DATA_DIR/tls/ (keys 0600). It prints `meshca: grpc listening on ADDR` and
    /// `meshca: metrics listening on ADDR` with the bound addresses, then `meshca: ready`.
    Serve(ServeArgs),
    /// Get a certificate: from a running issuer (default), or locally from a Mesh file (--config).
    ///
    /// Writes OUT_DIR/cert.pem (leaf, then chain), OUT_DIR/key.pem (0600, when meshca generated
    /// the key, i.e. without --csr) and OUT_DIR/bundle.pem (the mesh's trust bundle).
    Issue(IssueArgs),
    /// Validate Mesh YAML: every violation, then a test certificate from the enabled backend.
    ///
    /// Nothing is persisted: a builtin CA made for the test certificate lives in memory only.
    Validate(ValidateArgs),
    /// Summarize a certificate or bundle (PEM): subject, SANs, issuer, validity, key, SHA-256.
    Inspect(InspectArgs),
    /// Keep one identity's certificate fresh in files a proxy reads.
    ///
    /// Generates the key locally, asks the issuer with a CSR, holds a WatchCertificate stream and
    /// writes OUT_DIR/cert.pem, key.pem (0600) and bundle.pem atomically on every rotation and CA
    /// change, then runs --on-change. Every answer is checked first (the agent's key, exactly its
    /// SANs, its own dates, a chain to a bundle that keeps a root already trusted); a refused one
    /// is written nowhere. Reconnects with backoff. --once writes one and exits.
    Agent(agent::AgentArgs),
    /// Bootstrap tokens: one identity's first certificate without an operator key.
    Token(token::TokenArgs),
}

/// `--store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// Files under DATA_DIR/secrets.
    File,
    /// Kubernetes Secrets in --namespace (type `system.kuma.io/secret`, label `kuma.io/mesh`),
    /// through the pod's service account or the kubeconfig. Replicas share one builtin CA per
    /// backend and one bootstrap TLS CA (Secret `meshca-bootstrap-tls`).
    Kubernetes,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Where the issuer keeps its state: bootstrap TLS material and builtin CA secrets.
    #[arg(long, default_value = "./meshca-data")]
    pub(crate) data_dir: PathBuf,
    /// gRPC address. Use 127.0.0.1:0 for a free port (the bound one is printed).
    #[arg(long, default_value = "127.0.0.1:5680")]
    pub(crate) listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:5681")]
    pub(crate) metrics_listen: SocketAddr,
    /// Directory of Mesh YAML files (*.yaml, *.yml; Universal or Kubernetes form, `---`
    /// separated documents allowed), re-read every --reload-interval. Default: mesh `default`
    /// with a builtin backend `ca-1`.
    #[arg(long)]
    pub(crate) mesh_config: Option<PathBuf>,
    /// How often to check --mesh-config for changes (Kuma duration: 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) reload_interval: Duration,
    /// Where mesh secrets live.
    #[arg(long, value_enum, default_value_t = StoreKind::File)]
    pub(crate) store: StoreKind,
    /// Namespace of the Secrets with --store kubernetes. Default: $MESHCA_NAMESPACE, else the
    /// pod's own namespace, else `kuma-system`.
    #[arg(long, value_name = "NS")]
    pub(crate) namespace: Option<String>,
    /// Namespace of meshca's own Secrets with --store kubernetes (`meshca-bootstrap-tls`,
    /// `meshca-token-signing-key`), when they belong elsewhere than the mesh secrets of
    /// --namespace (e.g. meshca's namespace beside Kuma's). Default: --namespace.
    #[arg(long, value_name = "NS")]
    pub(crate) own_namespace: Option<String>,
    /// Use a data directory that is writable by group or others, or owned by another user, even
    /// though it already holds files (a CA planted there would be adopted). Without it such a
    /// directory is refused.
    #[arg(long)]
    pub(crate) adopt_open_data_dir: bool,
    /// Extra DNS name on the bootstrap server certificate (besides localhost, 127.0.0.1, ::1),
    /// e.g. the Service name `meshca.kuma-system.svc`; repeat it (at most 16).
    #[arg(long, value_name = "DNS")]
    pub(crate) server_name: Vec<String>,
    /// Authorization file: which client identities (CA + CN or SPIFFE ID) may act on which
    /// meshes. The bootstrap admin may do everything; data planes may renew their own identity.
    #[arg(long)]
    pub(crate) authz: Option<PathBuf>,
    /// Extra CA (PEM) whose client certificates identify operators (besides the bootstrap CA).
    /// Its callers are named in --authz with `ca: FILE` (or `ca: sha256:HEX`).
    #[arg(long)]
    pub(crate) client_ca: Option<PathBuf>,
    /// Let a Mesh sent to ValidateBackend use `file:` data sources inside this directory
    /// (resolved paths must stay inside it; it may not overlap the data directory). Without it,
    /// such a Mesh may use only `secret:` (of its own mesh), `inline` and `inlineString`.
    #[arg(long, value_name = "DIR")]
    pub(crate) allow_file_sources: Option<PathBuf>,
    /// Let a Mesh sent to ValidateBackend use the `env:` data source VAR; repeat it.
    #[arg(long, value_name = "VAR")]
    pub(crate) allow_env_source: Vec<String>,
    /// Let a Mesh sent to ValidateBackend contact the Vault at this origin
    /// (`https://vault.example:8200`, no path); repeat it. Without any, such a Mesh's vault
    /// backends are checked but not contacted.
    #[arg(long, value_name = "URL")]
    pub(crate) allow_vault_address: Vec<String>,
    /// Let a Mesh sent to ValidateBackend use the AWS Private CA with this ARN (with the
    /// server's AWS credentials if it names none); repeat it.
    #[arg(long, value_name = "ARN")]
    pub(crate) allow_acmpca_arn: Vec<String>,
    /// Let a Mesh sent to ValidateBackend request certificates from this cert-manager issuer,
    /// `KIND/NAME` or `KIND.GROUP/NAME` (`ClusterIssuer/mesh-ca`); repeat it. meshca never
    /// approves such requests itself.
    #[arg(long, value_name = "KIND/NAME")]
    pub(crate) allow_certmanager_issuer: Vec<String>,
    /// Server certificate chain (PEM) instead of the bootstrap one; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Server key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Serve gRPC without TLS. Only on a loopback address; every caller is then trusted as admin.
    #[arg(long)]
    pub(crate) insecure_plaintext: bool,
    /// Fraction of a certificate's lifetime after which watchers get a new one (Kuma: 0.8).
    #[arg(long, default_value_t = 0.8)]
    pub(crate) rotate_fraction: f64,
    /// Up to this fraction of the time to rotation is taken off at random.
    #[arg(long, default_value_t = 0.1)]
    pub(crate) rotate_jitter: f64,
    /// Concurrent issue calls per backend.
    #[arg(long, default_value_t = 32)]
    pub(crate) max_concurrent_issues: usize,
    /// Distinct identities that must fail against a backend (within a minute) to open its circuit.
    #[arg(long, default_value_t = 3)]
    pub(crate) circuit_threshold: usize,
    /// How long an open circuit refuses calls before trying the backend again.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub(crate) circuit_cooldown: Duration,
    /// gRPC connections held at once; fewer if the open-file limit (raised to the hard limit at
    /// start) leaves less room. At the cap a newcomer closes the oldest idle connection without
    /// a client certificate first.
    #[arg(long, default_value_t = crate::limits::DEFAULT_MAX_CONNECTIONS, value_parser = positive)]
    pub(crate) max_connections: usize,
    /// TLS handshakes in progress, and connections without a client certificate (bootstrap
    /// tokens, strangers), each held at once; at most half of --max-connections.
    #[arg(long, default_value_t = crate::limits::DEFAULT_MAX_ANONYMOUS_CONNECTIONS, value_parser = positive)]
    pub(crate) max_anonymous_connections: usize,
    /// A connection without a client certificate that has no request in flight for this long is
    /// closed (with a certificate: 10 minutes).
    #[arg(long, default_value = crate::limits::DEFAULT_IDLE_TIMEOUT, value_parser = parse_duration)]
    pub(crate) idle_timeout: Duration,
    /// Requests and streams open at once on one connection; more get ResourceExhausted.
    #[arg(long, default_value_t = crate::limits::DEFAULT_MAX_STREAMS_PER_CONNECTION, value_parser = positive)]
    pub(crate) max_streams_per_connection: usize,
    /// WatchCertificate streams open at once for one identity; more get ResourceExhausted.
    #[arg(long, default_value_t = crate::limits::DEFAULT_MAX_WATCHES_PER_IDENTITY, value_parser = positive)]
    pub(crate) max_watches_per_identity: usize,
}

#[derive(Debug, Args)]
struct IssueArgs {
    /// The issuer's gRPC address (`127.0.0.1:5680` or `https://host:port`).
    #[arg(long, default_value = "127.0.0.1:5680", conflicts_with = "config")]
    server: String,
    /// Issue locally from this Mesh YAML instead of asking a server (builtin CAs persist in
    /// DATA_DIR/secrets, like the server's).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The mesh.
    #[arg(long, default_value = "default")]
    mesh: String,
    /// A tag of the identity, KEY=VALUE; repeat it. `kuma.io/service` is required.
    #[arg(long = "tag", value_name = "KEY=VALUE", required = true)]
    tags: Vec<String>,
    /// A PKCS#10 CSR (PEM or DER) for your own key; without it meshca generates a P-256 key.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Where to write cert.pem, key.pem and bundle.pem.
    #[arg(long)]
    out_dir: PathBuf,
    /// Data directory holding the bootstrap client credentials (DATA_DIR/tls/).
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
    /// Talk to a server started with --insecure-plaintext (loopback addresses only).
    #[arg(long, conflicts_with_all = ["ca_cert", "client_cert", "client_key"])]
    plaintext: bool,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The Mesh YAML (several `---` separated Meshes allowed).
    #[arg(long)]
    config: PathBuf,
    /// Only check the configuration; do not issue a test certificate.
    #[arg(long)]
    no_test_cert: bool,
    /// Read mesh secrets (for `secret:` data sources) from DATA_DIR/secrets.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct InspectArgs {
    /// A PEM file with one or more certificates.
    file: PathBuf,
    /// Also check that the first certificate chains to this bundle (PEM), using the others in
    /// FILE as intermediates.
    #[arg(long)]
    bundle: Option<PathBuf>,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    ca_core::KumaDuration::parse(s).map(|d| d.get())
}

/// A count of at least 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count: {e}")),
    }
}

/// Runs the CLI.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(
        cli.log_format,
        cli.log_level.as_deref().unwrap_or(default_level),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshca: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(a) => crate::serve::serve(a).await,
            Command::Issue(a) => issue(a).await,
            Command::Validate(a) => validate(a).await,
            Command::Inspect(a) => crate::cli::inspect::inspect(&a.file, a.bundle.as_deref()),
            Command::Agent(a) => agent::agent(a).await,
            Command::Token(a) => token::token(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshca: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat, level: &str) {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn parse_tags(tags: &[String]) -> Result<Vec<(String, String)>, AppError> {
    tags.iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| {
                    AppError(format!(
                        "--tag {t}: expected KEY=VALUE, e.g. --tag kuma.io/service=web"
                    ))
                })
        })
        .collect()
}

/// Tags as the API spells them.
fn proto_tags(tags: &[(String, String)]) -> Vec<crate::proto::Tag> {
    tags.iter()
        .map(|(k, v)| crate::proto::Tag {
            name: k.clone(),
            value: v.clone(),
        })
        .collect()
}

async fn issue(a: IssueArgs) -> Result<(), AppError> {
    let tags = parse_tags(&a.tags)?;
    let csr = match &a.csr {
        Some(p) => Some(std::fs::read(p).ctx(|| format!("cannot read CSR {}", p.display()))?),
        None => None,
    };
    let (chain, key, bundle, summary) = match &a.config {
        Some(config) => issue_local(config, &a, &tags, csr.as_deref()).await?,
        None => issue_remote(&a, &tags, csr.clone()).await?,
    };
    std::fs::create_dir_all(&a.out_dir).ctx(|| format!("cannot create {}", a.out_dir.display()))?;
    write_public(&a.out_dir.join("cert.pem"), chain.as_bytes())?;
    write_public(&a.out_dir.join("bundle.pem"), bundle.as_bytes())?;
    if let Some(k) = key {
        write_private(&a.out_dir.join("key.pem"), k.as_bytes())?;
    }
    println!("{summary}");
    println!(
        "wrote {}/cert.pem, {}bundle.pem",
        a.out_dir.display(),
        if csr.is_none() { "key.pem, " } else { "" }
    );
    Ok(())
}
