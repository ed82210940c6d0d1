//! The meshes served now: for each, its enabled backend (and the previous one while a switch of
//! `enabledBackend` is in flight), published through `tokio::sync::watch`.
//!
//! A control plane hands the [`Manager`] parsed Meshes grouped by *source* (a file, a Kubernetes
//! object, whatever it reads them from); the manager knows no files. Applying a source checks it
//! first with a dry run — every backend built, ensured and asked for a test certificate against
//! an in-memory overlay of the store — so a refused config never leaves secrets behind, then
//! builds for real and publishes. Built backends are reused while their configuration (by
//! fingerprint) is unchanged.
//!
//! A CA switch survives a restart: when one starts the manager records, in the mesh's secret
//! store, which backend was enabled before and until when its roots must stay trusted
//! (`<mesh>.meshca-ca-switch`); a manager that starts on the same store and finds a switch in
//! flight (the old backend still listed in `mtls.backends`) builds the old backend again and keeps
//! both roots in the bundle until the switch completes.

use ca_core::ManagerError;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ca_core::config::{Backend, Mesh};
use ca_core::{
    BackendName, CachedBundle, CertificateAuthority, Error, IdempotencyKey, Identity,
    IssuedCertificate, MeshName, SecretStore, SourcePolicy, TestCertificate, TrustBundle,
    Violations,
};
use tokio::sync::watch;

use crate::deadline::Deadline;
use crate::guard::{lock, ActiveBackend, Guard, Limits, NoObserver, Observer};
use crate::rotation::policy::RotationPolicy;
use ca_core::{BuildContext, Registry};

mod switch;
mod validate;

/// The backend that was enabled before a switch, kept (with its roots in the bundle) until every
/// watched identity has rotated and every certificate it issued has expired.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Previous {
    /// The old backend.
    pub(crate) backend: Arc<ActiveBackend>,
    /// Its roots stay trusted at least until then (switch time + its certificates' lifetime).
    pub(crate) keep_until: SystemTime,
}

/// One mesh as served now.
#[derive(Debug)]
#[non_exhaustive]
pub struct MeshState {
    /// The mesh.
    pub(crate) name: MeshName,
    /// Changes whenever the enabled backend instance changes; watchers re-issue then.
    pub(crate) generation: u64,
    /// The backend that issues now; `None` when mTLS is off.
    pub(crate) enabled: Option<Arc<ActiveBackend>>,
    /// The backend enabled before a switch still in flight.
    pub(crate) previous: Option<Previous>,
    /// The enabled backend's roots plus the previous backend's during a switch.
    pub(crate) bundle: Option<TrustBundle>,
    /// `bundle` as PEM, encoded once here rather than for every certificate handed out.
    pub(crate) bundle_pem: Option<String>,
    /// The source the mesh came from.
    pub(crate) source: String,
}

impl Previous {
    /// The old backend.
    pub fn backend(&self) -> &ActiveBackend {
        &self.backend
    }

    /// Its roots stay trusted at least until then (switch time + its certificates' lifetime).
    pub fn keep_until(&self) -> SystemTime {
        self.keep_until
    }
}

impl MeshState {
    /// The mesh.
    pub fn name(&self) -> &MeshName {
        &self.name
    }

    /// Changes whenever the enabled backend instance changes; watchers re-issue then.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The backend that issues now; `None` when mTLS is off.
    pub fn enabled(&self) -> Option<&ActiveBackend> {
        self.enabled.as_deref()
    }

    /// The backend enabled before a switch still in flight.
    pub fn previous(&self) -> Option<&Previous> {
        self.previous.as_ref()
    }

    /// The enabled backend's roots plus the previous backend's during a switch.
    pub fn bundle(&self) -> Option<&TrustBundle> {
        self.bundle.as_ref()
    }

    /// [`bundle`](Self::bundle) as PEM, encoded once rather than for every certificate.
    pub fn bundle_pem(&self) -> Option<&str> {
        self.bundle_pem.as_deref()
    }

    /// The source (file, Kubernetes object) the mesh came from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether a CA switch is in flight (both roots trusted).
    pub fn switch_in_progress(&self) -> bool {
        self.previous.is_some()
    }

