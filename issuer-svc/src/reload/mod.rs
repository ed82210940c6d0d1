//! Where `meshca serve` gets its Meshes (`--mesh-source`), and the one path every source's
//! changes take into the library's [`Manager`]:
//!
//! - [`files`]: a directory of YAML files (or the embedded default), polled;
//! - [`kubernetes`]: Kuma's cluster-scoped `Mesh` objects (`meshes.kuma.io`), watched;
//! - [`postgres`]: Kuma's `Mesh` rows in its PostgreSQL `resources` table, followed with
//!   LISTEN/NOTIFY and polling.
//!
//! Each source offers [`Doc`]s (a file, a Mesh object, a Mesh row), one manager source each.
//! [`Applier`] applies a document only when its content changed, through the manager's `apply`
//! (a dry run of every backend first; on error nothing changes, so a refused Mesh leaves the
//! previous one serving), removes the meshes of documents that are gone, and never lets a
//! listing that names nothing drop every mesh of a source that follows another system
//! ([`EmptyListing::Keep`]).

pub(crate) mod files;
pub(crate) mod kubernetes;
pub(crate) mod postgres;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use meshca::Manager;

use crate::hash::sha256_hex;
use crate::serve::metrics::Metrics;

pub(crate) use files::{ConfigSource, FileSource};

/// At most this many documents (meshes) from one source; more are refused, each named.
pub(crate) const MAX_MESHES: usize = 1000;

/// One unit of Mesh config a source offers: a file, a Mesh object, a Mesh row.
#[derive(Debug, Clone)]
pub(crate) struct Doc {
    /// What it is, in logs and as the manager's source (`/etc/meshca/meshes/a.yaml`,
    /// `kubernetes Mesh default`).
    pub(crate) key: String,
    /// Its Mesh YAML (one or more documents), or why it cannot be used.
    pub(crate) text: Result<String, String>,
}

/// A document refused: the previous meshes it defined (if any) keep serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    /// [`Doc::key`].
    pub(crate) key: String,
    /// Why, every violation with its field.
    pub(crate) reason: String,
}

/// What a complete listing that names no document at all means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EmptyListing {
    /// Every document is gone (a directory emptied by its operator).
    Honour,
    /// Nothing: the meshes served stay. A watch that restarts, or a database read that comes
    /// back empty, never drops every mesh; a mesh deleted one at a time (a watch's DELETED
    /// event, a listing that still names others) is removed.
    Keep,
}

/// Applies a source's documents to the manager when they change.
#[derive(Debug)]
pub(crate) struct Applier {
    manager: Arc<Manager>,
    metrics: Arc<Metrics>,
    /// `files`, `kubernetes` or `postgres` (the metric's label).
    source: &'static str,
    /// Hash of each document's content when it was last looked at (applied or refused).
    seen: Mutex<BTreeMap<String, String>>,
    /// Serializes changes.
    lock: tokio::sync::Mutex<()>,
}

