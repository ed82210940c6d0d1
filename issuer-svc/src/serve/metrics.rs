//! The issuer's metrics, kept with the maintained `prometheus-client` crate and exposed by
//! [`super::http`] in the OpenMetrics text format (or the Prometheus text format 0.0.4 for a
//! scraper that does not ask for OpenMetrics).
//!
//! Counters and the issue histogram are updated as things happen (the library reports through
//! [`Observer`]); what the manager already knows (circuit states, CA expiry) and the process
//! figures are read at scrape time by collectors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use meshca::{CircuitState, Manager, Observer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use rustls_pki_types::CertificateDer;

use crate::serve::grpc_metrics::{Calls, GrpcMetricsLayer};
use crate::serve::process::ProcessCollector;

/// Upper bounds of the issue-duration histogram's buckets, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The commit meshca was built from: `MESHCA_COMMIT` in the build's environment (the
/// Containerfile passes its build argument of that name), else "unknown".
const BUILD_COMMIT: &str = match option_env!("MESHCA_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `{mesh, backend}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeshBackend {
    /// The mesh.
    mesh: String,
    /// The backend's name in `mtls.backends`.
    backend: String,
}

/// `{mesh, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeshReason {
    /// The mesh.
    mesh: String,
    /// Why the issuance failed (the library's reason).
    reason: String,
}

/// `{result}` of a reload: `applied` or `refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadResult {
    /// `applied` or `refused`.
    result: &'static str,
}

/// `{source}` of a mesh source's metrics: `files`, `kubernetes` or `postgres`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MeshSourceLabel {
    /// The `--mesh-source`.
    source: &'static str,
}

/// `{version, commit}` of `meshca_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    /// `CARGO_PKG_VERSION`.
    version: &'static str,
    /// [`BUILD_COMMIT`].
    commit: &'static str,
}