    /// The trust bundle to hand out with `cert`: the mesh's (which carries the previous CA's
    /// roots during a switch), else the one the certificate was verified against.
    pub fn bundle_pem_for(&self, cert: &IssuedCertificate) -> String {
        self.bundle_pem
            .clone()
            .unwrap_or_else(|| cert.bundle().to_pem())
    }
}

/// Every mesh, by name.
pub type Snapshot = Arc<BTreeMap<String, Arc<MeshState>>>;

/// A certificate issued through the [`Manager`], with the mesh state it was issued under.
#[derive(Debug)]
#[non_exhaustive]
pub struct Issued {
    /// The checked certificate.
    pub certificate: IssuedCertificate,
    /// The mesh as it was when the certificate was issued.
    pub mesh: Arc<MeshState>,
    /// The backend that issued it.
    pub backend: Arc<ActiveBackend>,
}

impl Issued {
    /// The trust bundle to hand out with the certificate (both roots during a switch).
    pub fn trust_bundle_pem(&self) -> String {
        self.mesh.bundle_pem_for(&self.certificate)
    }
}

/// What validating a Mesh found: the backend's warnings and, if asked for, the test certificate.
#[derive(Debug)]
#[non_exhaustive]
pub struct Validation {
    /// The enabled backend's index in `mtls.backends` and name; `None` when mTLS is off.
    pub backend: Option<(usize, BackendName)>,
    /// What the backends' constructors found worth saying (every backend's, each naming its
    /// field: `mtls.backends[0].conf.cert: the CA expires ...`).
    pub warnings: Vec<String>,
    /// The test certificate, or why the backend could not issue it; `None` when none was asked
    /// for, mTLS is off, or the enabled backend was not contacted.
    pub test_certificate: Option<Result<TestCertificate, Error>>,
    /// Backends that were checked but not built or contacted, because their upstream is not
    /// among those the [`SourcePolicy`] allows (a Mesh from the network).
    pub not_contacted: Vec<NotContacted>,
}

/// A backend of a validated Mesh that was not contacted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotContacted {
    /// Its index in `mtls.backends`.
    pub index: usize,
    /// Its name.
    pub backend: BackendName,
    /// Why: the upstream, and how the operator would allow it.
    pub reason: String,
}

/// Builds a [`Manager`].
#[derive(Debug)]
pub struct ManagerBuilder {
    registry: Registry,
    store: Arc<dyn SecretStore>,
    sources: SourcePolicy,
    limits: Limits,
    observer: Arc<dyn Observer>,
    pub(crate) rotation: RotationPolicy,
    pub(crate) housekeeping: Duration,
    pub(crate) bundle_refresh: Duration,
}

/// How often a started manager completes CA switches and checks backend health.
pub const DEFAULT_HOUSEKEEPING: Duration = Duration::from_secs(10);
/// How often a started manager fetches each backend's trust bundle again.
pub const DEFAULT_BUNDLE_REFRESH: Duration = Duration::from_secs(300);

impl ManagerBuilder {
    /// What `file:` and `env:` data sources of applied Meshes may reach (default: the local
    /// policy, for configuration the operator wrote).
    #[must_use]
    pub fn sources(mut self, sources: SourcePolicy) -> Self {
        self.sources = sources;
        self
    }

