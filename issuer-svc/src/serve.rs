//! `meshca serve`: wires the store, mesh states, scheduler, TLS, gRPC and metrics together.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ca_core::{DirectorySecretStore, SecretStore, SourcePolicy};
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::authz::{OperatorRoots, Policy};
use crate::bootstrap::{create_private_dir, warn_open_keys, BootstrapPaths};
use crate::cli::{ServeArgs, StoreKind};
use crate::limits::{MAX_CONCURRENT_VALIDATIONS, MAX_GRPC_MESSAGE};
use crate::metrics::Metrics;
use crate::proto::issuer_server::IssuerServer;
use crate::reload::{ConfigSource, Reloader};
use crate::service::IssuerService;
use crate::tls::{provider, read_certs, read_key, server_config, DynamicClientVerifier};
use crate::util::{AppError, Context};
use meshca::{Limits, Manager, Registry, RotationPolicy, Snapshot};

/// How often cached trust bundles are fetched from upstream again.
const BUNDLE_REFRESH: Duration = Duration::from_secs(300);

pub(crate) async fn serve(a: ServeArgs) -> Result<(), AppError> {
    if a.store == StoreKind::Kubernetes {
        return Err(AppError(
            "--store kubernetes is not available in this build yet; use --store file (the default)"
                .into(),
        ));
    }
    if a.insecure_plaintext && !a.listen.ip().is_loopback() {
        return Err(AppError(format!(
            "--insecure-plaintext is allowed only on a loopback address, not {}; drop the flag to serve mTLS",
            a.listen
        )));
    }
    if !(0.1..=0.95).contains(&a.rotate_fraction) {
        return Err(AppError(
            "--rotate-fraction must be between 0.1 and 0.95".into(),
        ));
    }
    // Everything the operator gave is checked before anything is written: a bad flag, TLS
    // file, authz file or Mesh never leaves secrets behind.
    let remote_sources = remote_source_policy(&a)?;
    let client_cas = match &a.client_ca {
        Some(p) => read_certs(p)?,
        None => Vec::new(),
    };
    let own_tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => {
            let (chain, key) = (read_certs(c)?, read_key(k)?);
            rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider()).ctx(
                || {
                    format!(
                        "--tls-cert {} and --tls-key {} do not fit together",
                        c.display(),
                        k.display()
                    )
                },
            )?;
            Some((chain, key))
        }
        _ => None,
    };
    if let Some(p) = &a.authz {
        Policy::load(p, None)?;
    }
    let source = match &a.mesh_config {
        Some(d) => {
            if !d.is_dir() {
                return Err(AppError(format!(
                    "--mesh-config {} is not a directory of Mesh YAML files",
                    d.display()
                )));
            }
            ConfigSource::Dir(d.clone())
        }
        None => ConfigSource::Embedded,
    };
    create_private_dir(&a.data_dir)?;
    warn_open_keys(&a.data_dir);
    let store: Arc<dyn SecretStore> =
        Arc::new(DirectorySecretStore::new(a.data_dir.join("secrets"))?);

    let metrics = Arc::new(Metrics::default());
    let manager = Arc::new(
        Manager::builder(Registry::new(), store)
            .sources(SourcePolicy::local())
            .limits(
                Limits::default()
                    .with_concurrency(a.max_concurrent_issues)
                    .with_circuit(a.circuit_threshold, a.circuit_cooldown),
            )
            .observer(metrics.clone())
            .build(),
    );
    let reloader = Arc::new(Reloader::new(manager.clone(), source, metrics.clone()));
    if reloader.dry_run().await > 0 {
        return Err(AppError(
            "the mesh configuration is invalid (see the log above); nothing was written; fix it and start again".into(),
        ));
    }

    // TLS material: the bootstrap set (made once, checked at every start).
    let paths = BootstrapPaths::new(&a.data_dir);
    let (operator_roots, policy, tls_parts) = if a.insecure_plaintext {
        tracing::warn!(
            "serving gRPC WITHOUT TLS on loopback: every local process is trusted as admin"
        );
        (None, Policy::default(), None)
    } else {
        let bootstrap_ca = paths.ensure()?;
        let roots = OperatorRoots::new(&bootstrap_ca, &client_cas)?;
        let policy = match &a.authz {
            Some(p) => Policy::load(p, roots.ids().first())?,
            None => Policy::default(),
        };
        for name in policy.unknown_anchors(roots.ids()) {
            tracing::warn!(caller = %name, "authz entry names a CA that is neither the bootstrap CA nor a --client-ca; it can never connect");
        }
        let (chain, key) = match own_tls {
            Some(ck) => ck,
            None => (read_certs(&paths.server)?, read_key(&paths.server_key)?),
        };
        (Some(roots), policy, Some((chain, key)))
    };

    let refused = reloader.reload().await;
    if refused > 0 {
        return Err(AppError(
            "the mesh configuration is invalid (see the log above); fix it and start again".into(),
        ));
    }
    tokio::spawn(reloader.run(a.reload_interval));
    tokio::spawn(manager.clone().run(a.reload_interval, BUNDLE_REFRESH));
    let rotation = RotationPolicy::new(a.rotate_fraction, a.rotate_jitter);
    let scheduler = meshca::rotation::spawn(manager.clone(), rotation);

    let tls = match (tls_parts, &operator_roots) {
        (Some((chain, key)), Some(roots)) => {
            let roots = roots.certs().to_vec();
            let verifier = Arc::new(DynamicClientVerifier::new(&client_roots(
                &roots,
                &manager.snapshot(),
            ))?);
            let config = server_config(chain, key, verifier.clone())?;
            tokio::spawn(follow_roots(manager.clone(), roots, verifier));
            Some(Arc::new(config))
        }
        _ => None,
    };

    let service = IssuerService {
        manager: manager.clone(),
        scheduler,
        policy,
        operator_roots,
        callers: Default::default(),
        remote_sources,
        validations: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_VALIDATIONS)),
    };

    let listener = TcpListener::bind(a.listen).await.ctx(|| {
        format!(
            "cannot listen on {} (is another meshca running? try --listen 127.0.0.1:0)",
            a.listen
        )
    })?;
    let grpc_addr = listener.local_addr().ctx(|| "local address".into())?;
    let metrics_listener = TcpListener::bind(a.metrics_listen).await.ctx(|| {
        format!(
            "cannot listen on {} for metrics (try --metrics-listen 127.0.0.1:0)",
            a.metrics_listen
        )
    })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .ctx(|| "local address".into())?;
    tokio::spawn(crate::metrics::serve(
        metrics_listener,
        metrics.clone(),
        manager.guard().clone(),
    ));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<IssuerServer<IssuerService>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .ctx(|| "reflection service".into())?;
    // v1alpha too: grpcurl and many other tools still ask for it.
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .ctx(|| "reflection service".into())?;
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            IssuerServer::new(service)
                .max_decoding_message_size(MAX_GRPC_MESSAGE)
                .max_encoding_message_size(MAX_GRPC_MESSAGE),
        );

    let mode = if tls.is_some() { "mTLS" } else { "plaintext" };
    println!("meshca: grpc listening on {grpc_addr} ({mode})");
    println!("meshca: metrics listening on {metrics_addr}");
    if tls.is_some() {
        println!(
            "meshca: data directory {}; admin client certificate {}",
            a.data_dir.display(),
            paths.admin.display()
        );
        println!(
            "meshca: try: meshca issue --server {grpc_addr} --data-dir {} --mesh default --tag kuma.io/service=web --out-dir ./certs",
            a.data_dir.display()
        );
    } else {
        println!(
            "meshca: try: meshca issue --server {grpc_addr} --plaintext --mesh default --tag kuma.io/service=web --out-dir ./certs"
        );
    }
    metrics.ready.store(true, Ordering::Relaxed);
    println!("meshca: ready");

    let shutdown = shutdown_signal();
    let result = match tls {
        Some(config) => {
            let incoming = tls_incoming(listener, config);
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
        None => {
            let incoming = tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |conn| {
                    conn.inspect(|sock| {
                        let _ = sock.set_nodelay(true);
                    })
                },
            );
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    metrics.ready.store(false, Ordering::Relaxed);
    result.ctx(|| "gRPC server failed".into())?;
    tracing::info!("shut down");
    Ok(())
}

/// What data sources of a Mesh sent over gRPC may reach: nothing on the server's disk or in its
/// environment unless the operator allowed a directory or variables, and never the data
/// directory (it holds every mesh's CA keys).
fn remote_source_policy(a: &ServeArgs) -> Result<SourcePolicy, AppError> {
    let policy = SourcePolicy::remote(a.allow_file_sources.as_deref(), a.allow_env_source.clone())
        .map_err(|e| AppError(format!("--allow-file-sources {e}")))?;
    if let Some(dir) = policy.file_dir() {
        let data = std::path::absolute(&a.data_dir).ctx(|| "data directory".into())?;
        let data = data.canonicalize().unwrap_or(data);
        if data.starts_with(dir) || dir.starts_with(&data) {
            return Err(AppError(format!(
                "--allow-file-sources {} overlaps the data directory {}, which holds every mesh's CA keys; allow a directory of its own",
                dir.display(),
                a.data_dir.display()
            )));
        }
    }
    Ok(policy)
}

/// The roots client certificates may chain to: operators' CAs and every mesh's bundle.
fn client_roots(
    operator_roots: &[CertificateDer<'static>],
    snapshot: &Snapshot,
) -> Vec<CertificateDer<'static>> {
    let mut roots = operator_roots.to_vec();
    for s in snapshot.values() {
        if let Some(b) = &s.bundle {
            for c in b.certs() {
                if !roots.contains(c) {
                    roots.push(c.clone());
                }
            }
        }
    }
    roots
}

async fn follow_roots(
    manager: Arc<Manager>,
    operator_roots: Vec<CertificateDer<'static>>,
    verifier: Arc<DynamicClientVerifier>,
) {
    let mut rx = manager.subscribe();
    while rx.changed().await.is_ok() {
        let snap = rx.borrow_and_update().clone();
        if let Err(e) = verifier.set_roots(&client_roots(&operator_roots, &snap)) {
            tracing::warn!(error = %e, "cannot update client certificate roots; keeping the old ones");
        }
    }
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop, so one slow or bad
/// client never holds up the others.
fn tls_incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>>
{
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and the
            // peer's delayed ACK add ~40 ms to every call.
            let _ = sock.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
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
