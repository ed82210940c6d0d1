//! `meshca serve`: wires the store, mesh states, scheduler, TLS, gRPC and metrics together.

pub(crate) mod args;
pub(crate) mod bootstrap;
pub(crate) mod conn;
pub(crate) mod grpc_metrics;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod tls;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ca_core::{Created, DirectorySecretStore, Scope, SecretName, SecretStore, SourcePolicy};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use store_kubernetes::KubernetesSecretStore;
use tokio::net::TcpListener;

use crate::api::authz::{AuthzSource, OperatorRoots, Policy, SharedPolicy};
use crate::api::service::IssuerService;
use crate::api::token::{Tokens, LEGACY_KEY_FILE};
use crate::api::watches::WatchLimit;
use crate::data_dir::{check_data_dir, warn_open_keys};
use crate::error::CliError;
use crate::files::{create_private_dir, IoError};
use crate::flags::{Flag, UsageError};
use crate::limits::{
    CERTIFIED_IDLE_TIMEOUT, HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT,
    MAX_CONCURRENT_VALIDATIONS, MAX_GRPC_MESSAGE,
};
use crate::proto::issuer_server::IssuerServer;
use crate::reload::kubernetes::KubeSource;
use crate::reload::postgres::PgSource;
use crate::reload::{ConfigSource, Doc, FileSource};
use crate::serve::args::{MeshSourceKind, ServeArgs, StoreKind};
use crate::serve::bootstrap::{keep_admin_fresh, BootstrapPaths, CaPem};
use crate::serve::conn::{ConnLayer, ConnLimits, Connections};
use crate::serve::grpc_metrics::GrpcMetricsLayer;
use crate::serve::metrics::Metrics;
use crate::serve::tls::{provider, read_certs, read_key};
use meshca::{Limits, Manager, RotationPolicy, DEFAULT_BUNDLE_REFRESH};

/// At most this many `--server-name`s.
const MAX_SERVER_NAMES: usize = 16;

/// The global secret holding the bootstrap TLS CA with `--store kubernetes`.
const BOOTSTRAP_SECRET: &str = "meshca-bootstrap-tls";

/// A certificate chain and its key.
type ChainAndKey = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// What `serve` checked before writing anything.
struct Checked {
    remote_sources: SourcePolicy,
    client_cas: Vec<CertificateDer<'static>>,
    own_tls: Option<ChainAndKey>,
    source: ConfigSource,
}