/// A new histogram with [`BUCKETS`] (the constructor of the issue-duration and gRPC families).
fn issue_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric the issuer updates as things happen; [`Metrics::registry`] adds those read at
/// scrape time.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// `meshca_issue_duration_seconds{mesh,backend}`; its `_count` is the number issued.
    issue_duration: Family<MeshBackend, Histogram, fn() -> Histogram>,
    /// `meshca_grpc_server_handling_seconds{service,method,code}`, fed by
    /// [`GrpcMetricsLayer`].
    grpc_calls: Calls,
    /// `meshca_issue_failures_total{mesh,reason}`.
    failures: Family<MeshReason, Counter>,
    /// `meshca_watched_identities`.
    watched: Gauge,
    /// `meshca_config_reloads_total{result}`.
    config_reloads: Family<ReloadResult, Counter>,
    /// `meshca_authz_reloads_total{result}`.
    authz_reloads: Family<ReloadResult, Counter>,
    /// `meshca_mesh_refused_total{source}`.
    mesh_refused: Family<MeshSourceLabel, Counter>,
    /// `meshca_mesh_source_errors_total{source}`.
    mesh_source_errors: Family<MeshSourceLabel, Counter>,
    /// `meshca_earliest_expiry_timestamp_seconds{mesh}`. Replaced as a whole by the library's
    /// reports, so kept as a map and read by [`StateCollector`] (a family would have to be
    /// cleared and refilled, and a scrape in between would miss series).
    earliest_expiry: Mutex<BTreeMap<String, i64>>,
    /// `meshca_backend_healthy{mesh,backend}`, replaced as a whole like `earliest_expiry`.
    health: Mutex<BTreeMap<(String, String), bool>>,
    /// Earliest not-after of the gRPC server's TLS chain (bootstrap or `--tls-cert`), once known.
    server_cert_expiry: AtomicI64,
    /// Whether [`Self::server_cert_expiry`] is set (not with `--insecure-plaintext`).
    has_server_cert: AtomicBool,
    /// Set once the first config is loaded and the gRPC server listens.
    pub(crate) ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            issue_duration: Family::new_with_constructor(issue_histogram),
            grpc_calls: Family::new_with_constructor(issue_histogram),
            failures: Family::default(),
            watched: Gauge::default(),
            config_reloads: Family::default(),
            authz_reloads: Family::default(),
            mesh_refused: Family::default(),
            mesh_source_errors: Family::default(),
            earliest_expiry: Mutex::default(),
            health: Mutex::default(),
            server_cert_expiry: AtomicI64::new(0),
            has_server_cert: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// `result` is `applied` or `refused`.
    pub(crate) fn config_reload(&self, result: &'static str) {
        self.config_reloads
            .get_or_create(&ReloadResult { result })
            .inc();
    }

    /// A Mesh (file, object, row) of `source` was refused; the previous one stays.
    pub(crate) fn mesh_refused(&self, source: &'static str) {
        self.mesh_refused
            .get_or_create(&MeshSourceLabel { source })
            .inc();
    }

    /// Reading `source` failed (a watch or a query; it is retried).
    pub(crate) fn mesh_source_error(&self, source: &'static str) {
        self.mesh_source_errors
            .get_or_create(&MeshSourceLabel { source })
            .inc();
    }

    /// The `--authz` file was reloaded (`applied`) or refused (`refused`, the previous policy
    /// stays).
    pub(crate) fn authz_reload(&self, result: &'static str) {
        self.authz_reloads
            .get_or_create(&ReloadResult { result })
            .inc();
    }

    /// The layer that records each gRPC call into `meshca_grpc_server_handling_seconds`.
    pub(crate) fn grpc_layer(&self) -> GrpcMetricsLayer {
        GrpcMetricsLayer {
            calls: self.grpc_calls.clone(),
        }
    }

    /// Records the gRPC server's certificate chain: its earliest not-after is exported. A chain
    /// that does not parse (it was checked when loaded) exports nothing.
    pub(crate) fn set_server_chain(&self, chain: &[CertificateDer<'_>]) {
        if let Some(t) = earliest_not_after(chain.iter().map(|c| c.as_ref())) {
            self.server_cert_expiry.store(t, Ordering::Relaxed);
            self.has_server_cert.store(true, Ordering::Relaxed);
        }
    }

    /// The registry to expose: these metrics plus `meshca_build_info`, the collectors reading
    /// the manager at scrape time (circuit states, CA expiry) and the process collector.
    pub(crate) fn registry(self: &Arc<Self>, manager: Arc<Manager>) -> Registry {
        let mut r = Registry::default();
        r.register_with_unit(
            "meshca_issue_duration",
            "Time to issue one certificate, by mesh and backend (its _count is the number issued)",
            Unit::Seconds,
            self.issue_duration.clone(),
        );
        r.register_with_unit(
            "meshca_grpc_server_handling",
            "gRPC calls from request to the end of the response (a stream's whole life), by service, method and status code",
            Unit::Seconds,
            self.grpc_calls.clone(),
        );
        r.register(
            "meshca_issue_failures",
            "Failed issuances, by mesh and reason",
            self.failures.clone(),
        );
        r.register(
            "meshca_watched_identities",
            "Identities with an open WatchCertificate stream",
            self.watched.clone(),
        );
        r.register(
            "meshca_config_reloads",
            "Mesh config files applied or refused",
            self.config_reloads.clone(),
        );
        r.register(
            "meshca_mesh_refused",
            "Meshes refused (a file, a Kubernetes Mesh object, a PostgreSQL Mesh row), by mesh source; the previous one stays",
            self.mesh_refused.clone(),
        );
        r.register(
            "meshca_mesh_source_errors",
            "Failed reads of the mesh source (a watch, a query), by mesh source; retried with backoff",
            self.mesh_source_errors.clone(),
        );
        r.register(
            "meshca_authz_reloads",
            "Changes of the --authz file applied or refused",
            self.authz_reloads.clone(),
        );
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                commit: BUILD_COMMIT,
            })
            .set(1);
        r.register(
            "meshca_build_info",
            "Always 1; the labels say which meshca this is",
            build,
        );
        r.register_collector(Box::new(StateCollector {
            metrics: self.clone(),
            manager,
        }));
        r.register_collector(Box::new(ProcessCollector));
        r
    }
}

/// The library reports here.
impl Observer for Metrics {
    fn issued(&self, mesh: &str, backend: &str, seconds: f64) {
        self.issue_duration
            .get_or_create(&MeshBackend {
                mesh: mesh.to_owned(),
                backend: backend.to_owned(),
            })
            .observe(seconds);
    }

