//! `--mesh-source kubernetes`: Kuma's cluster-scoped `Mesh` objects (`kuma.io/v1alpha1`,
//! resource `meshes`), followed with kube-runtime's watcher (list, then watch from the listed
//! resourceVersion with bookmarks; after an error or an API server restart the watch resumes
//! from the last version seen, and after `410 Gone` it lists again), with its default backoff
//! (0.8 s doubling to 30 s). Each object is one manager source, `kubernetes Mesh NAME`; its
//! `spec` is decoded as a Kubernetes-form Mesh file.
//!
//! A Mesh refused is reported in the log, in `meshca_mesh_refused_total{source="kubernetes"}`
//! and as a Warning Event (`events.k8s.io/v1`, reason `MeshRefused`) regarding the Mesh, in
//! namespace `default` (where Kubernetes keeps the Events of cluster-scoped objects); meshca
//! never writes to the Mesh itself. One Event per refused content, at most
//! [`MAX_EVENTS_PER_MINUTE`] in all.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as KubeEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use meshca::Manager;

use super::{kubernetes_form, Applier, Doc, EmptyListing, Refusal, MAX_MESHES};
use crate::serve::metrics::Metrics;

/// The source's label in metrics.
const SOURCE: &str = "kubernetes";

/// Server-side timeout of one watch request (the watcher reconnects after it, and treats a
/// stream idle for longer as lost).
const WATCH_TIMEOUT_SECS: u32 = 290;

/// How long `serve` waits for the first complete list before giving up.
const FIRST_LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// Every Event create is bounded by this.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many Events a minute, whatever changes.
pub(crate) const MAX_EVENTS_PER_MINUTE: u32 = 20;

/// The namespace of Events about cluster-scoped objects.
const EVENT_NAMESPACE: &str = "default";

/// `reportingController` of meshca's Events.
const REPORTING_CONTROLLER: &str = "meshca/issuer";

/// An Event's note is at most this long (Kubernetes' limit).
const MAX_NOTE_BYTES: usize = 1024;

/// `meshes.kuma.io`, version `v1alpha1`.
fn meshes_resource() -> ApiResource {
    ApiResource {
        group: "kuma.io".into(),
        version: "v1alpha1".into(),
        api_version: "kuma.io/v1alpha1".into(),
        kind: "Mesh".into(),
        plural: "meshes".into(),
    }
}

type Watch = Pin<Box<dyn Stream<Item = Result<Event<DynamicObject>, watcher::Error>> + Send>>;

/// The Mesh objects, followed.
pub(crate) struct KubeSource {
    applier: Arc<Applier>,
    stream: Watch,
    metrics: Arc<Metrics>,
    /// The Mesh objects as last seen, by name (what an Event refers to).
    objects: BTreeMap<String, ObjectReference>,
    events: EventRecorder,
}

impl std::fmt::Debug for KubeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSource")
            .field("meshes", &self.objects.len())
            .finish_non_exhaustive()
    }
}

/// The manager source of the Mesh `name`.
fn key_of(name: &str) -> String {
    format!("kubernetes Mesh {name}")
}

fn name_of(key: &str) -> &str {
    key.strip_prefix("kubernetes Mesh ").unwrap_or(key)
}

fn doc_of(obj: &DynamicObject) -> Doc {
    let name = obj.metadata.name.clone().unwrap_or_default();
    Doc {
        key: key_of(&name),
        text: kubernetes_form(&name, obj.data.get("spec")),
    }
}

fn reference_of(obj: &DynamicObject) -> ObjectReference {
    ObjectReference {
        api_version: Some("kuma.io/v1alpha1".into()),
        kind: Some("Mesh".into()),
        name: obj.metadata.name.clone(),
        uid: obj.metadata.uid.clone(),
        resource_version: obj.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// What the API server answered, for a person: a missing CRD or RBAC said as such.
fn explain(e: &watcher::Error) -> String {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s.as_ref()),
        _ => None,
    };
    match status {
        Some(s) if s.code == 404 => format!(
            "{e}: the API server has no meshes.kuma.io (is Kuma installed on this cluster?)"
        ),
        Some(s) if s.code == 403 => format!(
            "{e}: meshca's service account needs get, list and watch on meshes.kuma.io \
             (ClusterRole meshca-meshes in deploy/kubernetes)"
        ),
        _ => e.to_string(),
    }
}

