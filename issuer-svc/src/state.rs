//! Mesh state: the meshes this issuer serves, their enabled backend (and the previous one while a
//! switch of `enabledBackend` is in flight), loaded from a directory of Mesh YAML files that is
//! polled for changes. Published through `tokio::sync::watch`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ca_core::config::{BackendType, Mesh};
use ca_core::{
    BackendName, CertificateAuthority, CommonNameTemplate, Error, MeshName, TrustBundle,
};
use serde_yaml::Value;
use tokio::sync::watch;

use crate::issuer::lock;
use crate::metrics::Metrics;
use crate::registry::{BuildContext, Registry};
use crate::util::sha256_hex;

/// The config used when no `--mesh-config` is given.
pub(crate) const DEFAULT_MESH_YAML: &str = "\
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: builtin
      conf:
        caCert:
          keyType: ecdsa-p256
";

/// A built backend, ready to issue.
#[derive(Debug)]
pub(crate) struct ActiveBackend {
    pub(crate) name: BackendName,
    pub(crate) backend_type: BackendType,
    pub(crate) ca: Arc<dyn CertificateAuthority>,
    pub(crate) lifetime: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) common_name: Option<CommonNameTemplate>,
    pub(crate) bundle: TrustBundle,
    /// Hash of the backend's YAML: a reload that does not change it reuses this instance.
    pub(crate) fingerprint: String,
}

/// The backend that was enabled before a switch, kept (with its roots in the bundle) until every
/// watched identity has rotated and every certificate it issued has expired.
#[derive(Debug, Clone)]
pub(crate) struct Previous {
    pub(crate) backend: Arc<ActiveBackend>,
    pub(crate) keep_until: SystemTime,
}

/// One mesh as served now.
#[derive(Debug)]
pub(crate) struct MeshState {
    pub(crate) name: MeshName,
    /// Changes whenever the enabled backend instance changes; watchers re-issue then.
    pub(crate) generation: u64,
    pub(crate) enabled: Option<Arc<ActiveBackend>>,
    pub(crate) previous: Option<Previous>,
    /// The enabled backend's roots plus the previous backend's during a switch.
    pub(crate) bundle: Option<TrustBundle>,
    /// `bundle` as PEM, encoded once here rather than for every certificate handed out.
    pub(crate) bundle_pem: Option<String>,
    /// The file the mesh came from (`<embedded>` for the default).
    pub(crate) source: String,
}

/// Every mesh, by name.
pub(crate) type Snapshot = Arc<BTreeMap<String, Arc<MeshState>>>;

/// Where mesh configs come from.
#[derive(Clone, Debug)]
pub(crate) enum ConfigSource {
    Embedded,
    Dir(PathBuf),
}

#[derive(Debug, Default)]
struct FileRecord {
    hash: String,
    /// Meshes the file defined when it was last applied.
    meshes: Vec<String>,
}

/// Owns the mesh states and applies config changes.
#[derive(Debug)]
pub(crate) struct Manager {
    registry: Registry,
    ctx: BuildContext,
    source: ConfigSource,
    metrics: Arc<Metrics>,
    tx: watch::Sender<Snapshot>,
    files: Mutex<HashMap<String, FileRecord>>,
    /// Built backends by (mesh, backend, fingerprint).
    cache: Mutex<HashMap<(String, String, String), Arc<ActiveBackend>>>,
    /// How many watched identities hold a certificate of (mesh, backend).
    pub(crate) watched_on: Mutex<HashMap<(String, String), usize>>,
    next_generation: Mutex<u64>,
    /// Serializes reloads.
    reload_lock: tokio::sync::Mutex<()>,
}