    /// Limits of the guarded issue path.
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Where metrics go.
    #[must_use]
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observer = observer;
        self
    }

    /// When watched certificates are re-issued (for [`start`](Self::start)).
    #[must_use]
    pub fn rotation(mut self, policy: RotationPolicy) -> Self {
        self.rotation = policy;
        self
    }

    /// How often [`start`](Self::start)'s background work completes CA switches and checks
    /// backend health (`housekeeping`, default [`DEFAULT_HOUSEKEEPING`]) and fetches trust
    /// bundles again (`bundle_refresh`, default [`DEFAULT_BUNDLE_REFRESH`]).
    #[must_use]
    pub fn intervals(mut self, housekeeping: Duration, bundle_refresh: Duration) -> Self {
        self.housekeeping = housekeeping;
        self.bundle_refresh = bundle_refresh;
        self
    }

    /// The manager, serving no mesh yet, without background work: the caller runs
    /// [`Manager::run`] and a [`Scheduler`](crate::Scheduler) itself (or uses
    /// [`start`](Self::start)).
    pub fn build(self) -> Manager {
        let (tx, _) = watch::channel(Arc::new(BTreeMap::new()));
        Manager {
            registry: self.registry,
            ctx: BuildContext::new(self.store, self.sources),
            guard: Arc::new(Guard::new(self.limits, self.observer.clone())),
            observer: self.observer,
            tx,
            sources: Mutex::default(),
            cache: Mutex::default(),
            watched_on: Mutex::default(),
            next_generation: Mutex::new(1),
            apply_lock: tokio::sync::Mutex::new(()),
            bundle_ttl: self.bundle_refresh,
        }
    }
}

/// Owns the mesh states and applies config changes.
#[derive(Debug)]
pub struct Manager {
    registry: Registry,
    ctx: BuildContext,
    guard: Arc<Guard>,
    observer: Arc<dyn Observer>,
    tx: watch::Sender<Snapshot>,
    /// Meshes each source defined when it was last applied.
    sources: Mutex<HashMap<String, Vec<String>>>,
    /// Built backends by (mesh, backend, fingerprint).
    cache: Mutex<HashMap<(String, String, String), Arc<ActiveBackend>>>,
    /// How many watched identities hold a certificate of (mesh, backend).
    pub(crate) watched_on: Mutex<HashMap<(String, String), usize>>,
    next_generation: Mutex<u64>,
    /// Serializes config changes.
    apply_lock: tokio::sync::Mutex<()>,
    /// How long each backend's trust bundle is kept (the bundle refresh interval).
    bundle_ttl: Duration,
}

// === impl Manager ===

impl Manager {
    /// A builder: backends from `registry`, secrets (and the builtin CAs) in `store`.
    pub fn builder(registry: Registry, store: Arc<dyn SecretStore>) -> ManagerBuilder {
        ManagerBuilder {
            registry,
            store,
            sources: SourcePolicy::local(),
            limits: Limits::default(),
            observer: Arc::new(NoObserver),
            rotation: RotationPolicy::default(),
            housekeeping: DEFAULT_HOUSEKEEPING,
            bundle_refresh: DEFAULT_BUNDLE_REFRESH,
        }
    }

    /// The guarded issue path (for its circuit states).
    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// The backends this manager can build.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The store secrets live in.
    pub fn store(&self) -> &Arc<dyn SecretStore> {
        &self.ctx.store
    }

