//! Kuma's cluster-scoped `Mesh` objects (`/apis/kuma.io/v1alpha1/meshes[/{name}]`) once
//! [`KubeApiServer::install_kuma_mesh_crd`] installed the CRD (before that the path is 404, as
//! on a cluster without Kuma): `POST` (create), `GET` (one; list, with `watch=true` a watch with
//! bookmarks and `410 Expired` after [`KubeApiServer::compact`]), `PUT` (replace, optimistic
//! on `metadata.resourceVersion`), `DELETE`. Every object written is validated against the CRD
//! schema Kuma publishes (`schemas/kuma.io_meshes.yaml`).
//!
//! `events.k8s.io/v1` Events (`/apis/events.k8s.io/v1/namespaces/{ns}/events`): `POST` with
//! the API server's validation of new Events (Kubernetes `pkg/apis/core/validation/events.go`,
//! `ValidateEventCreate` for `events.k8s.io/v1`): `eventTime`, `reportingController` (a
//! qualified name), `reportingInstance`, `action` and `reason` required (at most 128 characters
//! each), `type` `Normal` or `Warning`, `note` at most 1 kB, the deprecated fields unset, and
//! the Event of a cluster-scoped object in namespace `default` or `kube-system`; `GET` lists.

use http::Method;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{
    json_response, new_name, not_allowed, rfc3339, schema, selected, status, uuid, watch_of,
    KubeApiServer, Resp, Shared, Write,
};

const MESHES: &str = "meshes";
const EVENTS: &str = "events";
const MESH_API: &str = "kuma.io/v1alpha1";

/// Kuma's Mesh CRD (see `tests/peers/schemas/README.md`).
const MESH_CRD: &str = include_str!("../../schemas/kuma.io_meshes.yaml");

/// `openAPIV3Schema` of version `v1alpha1` of Kuma's Mesh CRD.
fn mesh_schema() -> Value {
    let crd: Value = yaml_serde::from_str(MESH_CRD).expect("CRD is YAML");
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == "v1alpha1")
        .expect("version v1alpha1")["schema"]["openAPIV3Schema"]
        .clone()
}

/// Serves `parts` when it names Meshes or Events; `None` otherwise.
pub(super) fn route(
    s: &std::sync::Arc<Shared>,
    method: &Method,
    parts: &[&str],
    q: &std::collections::BTreeMap<String, String>,
    path: &str,
    body: &[u8],
) -> Option<Resp> {
    let resp = match parts {
        ["apis", "kuma.io", "v1alpha1", "meshes", ..] if !s.state().meshes_installed => status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        ),
        ["apis", "kuma.io", "v1alpha1", "meshes"] => match *method {
            Method::GET if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                if let Some(r) = refused(s, "watch", "") {
                    return Some(r);
                }
                watch_of(s, MESHES, "", q, (MESH_API, "Mesh"))
            }
            Method::GET => refused(s, "list", "").unwrap_or_else(|| list(s, q)),
            Method::POST => refused(s, "create", "").unwrap_or_else(|| write(s, None, path, body)),
            _ => not_allowed(),
        },
        ["apis", "kuma.io", "v1alpha1", "meshes", name] => match *method {
            Method::GET => refused(s, "get", name).unwrap_or_else(|| get(s, name)),
            Method::PUT => {
                refused(s, "update", name).unwrap_or_else(|| write(s, Some(name), path, body))
            }
            Method::DELETE => refused(s, "delete", name).unwrap_or_else(|| delete(s, name)),
            _ => not_allowed(),
        },
        ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] => match *method {
            Method::POST => create_event(s, ns, path, body),
            Method::GET => {
                let items: Vec<Value> = s
                    .state()
                    .objects
                    .values()
                    .filter(|o| o.plural == EVENTS && o.namespace == *ns)
                    .map(|o| o.object.clone())
                    .collect();
                json_response(
                    200,
                    &json!({"apiVersion": "events.k8s.io/v1", "kind": "EventList",
                        "metadata": {"resourceVersion": s.rv.load(std::sync::atomic::Ordering::SeqCst).to_string()},
                        "items": items}),
                )
            }
            _ => not_allowed(),
        },
        _ => return None,
    };
    Some(resp)
}

