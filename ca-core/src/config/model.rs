//! The Mesh as decoded: [`Mesh`], its [`Mtls`] section and each [`Backend`].

use std::sync::Arc;
use std::time::Duration;

use yaml_serde::Value;

use super::conf::BackendConfig;
use crate::datasource::DataSource;
use crate::error::{Error, Violations};
use crate::name::{BackendName, MeshName, SecretName};
use crate::template::CommonNameTemplate;
use crate::upstream::Upstream;

/// Default `dpCert.rotation.expiration`.
pub const DEFAULT_DP_CERT_EXPIRATION: Duration = Duration::from_secs(24 * 3600);
/// Default `caCert.expiration` of a builtin CA.
pub const DEFAULT_CA_EXPIRATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default request timeouts.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Which YAML form a Mesh was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeshForm {
    /// `type: Mesh`, `name`, `mtls`.
    Universal,
    /// `apiVersion: kuma.io/v1alpha1`, `kind: Mesh`, `metadata.name`, `spec.mtls`.
    Kubernetes,
}

/// A Mesh.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Mesh {
    /// The mesh name.
    pub name: MeshName,
    /// The form it was written in.
    pub form: MeshForm,
    /// The mTLS section; `None` when mTLS is not configured.
    pub mtls: Option<Mtls>,
}

/// `mtls`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Mtls {
    /// `enabledBackend`: the backend that issues certificates; `None` leaves mTLS off.
    pub enabled_backend: Option<BackendName>,
    /// `skipValidation`: do not issue a test certificate when the Mesh is applied.
    pub skip_validation: bool,
    /// `backends`.
    pub backends: Vec<Backend>,
}

impl Mtls {
    /// The enabled backend, if any.
    pub fn enabled(&self) -> Option<&Backend> {
        let name = self.enabled_backend.as_ref()?;
        self.backends.iter().find(|b| &b.name == name)
    }
}

/// `mtls.backends[]`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Backend {
    /// `name`.
    pub name: BackendName,
    /// `mode`.
    pub mode: Mode,
    /// `dpCert.rotation.expiration`: the lifetime of data plane certificates.
    pub dp_cert_expiration: Duration,
    /// `dpCert.requestTimeout`.
    pub dp_cert_request_timeout: Duration,
    /// `rootChain.requestTimeout`.
    pub root_chain_request_timeout: Duration,
    /// `type`.
    pub(crate) backend_type: String,
    /// `conf`, decoded by the factory registered for `type`.
    pub(crate) conf: Arc<dyn BackendConfig>,
    /// Of the backend's YAML as decoded; see [`Backend::fingerprint`].
    pub(crate) fingerprint: Fingerprint,
}

/// The timeouts and certificate lifetime a remote backend works with, from its Mesh entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Timing {
    /// `dpCert.requestTimeout`: bounds issuing one certificate, every retry, wait and poll
    /// included.
    pub request_timeout: Duration,
    /// `rootChain.requestTimeout`: bounds fetching the trust bundle and each health check.
    pub root_chain_timeout: Duration,
    /// `dpCert.rotation.expiration`: the lifetime asked for.
    pub lifetime: Duration,
}

impl Timing {
    /// The given timeouts and certificate lifetime.
    pub fn new(
        request_timeout: Duration,
        root_chain_timeout: Duration,
        lifetime: Duration,
    ) -> Self {
        Self {
            request_timeout,
            root_chain_timeout,
            lifetime,
        }
    }

    /// The timing `backend`'s YAML sets (`dpCert`, `rootChain`, with Kuma's defaults).
    pub fn of(backend: &Backend) -> Self {
        Self::new(
            backend.dp_cert_request_timeout,
            backend.root_chain_request_timeout,
            backend.dp_cert_expiration,
        )
    }
}

/// The SHA-256 of a backend's YAML value (`mtls.backends[i]`, all of it: name, type, `dpCert`,
/// `conf` with inline secrets), computed once when the Mesh is decoded.
///
/// Equal fingerprints mean the same backend config, whichever YAML form (Universal or
/// Kubernetes), key order or formatting it was written in: a control plane rebuilds a backend
/// only when its fingerprint changes, and a changed inline key changes it. Only the hash is ever
/// kept or printed, never the YAML.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Fingerprint(String);

