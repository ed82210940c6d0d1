//! A Secret's `spec` column as kuma-cp writes it: the protobuf JSON (jsonpb, Kuma's
//! `pkg/util/proto/proto.go`) of `kuma.system.v1alpha1.Secret` (`api/system/v1alpha1/secret.proto`:
//! `google.protobuf.BytesValue data = 1`), where the wrapper is its base64 string:
//! `{"data":"<base64>"}`. The Kubernetes form `{"data":{"value":"<base64>"}}` is read too.

use base64::Engine;
use serde_json::{json, Value};

/// The `spec` of a secret holding `value`.
pub(crate) fn encode(value: &[u8]) -> String {
    json!({ "data": base64::engine::general_purpose::STANDARD.encode(value) }).to_string()
}

/// The value of a `spec`, or why it is not one.
pub(crate) fn decode(spec: &str) -> Result<Vec<u8>, String> {
    let v: Value = serde_json::from_str(spec).map_err(|e| format!("spec is not JSON ({e})"))?;
    let data = match &v["data"] {
        Value::String(s) => s.as_str(),
        Value::Object(o) => o
            .get("value")
            .and_then(Value::as_str)
            .ok_or("spec.data has no `value`")?,
        Value::Null => return Ok(Vec::new()),
        _ => return Err("spec.data is neither a base64 string nor {\"value\": ...}".into()),
    };
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("spec.data is not base64 ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kumas_form_round_trips_and_the_kubernetes_form_is_read() {
        let spec = encode(b"-----BEGIN CERTIFICATE-----\n");
        assert_eq!(
            spec,
            r#"{"data":"LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="}"#
        );
        assert_eq!(decode(&spec).unwrap(), b"-----BEGIN CERTIFICATE-----\n");
        assert_eq!(decode(r#"{"data":{"value":"YWI="}}"#).unwrap(), b"ab");
        assert_eq!(decode("{}").unwrap(), b"");
        for bad in [
            "",
            "[]x",
            r#"{"data":1}"#,
            r#"{"data":"***"}"#,
            r#"{"data":{}}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
