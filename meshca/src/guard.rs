//! The guarded issuance path every request and every rotation goes through: the per-backend
//! circuit, a per-backend concurrency limit and an [`Observer`] for metrics. The request timeout
//! is the backend's [`Deadline`](crate::Deadline) wrapper, which every built backend has.
//!
//! This wraps [`issue_certificate`] instead of living in any backend, so every backend gets the
//! same limits (linkerd's `WithCertMetrics<C>` in spirit).

use ca_core::ManagerError;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ca_core::{
    issue_certificate, BackendName, CachedBundle, CommonNameTemplate, Error, IdempotencyKey,
    Identity, IssueParams, IssuedCertificate, KeySource, KeyType, TrustBundle,
};
use tokio::sync::Semaphore;

/// A built backend, ready to issue.
#[derive(Debug)]
#[non_exhaustive]
pub struct ActiveBackend {
    /// Its name in `mtls.backends`.
    pub(crate) name: BackendName,
    /// Its type.
    pub(crate) backend_type: String,
    /// The backend, its trust bundle cached.
    pub(crate) ca: Arc<CachedBundle>,
    /// `dpCert.rotation.expiration`.
    pub(crate) lifetime: Duration,
    /// The common-name template, if any.
    pub(crate) common_name: Option<CommonNameTemplate>,
    /// DNS names every certificate of this backend carries (certmanager `dnsNames`).
    pub(crate) dns_names: Vec<String>,
    /// Its roots, as of the last build or refresh.
    pub(crate) bundle: TrustBundle,
    /// Fingerprint of the backend's configuration: an apply that does not change it reuses this
    /// instance.
    pub(crate) fingerprint: String,
}

impl ActiveBackend {
    /// Its name in `mtls.backends`.
    pub fn name(&self) -> &BackendName {
        &self.name
    }

    /// Its `type`.
    pub fn backend_type(&self) -> &str {
        &self.backend_type
    }

    /// `dpCert.rotation.expiration`: the lifetime of its certificates.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Its roots, as of the last build or refresh.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The fingerprint of its configuration: an apply that does not change it reuses this
    /// instance.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

/// Where the guard, the manager and the scheduler report what they do: a control plane plugs
/// its metrics in here (the zone issuer exports Prometheus text). Every method has a default that
/// does nothing.
pub trait Observer: fmt::Debug + Send + Sync {
    /// A certificate was issued by `backend` of `mesh` in `seconds`.
    fn issued(&self, mesh: &str, backend: &str, seconds: f64) {
        let _ = (mesh, backend, seconds);
    }
    /// An issue failed; `reason` is [`ErrorKind::label`](ca_core::ErrorKind::label) of the error.
    fn failed(&self, mesh: &str, reason: &'static str) {
        let _ = (mesh, reason);
    }
    /// How many identities the rotation scheduler watches.
    fn watched(&self, count: usize) {
        let _ = count;
    }
    /// The earliest expiry among watched certificates, per mesh.
    fn earliest_expiry(&self, by_mesh: BTreeMap<String, SystemTime>) {
        let _ = by_mesh;
    }
    /// A config change was `applied` or `refused`.
    fn config(&self, result: &'static str) {
        let _ = result;
    }
    /// Every enabled backend's [`health`](ca_core::CertificateAuthority::health), by (mesh,
    /// backend): `None` when healthy, else the problem (a Vault token that cannot be renewed).
    fn backend_health(&self, by_backend: HealthReport) {
        let _ = by_backend;
    }
}

/// What [`Observer::backend_health`] gets: (mesh, backend) → the problem, `None` when healthy.
pub type HealthReport = BTreeMap<(String, String), Option<String>>;

/// An [`Observer`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {}

/// Limits applied per backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Limits {
    /// Concurrent issue calls per backend.
    pub concurrency: usize,
    /// Distinct identities whose issuance must fail (within `circuit_window`) to open the circuit.
    pub circuit_threshold: usize,
    /// How far back failures count.
    pub circuit_window: Duration,
    /// How long an open circuit refuses calls before letting one through.
    pub circuit_cooldown: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            concurrency: 32,
            circuit_threshold: 3,
            circuit_window: Duration::from_secs(60),
            circuit_cooldown: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// Concurrent issue calls per backend.
    #[must_use]
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// The circuit: `threshold` distinct failing identities open it for `cooldown`.
    #[must_use]
    pub fn with_circuit(mut self, threshold: usize, cooldown: Duration) -> Self {
        self.circuit_threshold = threshold.max(1);
        self.circuit_cooldown = cooldown;
        self
    }
}