impl Fingerprint {
    /// Hashes a backend's YAML value: mapping keys are sorted (recursively) before the value is
    /// serialized, so formatting and key order do not count.
    pub(crate) fn of_value(value: &Value) -> Self {
        let canonical = canonical(value);
        // Serializing a `Value` cannot fail (no non-string-keyed maps are refused by yaml_serde
        // for `Value`); an error would hash as the empty string, still deterministic.
        let text = yaml_serde::to_string(&canonical).unwrap_or_default();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
        let mut hex = String::with_capacity(64);
        for b in digest.as_ref() {
            hex.push_str(&format!("{b:02x}"));
        }
        Self(hex)
    }

    /// The hash as 64 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fingerprint({})", self.0)
    }
}

/// `value` with every mapping's entries sorted by key.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Mapping(map) => {
            let mut entries: Vec<(String, Value, Value)> = map
                .iter()
                .map(|(k, v)| {
                    let key = yaml_serde::to_string(k).unwrap_or_default();
                    (key, canonical(k), canonical(v))
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Mapping(entries.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        Value::Sequence(items) => Value::Sequence(items.iter().map(canonical).collect()),
        Value::Tagged(t) => Value::Tagged(Box::new(yaml_serde::value::TaggedValue {
            tag: t.tag.clone(),
            value: canonical(&t.value),
        })),
        other => other.clone(),
    }
}

impl Backend {
    /// The SHA-256 (hex) of this backend's YAML as decoded, inline secrets included; the same for
    /// both YAML forms. See [`Fingerprint`].
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The backend's `type`, as written in YAML (`builtin`, `vault`, ...).
    pub fn backend_type(&self) -> &str {
        &self.backend_type
    }

    /// The decoded `conf`.
    pub fn conf(&self) -> &dyn BackendConfig {
        self.conf.as_ref()
    }

    /// The decoded `conf` as the factory's own type.
    ///
    /// # Errors
    /// [`Error::Inconsistent`] when another factory decoded it (a Mesh decoded with one
    /// [`Registry`](crate::Registry) and built with another).
    pub fn conf_as<T: BackendConfig>(&self) -> Result<&T, Error> {
        self.conf.downcast_ref().ok_or_else(|| {
            Error::Inconsistent(format!(
                "backend `{}`: its {} conf was decoded by another factory than the one building it",
                self.name, self.backend_type
            ))
        })
    }

    /// The common-name template, for backends that have one.
    pub fn common_name(&self) -> Option<&CommonNameTemplate> {
        self.conf.common_name()
    }

    /// Every data source of the backend's `conf`, with its field path under `conf`.
    pub fn data_sources(&self) -> Vec<(&'static str, &DataSource)> {
        self.conf.data_sources()
    }

    /// Every mesh-scoped secret the backend's config references.
    pub fn used_secrets(&self) -> Vec<SecretName> {
        let mut names: Vec<SecretName> = self
            .data_sources()
            .into_iter()
            .filter_map(|(_, d)| d.secret_name().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The upstreams the backend contacts (none for builtin and provided, whose CA is local).
    pub fn upstreams(&self) -> Vec<Upstream> {
        self.conf.upstreams()
    }

    /// What a Mesh that arrived over the network may not ask of this backend; see
    /// [`BackendConfig::remote_violations`].
    pub fn remote_violations(&self, at: &str, v: &mut Violations) {
        self.conf.remote_violations(at, v);
    }
}

/// `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Only mTLS traffic is accepted.
    #[default]
    Strict,
    /// Plaintext is accepted too (migration).
    Permissive,
}

impl Mesh {
    /// The backend that issues certificates now, if mTLS is enabled.
    pub fn enabled_backend(&self) -> Option<&Backend> {
        self.mtls.as_ref()?.enabled()
    }

    /// The enabled backend with its index in `mtls.backends` (for field paths in messages).
    pub fn enabled_backend_indexed(&self) -> Option<(usize, &Backend)> {
        let mtls = self.mtls.as_ref()?;
        let name = mtls.enabled_backend.as_ref()?;
        mtls.backends
            .iter()
            .enumerate()
            .find(|(_, b)| &b.name == name)
    }
}

/// The field path of the `index`-th backend: `mtls.backends[index]`. Violations found while a
/// backend is built are reported under `{backend_path(i)}.conf`, as Kuma's CA managers do.
pub fn backend_path(index: usize) -> String {
    format!("mtls.backends[{index}]")
}
