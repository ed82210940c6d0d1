//! `--mesh-source postgres`: Kuma's `Mesh` rows in the PostgreSQL `resources` table of
//! `--store postgres` (kuma-cp universal, synced from the global control plane), spec as
//! kuma-cp writes it (protobuf JSON), decoded as a Kubernetes-form Mesh file. Followed with
//! LISTEN on Kuma's `resource_events` channel (its `notify_event` trigger) and, in any case, a
//! full read every `--reload-interval` (a notification lost with a connection, or a database
//! without the trigger, delays a change by one interval at most). Each row is one manager
//! source, `postgres Mesh NAME`.

use std::sync::Arc;
use std::time::Duration;

use meshca::Manager;
use store_postgres::{MeshChange, MeshNotifications, PostgresSecretStore};

use super::{kubernetes_form, Applier, Doc, EmptyListing, MAX_MESHES};
use crate::serve::metrics::Metrics;

/// The source's label in metrics.
const SOURCE: &str = "postgres";

/// A lost LISTEN connection is tried again after this.
const RELISTEN_AFTER: Duration = Duration::from_secs(5);

/// Connecting and LISTEN are bounded by this.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(5);

/// The Mesh rows, followed.
#[derive(Debug)]
pub(crate) struct PgSource {
    store: Arc<PostgresSecretStore>,
    applier: Applier,
    metrics: Arc<Metrics>,
}

impl PgSource {
    pub(crate) fn new(
        store: Arc<PostgresSecretStore>,
        manager: Arc<Manager>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            applier: Applier::new(manager, metrics.clone(), SOURCE),
            metrics,
        }
    }

    /// Applies the first listing (made before anything was written); returns the number
    /// refused (each reported).
    pub(crate) async fn apply_first(&self, docs: Vec<Doc>) -> usize {
        self.applier
            .apply_listing(docs, EmptyListing::Keep)
            .await
            .len()
    }

    /// Every Mesh row now, as documents.
    ///
    /// # Errors
    /// The store's, when the database cannot be read.
    pub(crate) async fn list(&self) -> Result<Vec<Doc>, ca_core::Error> {
        let rows = self
            .store
            .mesh_rows(MAX_MESHES, ca_core::config::MAX_YAML_BYTES)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let text = match row.spec {
                    Err(size) => Err(format!(
                        "Mesh `{}`: spec: is {size} bytes; at most {} are accepted",
                        row.name,
                        ca_core::config::MAX_YAML_BYTES
                    )),
                    Ok(None) => kubernetes_form(&row.name, None),
                    Ok(Some(spec)) => match serde_json::from_str::<serde_json::Value>(&spec) {
                        Ok(v) => kubernetes_form(&row.name, Some(&v)),
                        Err(e) => Err(format!("Mesh `{}`: spec: is not JSON ({e})", row.name)),
                    },
                };
                Doc {
                    key: format!("postgres Mesh {}", row.name),
                    text,
                }
            })
            .collect())
    }

    /// Reads the rows and applies what changed; returns the number refused. A read that fails
    /// changes nothing. A listing of nothing drops nothing ([`EmptyListing::Keep`]), but a Mesh
    /// whose deletion Kuma's trigger announced (`deleted`) and that the listing no longer has
    /// stops being served, the last one too, as a watch's DELETED event on Kubernetes.
    pub(crate) async fn reload(&self, deleted: Option<&str>) -> usize {
        match self.list().await {
            Ok(docs) => {
                if let Some(name) = deleted {
                    let key = format!("postgres Mesh {name}");
                    if !docs.iter().any(|d| d.key == key) {
                        self.applier.remove(&key).await;
                    }
                }
                self.applier
                    .apply_listing(docs, EmptyListing::Keep)
                    .await
                    .len()
            }
            Err(e) => {
                self.metrics.mesh_source_error(SOURCE);
                tracing::warn!(error = %crate::api::status::message(&e), "cannot read Kuma's Mesh rows; keeping the current config");
                0
            }
        }
    }

    /// Follows the rows until the process ends: on every notification about a Mesh row, and
    /// every `interval`.
    pub(crate) async fn run(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listening: Option<MeshNotifications> = None;
        let mut next_listen = tokio::time::Instant::now();
        loop {
            if listening.is_none() && tokio::time::Instant::now() >= next_listen {
                match self.store.listen_meshes(LISTEN_TIMEOUT).await {
                    Ok(n) => {
                        tracing::debug!("listening for Kuma's Mesh changes");
                        listening = Some(n);
                        // Anything that changed while not listening.
                        self.reload(None).await;
                    }
                    Err(e) => {
                        self.metrics.mesh_source_error(SOURCE);
                        tracing::warn!(error = %crate::api::status::message(&e), "cannot LISTEN for Kuma's Mesh changes; polling every {interval:?}");
                        next_listen = tokio::time::Instant::now() + RELISTEN_AFTER;
                    }
                }
            }
            let notified = async {
                match listening.as_mut() {
                    Some(n) => n.next().await,
                    None => std::future::pending().await,
                }
            };
            // `None`: the interval ticked; `Some(None)`: the LISTEN connection ended.
            let woke = tokio::select! {
                _ = tick.tick() => None,
                change = notified => Some(change),
            };
            let deleted = match woke {
                Some(None) => {
                    tracing::warn!(
                        "the LISTEN connection for Kuma's Mesh changes ended; listening again"
                    );
                    listening = None;
                    next_listen = tokio::time::Instant::now() + RELISTEN_AFTER.min(interval);
                    None
                }
                Some(Some(MeshChange::Deleted(name))) => Some(name),
                _ => None,
            };
            self.reload(deleted.as_deref()).await;
        }
    }
}