/// The state of a backend's circuit, as exported in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast with [`ManagerError::CircuitOpen`].
    Open,
    /// The cooldown is over: one call (the probe) tests the backend while the others still fail
    /// fast; its success closes the circuit, an upstream failure opens it again.
    HalfOpen,
}

impl CircuitState {
    /// 0 closed, 1 open, 2 half-open.
    pub fn as_gauge(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

#[derive(Debug, Default)]
struct Circuit {
    /// Last failure time per identity (SPIFFE ID).
    failures: HashMap<String, Instant>,
    open_until: Option<Instant>,
    /// A half-open circuit's one test call is under way.
    probing: bool,
}

impl Circuit {
    fn state(&self, now: Instant) -> CircuitState {
        match self.open_until {
            None => CircuitState::Closed,
            Some(t) if now < t => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }
}

#[derive(Debug)]
struct BackendGuard {
    semaphore: Arc<Semaphore>,
    circuit: Mutex<Circuit>,
}

/// A backend instance: mesh and backend name.
pub type BackendKey = (String, String);

/// Issues through the guarded path.
#[derive(Debug)]
pub struct Guard {
    limits: Limits,
    guards: Mutex<HashMap<BackendKey, Arc<BackendGuard>>>,
    observer: Arc<dyn Observer>,
}

impl Guard {
    /// A guard with `limits`, reporting to `observer`.
    pub(crate) fn new(limits: Limits, observer: Arc<dyn Observer>) -> Self {
        Self {
            limits,
            guards: Mutex::default(),
            observer,
        }
    }

    /// Concurrent issue calls allowed per backend.
    pub fn concurrency(&self) -> usize {
        self.limits.concurrency.max(1)
    }

    /// Where this guard reports.
    pub fn observer(&self) -> &Arc<dyn Observer> {
        &self.observer
    }

    fn backend_guard(&self, key: &BackendKey) -> Arc<BackendGuard> {
        let mut guards = lock(&self.guards);
        guards
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(BackendGuard {
                    semaphore: Arc::new(Semaphore::new(self.limits.concurrency.max(1))),
                    circuit: Mutex::default(),
                })
            })
            .clone()
    }

    /// Circuit states of every backend seen so far, by (mesh, backend).
    pub fn circuit_states(&self) -> Vec<(BackendKey, CircuitState)> {
        let now = Instant::now();
        let guards = lock(&self.guards);
        let mut out: Vec<_> = guards
            .iter()
            .map(|(k, g)| (k.clone(), lock(&g.circuit).state(now)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Issues a certificate for `identity` (plus the backend's configured DNS names) from
    /// `backend`: from the caller's CSR (DER) when given, else with a P-256 key meshca generates.
    /// `key` identifies the logical request: the same across its retries.
    ///
    /// # Errors
    /// [`ManagerError::CircuitOpen`] while the backend's circuit is open;
    /// [`UpstreamKind::Timeout`](ca_core::UpstreamKind::Timeout) after the backend's request
    /// timeout; the backend's or core's error otherwise.
    pub(crate) async fn issue(
        &self,
        backend: &ActiveBackend,
        identity: Identity,
        csr: Option<&[u8]>,
        key: IdempotencyKey,
    ) -> Result<IssuedCertificate, Error> {
        let mesh = identity.mesh().to_string();
        let backend_key = (mesh.clone(), backend.name.to_string());
        let started = Instant::now();
        let spiffe = identity.spiffe_id();
        let guard = self.backend_guard(&backend_key);
        let probe = match self.admit(&guard) {
            Ok(probe) => probe,
            Err(()) => {
                let e = Error::from(ManagerError::CircuitOpen {
                    backend: backend_key.1.clone(),
                });
                self.observer.failed(&mesh, e.kind().label());
                return Err(e);
            }
        };
        let result = self
            .issue_inner(backend, &backend_key, identity, csr, key)
            .await;
        if probe {
            lock(&guard.circuit).probing = false;
        }
        match &result {
            Ok(_) => {
                let mut c = lock(&guard.circuit);
                if c.open_until.is_some() {
                    tracing::info!(mesh = %backend_key.0, backend = %backend_key.1, "backend recovered; circuit closed");
                }
                c.failures.clear();
                c.open_until = None;
                drop(c);
                self.observer.issued(
                    &backend_key.0,
                    &backend_key.1,
                    started.elapsed().as_secs_f64(),
                );
            }
            Err(e) => {
                self.observer.failed(&mesh, e.kind().label());
                if e.kind().is_upstream_failure() {
                    self.record_upstream_failure(&guard, &backend_key, spiffe);
                }
            }
        }
        result
    }

    /// Whether a call may go to the backend now: `Ok(false)` closed, `Ok(true)` as the half-open
    /// circuit's one probe, `Err` while open (or while another call probes).
    fn admit(&self, guard: &BackendGuard) -> Result<bool, ()> {
        let mut c = lock(&guard.circuit);
        match c.state(Instant::now()) {
            CircuitState::Closed => Ok(false),
            CircuitState::Open => Err(()),
            CircuitState::HalfOpen if c.probing => Err(()),
            CircuitState::HalfOpen => {
                c.probing = true;
                Ok(true)
            }
        }
    }

    fn record_upstream_failure(&self, guard: &BackendGuard, key: &BackendKey, identity: String) {
        let now = Instant::now();
        let mut c = lock(&guard.circuit);
        let window = self.limits.circuit_window;
        c.failures.retain(|_, t| now.duration_since(*t) < window);
        c.failures.insert(identity, now);
        let state = c.state(now);
        if state == CircuitState::HalfOpen
            || (state == CircuitState::Closed && c.failures.len() >= self.limits.circuit_threshold)
        {
            c.open_until = Some(now + self.limits.circuit_cooldown);
            tracing::warn!(
                mesh = %key.0,
                backend = %key.1,
                failing_identities = c.failures.len(),
                cooldown = ?self.limits.circuit_cooldown,
                "backend keeps failing; circuit open"
            );
        }
    }

    async fn issue_inner(
        &self,
        backend: &ActiveBackend,
        key: &BackendKey,
        identity: Identity,
        csr: Option<&[u8]>,
        idempotency_key: IdempotencyKey,
    ) -> Result<IssuedCertificate, Error> {
        let identity = if backend.dns_names.is_empty() {
            identity
        } else {
            identity.with_dns_names(backend.dns_names.iter().cloned())?
        };
        let guard = self.backend_guard(key);
        let _permit = guard
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::from(ManagerError::Stopped { what: "the issuer" }))?;
        let key_source = match csr {
            Some(der) => KeySource::Csr(der),
            None => KeySource::Generate(KeyType::EcdsaP256),
        };
        let params = IssueParams::new(identity, key_source, backend.lifetime)
            .with_common_name(backend.common_name.as_ref())
            .with_idempotency_key(idempotency_key);
        // The backend's `issue` is bounded by its `Deadline` wrapper: the one request timeout.
        issue_certificate(backend.ca.as_ref(), params).await
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