impl Applier {
    pub(crate) fn new(manager: Arc<Manager>, metrics: Arc<Metrics>, source: &'static str) -> Self {
        Self {
            manager,
            metrics,
            source,
            seen: Mutex::default(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Checks every document as an apply would, with the manager's dry run: nothing is built
    /// for real and nothing is persisted. Returns the refused ones (each logged).
    pub(crate) async fn dry_run(&self, docs: &[Doc]) -> Vec<Refusal> {
        let mut refused = Vec::new();
        let mut defined: BTreeMap<String, String> = BTreeMap::new();
        for doc in docs {
            let result = match &doc.text {
                Ok(text) => {
                    match crate::meshfile::parse_off_runtime(text.clone(), self.manager.registry())
                        .await
                    {
                        Ok(meshes) => {
                            // A dry run sees every document at once: a mesh two define is refused.
                            let dup = meshes.iter().find_map(|m| {
                                defined
                                    .insert(m.name.to_string(), doc.key.clone())
                                    .map(|other| (m.name.to_string(), other))
                            });
                            match dup {
                                Some((mesh, other)) => {
                                    Err(format!("mesh `{mesh}` is already defined in {other}"))
                                }
                                None => self
                                    .manager
                                    .check(&doc.key, &meshes)
                                    .await
                                    .map_err(|e| crate::api::status::message(&e)),
                            }
                        }
                        Err(e) => Err(crate::api::status::message(&e)),
                    }
                }
                Err(unusable) => Err(unusable.clone()),
            };
            if let Err(reason) = result {
                tracing::error!(source = %doc.key, error = %reason, "mesh config refused");
                refused.push(Refusal {
                    key: doc.key.clone(),
                    reason,
                });
            }
        }
        refused
    }

    /// Makes the served meshes what `docs` (every document the source has now) say: documents
    /// no longer listed take their meshes with them (but see [`EmptyListing`]), changed ones
    /// are applied. Returns the documents refused this time.
    pub(crate) async fn apply_listing(&self, docs: Vec<Doc>, empty: EmptyListing) -> Vec<Refusal> {
        let _serial = self.lock.lock().await;
        let gone: Vec<String> = lock(&self.seen)
            .keys()
            .filter(|k| !docs.iter().any(|d| d.key == **k))
            .cloned()
            .collect();
        if docs.is_empty() && !gone.is_empty() && empty == EmptyListing::Keep {
            tracing::warn!(
                source = self.source,
                serving = gone.len(),
                "the mesh source lists no Mesh at all; keeping every mesh served (a listing of \
                 nothing never drops them all; delete Meshes one at a time)"
            );
            return Vec::new();
        }
        for key in gone {
            self.remove_locked(&key).await;
        }
        self.apply_locked(docs).await
    }

    /// Applies `docs` that changed; documents not named are left as they are.
    pub(crate) async fn apply_changed(&self, docs: Vec<Doc>) -> Vec<Refusal> {
        let _serial = self.lock.lock().await;
        self.apply_locked(docs).await
    }

    /// The document `key` is gone (deleted at its source): its meshes stop being served.
    pub(crate) async fn remove(&self, key: &str) {
        let _serial = self.lock.lock().await;
        self.remove_locked(key).await;
    }

    async fn remove_locked(&self, key: &str) {
        lock(&self.seen).remove(key);
        for m in self.manager.remove_source(key).await {
            tracing::info!(mesh = %m, source = %key, "mesh config removed (its source no longer has it)");
        }
    }

    async fn apply_locked(&self, docs: Vec<Doc>) -> Vec<Refusal> {
        let mut refused = Vec::new();
        for doc in docs {
            let hash = match &doc.text {
                Ok(t) => sha256_hex(t.as_bytes()),
                Err(e) => sha256_hex(format!("unusable: {e}").as_bytes()),
            };
            let known = {
                let seen = lock(&self.seen);
                match seen.get(&doc.key) {
                    Some(h) if *h == hash => continue,
                    Some(_) => true,
                    None => seen.len() < MAX_MESHES,
                }
            };
            let result: Result<(), String> = if !known {
                Err(format!(
                    "the source has more than {MAX_MESHES} meshes; this one is not served"
                ))
            } else {
                // Remember the hash either way, so the same bad content is not re-tried; the
                // meshes a refused document defined before stay.
                lock(&self.seen).insert(doc.key.clone(), hash);
                match doc.text {
                    Ok(text) => {
                        match crate::meshfile::parse_off_runtime(text, self.manager.registry())
                            .await
                        {
                            Ok(meshes) => self
                                .manager
                                .apply(&doc.key, meshes)
                                .await
                                .map(|_| ())
                                .map_err(|e| crate::api::status::message(&e)),
                            Err(e) => {
                                self.metrics.config_reload("refused");
                                Err(crate::api::status::message(&e))
                            }
                        }
                    }
                    Err(unusable) => {
                        self.metrics.config_reload("refused");
                        Err(unusable)
                    }
                }
            };
            if let Err(reason) = result {
                self.metrics.mesh_refused(self.source);
                tracing::warn!(
                    source = %doc.key,
                    error = %reason,
                    "mesh config refused; the previous config stays in effect"
                );
                refused.push(Refusal {
                    key: doc.key,
                    reason,
                });
            }
        }
        refused
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The Mesh YAML of a Mesh named `name` whose spec is `spec` (Kuma's protobuf JSON, as both a
/// `kuma.io/v1alpha1` Mesh object and a `resources` row hold it): the Kubernetes form, decoded
/// exactly as a Kubernetes-form file. A spec over the YAML size limit, or that is not an object,
/// is refused here, naming the field.
pub(crate) fn kubernetes_form(
    name: &str,
    spec: Option<&serde_json::Value>,
) -> Result<String, String> {
    let mut doc = serde_json::json!({
        "apiVersion": "kuma.io/v1alpha1",
        "kind": "Mesh",
        "metadata": {"name": name},
    });
    if let Some(spec) = spec {
        if !spec.is_object() && !spec.is_null() {
            return Err(format!("Mesh `{name}`: spec: must be an object"));
        }
        let size = serde_json::to_vec(spec)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > ca_core::config::MAX_YAML_BYTES {
            return Err(format!(
                "Mesh `{name}`: spec: is {size} bytes; at most {} are accepted",
                ca_core::config::MAX_YAML_BYTES
            ));
        }
        if spec.is_object() {
            doc["spec"] = spec.clone();
        }
    }
    yaml_serde::to_string(&doc).map_err(|e| format!("Mesh `{name}`: spec: cannot be read ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(name: &str) -> Doc {
        Doc {
            key: format!("test Mesh {name}"),
            text: kubernetes_form(name, None),
        }
    }

    fn served(applier: &Applier) -> Vec<String> {
        applier.manager.snapshot().keys().cloned().collect()
    }

    #[tokio::test]
    async fn listings_remove_what_is_gone_but_nothing_never_drops_everything() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(ca_core::DirectorySecretStore::new(dir.path().join("s")).unwrap());
        let manager = Arc::new(Manager::builder(meshca::registry(), store).build());
        let applier = Applier::new(manager, Arc::new(Metrics::default()), "kubernetes");

        let refused = applier
            .apply_listing(vec![doc("a"), doc("b")], EmptyListing::Keep)
            .await;
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(served(&applier), ["a", "b"]);
        // A listing of nothing keeps every mesh of a Kuma source...
        assert!(applier
            .apply_listing(Vec::new(), EmptyListing::Keep)
            .await
            .is_empty());
        assert_eq!(served(&applier), ["a", "b"]);
        // ...a listing that still names one removes the other...
        applier
            .apply_listing(vec![doc("a")], EmptyListing::Keep)
            .await;
        assert_eq!(served(&applier), ["a"]);
        // ...an explicit removal takes the last one...
        applier.remove("test Mesh a").await;
        assert!(served(&applier).is_empty());
        // ...and for files an emptied directory is honoured.
        applier
            .apply_listing(vec![doc("c")], EmptyListing::Honour)
            .await;
        applier
            .apply_listing(Vec::new(), EmptyListing::Honour)
            .await;
        assert!(served(&applier).is_empty());

        // A broken document is refused once per content, the previous one kept.
        applier.apply_changed(vec![doc("d")]).await;
        let broken = Doc {
            key: "test Mesh d".into(),
            text: Ok("type: Mesh\nname: d\nmtls:\n  enabledBackend: nope\n".into()),
        };
        let refused = applier.apply_changed(vec![broken.clone()]).await;
        assert_eq!(refused.len(), 1);
        assert!(
            refused[0].reason.contains("mtls.enabledBackend"),
            "{refused:?}"
        );
        assert!(applier.apply_changed(vec![broken]).await.is_empty());
        assert_eq!(served(&applier), ["d"]);

        // At most MAX_MESHES documents: the next is refused, named.
        let many: Vec<Doc> = (0..MAX_MESHES).map(|i| doc(&format!("m{i}"))).collect();
        let refused = applier.apply_listing(many, EmptyListing::Keep).await;
        assert!(refused.is_empty(), "{:?}", refused.first());
        let refused = applier.apply_changed(vec![doc("one-more")]).await;
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].key, "test Mesh one-more");
        assert!(refused[0].reason.contains("more than 1000 meshes"));
    }

    #[test]
    fn a_spec_becomes_the_kubernetes_form() {
        let spec = serde_json::json!({"mtls": {"enabledBackend": "ca-1", "backends": [
            {"name": "ca-1", "type": "builtin", "dpCert": {"rotation": {"expiration": "24h"}},
             "conf": {"caCert": {"RSAbits": 2048, "expiration": "10y"}}}]}});
        let yaml = kubernetes_form("default", Some(&spec)).unwrap();
        let meshes = crate::meshfile::parse(&yaml, &meshca::registry()).unwrap();
        assert_eq!(meshes[0].name.as_str(), "default");
        assert_eq!(meshes[0].form, ca_core::config::MeshForm::Kubernetes);
        // No spec: mTLS off, still a Mesh.
        let yaml = kubernetes_form("plain", None).unwrap();
        assert_eq!(
            crate::meshfile::parse(&yaml, &meshca::registry())
                .unwrap()
                .len(),
            1
        );
        // Strings that YAML would read as something else stay strings.
        let spec = serde_json::json!({"mtls": {"enabledBackend": "yes"}});
        let err = crate::meshfile::parse(
            &kubernetes_form("m", Some(&spec)).unwrap(),
            &meshca::registry(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("enabledBackend: has to be set to one of the backends"),
            "read as the string `yes`, not a boolean: {err}"
        );
        assert!(kubernetes_form("m", Some(&serde_json::json!([1])))
            .unwrap_err()
            .contains("spec: must be an object"));
        let big = serde_json::json!({"x": "a".repeat(ca_core::config::MAX_YAML_BYTES)});
        assert!(kubernetes_form("m", Some(&big))
            .unwrap_err()
            .contains("Mesh `m`: spec: is "));
    }
}
