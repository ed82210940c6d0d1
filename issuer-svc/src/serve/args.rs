//! The flags of `meshca serve`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::flags::{parse_duration, positive};

/// `--store`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// Files under DATA_DIR/secrets.
    File,
    /// Kubernetes Secrets in --namespace (type `system.kuma.io/secret`, label `kuma.io/mesh`),
    /// through the pod's service account or the kubeconfig. Replicas share one builtin CA per
    /// backend and one bootstrap TLS CA (Secret `meshca-bootstrap-tls`).
    Kubernetes,
    /// PostgreSQL (--postgres-url or --postgres-url-file), in Kuma's `resources` table as
    /// kuma-cp universal keeps it: replicas on VMs share one builtin CA per backend and one
    /// bootstrap TLS CA, with each other and with kuma-cp.
    Postgres,
}

/// `--mesh-source`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum MeshSourceKind {
    /// --mesh-config (a directory of Mesh YAML files), else the embedded mesh `default`.
    Files,
    /// Kuma's cluster-scoped Mesh objects (meshes.kuma.io), watched; needs get, list and watch
    /// on them (and create on events.k8s.io events in namespace default, for refusals).
    Kubernetes,
    /// Kuma's Mesh rows in the `resources` table of --store postgres (kuma-cp universal),
    /// followed with LISTEN/NOTIFY and read every --reload-interval.
    Postgres,
}

/// A `postgres://` URL as given: it may hold a password, so `Debug` shows none of it.
#[derive(Clone)]
pub(crate) struct SecretUrl(pub(crate) String);

impl std::fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretUrl(..)")
    }
}

impl std::str::FromStr for SecretUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Where the issuer keeps its state: bootstrap TLS material and builtin CA secrets.
    #[arg(long, default_value = "./meshca-data")]
    pub(crate) data_dir: PathBuf,
    /// gRPC address. Use 127.0.0.1:0 for a free port (the bound one is printed).
    #[arg(long, default_value = "127.0.0.1:5690")]
    pub(crate) listen: SocketAddr,
    /// Address of /metrics, /healthz and /readyz (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:5691")]
    pub(crate) metrics_listen: SocketAddr,
    /// Directory of Mesh YAML files (*.yaml, *.yml; Universal or Kubernetes form, `---`
    /// separated documents allowed), re-read every --reload-interval. Default: mesh `default`
    /// with a builtin backend `ca-1`.
    #[arg(long)]
    pub(crate) mesh_config: Option<PathBuf>,
    /// Where the Meshes come from: files (--mesh-config, or the embedded default), kubernetes
    /// (Kuma's Mesh objects) or postgres (Kuma's Mesh rows, with --store postgres).
    #[arg(long, value_enum, default_value_t = MeshSourceKind::Files)]
    pub(crate) mesh_source: MeshSourceKind,
    /// How often to check --mesh-config for changes, and to read the Mesh rows with
    /// --mesh-source postgres besides LISTEN/NOTIFY (Kuma duration: 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub(crate) reload_interval: Duration,
    /// Where mesh secrets live.
    #[arg(long, value_enum, default_value_t = StoreKind::File)]
    pub(crate) store: StoreKind,
    /// Namespace of the Secrets with --store kubernetes. Default: the pod's own namespace, else
    /// (outside a pod) the kubeconfig context's namespace, as kubectl. From the environment
    /// (MESHCA_NAMESPACE, which also names the backends' system namespace) it is ignored with
    /// --store file.
    #[arg(long, value_name = "NS")]
    pub(crate) namespace: Option<String>,
    /// Namespace of meshca's own Secrets with --store kubernetes (`meshca-bootstrap-tls`,
    /// `meshca-token-signing-key`), when they belong elsewhere than the mesh secrets of
    /// --namespace (e.g. meshca's namespace beside Kuma's). Default: --namespace.
    #[arg(long, value_name = "NS")]
    pub(crate) own_namespace: Option<String>,
    /// The database with --store postgres:
    /// `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.pem`
    /// (sslmode disable, require or verify-full; TLS always checks the server against
    /// sslrootcert). A password on the command line is visible to local users: prefer
    /// MESHCA_POSTGRES_URL or --postgres-url-file.
    #[arg(
        long,
        value_name = "URL",
        hide_env_values = true,
        conflicts_with = "postgres_url_file"
    )]
    pub(crate) postgres_url: Option<SecretUrl>,
    /// A file holding the --postgres-url (its first line; e.g. a mounted secret, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub(crate) postgres_url_file: Option<PathBuf>,
    /// Use a data directory that is writable by group or others, or owned by another user, even
    /// though it already holds files (a CA planted there would be adopted). Without it such a
    /// directory is refused.
    #[arg(long)]
    pub(crate) adopt_open_data_dir: bool,
    /// Extra DNS name on the bootstrap server certificate (besides localhost, 127.0.0.1, ::1),
    /// e.g. the Service name `meshca.kuma-system.svc`; repeat it or separate with commas (at most 16).
    #[arg(long, value_name = "DNS", value_delimiter = ',')]
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
    /// Let a Mesh sent to ValidateBackend use the `env:` data source VAR; repeat it or separate with commas.
    #[arg(long, value_name = "VAR", value_delimiter = ',')]
    pub(crate) allow_env_source: Vec<String>,
    /// Let a Mesh sent to ValidateBackend contact the Vault at this origin
    /// (`https://vault.example:8200`, no path); repeat it or separate with commas. Without any, such a Mesh's vault
    /// backends are checked but not contacted.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    pub(crate) allow_vault_address: Vec<String>,
    /// Let a Mesh sent to ValidateBackend use the AWS Private CA with this ARN (with the
    /// server's AWS credentials if it names none); repeat it or separate with commas.
    #[arg(long, value_name = "ARN", value_delimiter = ',')]
    pub(crate) allow_acmpca_arn: Vec<String>,
    /// Let a Mesh sent to ValidateBackend request certificates from this cert-manager issuer,
    /// `KIND/NAME` or `KIND.GROUP/NAME` (`ClusterIssuer/mesh-ca`); repeat it or separate with commas. meshca never
    /// approves such requests itself.
    #[arg(long, value_name = "KIND/NAME", value_delimiter = ',')]
    pub(crate) allow_certmanager_issuer: Vec<String>,
    /// Server certificate chain (PEM) instead of the bootstrap one; needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// Server key (PEM) for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// How often to check --tls-cert and --tls-key for new content (cert-manager rotates them in
    /// place): a changed pair serves new handshakes at once; a pair that does not parse or fit
    /// together is refused with a warning and the previous one keeps serving.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub(crate) tls_reload_interval: Duration,
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
