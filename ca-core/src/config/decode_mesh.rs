//! Decoding of the Mesh, its `mtls` section and each backend's common fields; each backend's
//! `conf` is decoded by the [`BackendFactory`](crate::registry::BackendFactory) registered for
//! its type.

use yaml_serde::Value;

use super::fields::{error_reason, Fields};
use super::limits::check_yaml_limits;
use super::model::{
    Backend, Fingerprint, Mesh, MeshForm, Mode, Mtls, DEFAULT_DP_CERT_EXPIRATION,
    DEFAULT_REQUEST_TIMEOUT,
};
use crate::duration::KumaDuration;
use crate::error::{Error, Violations};
use crate::name::{BackendName, MeshName};
use crate::registry::Registry;

impl Mesh {
    /// Decodes and validates one Mesh document; each backend's `conf` is decoded by the factory
    /// `backends` has for its type.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with every violation found (a type `backends` lacks among them).
    pub fn from_yaml(text: &str, backends: &Registry) -> Result<Self, Error> {
        check_yaml_limits(text)?;
        let value: Value = yaml_serde::from_str(text).map_err(|e| {
            let mut v = Violations::default();
            v.add("(yaml)", format!("cannot be parsed: {e}"));
            Error::InvalidConfig(v)
        })?;
        Self::from_value(&value, backends)
    }