impl Manager {
    pub(crate) fn new(
        registry: Registry,
        ctx: BuildContext,
        source: ConfigSource,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, _) = watch::channel(Arc::new(BTreeMap::new()));
        Self {
            registry,
            ctx,
            source,
            metrics,
            tx,
            files: Mutex::default(),
            cache: Mutex::default(),
            watched_on: Mutex::default(),
            next_generation: Mutex::new(1),
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.tx.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Snapshot> {
        self.tx.subscribe()
    }

    pub(crate) fn mesh(&self, name: &str) -> Option<Arc<MeshState>> {
        self.tx.borrow().get(name).cloned()
    }

    /// Reads the config source and applies what changed. Returns the number of files refused.
    pub(crate) async fn reload(&self) -> usize {
        let _serial = self.reload_lock.lock().await;
        let files = match self.read_source() {
            Ok(f) => f,
            Err(()) => return 1,
        };
        let mut refused = 0;
        let mut snapshot: BTreeMap<String, Arc<MeshState>> = (*self.snapshot()).clone();
        let mut changed = false;
        let present: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();

        // Files that disappeared take their meshes with them.
        let gone: Vec<String> = lock(&self.files)
            .keys()
            .filter(|k| !present.contains(k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(rec) = lock(&self.files).remove(&name) {
                for m in rec.meshes {
                    if snapshot.get(&m).is_some_and(|s| s.source == name) {
                        tracing::info!(mesh = %m, file = %name, "mesh config removed");
                        snapshot.remove(&m);
                        changed = true;
                    }
                }
            }
        }

        for (file, text) in files {
            let hash = match &text {
                Ok(t) => sha256_hex(t.as_bytes()),
                Err(e) => sha256_hex(e.as_bytes()),
            };
            if lock(&self.files).get(&file).is_some_and(|r| r.hash == hash) {
                continue;
            }
            let prepared = match text {
                Ok(text) => self.prepare_file(&file, &text, &snapshot).await,
                Err(reason) => Err(Error::InvalidConfig({
                    let mut v = ca_core::Violations::default();
                    v.add("(file)", reason);
                    v
                })),
            };
            match prepared {
                Ok(states) => {
                    let names: Vec<String> = states.iter().map(|s| s.name.to_string()).collect();
                    let old = lock(&self.files)
                        .get(&file)
                        .map(|r| r.meshes.clone())
                        .unwrap_or_default();
                    for m in old {
                        if !names.contains(&m) && snapshot.get(&m).is_some_and(|s| s.source == file)
                        {
                            tracing::info!(mesh = %m, file = %file, "mesh removed from its config file");
                            snapshot.remove(&m);
                        }
                    }
                    for s in states {
                        tracing::info!(
                            mesh = %s.name,
                            file = %file,
                            enabled_backend = s.enabled.as_ref().map(|b| format!("{} ({})", b.name, b.backend_type)).unwrap_or_default(),
                            generation = s.generation,
                            switch_in_progress = s.previous.is_some(),
                            "mesh config applied"
                        );
                        snapshot.insert(s.name.to_string(), Arc::new(s));
                    }
                    lock(&self.files).insert(
                        file,
                        FileRecord {
                            hash,
                            meshes: names,
                        },
                    );
                    self.metrics.config_reload("applied");
                    changed = true;
                }
                Err(e) => {
                    refused += 1;
                    self.metrics.config_reload("refused");
                    tracing::warn!(
                        file = %file,
                        error = %crate::status::message(&e),
                        "mesh config refused; the previous config stays in effect"
                    );
                    // Remember the hash so the same bad content is not re-tried every poll; the
                    // meshes it defined before stay.
                    let mut files = lock(&self.files);
                    let rec = files.entry(file).or_default();
                    rec.hash = hash;
                }
            }
        }
        if changed {
            self.publish(snapshot);
        }
        refused
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

    /// Reads every config file; a file that cannot be read comes back as `Err(reason)` (and is
    /// refused like a bad one, keeping its previous meshes). `Err(())` when the directory itself
    /// cannot be listed.
    fn read_source(&self) -> Result<ConfigFiles, ()> {
        match &self.source {
            ConfigSource::Embedded => Ok(vec![(
                "<embedded>".into(),
                Ok(DEFAULT_MESH_YAML.into()),
            )]),
            ConfigSource::Dir(dir) => read_dir_yaml(dir).map_err(|e| {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read mesh config directory; keeping the current config");
            }),
        }
    }

    /// Checks every config file as a reload would, building and testing each backend against an
    /// in-memory overlay of the store: nothing is written. `serve` runs this before it persists
    /// anything, so a bad config never leaves CA secrets behind. Returns the number of files
    /// refused (each logged).
    pub(crate) async fn dry_run(&self) -> usize {
        let Ok(files) = self.read_source() else {
            return 1;
        };
        let dry = self.dry_context();
        let mut refused = 0;
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (file, text) in files {
            let result = match text {
                Ok(text) => self.check_file(&file, &text, &dry, &BTreeMap::new()).await,
                Err(reason) => Err(Error::invalid_argument("(file)", reason)),
            };
            let result = result.and_then(|meshes| {
                for m in &meshes {
                    if let Some(other) = seen.insert(m.name.to_string(), file.clone()) {
                        return Err(Error::invalid_argument(
                            "name",
                            format!("mesh `{}` is already defined in {other}", m.name),
                        ));
                    }
                }
                Ok(())
            });
            if let Err(e) = result {
                refused += 1;
                tracing::error!(file = %file, error = %crate::status::message(&e), "mesh config refused");
            }
        }
        refused
    }

    fn dry_context(&self) -> BuildContext {
        BuildContext {
            store: Arc::new(crate::memstore::OverlayStore::new(Some(
                self.ctx.store.clone(),
            ))),
            sources: self.ctx.sources.clone(),
        }
    }

    /// Parses a file (off the runtime) and builds and tests every backend it enables that is not
    /// built already, with `ctx`.
    async fn check_file(
        &self,
        file: &str,
        text: &str,
        ctx: &BuildContext,
        current: &BTreeMap<String, Arc<MeshState>>,
    ) -> Result<Vec<Mesh>, Error> {
        let meshes = crate::meshfile::parse_off_runtime(text.to_owned()).await?;
        let raw = raw_backends(text);
        for mesh in &meshes {
            let name = mesh.name.to_string();
            if let Some(other) = current.get(&name).filter(|s| s.source != file) {
                return Err(Error::invalid_argument(
                    "name",
                    format!("mesh `{name}` is already defined in {}", other.source),
                ));
            }
            if let Some((index, backend)) = mesh.enabled_backend_indexed() {
                let key = cache_key(mesh, backend, &raw);
                if !lock(&self.cache).contains_key(&key) {
                    self.build_backend(ctx, mesh, index, backend, key.2).await?;
                }
            }
        }
        Ok(meshes)
    }

    /// Builds a backend, ensures its CA, issues the test certificate (unless the Mesh skips
    /// validation) and reads its trust bundle.
    async fn build_backend(
        &self,
        ctx: &BuildContext,
        mesh: &Mesh,
        index: usize,
        backend: &ca_core::config::Backend,
        fingerprint: String,
    ) -> Result<Arc<ActiveBackend>, Error> {
        let built = self.registry.build(ctx, &mesh.name, index, backend).await?;
        for w in &built.warnings {
            tracing::warn!(mesh = %mesh.name, backend = %backend.name, warning = %w, "backend warning");
        }
        let ca = built.ca;
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
            backend_type: backend.backend_type(),
            ca,
            lifetime: backend.dp_cert_expiration,
            request_timeout: backend.dp_cert_request_timeout,
            common_name: backend.common_name().cloned(),
            bundle,
            fingerprint,
        }))
    }