impl KubeSource {
    /// Starts watching and waits for the first complete list (at most
    /// [`FIRST_LIST_TIMEOUT`]): a cluster without Kuma's CRD, or a service account without
    /// RBAC, is reported here, before anything is written. Returns the source and the listed
    /// Meshes (applied with [`apply_first`](Self::apply_first)).
    pub(crate) async fn start(
        client: kube::Client,
        manager: Arc<Manager>,
        metrics: Arc<Metrics>,
    ) -> Result<(Self, Vec<Doc>), ca_core::Error> {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &meshes_resource());
        let config = watcher::Config::default().timeout(WATCH_TIMEOUT_SECS);
        let mut source = Self {
            applier: Arc::new(Applier::new(manager, metrics.clone(), SOURCE)),
            stream: Box::pin(watcher::watcher(api, config).default_backoff()),
            metrics,
            objects: BTreeMap::new(),
            events: EventRecorder::new(client),
        };
        let unavailable = |why: String| {
            ca_core::Error::from(ca_core::UpstreamError::unavailable("kubernetes", why))
        };
        let first = tokio::time::timeout(FIRST_LIST_TIMEOUT, async {
            let mut listed: Vec<DynamicObject> = Vec::new();
            loop {
                match source.stream.next().await {
                    Some(Ok(Event::Init)) => listed.clear(),
                    Some(Ok(Event::InitApply(o))) => listed.push(o),
                    Some(Ok(Event::InitDone)) => return Ok(listed),
                    // Not expected before InitDone; they are applied after the list anyway.
                    Some(Ok(Event::Apply(o))) => listed.push(o),
                    Some(Ok(Event::Delete(_))) => {}
                    Some(Err(e)) => {
                        return Err(unavailable(format!(
                            "listing meshes.kuma.io: {}",
                            explain(&e)
                        )))
                    }
                    None => return Err(unavailable("the watch of meshes.kuma.io ended".into())),
                }
            }
        })
        .await
        .map_err(|_| {
            unavailable(format!(
                "meshes.kuma.io were not listed within {}s",
                FIRST_LIST_TIMEOUT.as_secs()
            ))
        })??;
        let docs = source.remember(first);
        Ok((source, docs))
    }

    /// The documents of `listed` (at most [`MAX_MESHES`] are remembered for Events).
    fn remember(&mut self, listed: Vec<DynamicObject>) -> Vec<Doc> {
        self.objects.clear();
        let mut docs = Vec::new();
        for o in listed {
            if let Some(name) = o.metadata.name.clone() {
                if self.objects.len() < MAX_MESHES {
                    self.objects.insert(name, reference_of(&o));
                }
                docs.push(doc_of(&o));
            }
        }
        docs.sort_by(|a, b| a.key.cmp(&b.key));
        docs
    }

    /// Applies the first list; returns the number refused (each reported).
    pub(crate) async fn apply_first(&mut self, docs: Vec<Doc>) -> usize {
        let refused = self.applier.apply_listing(docs, EmptyListing::Keep).await;
        self.report(&refused).await;
        refused.len()
    }

    /// Follows the watch until the process ends.
    pub(crate) async fn run(mut self) {
        let mut relisted: Option<Vec<DynamicObject>> = None;
        while let Some(event) = self.stream.next().await {
            match event {
                Ok(Event::Init) => relisted = Some(Vec::new()),
                Ok(Event::InitApply(o)) => relisted.get_or_insert_with(Vec::new).push(o),
                Ok(Event::InitDone) => {
                    let listed = relisted.take().unwrap_or_default();
                    tracing::info!(meshes = listed.len(), "meshes.kuma.io listed again");
                    let docs = self.remember(listed);
                    let refused = self.applier.apply_listing(docs, EmptyListing::Keep).await;
                    self.report(&refused).await;
                }
                Ok(Event::Apply(o)) => {
                    if let Some(name) = o.metadata.name.clone() {
                        if self.objects.len() < MAX_MESHES || self.objects.contains_key(&name) {
                            self.objects.insert(name, reference_of(&o));
                        }
                        let refused = self.applier.apply_changed(vec![doc_of(&o)]).await;
                        self.report(&refused).await;
                    }
                }
                Ok(Event::Delete(o)) => {
                    if let Some(name) = o.metadata.name.as_deref() {
                        self.objects.remove(name);
                        self.events.forget(name);
                        self.applier.remove(&key_of(name)).await;
                    }
                }
                Err(e) => {
                    self.metrics.mesh_source_error(SOURCE);
                    tracing::warn!(error = %explain(&e), "watch of meshes.kuma.io failed; retrying with backoff");
                }
            }
        }
    }

    /// An Event on each refused Mesh.
    async fn report(&mut self, refused: &[Refusal]) {
        for r in refused {
            let name = name_of(&r.key);
            if let Some(regarding) = self.objects.get(name).cloned() {
                self.events.refused(name, regarding, &r.reason).await;
            }
        }
    }
}

