//! Core `v1` Secrets, as the API server serves them (`/api/v1/namespaces/{ns}/secrets[/{name}]`):
//!
//! - `POST` creates (`metadata.name` or `generateName`); a name taken answers `409
//!   AlreadyExists`, which is what create-if-absent relies on;
//! - `GET` reads one; `PUT` replaces it, and a `metadata.resourceVersion` other than the stored
//!   one answers `409 Conflict` (optimistic concurrency), a changed `type` `422` (immutable);
//! - `DELETE` removes it.
//!
//! Validation follows the API server's: the name is a DNS-1123 subdomain, `data` keys are
//! `[-._a-zA-Z0-9]+`, values are base64, and all data together is at most 1 MiB.

use base64::Engine as _;
use http::Method;
use serde_json::{json, Value};
use time::OffsetDateTime;

use super::{json_response, new_name, not_allowed, rfc3339, status, uuid, Resp, Shared, Write};

/// The resource name.
pub(super) const SECRETS: &str = "secrets";
/// Kubernetes' limit on a Secret's data.
const MAX_DATA: usize = 1024 * 1024;

/// Serves `parts` (the path split at `/`) when it names core/v1 Secrets; `None` otherwise.
pub(super) fn route(
    s: &Shared,
    method: &Method,
    parts: &[&str],
    path: &str,
    body: &[u8],
) -> Option<Resp> {
    let resp = match parts {
        ["api", "v1", "namespaces", ns, plural] if *plural == SECRETS => match *method {
            Method::POST => create(s, ns, path, body),
            _ => not_allowed(),
        },
        ["api", "v1", "namespaces", ns, plural, name] if *plural == SECRETS => match *method {
            Method::GET => get(s, ns, name),
            Method::PUT => replace(s, ns, name, path, body),
            Method::DELETE => delete(s, ns, name),
            _ => not_allowed(),
        },
        _ => return None,
    };
    Some(resp)
}

fn forbidden(verb: &str, ns: &str, name: &str) -> Resp {
    status(
        403,
        "Forbidden",
        format!(
            "secrets \"{name}\" is forbidden: User \"system:serviceaccount:{ns}:meshca\" cannot \
             {verb} resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        ),
        json!({"name": name, "kind": SECRETS}),
    )
}

fn not_found(name: &str) -> Resp {
    status(
        404,
        "NotFound",
        format!("secrets \"{name}\" not found"),
        json!({"name": name, "kind": SECRETS}),
    )
}

fn is_forbidden(s: &Shared, verb: &str) -> bool {
    s.state().forbidden.contains(&format!("{SECRETS}/{verb}"))
}

fn key(ns: &str, name: &str) -> (String, String, String) {
    (SECRETS.to_owned(), ns.to_owned(), name.to_owned())
}

/// A DNS-1123 subdomain.
fn name_problem(name: &str) -> Option<&'static str> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        Some(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character",
        )
    } else {
        None
    }
}

/// What the API server would refuse in `obj` (field, message).
fn problems(obj: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if obj["apiVersion"] != "v1" || obj["kind"] != "Secret" {
        out.push(("kind".into(), "Invalid value: must be v1 Secret".into()));
    }
    let mut total = 0usize;
    if let Some(data) = obj.get("data") {
        let Some(data) = data.as_object() else {
            out.push(("data".into(), "Invalid value: must be an object".into()));
            return out;
        };
        for (k, v) in data {
            let key_ok = !k.is_empty()
                && k.len() <= 253
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !key_ok {
                out.push((
                    format!("data[{k}]"),
                    "Invalid value: a valid config key must consist of alphanumeric \
                     characters, '-', '_' or '.'"
                        .into(),
                ));
            }
            match v
                .as_str()
                .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
            {
                Some(Ok(bytes)) => total += bytes.len(),
                _ => out.push((
                    format!("data[{k}]"),
                    "Invalid value: must be base64-encoded bytes".into(),
                )),
            }
        }
    }
    if let Some(sd) = obj.get("stringData") {
        out.push((
            "stringData".into(),
            format!("Forbidden: this server expects data, got {sd}"),
        ));
    }
    if total > MAX_DATA {
        out.push((
            "data".into(),
            format!("Too long: must have at most {MAX_DATA} bytes"),
        ));
    }
    out
}

fn invalid(name: &str, problems: &[(String, String)]) -> Resp {
    let causes: Vec<Value> = problems
        .iter()
        .map(|(f, m)| json!({"reason": "FieldValueInvalid", "message": m, "field": f}))
        .collect();
    let list: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    status(
        422,
        "Invalid",
        format!("Secret \"{name}\" is invalid: [{}]", list.join(", ")),
        json!({"name": name, "kind": "Secret", "causes": causes}),
    )
}

fn record(s: &Shared, method: &str, path: &str, body: &Value, problems: &[(String, String)]) {
    s.state().writes.push(Write {
        method: method.into(),
        path: path.into(),
        body: body.clone(),
        problems: problems.iter().map(|(f, m)| format!("{f}: {m}")).collect(),
    });
}

