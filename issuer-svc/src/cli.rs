//! The `meshca` command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ca_core::{
    DirectorySecretStore, Identity, IssueParams, KeySource, KeyType, MeshName, SecretStore,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::bootstrap::{write_private, write_public, BootstrapPaths};
use crate::proto::issuer_client::IssuerClient;
use crate::proto::{IssueCertificateRequest, Tag};
use crate::util::{AppError, Context};
use meshca::{BuildContext, Manager, Registry};

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
}

/// `--store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// Files under DATA_DIR/secrets.
    File,
    /// Kubernetes Secrets (not available yet).
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
    /// Talk to a server started with --insecure-plaintext.
    #[arg(long)]
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
            Command::Inspect(a) => crate::inspect::inspect(&a.file, a.bundle.as_deref()),
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

async fn issue_local(
    config: &Path,
    a: &IssueArgs,
    tags: &[(String, String)],
    csr: Option<&[u8]>,
) -> Result<(String, Option<String>, String, String), AppError> {
    let text = crate::limits::read_config_file(config, "mesh config")?;
    let meshes = crate::meshfile::parse_off_runtime(text).await?;
    let mesh = meshes
        .iter()
        .find(|m| m.name.as_str() == a.mesh)
        .ok_or_else(|| {
            AppError(format!(
                "{} defines no mesh `{}` (use --mesh)",
                config.display(),
                a.mesh
            ))
        })?;
    let Some((index, backend)) = mesh.enabled_backend_indexed() else {
        return Err(AppError(format!(
            "mesh `{}` has mTLS disabled: set mtls.enabledBackend",
            a.mesh
        )));
    };
    let store: Arc<dyn SecretStore> =
        Arc::new(DirectorySecretStore::new(a.data_dir.join("secrets"))?);
    let built = Registry::new()
        .build(
            &BuildContext::new(store, ca_core::SourcePolicy::local()),
            &mesh.name,
            index,
            backend,
        )
        .await?;
    for w in &built.warnings {
        eprintln!("meshca: warning: {w}");
    }
    built.ca.ensure().await?;
    let identity = Identity::new(
        MeshName::new(a.mesh.as_str())?,
        tags.iter().map(|(k, v)| (k, v)),
    )?;
    let der = csr.map(csr_der).transpose()?;
    let key = match &der {
        Some(d) => KeySource::Csr(d),
        None => KeySource::Generate(KeyType::EcdsaP256),
    };
    let params = IssueParams::new(identity, key, backend.dp_cert_expiration)
        .with_common_name(backend.common_name());
    let cert = ca_core::issue_certificate(built.ca.as_ref(), params).await?;
    let summary = format!(
        "issued {} from backend `{}` of mesh `{}`, serial {}, valid until {}",
        cert.identity(),
        backend.name,
        mesh.name,
        cert.serial_hex(),
        crate::inspect::fmt_time(crate::util::unix(cert.not_after())),
    );
    Ok((
        cert.chain_pem(),
        cert.key_pem()
            .and_then(|k| k.expose_str())
            .map(str::to_owned),
        cert.bundle().to_pem(),
        summary,
    ))
}

fn csr_der(bytes: &[u8]) -> Result<Vec<u8>, AppError> {
    if bytes.starts_with(b"-----BEGIN") {
        let p = pem::parse(bytes).ctx(|| "the CSR is not valid PEM".into())?;
        Ok(p.into_contents())
    } else {
        Ok(bytes.to_vec())
    }
}

/// TLS settings for talking to an issuer.
#[derive(Debug, Clone)]
pub(crate) struct ClientTls {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Connects to an issuer; `tls: None` for plaintext.
pub(crate) async fn connect(
    server: &str,
    tls: Option<&ClientTls>,
) -> Result<IssuerClient<Channel>, AppError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("{scheme}://{server}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .ctx(|| format!("`{server}` is not a server address (try 127.0.0.1:5680)"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if let Some(t) = tls {
        let read = |p: &Path| {
            std::fs::read(p).ctx(|| {
            format!(
                "cannot read {} (run `meshca serve` once to create the bootstrap credentials, or pass --data-dir / --ca-cert / --client-cert / --client-key)",
                p.display()
            )
        })
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&t.ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read(&t.cert)?,
                read(&t.key)?,
            ));
        endpoint = endpoint.tls_config(config).ctx(|| "TLS setup".into())?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        AppError(format!(
            "cannot reach the issuer at {url}: {} (is `meshca serve` running there?)",
            crate::status::message(&e)
        ))
    })?;
    Ok(IssuerClient::new(channel))
}