/// 403 when [`KubeApiServer::forbid_on`]`("meshes", verb)` took `verb` away.
fn refused(s: &Shared, verb: &str, name: &str) -> Option<Resp> {
    s.state()
        .forbidden
        .contains(&format!("{MESHES}/{verb}"))
        .then(|| {
            status(
                403,
                "Forbidden",
                format!(
                    "meshes.kuma.io \"{name}\" is forbidden: User \
                     \"system:serviceaccount:kuma-system:meshca\" cannot {verb} resource \
                     \"meshes\" in API group \"kuma.io\" at the cluster scope"
                ),
                json!({"name": name, "group": "kuma.io", "kind": MESHES}),
            )
        })
}

fn not_found(name: &str) -> Resp {
    status(
        404,
        "NotFound",
        format!("meshes.kuma.io \"{name}\" not found"),
        json!({"name": name, "group": "kuma.io", "kind": MESHES}),
    )
}

fn key(name: &str) -> (String, String, String) {
    (MESHES.to_owned(), String::new(), name.to_owned())
}

fn get(s: &Shared, name: &str) -> Resp {
    match s.state().objects.get(&key(name)) {
        Some(o) => json_response(200, &o.object),
        None => not_found(name),
    }
}

fn list(s: &Shared, q: &std::collections::BTreeMap<String, String>) -> Resp {
    let st = s.state();
    let items: Vec<Value> = st
        .objects
        .values()
        .filter(|o| o.plural == MESHES && selected(q, &o.object))
        .map(|o| o.object.clone())
        .collect();
    json_response(
        200,
        &json!({"apiVersion": MESH_API, "kind": "MeshList",
            "metadata": {"resourceVersion": s.rv.load(std::sync::atomic::Ordering::SeqCst).to_string()},
            "items": items}),
    )
}

/// A DNS-1123 subdomain (a Mesh's name).
fn name_ok(name: &str) -> bool {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok)
}

/// Create (`name` None) or replace a Mesh.
fn write(s: &Shared, name: Option<&str>, path: &str, body: &[u8]) -> Resp {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not JSON".into(), json!({}));
    };
    let mut problems = schema::validate(&obj, &mesh_schema());
    if obj["apiVersion"] != MESH_API || obj["kind"] != "Mesh" {
        problems.push((
            "kind".into(),
            "Invalid value: must be kuma.io/v1alpha1 Mesh".into(),
        ));
    }
    let given = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let name = name.map(str::to_owned).unwrap_or(given.clone());
    if !name_ok(&name) {
        problems.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": a lowercase RFC 1123 subdomain"),
        ));
    } else if given != name {
        problems.push((
            "metadata.name".into(),
            "Invalid value: does not match the name in the URL".into(),
        ));
    }
    let mut st = s.state();
    st.writes.push(Write {
        method: if path.ends_with(MESHES) {
            "POST"
        } else {
            "PUT"
        }
        .into(),
        path: path.into(),
        body: obj.clone(),
        problems: problems.iter().map(|(f, m)| format!("{f}: {m}")).collect(),
    });
    if !problems.is_empty() {
        return super::invalid(&name, &problems);
    }
    let existing = st.objects.get(&key(&name)).map(|o| o.object.clone());
    let creating = path.ends_with(MESHES);
    match (&existing, creating) {
        (Some(_), true) => {
            return status(
                409,
                "AlreadyExists",
                format!("meshes.kuma.io \"{name}\" already exists"),
                json!({"name": name, "group": "kuma.io", "kind": MESHES}),
            )
        }
        (None, false) => return not_found(&name),
        (Some(old), false) => {
            let sent_rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
            if !sent_rv.is_empty() && old["metadata"]["resourceVersion"] != sent_rv {
                return status(
                    409,
                    "Conflict",
                    format!(
                        "Operation cannot be fulfilled on meshes.kuma.io \"{name}\": the object \
                         has been modified; please apply your changes to the latest version and \
                         try again"
                    ),
                    json!({"name": name, "group": "kuma.io", "kind": MESHES}),
                );
            }
            let spec_changed = obj["spec"] != old["spec"];
            let meta = &mut obj["metadata"];
            meta["uid"] = old["metadata"]["uid"].clone();
            meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            meta["generation"] = json!(if spec_changed {
                generation + 1
            } else {
                generation
            });
        }
        (None, true) => {
            let meta = &mut obj["metadata"];
            meta["uid"] = json!(uuid());
            meta["generation"] = json!(1);
            meta["creationTimestamp"] = json!(rfc3339(OffsetDateTime::now_utc()));
        }
    }
    let kind = if existing.is_some() {
        "MODIFIED"
    } else {
        "ADDED"
    };
    s.put(&mut st, MESHES, "", obj, kind);
    let stored = st
        .objects
        .get(&key(&name))
        .map(|o| o.object.clone())
        .unwrap_or_default();
    json_response(if kind == "ADDED" { 201 } else { 200 }, &stored)
}