pub(crate) async fn serve(a: ServeArgs) -> Result<(), CliError> {
    let checked = check(&a)?;
    let (store, own, postgres) = open_store(&a).await?;

    let metrics = Arc::new(Metrics::default());
    // The library, started: it owns the rotation scheduler and the background work (bundle
    // refresh, CA switch completion, health) until `running` is dropped at the end of serve.
    let running = Manager::builder(meshca::registry(), store)
        .sources(meshca::local_sources())
        .limits(
            Limits::default()
                .with_concurrency(a.max_concurrent_issues)
                .with_circuit(a.circuit_threshold, a.circuit_cooldown),
        )
        .observer(metrics.clone())
        .rotation(RotationPolicy::new(a.rotate_fraction, a.rotate_jitter))
        .intervals(a.reload_interval, DEFAULT_BUNDLE_REFRESH)
        .start();
    let manager = running.manager().clone();
    let meshes = open_mesh_source(&a, checked.source, &manager, &metrics, postgres).await?;

    // From here on, things are written: the bootstrap TLS set, then the meshes' CAs.
    let paths = BootstrapPaths::new(&a.data_dir).with_server_names(a.server_name.clone());
    let (operator_roots, policy, server_tls) = if a.insecure_plaintext {
        tracing::warn!(
            "serving gRPC WITHOUT TLS on loopback: every local process is trusted as admin"
        );
        (None, Policy::default(), None)
    } else {
        // Replicas on Kubernetes share one bootstrap CA; on a VM it is the data directory's own.
        let seed = match a.store {
            StoreKind::Kubernetes | StoreKind::Postgres => Some(shared_bootstrap_ca(&*own).await?),
            StoreKind::File => None,
        };
        let (roots, policy, chain_key) = operators_and_server_cert(
            &a,
            &paths,
            seed.as_ref(),
            &checked.client_cas,
            checked.own_tls,
        )?;
        tokio::spawn(keep_admin_fresh(paths.clone()));
        metrics.set_server_chain(&chain_key.0);
        (Some(roots), policy, Some(chain_key))
    };
    follow_meshes(meshes, a.reload_interval).await?;
    let scheduler = running.scheduler().clone();

    let legacy_key = (a.store == StoreKind::File).then(|| a.data_dir.join(LEGACY_KEY_FILE));
    let tokens = Arc::new(Tokens::open(own, legacy_key).await?);
    tokio::spawn(tokens.clone().follow(a.reload_interval));

    let tls = match (server_tls, &operator_roots) {
        (Some((chain, key)), Some(roots)) => {
            let cert = tls::ServerCert::new(chain, key)?;
            if let (Some(c), Some(k)) = (&a.tls_cert, &a.tls_key) {
                let files = tls::CertFiles {
                    cert: c.clone(),
                    key: k.clone(),
                };
                let counted = metrics.clone();
                tokio::spawn(tls::follow_cert_files(
                    cert.clone(),
                    files,
                    a.tls_reload_interval,
                    move |chain| counted.set_server_chain(chain),
                ));
            }
            Some(tls::server(&manager, roots, cert)?)
        }
        _ => None,
    };
    let policy = SharedPolicy::new(policy);
    if let (Some(path), Some(roots)) = (&a.authz, &operator_roots) {
        let source = AuthzSource {
            path: path.clone(),
            bootstrap: roots.ids().first().cloned(),
            anchors: roots.ids().to_vec(),
        };
        let counted = metrics.clone();
        tokio::spawn(policy.clone().follow(source, a.reload_interval, move |r| {
            counted.authz_reload(r);
        }));
    }
    let service = IssuerService {
        manager: manager.clone(),
        scheduler,
        policy,
        operator_roots,
        callers: Default::default(),
        remote_sources: checked.remote_sources,
        validations: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_VALIDATIONS)),
        tokens,
        watches: WatchLimit::new(a.max_watches_per_identity),
    };

    let listener = TcpListener::bind(a.listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: a.listen,
            hint: " (is another meshca running? try --listen 127.0.0.1:0)",
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(CliError::LocalAddr)?;
    let metrics_listener = TcpListener::bind(a.metrics_listen)
        .await
        .map_err(|source| CliError::Listen {
            addr: a.metrics_listen,
            hint: " for metrics (try --metrics-listen 127.0.0.1:0)",
            source,
        })?;
    let metrics_addr = metrics_listener.local_addr().map_err(CliError::LocalAddr)?;
    tokio::spawn(http::serve(
        metrics_listener,
        metrics.clone(),
        manager.clone(),
    ));
    let (registry, max_streams) = connection_limits(&a);
    let router = router(service, max_streams, metrics.grpc_layer()).await?;

    let mode = if tls.is_some() { "mTLS" } else { "plaintext" };
    let say = crate::output::say;
    say(&format!("grpc listening on {grpc_addr} ({mode})"));
    say(&format!("metrics listening on {metrics_addr}"));
    if tls.is_some() {
        say(&format!(
            "data directory {}; admin client certificate {}",
            a.data_dir.display(),
            paths.admin.display()
        ));
        say(&format!(
            "try: meshca issue --server {grpc_addr} --data-dir {} --mesh default --tag kuma.io/service=web --out-dir ./certs",
            a.data_dir.display()
        ));
    } else {
        say(&format!(
            "try: meshca issue --server {grpc_addr} --plaintext --mesh default --tag kuma.io/service=web --out-dir ./certs"
        ));
    }
    metrics.ready.store(true, Ordering::Relaxed);
    say("ready");

    let shutdown = shutdown_signal();
    let result = router
        .serve_with_incoming_shutdown(tls::incoming(listener, tls, registry), shutdown)
        .await;
    metrics.ready.store(false, Ordering::Relaxed);
    running.shutdown().await;
    result.map_err(CliError::Grpc)?;
    tracing::info!("shut down");
    Ok(())
}