    /// Every mesh now.
    pub fn snapshot(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    /// Every change of the meshes.
    pub fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    /// One mesh now.
    pub fn mesh(&self, name: &str) -> Option<Arc<MeshState>> {
        self.tx.borrow().get(name).cloned()
    }

    /// The mesh and its enabled backend.
    ///
    /// # Errors
    /// [`ManagerError::MeshNotFound`], [`ManagerError::MtlsDisabled`].
    pub fn enabled(&self, mesh: &str) -> Result<(Arc<MeshState>, Arc<ActiveBackend>), Error> {
        let state = self
            .mesh(mesh)
            .ok_or_else(|| Error::from(ManagerError::MeshNotFound(ca_core::echo(mesh))))?;
        let active = state
            .enabled
            .clone()
            .ok_or_else(|| Error::from(ManagerError::MtlsDisabled(mesh.to_owned())))?;
        Ok((state, active))
    }

    /// Issues a certificate for `identity` from its mesh's enabled backend, through the guard:
    /// from the caller's CSR (DER) when given, else with a generated P-256 key.
    ///
    /// # Errors
    /// [`ManagerError::MeshNotFound`], [`ManagerError::MtlsDisabled`], the guard's and the
    /// backend's errors.
    pub async fn issue(&self, identity: Identity, csr: Option<&[u8]>) -> Result<Issued, Error> {
        self.issue_with_key(identity, csr, IdempotencyKey::new())
            .await
    }

    /// [`issue`](Self::issue) under `key`: pass the same key when you retry one logical request,
    /// so a backend whose upstream supports it (ACM PCA's `IdempotencyToken`, a deterministic
    /// cert-manager request name) never mints twice.
    ///
    /// # Errors
    /// As [`issue`](Self::issue).
    pub async fn issue_with_key(
        &self,
        identity: Identity,
        csr: Option<&[u8]>,
        key: IdempotencyKey,
    ) -> Result<Issued, Error> {
        let (mesh, backend) = self.enabled(identity.mesh().as_str())?;
        let certificate = self.guard.issue(&backend, identity, csr, key).await?;
        Ok(Issued {
            certificate,
            mesh,
            backend,
        })
    }

    /// Checks `meshes` from `source` as [`apply`](Self::apply) would, with a dry run: nothing is
    /// built for real and nothing is persisted.
    ///
    /// # Errors
    /// As [`apply`](Self::apply).
    pub async fn check(&self, source: &str, meshes: &[Mesh]) -> Result<(), Error> {
        let current = self.snapshot();
        self.check_with(source, meshes, &current, &self.ctx.dry_run())
            .await
    }

    /// Makes `meshes` what `source` defines: checks them (dry run), builds what changed, and
    /// publishes. Meshes `source` defined before and no longer does are removed. On error nothing
    /// changes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a mesh is already defined by another source; a backend's
    /// construction, `ensure` or test-certificate error.
    pub async fn apply(&self, source: &str, meshes: Vec<Mesh>) -> Result<Vec<MeshName>, Error> {
        let _serial = self.apply_lock.lock().await;
        match self.apply_locked(source, meshes).await {
            Ok(names) => {
                self.observer.config("applied");
                Ok(names)
            }
            Err(e) => {
                self.observer.config("refused");
                Err(e)
            }
        }
    }

    async fn apply_locked(&self, source: &str, meshes: Vec<Mesh>) -> Result<Vec<MeshName>, Error> {
        let current = self.snapshot();
        self.check_with(source, &meshes, &current, &self.ctx.dry_run())
            .await?;
        let mut states = Vec::new();
        for mesh in &meshes {
            let old = current.get(mesh.name.as_str());
            let enabled = match mesh.enabled_backend_indexed() {
                Some((index, backend)) => {
                    let key = cache_key(mesh, backend);
                    let cached = lock(&self.cache).get(&key).cloned();
                    Some(match cached {
                        Some(a) => a,
                        None => {
                            let a = self
                                .build_backend(&self.ctx, mesh, index, backend, key.2.clone())
                                .await?;
                            lock(&self.cache).insert(key, a.clone());
                            a
                        }
                    })
                }
                None => None,
            };
            let resumed = match old {
                None => self.resume_switch(mesh, enabled.as_ref()).await,
                Some(_) => None,
            };
            states.push(self.next_state(&mesh.name, source, old, enabled, resumed)?);
        }
        // Every state is built: now record switches that started or ended, then publish.
        for state in &states {
            let old = current.get(state.name.as_str()).map(AsRef::as_ref);
            self.record_switch(old, state).await?;
        }
        let names: Vec<MeshName> = states.iter().map(|s| s.name.clone()).collect();
        let mut snapshot: BTreeMap<String, Arc<MeshState>> = (*current).clone();
        let before = lock(&self.sources)
            .insert(
                source.to_owned(),
                names.iter().map(ToString::to_string).collect(),
            )
            .unwrap_or_default();
        for m in before {
            if !names.iter().any(|n| n.as_str() == m)
                && snapshot.get(&m).is_some_and(|s| s.source == source)
            {
                tracing::info!(mesh = %m, source, "mesh config removed (its source no longer defines it)");
                snapshot.remove(&m);
            }
        }
        for s in states {
            tracing::info!(
                mesh = %s.name,
                source,
                enabled_backend = s.enabled.as_ref().map(|b| format!("{} ({})", b.name, b.backend_type)).unwrap_or_default(),
                generation = s.generation,
                switch_in_progress = s.previous.is_some(),
                "mesh config applied"
            );
            snapshot.insert(s.name.to_string(), Arc::new(s));
        }
        self.publish(snapshot);
        Ok(names)
    }

    /// Removes every mesh `source` defines (its file was deleted). Returns their names.
    pub async fn remove_source(&self, source: &str) -> Vec<String> {
        let _serial = self.apply_lock.lock().await;
        let Some(meshes) = lock(&self.sources).remove(source) else {
            return Vec::new();
        };
        let mut snapshot: BTreeMap<String, Arc<MeshState>> = (*self.snapshot()).clone();
        let mut removed = Vec::new();
        for m in meshes {
            if snapshot.get(&m).is_some_and(|s| s.source == source) {
                tracing::info!(mesh = %m, source, "mesh config removed");
                snapshot.remove(&m);
                removed.push(m);
            }
        }
        if !removed.is_empty() {
            self.publish(snapshot);
        }
        removed
    }

    /// Parses nothing, builds with `ctx`: every backend the meshes enable that is not built
    /// already is built, ensured and tested.
    async fn check_with(
        &self,
        source: &str,
        meshes: &[Mesh],
        current: &BTreeMap<String, Arc<MeshState>>,
        ctx: &BuildContext,
    ) -> Result<(), Error> {
        for (i, mesh) in meshes.iter().enumerate() {
            let name = mesh.name.to_string();
            if let Some(other) = current.get(&name).filter(|s| s.source != source) {
                return Err(Error::invalid_argument(
                    "name",
                    format!("mesh `{name}` is already defined in {}", other.source),
                ));
            }
            if meshes[..i].iter().any(|m| m.name == mesh.name) {
                return Err(Error::invalid_argument(
                    "name",
                    format!("mesh `{name}` is defined twice"),
                ));
            }
            if let Some((index, backend)) = mesh.enabled_backend_indexed() {
                let key = cache_key(mesh, backend);
                if !lock(&self.cache).contains_key(&key) {
                    self.build_backend(ctx, mesh, index, backend, key.2).await?;
                }
            }
        }
        Ok(())
    }

    /// Builds a backend, ensures its CA, issues the test certificate (unless the Mesh skips
    /// validation) and reads its trust bundle.
    async fn build_backend(
        &self,
        ctx: &BuildContext,
        mesh: &Mesh,
        index: usize,
        backend: &Backend,
        fingerprint: String,
    ) -> Result<Arc<ActiveBackend>, Error> {
        let built = self.registry.build(ctx, &mesh.name, index, backend).await?;
        for w in &built.warnings {
            tracing::warn!(mesh = %mesh.name, backend = %backend.name, warning = %w, "backend warning");
        }
        let timed = Arc::new(Deadline::new(built.ca, backend.dp_cert_request_timeout));
        let ca = Arc::new(CachedBundle::new(timed, self.bundle_ttl));
        ca.ensure().await?;
        if !mesh.mtls.as_ref().is_some_and(|m| m.skip_validation) {
            ca_core::validate(
                ca.as_ref(),
                &mesh.name,
                backend.dp_cert_expiration,
                backend.common_name(),
            )
            .await?;
        }
        let bundle = ca.trust_bundle().await?;
        Ok(Arc::new(ActiveBackend {
            name: backend.name.clone(),
            backend_type: backend.backend_type().to_owned(),
            ca,
            lifetime: backend.dp_cert_expiration,
            common_name: backend.common_name().cloned(),
            dns_names: backend.conf().dns_names().to_vec(),
            bundle,
            fingerprint,
        }))
    }

    fn publish(&self, snapshot: BTreeMap<String, Arc<MeshState>>) {
        // Drop cached instances nothing refers to any more.
        let in_use: Vec<(String, String, String)> = snapshot
            .values()
            .flat_map(|s| {
                s.enabled
                    .iter()
                    .chain(s.previous.iter().map(|p| &p.backend))
                    .map(|b| {
                        (
                            s.name.to_string(),
                            b.name.to_string(),
                            b.fingerprint.clone(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        lock(&self.cache).retain(|k, _| in_use.contains(k));
        self.tx.send_replace(Arc::new(snapshot));
    }

    /// Refreshes the cached trust bundle of every enabled backend from upstream (for builtin and
    /// provided backends it never changes). When an upstream bundle changed (its CA rotated), the
    /// mesh's published bundle — what data planes are handed — follows: the new roots are added,
    /// the old ones kept, since certificates issued before still chain to them.
    pub async fn refresh_bundles(&self) {
        let mut changed: Vec<(String, TrustBundle)> = Vec::new();
        for state in self.snapshot().values() {
            if let Some(active) = &state.enabled {
                match active.ca.refresh().await {
                    Ok(fresh) if fresh.certs() != active.bundle.certs() => {
                        changed.push((state.name.to_string(), fresh));
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(mesh = %state.name, backend = %active.name, error = %e, "cannot refresh the trust bundle; keeping the cached one");
                    }
                }
            }
        }
        if changed.is_empty() {
            return;
        }
        let _serial = self.apply_lock.lock().await;
        let current = self.snapshot();
        let mut next: BTreeMap<String, Arc<MeshState>> = (*current).clone();
        for (mesh, fresh) in changed {
            let Some(state) = current.get(&mesh) else {
                continue;
            };
            let Some(active) = &state.enabled else {
                continue;
            };
            let Ok(bundle) = TrustBundle::merge([&active.bundle, &fresh]) else {
                continue;
            };
            if bundle.certs() == active.bundle.certs() {
                continue;
            }
            let refreshed = Arc::new(ActiveBackend {
                name: active.name.clone(),
                backend_type: active.backend_type.clone(),
                ca: active.ca.clone(),
                lifetime: active.lifetime,
                common_name: active.common_name.clone(),
                dns_names: active.dns_names.clone(),
                bundle,
                fingerprint: active.fingerprint.clone(),
            });
            let Ok(mesh_bundle) = switch::merged_bundle(Some(&refreshed), state.previous.as_ref())
            else {
                continue;
            };
            tracing::info!(mesh, backend = %active.name, "upstream trust bundle changed; publishing its new roots");
            lock(&self.cache).insert(
                (
                    mesh.clone(),
                    refreshed.name.to_string(),
                    refreshed.fingerprint.clone(),
                ),
                refreshed.clone(),
            );
            next.insert(
                mesh,
                Arc::new(MeshState {
                    name: state.name.clone(),
                    generation: state.generation,
                    enabled: Some(refreshed),
                    previous: state.previous.clone(),
                    bundle_pem: mesh_bundle.as_ref().map(TrustBundle::to_pem),
                    bundle: mesh_bundle,
                    source: state.source.clone(),
                }),
            );
        }
        self.publish(next);
    }

    /// Asks every enabled backend for problems that have not failed a request yet but will (a
    /// credential that cannot be renewed), logs each and reports all to the observer.
    pub async fn check_health(&self) {
        let mut report = BTreeMap::new();
        for state in self.snapshot().values() {
            if let Some(active) = &state.enabled {
                let problem = active
                    .ca
                    .health()
                    .await
                    .err()
                    .map(|e| ca_core::error_chain(&e));
                if let Some(p) = &problem {
                    tracing::warn!(mesh = %state.name, backend = %active.name, problem = %p, "backend will fail");
                }
                report.insert((state.name.to_string(), active.name.to_string()), problem);
            }
        }
        self.observer.backend_health(report);
    }

    /// Ends finished CA switches and checks backends' health every `interval`, and refreshes the
    /// cached trust bundles every `bundle_refresh`. Runs until the task is dropped.
    pub async fn run(self: Arc<Self>, interval: Duration, bundle_refresh: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refresh = tokio::time::interval(bundle_refresh);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.finish_switches().await;
                    self.check_health().await;
                }
                _ = refresh.tick() => self.refresh_bundles().await,
            }
        }
    }
}

/// The cache key of a mesh's backend: (mesh, backend, fingerprint of its configuration).
fn cache_key(mesh: &Mesh, backend: &Backend) -> (String, String, String) {
    (
        mesh.name.to_string(),
        backend.name.to_string(),
        backend.fingerprint().as_str().to_owned(),
    )
}