fn delete(s: &Shared, name: &str) -> Resp {
    let mut st = s.state();
    let Some(o) = st.objects.get(&key(name)).map(|o| o.object.clone()) else {
        return not_found(name);
    };
    s.put(&mut st, MESHES, "", o.clone(), "DELETED");
    json_response(200, &o)
}

/// A qualified name: `[prefix/]name`, the prefix a DNS subdomain, the name at most 63
/// characters of `[A-Za-z0-9_.-]` starting and ending alphanumeric.
fn qualified_name_ok(v: &str) -> bool {
    let (prefix, name) = match v.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, v),
    };
    let short_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    short_ok && prefix.is_none_or(name_ok)
}

/// What the API server refuses in a new `events.k8s.io/v1` Event in `ns`.
fn event_problems(ev: &Value, ns: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if ev["apiVersion"] != "events.k8s.io/v1" || ev["kind"] != "Event" {
        out.push((
            "kind".into(),
            "Invalid value: must be events.k8s.io/v1 Event".into(),
        ));
    }
    let text = |f: &str| ev[f].as_str().unwrap_or_default();
    let time_ok = time::OffsetDateTime::parse(
        text("eventTime"),
        &time::format_description::well_known::Rfc3339,
    )
    .is_ok();
    if !time_ok {
        out.push(("eventTime".into(), "Required value".into()));
    }
    for f in [
        "reportingController",
        "reportingInstance",
        "action",
        "reason",
    ] {
        if text(f).is_empty() {
            out.push((f.into(), "Required value".into()));
        } else if text(f).len() > 128 && f != "reportingController" {
            out.push((f.into(), "Too long: may not be more than 128 bytes".into()));
        }
    }
    if !text("reportingController").is_empty() && !qualified_name_ok(text("reportingController")) {
        out.push((
            "reportingController".into(),
            "Invalid value: must be a qualified name".into(),
        ));
    }
    if !matches!(text("type"), "Normal" | "Warning") {
        out.push((
            "type".into(),
            format!("Invalid value: \"\": has invalid value: {}", text("type")),
        ));
    }
    if text("note").len() > 1024 {
        out.push((
            "note".into(),
            "Too long: may not be more than 1024 bytes".into(),
        ));
    }
    for f in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "deprecatedSource",
    ] {
        if !ev[f].is_null() {
            out.push((f.into(), "Invalid value: needs to be unset".into()));
        }
    }
    let regarding_ns = ev["regarding"]["namespace"].as_str().unwrap_or_default();
    if regarding_ns.is_empty() && ns != "default" && ns != "kube-system" {
        out.push((
            "regarding.namespace".into(),
            "Invalid value: does not match event.namespace".into(),
        ));
    }
    if !regarding_ns.is_empty() && regarding_ns != ns {
        out.push((
            "regarding.namespace".into(),
            "Invalid value: does not match event.namespace".into(),
        ));
    }
    out
}

fn create_event(s: &Shared, ns: &str, path: &str, body: &[u8]) -> Resp {
    if s.state().forbidden.contains(&format!("{EVENTS}/create")) {
        return status(
            403,
            "Forbidden",
            format!(
                "events.events.k8s.io is forbidden: User \
                 \"system:serviceaccount:kuma-system:meshca\" cannot create resource \"events\" \
                 in API group \"events.k8s.io\" in the namespace \"{ns}\""
            ),
            json!({"group": "events.k8s.io", "kind": EVENTS}),
        );
    }
    let Ok(mut ev) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not JSON".into(), json!({}));
    };
    let problems = event_problems(&ev, ns);
    let mut st = s.state();
    st.writes.push(Write {
        method: "POST".into(),
        path: path.into(),
        body: ev.clone(),
        problems: problems.iter().map(|(f, m)| format!("{f}: {m}")).collect(),
    });
    let name = new_name(&ev);
    if !problems.is_empty() || name.is_empty() {
        return super::invalid(&name, &problems);
    }
    ev["metadata"]["name"] = json!(name);
    ev["metadata"]["namespace"] = json!(ns);
    ev["metadata"]["uid"] = json!(uuid());
    ev["metadata"]["creationTimestamp"] = json!(rfc3339(OffsetDateTime::now_utc()));
    s.put(&mut st, EVENTS, ns, ev.clone(), "ADDED");
    json_response(201, &ev)
}

