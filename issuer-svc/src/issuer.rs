//! The guarded issuance path every request and every rotation goes through: the per-backend
//! circuit, a per-backend concurrency limit, the backend's request timeout, and metrics.
//!
//! This wraps [`issue_certificate`] instead of living in any backend, so every backend gets the
//! same limits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_core::{
    issue_certificate, Error, Identity, IssueParams, IssuedCertificate, KeySource, KeyType,
};
use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::state::ActiveBackend;
use crate::status::{is_upstream_failure, reason_label, ApiError};

/// Limits applied per backend.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    /// Concurrent issue calls per backend.
    pub(crate) concurrency: usize,
    /// Distinct identities whose issuance must fail (within `window`) to open the circuit.
    pub(crate) circuit_threshold: usize,
    /// How far back failures count.
    pub(crate) circuit_window: Duration,
    /// How long an open circuit refuses calls before letting one through.
    pub(crate) circuit_cooldown: Duration,
    /// Test hook: while this file exists every backend call fails as an upstream outage.
    pub(crate) fault_file: Option<PathBuf>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            concurrency: 32,
            circuit_threshold: 3,
            circuit_window: Duration::from_secs(60),
            circuit_cooldown: Duration::from_secs(30),
            fault_file: None,
        }
    }
}

/// The state of a backend's circuit, as exported in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub(crate) fn as_gauge(self) -> u8 {
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
struct Guard {
    semaphore: Arc<Semaphore>,
    circuit: Mutex<Circuit>,
}

/// The key of a backend instance: mesh and backend name.
pub(crate) type BackendKey = (String, String);

/// Issues through the guarded path.
#[derive(Debug)]
pub(crate) struct Issuer {
    limits: Limits,
    guards: Mutex<HashMap<BackendKey, Arc<Guard>>>,
    pub(crate) metrics: Arc<Metrics>,
}

impl Issuer {
    pub(crate) fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            guards: Mutex::default(),
            metrics,
        }
    }

    /// Concurrent issue calls allowed per backend.
    pub(crate) fn concurrency(&self) -> usize {
        self.limits.concurrency.max(1)
    }

    fn guard(&self, key: &BackendKey) -> Arc<Guard> {
        let mut guards = lock(&self.guards);
        guards
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Guard {
                    semaphore: Arc::new(Semaphore::new(self.limits.concurrency.max(1))),
                    circuit: Mutex::default(),
                })
            })
            .clone()
    }

    /// Circuit states of every backend seen so far.
    pub(crate) fn circuit_states(&self) -> Vec<(BackendKey, CircuitState)> {
        let now = Instant::now();
        let guards = lock(&self.guards);
        let mut out: Vec<_> = guards
            .iter()
            .map(|(k, g)| (k.clone(), lock(&g.circuit).state(now)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Issues a certificate for `identity` from `backend`.
    ///
    /// # Errors
    /// [`ApiError::CircuitOpen`] while the backend's circuit is open; the backend's or core's
    /// error otherwise.
    pub(crate) async fn issue(
        &self,
        backend: &ActiveBackend,
        identity: Identity,
        csr: Option<&[u8]>,
    ) -> Result<IssuedCertificate, ApiError> {
        let mesh = identity.mesh().to_string();
        let key = (mesh.clone(), backend.name.to_string());
        let started = Instant::now();
        let spiffe = identity.spiffe_id().to_owned();
        let result = self.issue_inner(backend, &key, identity, csr).await;
        let guard = self.guard(&key);
        match &result {
            Ok(_) => {
                let mut c = lock(&guard.circuit);
                if c.open_until.is_some() {
                    tracing::info!(mesh = %key.0, backend = %key.1, "backend recovered; circuit closed");
                }
                c.failures.clear();
                c.open_until = None;
                drop(c);
                self.metrics
                    .observe_issue(&key, started.elapsed().as_secs_f64());
            }
            Err(e) => {
                self.metrics.failure(&mesh, reason_label(e));
                if is_upstream_failure(e) {
                    self.record_upstream_failure(&guard, &key, spiffe);
                }
            }
        }
        result
    }

    fn record_upstream_failure(&self, guard: &Guard, key: &BackendKey, identity: String) {
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
    ) -> Result<IssuedCertificate, ApiError> {
        let guard = self.guard(key);
        if lock(&guard.circuit).state(Instant::now()) == CircuitState::Open {
            return Err(ApiError::CircuitOpen(key.1.clone()));
        }
        let _permit = guard
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ApiError::Unavailable("issuer is shutting down".into()))?;
        if let Some(f) = &self.limits.fault_file {
            if f.exists() {
                return Err(ApiError::Core(Error::Unavailable {
                    backend: key.1.clone(),
                    source: "injected outage (fault file present)".into(),
                }));
            }
        }
        let key_source = match csr {
            Some(der) => KeySource::Csr(der),
            None => KeySource::Generate(KeyType::EcdsaP256),
        };
        let params = IssueParams::new(identity, key_source, backend.lifetime)
            .with_common_name(backend.common_name.as_ref());
        match tokio::time::timeout(
            backend.request_timeout,
            issue_certificate(backend.ca.as_ref(), params),
        )
        .await
        {
            Ok(r) => r.map_err(ApiError::Core),
            Err(_) => Err(ApiError::Core(Error::DeadlineExceeded {
                operation: format!("issuing from backend `{}`", key.1),
                timeout: backend.request_timeout,
            })),
        }
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