/// The secret store `--store` names, for the meshes' secrets, and the one for meshca's own
/// global secrets (bootstrap TLS CA, token signing key): the same store, or with
/// `--own-namespace` the Kubernetes store of that namespace. Kubernetes is reached once (a read)
/// before the data directory is created, so a missing API or Role is reported as such and
/// nothing is written.
async fn open_store(a: &ServeArgs) -> Result<OpenedStore, CliError> {
    check_data_dir(&a.data_dir, a.adopt_open_data_dir)?;
    let opened: OpenedStore = match a.store {
        StoreKind::File => {
            create_private_dir(&a.data_dir)?;
            let store = Arc::new(DirectorySecretStore::new(a.data_dir.join("secrets"))?);
            (store.clone(), store, None)
        }
        StoreKind::Kubernetes => {
            let failed = |source| CliError::CoreIn {
                context: "--store kubernetes",
                source,
            };
            let client = store_kubernetes::default_client().await.map_err(failed)?;
            let ns = a
                .namespace
                .clone()
                .unwrap_or_else(|| store_kubernetes::default_namespace(&client));
            let store = Arc::new(KubernetesSecretStore::new(client.clone(), &ns));
            // meshca's own Secrets (bootstrap TLS CA, token signing key) may live apart.
            let own = match a.own_namespace.as_ref().filter(|o| **o != ns) {
                Some(own) => Arc::new(KubernetesSecretStore::new(client, own)),
                None => store.clone(),
            };
            own.get(Scope::Global, &bootstrap_secret_name()?)
                .await
                .map_err(failed)?;
            tracing::info!(namespace = %ns, own_namespace = %own.namespace(), "secrets in Kubernetes");
            create_private_dir(&a.data_dir)?;
            (store, own, None)
        }
        StoreKind::Postgres => {
            let url = postgres_url(a)?;
            let store = store_postgres::PostgresSecretStore::connect(&url, POSTGRES_TIMEOUT)
                .await
                .map_err(|source| CliError::CoreIn {
                    context: "--store postgres",
                    source,
                })?;
            let store = Arc::new(store);
            store
                .get(Scope::Global, &bootstrap_secret_name()?)
                .await
                .map_err(|source| CliError::CoreIn {
                    context: "--store postgres",
                    source,
                })?;
            tracing::info!(database = %store.url(), "secrets in PostgreSQL (Kuma's resources table)");
            create_private_dir(&a.data_dir)?;
            (store.clone(), store.clone(), Some(store))
        }
    };
    warn_open_keys(&a.data_dir);
    Ok(opened)
}

/// The mesh secrets' store, meshca's own store, and the PostgreSQL store again when it is
/// one (for `--mesh-source postgres`).
type OpenedStore = (
    Arc<dyn SecretStore>,
    Arc<dyn SecretStore>,
    Option<Arc<store_postgres::PostgresSecretStore>>,
);

/// The mesh source `--mesh-source` names, checked before anything is written: every file
/// with a dry run (a refused one stops `serve`), Kuma's Mesh objects or rows listed once (an API
/// or database that cannot be read stops `serve`; a refused Mesh of Kuma's does not: it is
/// reported and not served, as it would be later).
enum MeshSource {
    Files(Arc<FileSource>),
    Kubernetes(Box<KubeSource>, Vec<Doc>),
    Postgres(Arc<PgSource>, Vec<Doc>),
}

async fn open_mesh_source(
    a: &ServeArgs,
    files: ConfigSource,
    manager: &Arc<Manager>,
    metrics: &Arc<Metrics>,
    postgres: Option<Arc<store_postgres::PostgresSecretStore>>,
) -> Result<MeshSource, CliError> {
    Ok(match a.mesh_source {
        MeshSourceKind::Files => {
            let source = Arc::new(FileSource::new(manager.clone(), files, metrics.clone()));
            if source.dry_run().await > 0 {
                return Err(CliError::MeshConfig {
                    nothing_written: true,
                });
            }
            MeshSource::Files(source)
        }
        MeshSourceKind::Kubernetes => {
            let failed = |source| CliError::CoreIn {
                context: "--mesh-source kubernetes",
                source,
            };
            let client = store_kubernetes::default_client().await.map_err(failed)?;
            let (source, docs) = KubeSource::start(client, manager.clone(), metrics.clone())
                .await
                .map_err(failed)?;
            tracing::info!(
                meshes = docs.len(),
                "Meshes from Kubernetes (meshes.kuma.io), watched"
            );
            MeshSource::Kubernetes(Box::new(source), docs)
        }
        MeshSourceKind::Postgres => {
            let store = postgres.ok_or_else(|| {
                CliError::from(UsageError::refused(
                    Flag::new("--mesh-source postgres"),
                    "needs --store postgres",
                ))
            })?;
            let source = Arc::new(PgSource::new(store, manager.clone(), metrics.clone()));
            let docs = source.list().await.map_err(|source| CliError::CoreIn {
                context: "--mesh-source postgres",
                source,
            })?;
            tracing::info!(
                meshes = docs.len(),
                "Meshes from PostgreSQL (Kuma's Mesh rows), followed"
            );
            MeshSource::Postgres(source, docs)
        }
    })
}