impl KubeApiServer {
    /// Installs Kuma's Mesh CRD: `meshes.kuma.io` is served from now on.
    pub fn install_kuma_mesh_crd(&self) {
        self.shared.state().meshes_installed = true;
    }

    /// Creates or replaces the Mesh `name` with `spec` through the API (validated as any
    /// write). Returns the stored object, or the API server's refusal.
    pub fn apply_mesh(&self, name: &str, spec: Value) -> Result<Value, String> {
        let exists = self.object(MESHES, "", name).is_some();
        let obj = json!({"apiVersion": MESH_API, "kind": "Mesh", "metadata": {"name": name},
            "spec": spec});
        let body = obj.to_string();
        let path = if exists {
            format!("/apis/kuma.io/v1alpha1/meshes/{name}")
        } else {
            "/apis/kuma.io/v1alpha1/meshes".to_owned()
        };
        let resp = write(&self.shared, exists.then_some(name), &path, body.as_bytes());
        let code = resp.status().as_u16();
        if code < 300 {
            Ok(self.object(MESHES, "", name).unwrap_or_default())
        } else {
            Err(format!("{code}"))
        }
    }

    /// Deletes the Mesh `name` through the API (a DELETED event for watches).
    pub fn delete_mesh(&self, name: &str) -> bool {
        delete(&self.shared, name).status().as_u16() == 200
    }

    /// Compacts the event history, as etcd does: a watch resumed from any version seen so far
    /// gets `410 Expired` and must list again.
    pub fn compact(&self) {
        let next = self.shared.next_rv();
        let mut st = self.shared.state();
        st.history.clear();
        st.compacted = next + 1;
    }

    /// Loses every Mesh without a DELETED event and compacts, as an API server whose etcd was
    /// restored from an empty backup: a watcher resuming must list again, and lists nothing.
    pub fn lose_meshes(&self) {
        self.shared
            .state()
            .objects
            .retain(|(plural, _, _), _| plural != MESHES);
        self.compact();
    }

    /// The `events.k8s.io/v1` Events of namespace `ns`.
    pub fn events(&self, ns: &str) -> Vec<Value> {
        let st = self.shared.state();
        st.objects
            .values()
            .filter(|o| o.plural == EVENTS && o.namespace == ns)
            .map(|o| o.object.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_validated_like_the_api_server() {
        let good = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"generateName": "default."}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "meshca/issuer", "reportingInstance": "meshca-0",
            "action": "ApplyMesh", "reason": "MeshRefused", "type": "Warning", "note": "x",
            "regarding": {"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh", "name": "default"}});
        assert!(event_problems(&good, "default").is_empty());
        let fields: Vec<String> = event_problems(&good, "kuma-system")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["regarding.namespace"]);
        let mut bad = good.clone();
        bad["type"] = json!("Error");
        bad["reportingController"] = json!("-bad/");
        bad["eventTime"] = Value::Null;
        bad["deprecatedCount"] = json!(2);
        let fields: Vec<String> = event_problems(&bad, "default")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            [
                "eventTime",
                "reportingController",
                "type",
                "deprecatedCount"
            ]
        );
    }

    #[test]
    fn the_mesh_crd_is_kumas() {
        let s = mesh_schema();
        let good = json!({"apiVersion": MESH_API, "kind": "Mesh", "metadata": {"name": "a"},
            "spec": {"mtls": {"anything": true}}});
        assert!(schema::validate(&good, &s).is_empty());
        // `spec` is Kuma's (preserve-unknown-fields, no type); the top level is closed.
        let bad = json!({"apiVersion": MESH_API, "kind": "Mesh", "metadata": {"name": "a"},
            "spec": "x", "extra": 1});
        let fields: Vec<String> = schema::validate(&bad, &s)
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(fields, ["extra"]);
    }
}