async fn issue_remote(
    a: &IssueArgs,
    tags: &[(String, String)],
    csr: Option<Vec<u8>>,
) -> Result<(String, Option<String>, String, String), AppError> {
    let paths = BootstrapPaths::new(&a.data_dir);
    let tls = (!a.plaintext).then(|| ClientTls {
        ca: a.ca_cert.clone().unwrap_or(paths.ca.clone()),
        cert: a.client_cert.clone().unwrap_or(paths.admin.clone()),
        key: a.client_key.clone().unwrap_or(paths.admin_key.clone()),
    });
    let mut client = connect(&a.server, tls.as_ref()).await?;
    let req = IssueCertificateRequest {
        mesh: a.mesh.clone(),
        tags: tags
            .iter()
            .map(|(k, v)| Tag {
                name: k.clone(),
                value: v.clone(),
            })
            .collect(),
        csr: csr.unwrap_or_default(),
    };
    let resp = client
        .issue_certificate(req)
        .await
        .map_err(|s| {
            AppError(format!(
                "the issuer refused: {:?}: {}",
                s.code(),
                s.message()
            ))
        })?
        .into_inner();
    let c = resp
        .certificate
        .ok_or_else(|| AppError("the issuer answered without a certificate".into()))?;
    let summary = format!(
        "issued {} from backend `{}` of mesh `{}`, serial {}, valid until {}, rotate at {}",
        c.uri_sans.first().map_or("?", String::as_str),
        c.backend,
        a.mesh,
        c.serial,
        crate::inspect::fmt_time(c.not_after),
        crate::inspect::fmt_time(c.rotate_at),
    );
    let key = (!c.private_key_pem.is_empty()).then_some(c.private_key_pem);
    Ok((c.cert_chain_pem, key, c.trust_bundle_pem, summary))
}

async fn validate(a: ValidateArgs) -> Result<(), AppError> {
    let text = crate::limits::read_config_file(&a.config, "mesh config")?;
    let lower: Option<Arc<dyn SecretStore>> = match &a.data_dir {
        Some(d) => Some(Arc::new(DirectorySecretStore::new(d.join("secrets"))?)),
        None => None,
    };
    // The same acceptance path as `serve` (start and reload) uses for a file.
    let meshes = match crate::meshfile::parse_off_runtime(text).await {
        Ok(m) => m,
        Err(ca_core::Error::InvalidConfig(v)) => {
            println!("{}: INVALID", a.config.display());
            for x in v.iter() {
                println!("  {}: {}", x.field, x.message);
            }
            return Err(AppError(format!(
                "{} has {} violation(s)",
                a.config.display(),
                v.0.len()
            )));
        }
        Err(e) => return Err(e.into()),
    };
    let store: Arc<dyn SecretStore> = match lower {
        Some(l) => l,
        None => Arc::new(ca_core::OverlaySecretStore::new(None)),
    };
    // Validation builds over an in-memory overlay of the store: nothing is persisted.
    let manager = Manager::builder(Registry::new(), store).build();
    let mut bad = 0;
    for mesh in &meshes {
        let r = crate::wire::validation(
            mesh,
            manager
                .validate(mesh, ca_core::SourcePolicy::local(), !a.no_test_cert)
                .await,
        );
        if r.ok {
            println!("mesh {}: OK", mesh.name);
        } else {
            bad += 1;
            println!("mesh {}: INVALID", mesh.name);
        }
        for v in &r.violations {
            println!("  {}: {}", v.field, v.message);
        }
        for w in &r.warnings {
            println!("  warning: {w}");
        }
        if let Some(t) = &r.test_certificate {
            println!(
                "  test certificate from backend `{}` ({}): {} issued by {}, valid until {}",
                t.backend,
                t.backend_type,
                t.uri_sans.first().map_or("?", String::as_str),
                t.issuer,
                crate::inspect::fmt_time(t.not_after)
            );
        }
    }
    if bad > 0 {
        return Err(AppError(format!(
            "{bad} mesh(es) in {} failed validation",
            a.config.display()
        )));
    }
    Ok(())
}