    /// Checks a file with a dry run (nothing persisted), then builds what it enables for real.
    async fn prepare_file(
        &self,
        file: &str,
        text: &str,
        current: &BTreeMap<String, Arc<MeshState>>,
    ) -> Result<Vec<MeshState>, Error> {
        let meshes = self
            .check_file(file, text, &self.dry_context(), current)
            .await?;
        let raw = raw_backends(text);
        let mut out: Vec<MeshState> = Vec::new();
        for mesh in meshes {
            let old = current.get(mesh.name.as_str());
            let enabled = match mesh.enabled_backend_indexed() {
                Some((index, backend)) => {
                    let key = cache_key(&mesh, backend, &raw);
                    let cached = lock(&self.cache).get(&key).cloned();
                    Some(match cached {
                        Some(a) => a,
                        None => {
                            let a = self
                                .build_backend(&self.ctx, &mesh, index, backend, key.2.clone())
                                .await?;
                            lock(&self.cache).insert(key, a.clone());
                            a
                        }
                    })
                }
                None => None,
            };
            out.push(self.next_state(&mesh.name, file, old, enabled)?);
        }
        Ok(out)
    }

    fn next_state(
        &self,
        name: &MeshName,
        file: &str,
        old: Option<&Arc<MeshState>>,
        enabled: Option<Arc<ActiveBackend>>,
    ) -> Result<MeshState, Error> {
        let same = match (old.and_then(|o| o.enabled.as_ref()), enabled.as_ref()) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let mut previous = old.and_then(|o| o.previous.clone());
        let generation = if same {
            old.map_or(0, |o| o.generation)
        } else {
            if let Some(old_backend) = old.and_then(|o| o.enabled.clone()) {
                let differs = enabled
                    .as_ref()
                    .is_none_or(|n| n.bundle.certs() != old_backend.bundle.certs());
                if differs {
                    previous = Some(Previous {
                        keep_until: SystemTime::now() + old_backend.lifetime,
                        backend: old_backend,
                    });
                }
            }
            let mut g = lock(&self.next_generation);
            *g += 1;
            *g
        };
        // Switching back to the backend that was previous ends the switch.
        if let (Some(p), Some(e)) = (&previous, &enabled) {
            if p.backend.bundle.certs() == e.bundle.certs() {
                previous = None;
            }
        }
        let bundle = merged_bundle(enabled.as_ref(), previous.as_ref())?;
        Ok(MeshState {
            name: name.clone(),
            generation,
            enabled,
            previous,
            bundle_pem: bundle.as_ref().map(TrustBundle::to_pem),
            bundle,
            source: file.to_owned(),
        })
    }