/// Writes `MeshRefused` Events, once per refused content and at most
/// [`MAX_EVENTS_PER_MINUTE`].
struct EventRecorder {
    api: Api<KubeEvent>,
    instance: String,
    /// Per mesh, the reason last reported.
    last: BTreeMap<String, String>,
    /// Start of the current minute and the Events written in it.
    window: (Instant, u32),
    /// Whether a failure to write Events was logged already.
    failure_logged: bool,
}

impl EventRecorder {
    fn new(client: kube::Client) -> Self {
        let instance = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "meshca".into());
        Self {
            api: Api::namespaced(client, EVENT_NAMESPACE),
            instance: truncate(&instance, 128),
            last: BTreeMap::new(),
            window: (Instant::now(), 0),
            failure_logged: false,
        }
    }

    fn forget(&mut self, mesh: &str) {
        self.last.remove(mesh);
    }

    async fn refused(&mut self, mesh: &str, regarding: ObjectReference, reason: &str) {
        if self.last.get(mesh).is_some_and(|r| r == reason) {
            return;
        }
        if self.window.0.elapsed() >= Duration::from_secs(60) {
            self.window = (Instant::now(), 0);
        }
        if self.window.1 >= MAX_EVENTS_PER_MINUTE {
            tracing::debug!(
                mesh,
                "Event not written: at most {MAX_EVENTS_PER_MINUTE} a minute"
            );
            return;
        }
        self.window.1 += 1;
        if self.last.len() >= MAX_MESHES && !self.last.contains_key(mesh) {
            self.last.clear();
        }
        self.last.insert(mesh.to_owned(), reason.to_owned());
        let event = KubeEvent {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", truncate(mesh, 200))),
                namespace: Some(EVENT_NAMESPACE.into()),
                ..ObjectMeta::default()
            },
            event_time: Some(MicroTime(now())),
            action: Some("ApplyMesh".into()),
            reason: Some("MeshRefused".into()),
            type_: Some("Warning".into()),
            note: Some(truncate(
                &format!("meshca refused this Mesh; the previous one stays in effect: {reason}"),
                MAX_NOTE_BYTES,
            )),
            regarding: Some(regarding),
            reporting_controller: Some(REPORTING_CONTROLLER.into()),
            reporting_instance: Some(self.instance.clone()),
            ..KubeEvent::default()
        };
        let written = tokio::time::timeout(
            EVENT_TIMEOUT,
            self.api.create(&PostParams::default(), &event),
        )
        .await;
        match written {
            Ok(Ok(_)) => tracing::debug!(mesh, "Event MeshRefused written"),
            Ok(Err(e)) if !self.failure_logged => {
                self.failure_logged = true;
                tracing::warn!(mesh, error = %e, "cannot write the MeshRefused Event (meshca needs create on events.k8s.io events in namespace default); refusals are still logged and counted");
            }
            Err(_) if !self.failure_logged => {
                self.failure_logged = true;
                tracing::warn!(mesh, "writing the MeshRefused Event timed out");
            }
            _ => {}
        }
    }
}

/// Now, with microseconds.
fn now() -> k8s_openapi::jiff::Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    k8s_openapi::jiff::Timestamp::from_microsecond(micros)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_the_mesh_and_notes_fit() {
        assert_eq!(name_of(&key_of("default")), "default");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(
            truncate(&"a".repeat(2000), MAX_NOTE_BYTES).len(),
            MAX_NOTE_BYTES
        );
    }
}