/// Applies the first config and follows the source from then on. Refused files stop `serve`
/// (as at every start); refused Meshes of Kuma's are reported and not served.
async fn follow_meshes(meshes: MeshSource, interval: Duration) -> Result<(), CliError> {
    match meshes {
        MeshSource::Files(source) => {
            if source.reload().await > 0 {
                return Err(CliError::MeshConfig {
                    nothing_written: false,
                });
            }
            tokio::spawn(source.run(interval));
        }
        MeshSource::Kubernetes(mut source, docs) => {
            source.apply_first(docs).await;
            tokio::spawn(source.run());
        }
        MeshSource::Postgres(source, docs) => {
            source.apply_first(docs).await;
            tokio::spawn(source.run(interval));
        }
    }
    Ok(())
}

/// Every statement of the PostgreSQL store, retries of a lost connection included, ends within
/// this (well inside a mesh's default `dpCert.requestTimeout`).
const POSTGRES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `--postgres-url`, or the first line of `--postgres-url-file`, parsed.
fn postgres_url(a: &ServeArgs) -> Result<store_postgres::PostgresUrl, CliError> {
    let (flag, text) = match (&a.postgres_url, &a.postgres_url_file) {
        (Some(u), _) => ("--postgres-url", u.0.clone()),
        (None, Some(path)) => {
            let text = crate::files::read_config_file(path, "--postgres-url-file")?;
            (
                "--postgres-url-file",
                text.lines().next().unwrap_or_default().to_owned(),
            )
        }
        (None, None) => {
            return Err(UsageError::refused(
                Flag::new("--store postgres"),
                "needs --postgres-url, MESHCA_POSTGRES_URL or --postgres-url-file",
            )
            .into())
        }
    };
    store_postgres::PostgresUrl::parse(&text)
        .map_err(|e| UsageError::refused(Flag::new(flag), e.to_string()).into())
}