    /// Ends switches whose old backend is no longer needed: every watched identity moved to the
    /// new backend and every certificate the old one issued has expired.
    pub(crate) fn finish_switches(&self) {
        let snapshot = self.snapshot();
        let now = SystemTime::now();
        let mut next: Option<BTreeMap<String, Arc<MeshState>>> = None;
        for (name, state) in snapshot.iter() {
            let Some(prev) = &state.previous else {
                continue;
            };
            let watched = lock(&self.watched_on)
                .get(&(name.clone(), prev.backend.name.to_string()))
                .copied()
                .unwrap_or(0);
            let same_name_enabled = state
                .enabled
                .as_ref()
                .is_some_and(|e| e.name == prev.backend.name);
            if now < prev.keep_until || (watched > 0 && !same_name_enabled) {
                continue;
            }
            let bundle = match merged_bundle(state.enabled.as_ref(), None) {
                Ok(b) => b,
                Err(_) => continue,
            };
            tracing::info!(mesh = %name, old_backend = %prev.backend.name, "CA switch complete; old roots leave the trust bundle");
            let map = next.get_or_insert_with(|| (*snapshot).clone());
            map.insert(
                name.clone(),
                Arc::new(MeshState {
                    name: state.name.clone(),
                    generation: state.generation,
                    enabled: state.enabled.clone(),
                    previous: None,
                    bundle_pem: bundle.as_ref().map(TrustBundle::to_pem),
                    bundle,
                    source: state.source.clone(),
                }),
            );
        }
        if let Some(map) = next {
            self.publish(map);
        }
    }