    /// Decodes every Mesh of a multi-document YAML stream (`---` separated); empty documents are
    /// skipped.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for the first document with violations; paths are prefixed with
    /// the document's index when there are several.
    pub fn from_yaml_documents(text: &str, backends: &Registry) -> Result<Vec<Self>, Error> {
        use serde::Deserialize as _;
        check_yaml_limits(text)?;
        let mut meshes = Vec::new();
        let docs: Vec<Value> = yaml_serde::Deserializer::from_str(text)
            .map(Value::deserialize)
            .collect::<Result<_, _>>()
            .map_err(|e| {
                let mut v = Violations::default();
                v.add("(yaml)", format!("cannot be parsed: {e}"));
                Error::InvalidConfig(v)
            })?;
        let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
        let many = docs.len() > 1;
        for (i, doc) in docs.iter().enumerate() {
            match Self::from_value(doc, backends) {
                Ok(m) => meshes.push(m),
                Err(Error::InvalidConfig(v)) if many => {
                    let v = Violations(
                        v.0.into_iter()
                            .map(|mut x| {
                                x.field = format!("(document {i}) {}", x.field);
                                x
                            })
                            .collect(),
                    );
                    return Err(Error::InvalidConfig(v));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(meshes)
    }

    /// Decodes and validates a parsed YAML value.
    pub(crate) fn from_value(value: &Value, backends: &Registry) -> Result<Self, Error> {
        let mut v = Violations::default();
        let mesh = decode_mesh(value, backends, &mut v);
        match mesh {
            Some(m) if v.is_empty() => Ok(m),
            _ => {
                if v.is_empty() {
                    v.add("(mesh)", "is not a Mesh");
                }
                Err(Error::InvalidConfig(v))
            }
        }
    }
}

/// Top-level Mesh sections meshca accepts and ignores.
const OTHER_MESH_SECTIONS: &[&str] = &[
    "tracing",
    "logging",
    "metrics",
    "networking",
    "routing",
    "constraints",
    "meshServices",
    "skipCreatingInitialPolicies",
];

fn decode_mesh(value: &Value, backends: &Registry, v: &mut Violations) -> Option<Mesh> {
    let mut root = Fields::of(value, "", v)?;
    let (form, name, mtls) = if root.has("apiVersion") || root.has("kind") {
        let api = root.str("apiVersion", v);
        if api.as_deref() != Some("kuma.io/v1alpha1") {
            v.add("apiVersion", "must be kuma.io/v1alpha1");
        }
        if root.str("kind", v).as_deref() != Some("Mesh") {
            v.add("kind", "must be Mesh");
        }
        let name = root.obj("metadata", v).map(|f| f.open()).and_then(|mut m| {
            let n = m.required_str("name", v);
            m.finish(v);
            n
        });
        if !root.has("metadata") {
            v.add("metadata.name", "cannot be empty");
        }
        root.ignore(&["status"]);
        let mtls = root.obj("spec", v).and_then(|mut spec| {
            spec.path = String::new();
            let zone_egress = zone_egress(spec.get("routing"));
            spec.ignore(OTHER_MESH_SECTIONS);
            let mtls = spec
                .obj("mtls", v)
                .and_then(|f| decode_mtls(f, backends, v));
            check_zone_egress(zone_egress, mtls.as_ref(), v);
            spec.finish(v);
            mtls
        });
        (MeshForm::Kubernetes, name, mtls)
    } else {
        if root.str("type", v).as_deref() != Some("Mesh") {
            v.add("type", "must be Mesh");
        }
        let name = root.required_str("name", v);
        let zone_egress = zone_egress(root.get("routing"));
        root.ignore(OTHER_MESH_SECTIONS);
        root.ignore(&["labels", "creationTime", "modificationTime"]);
        let mtls = root
            .obj("mtls", v)
            .and_then(|f| decode_mtls(f, backends, v));
        check_zone_egress(zone_egress, mtls.as_ref(), v);
        (MeshForm::Universal, name, mtls)
    };
    root.finish(v);
    let field = if form == MeshForm::Kubernetes {
        "metadata.name"
    } else {
        "name"
    };
    let name = name.and_then(|n| {
        MeshName::new(n)
            .map_err(|e| v.add(field, error_reason(&e)))
            .ok()
    })?;
    Some(Mesh { name, form, mtls })
}

/// Whether `routing.zoneEgress` is `true`. The rest of `routing` is not meshca's to check.
fn zone_egress(routing: Option<&Value>) -> bool {
    routing
        .and_then(|r| r.get("zoneEgress"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// Kuma's cross-section rule: traffic through a zone egress is mTLS, so it needs an enabled
/// backend (`mtls: has to be set when zoneEgress enabled`, reported at `mtls`).
fn check_zone_egress(zone_egress: bool, mtls: Option<&Mtls>, v: &mut Violations) {
    if zone_egress && mtls.and_then(|m| m.enabled_backend.as_ref()).is_none() {
        v.add("mtls", "has to be set when zoneEgress enabled");
    }
}

fn decode_mtls(mut f: Fields<'_>, registry: &Registry, v: &mut Violations) -> Option<Mtls> {
    let enabled = f.str("enabledBackend", v);
    let skip_validation = f.bool("skipValidation", v).unwrap_or(false);
    let mut backends = Vec::new();
    let mut names_seen: Vec<String> = Vec::new();
    let backends_path = f.at("backends");
    if let Some(items) = f.list("backends", v) {
        for (i, item) in items.iter().enumerate() {
            let path = format!("{backends_path}[{i}]");
            if let Some(name) = item.get("name").and_then(Value::as_str) {
                if names_seen.iter().any(|n| n == name) {
                    v.add(
                        format!("{path}.name"),
                        format!("\"{name}\" name is already used for another backend"),
                    );
                }
                names_seen.push(name.to_owned());
            }
            if let Some(b) =
                Fields::of(item, &path, v).and_then(|bf| decode_backend(bf, item, registry, v))
            {
                backends.push(b);
            }
        }
    }
    let enabled_backend = match enabled.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(name) => {
            if !names_seen.iter().any(|n| n == name) {
                v.add(
                    f.at("enabledBackend"),
                    "has to be set to one of the backends in the mesh",
                );
            }
            BackendName::new(name).ok()
        }
    };
    f.finish(v);
    Some(Mtls {
        enabled_backend,
        skip_validation,
        backends,
    })
}

fn decode_backend(
    mut f: Fields<'_>,
    item: &Value,
    backends: &Registry,
    v: &mut Violations,
) -> Option<Backend> {
    let name = f.required_str("name", v).and_then(|n| {
        let at = f.at("name");
        let parsed = BackendName::new(&n)
            .map_err(|e| v.add(&at, error_reason(&e)))
            .ok();
        // Secret names derived from it (`<mesh>.ca-builtin-cert-<name>`) must fit in 253.
        if n.len() + 64 + "ca-builtin-cert-".len() > 253 {
            v.add(
                &at,
                "is too long: secret names derived from it would exceed 253 characters",
            );
        }
        parsed
    });
    let type_at = f.at("type");
    let ty = f.required_str("type", v);
    let mode = match f.str("mode", v).as_deref() {
        None | Some("STRICT") => Mode::Strict,
        Some("PERMISSIVE") => Mode::Permissive,
        Some(other) => {
            v.add(
                f.at("mode"),
                format!("\"{other}\" is not a mode (STRICT or PERMISSIVE)"),
            );
            Mode::Strict
        }
    };
    let mut dp_cert_expiration = DEFAULT_DP_CERT_EXPIRATION;
    let mut dp_cert_request_timeout = DEFAULT_REQUEST_TIMEOUT;
    if let Some(mut dp) = f.obj("dpCert", v) {
        if let Some(mut rot) = dp.obj("rotation", v) {
            // Kuma accepts `0s` here; the test certificate then fails with the lifetime rule.
            if let Some(d) = rot.duration("expiration", v) {
                dp_cert_expiration = d.get();
            }
            rot.finish(v);
        }
        if let Some(d) = dp.duration("requestTimeout", v) {
            positive(&d, &dp.at("requestTimeout"), v);
            dp_cert_request_timeout = d.get();
        }
        dp.finish(v);
    }
    let mut root_chain_request_timeout = DEFAULT_REQUEST_TIMEOUT;
    if let Some(mut rc) = f.obj("rootChain", v) {
        if let Some(d) = rc.duration("requestTimeout", v) {
            positive(&d, &rc.at("requestTimeout"), v);
            root_chain_request_timeout = d.get();
        }
        rc.finish(v);
    }
    let conf_at = f.at("conf");
    let conf_value = f.get("conf");
    let empty = Value::Mapping(yaml_serde::Mapping::new());
    let conf = ty.as_deref().and_then(|ty| {
        let value = conf_value.unwrap_or(&empty);
        let cf = Fields::of(value, &conf_at, v)?;
        backends.decode(ty, &type_at, cf, v)
    });
    f.finish(v);
    Some(Backend {
        name: name?,
        mode,
        dp_cert_expiration,
        dp_cert_request_timeout,
        root_chain_request_timeout,
        backend_type: ty?,
        conf: conf?,
        fingerprint: Fingerprint::of_value(item),
    })
}

pub(super) fn positive(d: &KumaDuration, at: &str, v: &mut Violations) {
    if d.get().is_zero() {
        v.add(at, "must be greater than 0");
    }
}