/// Checks every flag and reads every file the operator named, writing nothing: a bad flag, TLS
/// file, client CA or authz file never leaves secrets behind.
fn check(a: &ServeArgs) -> Result<Checked, CliError> {
    for (flag, given) in [
        ("--postgres-url", a.postgres_url.is_some()),
        ("--postgres-url-file", a.postgres_url_file.is_some()),
    ] {
        if given && a.store != StoreKind::Postgres {
            return Err(
                UsageError::refused(Flag::new(flag), "applies to --store postgres only").into(),
            );
        }
    }
    if a.store == StoreKind::Postgres {
        postgres_url(a)?;
    }
    if a.mesh_source == MeshSourceKind::Postgres && a.store != StoreKind::Postgres {
        return Err(UsageError::refused(
            Flag::new("--mesh-source postgres"),
            "needs --store postgres: the Mesh rows are read from the same database as the \
             secrets, so meshes and their CAs always come from one control plane",
        )
        .into());
    }
    if a.mesh_source == MeshSourceKind::Postgres && a.reload_interval < Duration::from_millis(100) {
        return Err(UsageError::refused(
            Flag::new("--reload-interval"),
            "must be at least 100ms with --mesh-source postgres (every Mesh row is read each time)",
        )
        .into());
    }
    if a.mesh_source != MeshSourceKind::Files && a.mesh_config.is_some() {
        return Err(UsageError::refused(
            Flag::new("--mesh-config"),
            "applies to --mesh-source files only (the Meshes come from Kuma)",
        )
        .into());
    }
    for (flag, given) in [
        ("--namespace", a.namespace.is_some()),
        ("--own-namespace", a.own_namespace.is_some()),
    ] {
        if given && a.store != StoreKind::Kubernetes {
            return Err(
                UsageError::refused(Flag::new(flag), "applies to --store kubernetes only").into(),
            );
        }
    }
    if let Some((flag, ns)) = [
        ("--namespace", &a.namespace),
        ("--own-namespace", &a.own_namespace),
    ]
    .into_iter()
    .find_map(|(f, n)| {
        n.as_ref()
            .filter(|n| !ca_core::is_namespace_name(n))
            .map(|n| (f, n))
    }) {
        return Err(UsageError::refused(
            Flag::quoted(flag, ns),
            "is not a Kubernetes namespace name (a DNS-1123 label: at most 63 lower-case letters, \
             digits and '-')",
        )
        .into());
    }
    if a.server_name.len() > MAX_SERVER_NAMES {
        return Err(UsageError::refused(
            Flag::new("--server-name"),
            format!(
                "is given {} times; at most {MAX_SERVER_NAMES}",
                a.server_name.len()
            ),
        )
        .into());
    }
    for name in &a.server_name {
        if let Err(source) = ca_core::SecretName::new(name.as_str()) {
            return Err(UsageError::invalid(Flag::quoted("--server-name", name))(source).into());
        }
    }
    if a.insecure_plaintext && !a.listen.ip().is_loopback() {
        return Err(UsageError::refused(
            Flag::new("--insecure-plaintext"),
            format!(
                "allowed only on a loopback address, not {}; drop the flag to serve mTLS",
                a.listen
            ),
        )
        .into());
    }
    if a.idle_timeout < Duration::from_millis(100) {
        return Err(
            UsageError::refused(Flag::new("--idle-timeout"), "must be at least 100ms").into(),
        );
    }
    if a.tls_reload_interval < Duration::from_millis(100) {
        return Err(UsageError::refused(
            Flag::new("--tls-reload-interval"),
            "must be at least 100ms",
        )
        .into());
    }
    if !(0.1..=0.95).contains(&a.rotate_fraction) {
        return Err(UsageError::refused(
            Flag::new("--rotate-fraction"),
            "must be between 0.1 and 0.95",
        )
        .into());
    }
    let remote_sources = remote_source_policy(a)?;
    let client_cas = match &a.client_ca {
        Some(p) => read_certs(p)?,
        None => Vec::new(),
    };
    let own_tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            let (chain, key) = (read_certs(c)?, read_key(k)?);
            rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider())
                .map_err(|source| CliError::TlsPair {
                    cert: c.clone(),
                    key: k.clone(),
                    source,
                })?;
            Some((chain, key))
        }
        _ => None,
    };
    if let Some(p) = &a.authz {
        Policy::load(p, None)?;
    }
    let source = match &a.mesh_config {
        Some(d) if !d.is_dir() => {
            return Err(UsageError::refused(
                Flag::with("--mesh-config", d.display()),
                "is not a directory of Mesh YAML files",
            )
            .into())
        }
        Some(d) => ConfigSource::Dir(d.clone()),
        None => ConfigSource::Embedded,
    };
    Ok(Checked {
        remote_sources,
        client_cas,
        own_tls,
        source,
    })
}

fn bootstrap_secret_name() -> Result<SecretName, CliError> {
    Ok(SecretName::new(BOOTSTRAP_SECRET)?)
}

/// The bootstrap TLS CA every replica shares: the global secret [`BOOTSTRAP_SECRET`] of `store`,
/// or made here and created there if absent (of replicas starting at once, one wins and all use
/// its CA).
async fn shared_bootstrap_ca(store: &dyn SecretStore) -> Result<CaPem, CliError> {
    let name = bootstrap_secret_name()?;
    let what = store.location(Scope::Global, &name);
    let value = match store.get(Scope::Global, &name).await? {
        Some(v) => v,
        None => {
            let fresh = CaPem::generate()?;
            let (v, created) = store
                .create_if_absent(Scope::Global, &name, fresh.to_bundle().as_bytes())
                .await?;
            if created == Created::Ours {
                tracing::info!(secret = %what, "created the shared bootstrap TLS CA");
            }
            v
        }
    };
    Ok(CaPem::from_bundle(value.expose(), &what)?)
}