    fn failed(&self, mesh: &str, reason: &'static str) {
        self.failures
            .get_or_create(&MeshReason {
                mesh: mesh.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    fn watched(&self, count: usize) {
        self.watched.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    fn earliest_expiry(&self, by_mesh: BTreeMap<String, std::time::SystemTime>) {
        *lock(&self.earliest_expiry) = by_mesh
            .into_iter()
            .map(|(m, t)| (m, crate::api::wire::unix(t)))
            .collect();
    }

    fn config(&self, result: &'static str) {
        self.config_reload(result);
    }

    fn backend_health(&self, by_backend: meshca::HealthReport) {
        *lock(&self.health) = by_backend
            .into_iter()
            .map(|(k, problem)| (k, problem.is_none()))
            .collect();
    }
}

/// The earliest not-after (seconds since the epoch) of DER certificates; those that do not
/// parse are left out, `None` if none does.
fn earliest_not_after<'a>(certs: impl Iterator<Item = &'a [u8]>) -> Option<i64> {
    certs
        .filter_map(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, c)| c.validity().not_after.timestamp())
        .min()
}

/// The label value of a circuit state.
fn state_label(s: CircuitState) -> &'static str {
    match s {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "half_open",
    }
}

/// Every circuit state, in the order the series are written.
const STATES: [CircuitState; 3] = [
    CircuitState::Closed,
    CircuitState::Open,
    CircuitState::HalfOpen,
];

/// Reads, at scrape time, what the library reported as a whole (earliest watched expiry,
/// backend health) and what the manager knows (circuit states, the backends' CA expiry), plus
/// the server certificate's expiry.
#[derive(Debug)]
struct StateCollector {
    /// The maps the library replaces and the server certificate's expiry.
    metrics: Arc<Metrics>,
    /// Circuit states (its guard) and the meshes' backends.
    manager: Arc<Manager>,
}

/// Writes one gauge family: `name` with `help`, one series per `(labels, value)`.
fn gauge_family<L: EncodeLabelSet, V: prometheus_client::encoding::EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        unit,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, value) in series {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let expiry = lock(&self.metrics.earliest_expiry).clone();
        gauge_family(
            &mut encoder,
            "meshca_earliest_expiry_timestamp",
            "Earliest not-after of a watched certificate, by mesh, in seconds since the epoch.",
            Some(&Unit::Seconds),
            expiry.iter().map(|(m, t)| ([("mesh", m.as_str())], *t)),
        )?;
        let health = lock(&self.metrics.health).clone();
        gauge_family(
            &mut encoder,
            "meshca_backend_healthy",
            "Whether an enabled backend will keep working (0: e.g. a Vault token that cannot be renewed; see the log).",
            None,
            health.iter().map(|((m, b), ok)| {
                ([("mesh", m.as_str()), ("backend", b.as_str())], i64::from(*ok))
            }),
        )?;
        let circuits = self.manager.guard().circuit_states();
        gauge_family(
            &mut encoder,
            "meshca_backend_circuit_state",
            "Circuit of a backend: 1 for the state it is in (closed, open or half_open), 0 for the others.",
            None,
            circuits.iter().flat_map(|((m, b), now)| {
                STATES.iter().map(move |s| {
                    (
                        [
                            ("mesh", m.as_str()),
                            ("backend", b.as_str()),
                            ("state", state_label(*s)),
                        ],
                        i64::from(s == now),
                    )
                })
            }),
        )?;
        // The enabled backend of each mesh, and the previous one while a switch is in flight.
        let snapshot = self.manager.snapshot();
        let mut cas = Vec::new();
        for (mesh, state) in snapshot.iter() {
            let backends = state
                .enabled()
                .into_iter()
                .chain(state.previous().map(|p| p.backend()));
            for backend in backends {
                let certs = backend.bundle().certs().iter().map(|c| c.as_ref());
                if let Some(t) = earliest_not_after(certs) {
                    cas.push((mesh.clone(), backend.name().to_string(), t));
                }
            }
        }
        gauge_family(
            &mut encoder,
            "meshca_ca_expiration_timestamp",
            "Earliest not-after of a backend's CA certificates (its trust bundle), by mesh and backend, in seconds since the epoch.",
            Some(&Unit::Seconds),
            cas.iter().map(|(m, b, t)| {
                ([("mesh", m.as_str()), ("backend", b.as_str())], *t)
            }),
        )?;
        let server = self
            .metrics
            .has_server_cert
            .load(Ordering::Relaxed)
            .then(|| self.metrics.server_cert_expiry.load(Ordering::Relaxed));
        gauge_family(
            &mut encoder,
            "meshca_server_certificate_expiration_timestamp",
            "Earliest not-after of the gRPC server's TLS certificate chain (bootstrap or --tls-cert), in seconds since the epoch.",
            Some(&Unit::Seconds),
            server.map(|t| ([] as [(&str, &str); 0], t)),
        )
    }
}