fn create(s: &Shared, ns: &str, path: &str, body: &[u8]) -> Resp {
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not JSON".into(), json!({}));
    };
    let name = new_name(&obj);
    if is_forbidden(s, "create") {
        return forbidden("create", ns, &name);
    }
    let mut found = problems(&obj);
    if let Some(p) = name_problem(&name) {
        found.push((
            "metadata.name".into(),
            format!("Invalid value: \"{name}\": {p}"),
        ));
    }
    record(s, "POST", path, &obj, &found);
    if !found.is_empty() {
        return invalid(&name, &found);
    }
    let mut st = s.state();
    if st.objects.contains_key(&key(ns, &name)) {
        return status(
            409,
            "AlreadyExists",
            format!("secrets \"{name}\" already exists"),
            json!({"name": name, "kind": SECRETS}),
        );
    }
    let meta = &mut obj["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(uuid());
    meta["creationTimestamp"] = json!(rfc3339(OffsetDateTime::now_utc()));
    if obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
    s.put(&mut st, SECRETS, ns, obj, "ADDED");
    json_response(201, &stored(&st.objects, ns, &name))
}

fn stored(
    objects: &std::collections::BTreeMap<(String, String, String), super::Stored>,
    ns: &str,
    name: &str,
) -> Value {
    objects
        .get(&key(ns, name))
        .map(|o| o.object.clone())
        .unwrap_or_default()
}

fn get(s: &Shared, ns: &str, name: &str) -> Resp {
    if is_forbidden(s, "get") {
        return forbidden("get", ns, name);
    }
    match s.state().objects.get(&key(ns, name)) {
        Some(o) => json_response(200, &o.object),
        None => not_found(name),
    }
}

fn replace(s: &Shared, ns: &str, name: &str, path: &str, body: &[u8]) -> Resp {
    if is_forbidden(s, "update") {
        return forbidden("update", ns, name);
    }
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not JSON".into(), json!({}));
    };
    let mut found = problems(&obj);
    if obj["metadata"]["name"].as_str() != Some(name) {
        found.push((
            "metadata.name".into(),
            "Invalid value: the name of the object does not match the name on the URL".into(),
        ));
    }
    let mut st = s.state();
    let Some(current) = st.objects.get(&key(ns, name)).map(|o| o.object.clone()) else {
        drop(st);
        record(s, "PUT", path, &obj, &found);
        return not_found(name);
    };
    let current_type = current["type"].as_str().unwrap_or("Opaque");
    if obj["type"].as_str().unwrap_or("Opaque") != current_type {
        found.push(("type".into(), "Invalid value: field is immutable".into()));
    }
    st.writes.push(Write {
        method: "PUT".into(),
        path: path.into(),
        body: obj.clone(),
        problems: found.iter().map(|(f, m)| format!("{f}: {m}")).collect(),
    });
    if !found.is_empty() {
        return invalid(name, &found);
    }
    let sent_rv = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if !sent_rv.is_empty() && Some(sent_rv) != current["metadata"]["resourceVersion"].as_str() {
        return status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on secrets \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
            json!({"name": name, "kind": SECRETS}),
        );
    }
    for field in ["uid", "creationTimestamp"] {
        obj["metadata"][field] = current["metadata"][field].clone();
    }
    obj["metadata"]["namespace"] = json!(ns);
    if obj.get("type").is_none() {
        obj["type"] = json!(current_type);
    }
    s.put(&mut st, SECRETS, ns, obj, "MODIFIED");
    json_response(200, &stored(&st.objects, ns, name))
}

fn delete(s: &Shared, ns: &str, name: &str) -> Resp {
    if is_forbidden(s, "delete") {
        return forbidden("delete", ns, name);
    }
    let mut st = s.state();
    let Some(o) = st.objects.get(&key(ns, name)).map(|o| o.object.clone()) else {
        return not_found(name);
    };
    s.put(&mut st, SECRETS, ns, o.clone(), "DELETED");
    json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "kind": SECRETS, "uid": o["metadata"]["uid"]}}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_validation() {
        assert!(name_problem("default.ca-builtin-cert-ca-1").is_none());
        assert!(name_problem("Default").is_some());
        assert!(name_problem("a..b").is_some());
        let ok = json!({"apiVersion": "v1", "kind": "Secret", "data": {"value": "Zmlyc3Q="}});
        assert!(problems(&ok).is_empty());
        let bad = json!({"apiVersion": "v1", "kind": "Secret", "data": {"va/lue": "!!"}});
        assert_eq!(problems(&bad).len(), 2, "{:?}", problems(&bad));
        let big = base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_DATA + 1]);
        let too_big = json!({"apiVersion": "v1", "kind": "Secret", "data": {"value": big}});
        assert!(problems(&too_big)[0].1.starts_with("Too long"));
    }
}