/// The bootstrap TLS set (made once, checked at every start), the operators' roots and authz
/// policy, and the server's certificate and key (the operator's own, else the bootstrap one).
fn operators_and_server_cert(
    a: &ServeArgs,
    paths: &BootstrapPaths,
    seed: Option<&CaPem>,
    client_cas: &[CertificateDer<'static>],
    own_tls: Option<ChainAndKey>,
) -> Result<(OperatorRoots, Policy, ChainAndKey), CliError> {
    let bootstrap_ca = match seed {
        Some(ca) => paths.ensure_seeded(ca)?,
        None => paths.ensure()?,
    };
    let roots = OperatorRoots::new(&bootstrap_ca, client_cas)?;
    let policy = match &a.authz {
        Some(p) => Policy::load(p, roots.ids().first())?,
        None => Policy::default(),
    };
    for name in policy.unknown_anchors(roots.ids()) {
        tracing::warn!(caller = %name, "authz entry names a CA that is neither the bootstrap CA nor a --client-ca; it can never connect");
    }
    let chain_key = match own_tls {
        Some(ck) => ck,
        None => (read_certs(&paths.server)?, read_key(&paths.server_key)?),
    };
    Ok((roots, policy, chain_key))
}

/// The connection registry of the gRPC listener, its caps fitted to the open-file limit (the
/// soft limit raised to the hard one first), and the per-connection stream cap.
fn connection_limits(a: &ServeArgs) -> (Arc<Connections>, usize) {
    let nofile = conn::raise_nofile_limit();
    let max_total = conn::fit_to_descriptors(a.max_connections, nofile, "--max-connections");
    let max_anonymous = a.max_anonymous_connections.min((max_total / 2).max(1));
    tracing::info!(
        open_files = nofile,
        max_connections = max_total,
        max_anonymous_connections = max_anonymous,
        idle_timeout = ?a.idle_timeout,
        "connection limits"
    );
    let registry = Connections::new(ConnLimits {
        max_total,
        max_anonymous,
        idle_anonymous: a.idle_timeout,
        idle_certified: CERTIFIED_IDLE_TIMEOUT.max(a.idle_timeout),
    });
    (registry, a.max_streams_per_connection)
}

/// The gRPC services: health, reflection (v1 and v1alpha) and `meshca.v1.Issuer` with its
/// message-size limits; HTTP/2 keepalive, and at most `max_streams` requests per connection.
async fn router(
    service: IssuerService,
    max_streams: usize,
    calls: GrpcMetricsLayer,
) -> Result<
    tonic::transport::server::Router<
        tower_layer::Stack<GrpcMetricsLayer, tower_layer::Stack<ConnLayer, tower_layer::Identity>>,
    >,
    CliError,
> {
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IssuerServer<IssuerService>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(CliError::Reflection)?;
    // v1alpha too: grpcurl and many other tools still ask for it.
    let reflection_v1alpha = reflection().build_v1alpha().map_err(CliError::Reflection)?;
    Ok(tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(u32::try_from(max_streams.saturating_mul(2)).unwrap_or(u32::MAX))
        .layer(ConnLayer { max_streams })
        .layer(calls)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            IssuerServer::new(service)
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
        ))
}

/// What a Mesh sent over gRPC may reach: nothing on the server's disk or in its environment
/// unless the operator allowed a directory or variables, never the data directory (it holds every
/// mesh's CA keys), and only the upstreams (Vault addresses, ACM PCA ARNs, cert-manager issuers)
/// the operator allowed.
fn remote_source_policy(a: &ServeArgs) -> Result<SourcePolicy, CliError> {
    let mut allowed = ca_core::AllowedUpstreams::none();
    for address in &a.allow_vault_address {
        allowed = allowed
            .allow_vault(address)
            .map_err(UsageError::upstream(Flag::quoted(
                "--allow-vault-address",
                address,
            )))?;
    }
    for arn in &a.allow_acmpca_arn {
        allowed = allowed
            .allow_acmpca(arn)
            .map_err(UsageError::upstream(Flag::new("--allow-acmpca-arn")))?;
    }
    for issuer in &a.allow_certmanager_issuer {
        allowed = allowed
            .allow_certmanager(issuer)
            .map_err(UsageError::upstream(Flag::new(
                "--allow-certmanager-issuer",
            )))?;
    }
    let policy = SourcePolicy::remote(a.allow_file_sources.as_deref(), a.allow_env_source.clone())
        .map_err(|source| UsageError::SourceDir {
            flag: Flag::new("--allow-file-sources"),
            source,
        })?
        .with_allowed_upstreams(allowed);
    if let Some(dir) = policy.file_dir() {
        let data = std::path::absolute(&a.data_dir).map_err(IoError::at("resolve", &a.data_dir))?;
        let data = data.canonicalize().unwrap_or(data);
        if data.starts_with(dir) || dir.starts_with(&data) {
            return Err(UsageError::refused(
                Flag::with("--allow-file-sources", dir.display()),
                format!(
                    "overlaps the data directory {}, which holds every mesh's CA keys; allow a \
                     directory of its own",
                    a.data_dir.display()
                ),
            )
            .into());
        }
    }
    Ok(policy)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