    /// Polls the config source every `interval` and ends finished CA switches.
    pub(crate) async fn run(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if matches!(self.source, ConfigSource::Dir(_)) {
                self.reload().await;
            }
            self.finish_switches();
        }
    }
}

fn merged_bundle(
    enabled: Option<&Arc<ActiveBackend>>,
    previous: Option<&Previous>,
) -> Result<Option<TrustBundle>, Error> {
    let bundles: Vec<&TrustBundle> = enabled
        .map(|e| &e.bundle)
        .into_iter()
        .chain(previous.map(|p| &p.backend.bundle))
        .collect();
    if bundles.is_empty() {
        return Ok(None);
    }
    TrustBundle::merge(bundles).map(Some)
}

/// Config files by path: their text, or why they cannot be used.
type ConfigFiles = Vec<(String, Result<String, String>)>;

/// The cache key of a mesh's backend: (mesh, backend, fingerprint of its YAML).
fn cache_key(
    mesh: &Mesh,
    backend: &ca_core::config::Backend,
    raw: &HashMap<(String, String), String>,
) -> (String, String, String) {
    let name = mesh.name.to_string();
    let fingerprint = sha256_hex(
        raw.get(&(name.clone(), backend.name.to_string()))
            .map_or_else(|| format!("{backend:?}"), Clone::clone)
            .as_bytes(),
    );
    (name, backend.name.to_string(), fingerprint)
}

/// `*.yaml` / `*.yml` files of `dir`, sorted by name, with their contents, or why a file cannot
/// be used (unreadable, not UTF-8, over the size limit).
fn read_dir_yaml(dir: &Path) -> std::io::Result<ConfigFiles> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_yaml = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "yaml" || e == "yml");
        if !is_yaml || !path.is_file() {
            continue;
        }
        let text = crate::limits::read_config_file(&path, "mesh config").map_err(|e| e.0);
        out.push((path.display().to_string(), text));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The YAML of every backend, by (mesh, backend name), for fingerprints. Inline secrets are part
/// of the YAML, so a changed inline key changes the fingerprint (the hash never leaves memory).
pub(crate) fn raw_backends(text: &str) -> HashMap<(String, String), String> {
    use serde::Deserialize as _;
    let mut out = HashMap::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let Ok(value) = Value::deserialize(doc) else {
            continue;
        };
        let (name, mtls) = if value.get("kind").is_some() || value.get("apiVersion").is_some() {
            (
                value.get("metadata").and_then(|m| m.get("name")),
                value.get("spec").and_then(|s| s.get("mtls")),
            )
        } else {
            (value.get("name"), value.get("mtls"))
        };
        let (Some(name), Some(mtls)) = (name.and_then(Value::as_str), mtls) else {
            continue;
        };
        if let Some(Value::Sequence(backends)) = mtls.get("backends") {
            for b in backends {
                if let Some(bn) = b.get("name").and_then(Value::as_str) {
                    let text = serde_yaml::to_string(b).unwrap_or_default();
                    out.insert((name.to_owned(), bn.to_owned()), text);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_follow_each_backend_in_both_forms() {
        let universal = "type: Mesh\nname: a\nmtls:\n  backends:\n    - name: ca-1\n      type: builtin\n    - name: ca-2\n      type: builtin\n      dpCert: {rotation: {expiration: 1h}}\n";
        let k8s = "apiVersion: kuma.io/v1alpha1\nkind: Mesh\nmetadata: {name: b}\nspec:\n  mtls:\n    backends:\n      - name: ca-1\n        type: builtin\n";
        let both = format!("{universal}---\n{k8s}");
        let raw = raw_backends(&both);
        assert_eq!(raw.len(), 3);
        assert!(raw[&("a".into(), "ca-2".into())].contains("expiration: 1h"));
        assert!(raw.contains_key(&("b".into(), "ca-1".into())));
        // The default config is a valid Mesh.
        assert!(Mesh::from_yaml(DEFAULT_MESH_YAML).is_ok());
    }
}
