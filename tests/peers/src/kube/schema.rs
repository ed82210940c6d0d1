//! A structural validator for the OpenAPI v3 subset that cert-manager's CRD schema uses:
//! `type` (object, array, string, boolean, integer, number), `required`, `properties`,
//! `additionalProperties`, `items`, `enum` and `format` (`byte`: base64; `date-time`: RFC 3339).
//! `x-kubernetes-*` markers are ignored.
//!
//! Stricter than an API server in one way, on purpose: an unknown field of an object whose schema
//! lists `properties` is an error (a real server prunes it and, with `fieldValidation=Strict`,
//! refuses it), so a backend that sends a field cert-manager does not know fails the tests.

use base64::Engine as _;
use serde_json::Value;

/// The CRD, as published by cert-manager (see `tests/peers/schemas/README.md`).
pub const CERTIFICATE_REQUEST_CRD: &str =
    include_str!("../../schemas/cert-manager.io_certificaterequests.yaml");

/// `openAPIV3Schema` of version `v1` of the CertificateRequest CRD.
pub fn certificate_request_schema() -> Value {
    let crd: Value = yaml_serde::from_str(CERTIFICATE_REQUEST_CRD).expect("CRD is YAML");
    crd["spec"]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .find(|v| v["name"] == "v1")
        .expect("version v1")["schema"]["openAPIV3Schema"]
        .clone()
}

/// Problems of `value` against `schema`, as `field: message` like the API server's causes
/// (empty when it validates).
pub fn validate(value: &Value, schema: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    check(value, schema, "", &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn check(value: &Value, schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let here = if path.is_empty() { "<root>" } else { path }.to_owned();
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            out.push((
                here.clone(),
                format!(
                    "Unsupported value: {value}: supported values: {}",
                    list.join(", ")
                ),
            ));
        }
    }
    let Some(ty) = schema.get("type").and_then(Value::as_str) else {
        return;
    };
    let ok = match ty {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => true,
    };
    if !ok {
        let got = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        out.push((
            here,
            format!(
                "Invalid value: \"{got}\": {here_ty} in body must be of type {ty}: \"{got}\"",
                here_ty = path
            ),
        ));
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        out.push((join(path, r), "Required value".into()));
                    }
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (k, v) in map {
                let p = join(path, k);
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    check(v, s, &p, out);
                } else if let Some(a) = additional.filter(|a| a.is_object()) {
                    check(v, a, &p, out);
                } else if props.is_some() {
                    out.push((p, "Forbidden: unknown field".into()));
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    check(v, s, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::String(s) => match schema.get("format").and_then(Value::as_str) {
            Some("byte") if base64::engine::general_purpose::STANDARD.decode(s).is_err() => {
                out.push((here, "Invalid value: illegal base64 data".into()));
            }
            Some("date-time")
                if time::OffsetDateTime::parse(
                    s,
                    &time::format_description::well_known::Rfc3339,
                )
                .is_err() =>
            {
                out.push((
                    here,
                    format!("Invalid value: \"{s}\": must be an RFC 3339 date-time"),
                ));
            }
            _ => {}
        },
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_schema_catches_what_it_should() {
        let s = certificate_request_schema();
        let good = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "metadata": {"generateName": "x-"},
            "spec": {"request": "eA==", "issuerRef": {"name": "ca"}, "usages": ["server auth"],
                     "duration": "1h"}});
        assert!(validate(&good, &s).is_empty(), "{:?}", validate(&good, &s));
        let bad = json!({"apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
            "spec": {"request": "not base64!", "issuerRef": {}, "usages": ["telepathy"],
                     "dnsNames": ["a"]}});
        let got = validate(&bad, &s);
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        for want in [
            "spec.request",
            "spec.issuerRef.name",
            "spec.usages[0]",
            "spec.dnsNames",
        ] {
            assert!(fields.contains(&want), "{want} not in {got:?}");
        }
    }
}
