//! The Kuma / Kong Mesh `Mesh` resource, as far as mTLS is concerned.
//!
//! Both YAML forms users have are accepted:
//!
//! ```yaml
//! type: Mesh                     # Universal
//! name: default
//! mtls:
//!   enabledBackend: ca-1
//!   backends:
//!     - name: ca-1
//!       type: builtin
//! ```
//!
//! ```yaml
//! apiVersion: kuma.io/v1alpha1   # Kubernetes
//! kind: Mesh
//! metadata:
//!   name: default
//! spec:
//!   mtls: { ... }
//! ```
//!
//! [`Mesh::from_yaml`] decodes and validates in one pass and returns **all** violations, each as
//! `field path: message` (paths relative to the Mesh spec: `mtls.backends[0].conf...`). Unknown
//! fields inside `mtls` are errors; the other top-level sections of a Mesh (`tracing`, `logging`,
//! `metrics`, `networking`, `routing`, `constraints`, ...) are accepted and ignored, so a user's
//! existing Mesh files load unchanged — except Kuma's cross-section rule that involves mTLS:
//! `routing.zoneEgress: true` needs `mtls.enabledBackend` (`mtls: has to be set when zoneEgress
//! enabled`).
mod backends;
mod decode;
mod decode_local;
mod decode_mesh;
mod decode_remote;

use std::time::Duration;

use serde_yaml::Value;

use crate::datasource::DataSource;
use crate::error::Violations;
use crate::name::{BackendName, MeshName, SecretName};
use crate::template::CommonNameTemplate;
use crate::upstream::{IssuerRef, Upstream};
use crate::Error;

pub use backends::{
    AcmpcaConf, AwsAuthType, AwsCredentials, BackendConf, BackendType, BuiltinConf,
    CertmanagerConf, ProvidedConf, VaultAuth, VaultConf, VaultMode,
};

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
    /// `conf`, by `type`.
    pub conf: BackendConf,
    /// Of the backend's YAML as decoded; see [`Backend::fingerprint`].
    fingerprint: Fingerprint,
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
        // Serializing a `Value` cannot fail (no non-string-keyed maps are refused by serde_yaml
        // for `Value`); an error would hash as the empty string, still deterministic.
        let text = serde_yaml::to_string(&canonical).unwrap_or_default();
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
                    let key = serde_yaml::to_string(k).unwrap_or_default();
                    (key, canonical(k), canonical(v))
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Mapping(entries.into_iter().map(|(_, k, v)| (k, v)).collect())
        }
        Value::Sequence(items) => Value::Sequence(items.iter().map(canonical).collect()),
        Value::Tagged(t) => Value::Tagged(Box::new(serde_yaml::value::TaggedValue {
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

    /// The backend's type.
    pub fn backend_type(&self) -> BackendType {
        self.conf.backend_type()
    }

    /// The common-name template, for backends that have one.
    pub fn common_name(&self) -> Option<&CommonNameTemplate> {
        match &self.conf {
            BackendConf::Vault(c) => c.common_name.as_ref(),
            BackendConf::Acmpca(c) => c.common_name.as_ref(),
            BackendConf::Certmanager(c) => c.common_name.as_ref(),
            BackendConf::Builtin(_) | BackendConf::Provided(_) => None,
        }
    }

    /// Every data source of the backend's `conf`, with its field path under `conf`
    /// (`fromCp.auth.token`, `auth.awsCredentials.accessKey`, ...).
    pub fn data_sources(&self) -> Vec<(&'static str, &DataSource)> {
        let mut s: Vec<(&'static str, &DataSource)> = Vec::new();
        match &self.conf {
            BackendConf::Builtin(_) => {}
            BackendConf::Provided(c) => {
                s.push(("cert", &c.cert));
                s.push(("key", &c.key));
            }
            BackendConf::Vault(c) => {
                if let Some(ca) = &c.tls_ca_cert {
                    s.push(("fromCp.tls.caCert", ca));
                }
                match &c.auth {
                    Some(VaultAuth::Token(t)) => s.push(("fromCp.auth.token", t)),
                    Some(VaultAuth::Tls {
                        client_key,
                        client_cert,
                    }) => {
                        s.push(("fromCp.auth.tls.clientKey", client_key));
                        s.push(("fromCp.auth.tls.clientCert", client_cert));
                    }
                    Some(VaultAuth::Aws { .. }) | None => {}
                }
            }
            BackendConf::Acmpca(c) => {
                if let Some(ca) = &c.ca_cert {
                    s.push(("caCert", ca));
                }
                if let Some(creds) = &c.credentials {
                    s.push(("auth.awsCredentials.accessKey", &creds.access_key));
                    s.push((
                        "auth.awsCredentials.accessKeySecret",
                        &creds.access_key_secret,
                    ));
                }
            }
            BackendConf::Certmanager(c) => {
                if let Some(ca) = &c.ca_cert {
                    s.push(("caCert", ca));
                }
            }
        }
        s
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
        match &self.conf {
            BackendConf::Builtin(_) | BackendConf::Provided(_) => Vec::new(),
            BackendConf::Vault(c) => match &c.agent_address {
                // Requests go to the agent only.
                Some(agent) => vec![Upstream::Vault {
                    field: "agentAddress",
                    url: agent.clone(),
                }],
                None => vec![Upstream::Vault {
                    field: "address",
                    url: c.address.clone(),
                }],
            },
            BackendConf::Acmpca(c) => vec![Upstream::Acmpca { arn: c.arn.clone() }],
            BackendConf::Certmanager(c) => vec![Upstream::Certmanager(IssuerRef {
                kind: c.issuer_kind.clone(),
                group: c.issuer_group.clone(),
                name: c.issuer_name.clone(),
            })],
        }
    }

    /// What a Mesh that arrived over the network may not ask of this backend, whatever the
    /// upstream: a Vault reached over `http://` or with `tls.skipVerify` (the mesh's token or
    /// client key would cross the network unprotected). Reported under `at` (the backend's
    /// path, `mtls.backends[i]`).
    pub fn remote_violations(&self, at: &str, v: &mut Violations) {
        if let BackendConf::Vault(c) = &self.conf {
            for (field, url) in [
                ("address", Some(&c.address)),
                ("agentAddress", c.agent_address.as_ref()),
            ] {
                let Some(url) = url else { continue };
                if url.trim_start().to_ascii_lowercase().starts_with("http://") {
                    v.add(
                        format!("{at}.conf.fromCp.{field}"),
                        "http:// is not accepted in a Mesh sent over the network: use https://",
                    );
                }
            }
            if c.tls_skip_verify {
                v.add(
                    format!("{at}.conf.fromCp.tls.skipVerify"),
                    "is not accepted in a Mesh sent over the network: give tls.caCert instead",
                );
            }
        }
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
    /// Decodes and validates one Mesh document.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with every violation found.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        check_yaml_limits(text)?;
        let value: Value = serde_yaml::from_str(text).map_err(|e| {
            let mut v = Violations::default();
            v.add("(yaml)", format!("cannot be parsed: {e}"));
            Error::InvalidConfig(v)
        })?;
        Self::from_value(&value)
    }

    /// Decodes every Mesh of a multi-document YAML stream (`---` separated); empty documents are
    /// skipped.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for the first document with violations; paths are prefixed with
    /// the document's index when there are several.
    pub fn from_yaml_documents(text: &str) -> Result<Vec<Self>, Error> {
        use serde::Deserialize as _;
        check_yaml_limits(text)?;
        let mut meshes = Vec::new();
        let docs: Vec<Value> = serde_yaml::Deserializer::from_str(text)
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
            match Self::from_value(doc) {
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
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] with every violation found.
    pub fn from_value(value: &Value) -> Result<Self, Error> {
        let mut v = Violations::default();
        let mesh = decode_mesh::decode_mesh(value, &mut v);
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

/// The largest Mesh YAML (one file or one request) meshca parses.
pub const MAX_YAML_BYTES: usize = 512 * 1024;
/// The deepest nesting of YAML collections (flow `[`/`{` and block alike) meshca parses. A Mesh
/// needs fewer than ten levels; the YAML parser's work grows with the square of the flow depth.
pub const MAX_YAML_NESTING: usize = 64;

/// Refuses YAML over [`MAX_YAML_BYTES`] or nested deeper than [`MAX_YAML_NESTING`] before it
/// reaches the YAML parser, whose cost for deep flow nesting is quadratic (20,000 levels took
/// 1.6 s, a 512 KiB input minutes).
///
/// The depth is measured on the events of a streaming YAML parser (`saphyr-parser`, which
/// tokenizes as libyaml does), stopping at the first level too deep, so the check costs time
/// linear in the input and no quote, comment or block scalar can hide a level from it. A text
/// with at most [`MAX_YAML_NESTING`] `[` and `{` characters in all cannot nest flow collections
/// deeper than that whatever it means, so for it a syntax error is left to the parser, which
/// reports it in its own words.
///
/// # Errors
/// [`Error::InvalidConfig`] at `(yaml)` naming the limit, or the syntax error of a text with
/// more brackets than that.
pub fn check_yaml_limits(text: &str) -> Result<(), Error> {
    let refuse = |msg: String| {
        let mut v = Violations::default();
        v.add("(yaml)", msg);
        Err(Error::InvalidConfig(v))
    };
    if text.len() > MAX_YAML_BYTES {
        return refuse(format!(
            "is {} bytes; at most {MAX_YAML_BYTES} are accepted",
            text.len()
        ));
    }
    match nesting_depth(text, MAX_YAML_NESTING) {
        Ok(depth) if depth <= MAX_YAML_NESTING => Ok(()),
        Ok(_) => refuse(format!(
            "nests collections deeper than {MAX_YAML_NESTING} levels"
        )),
        Err(_) if flow_openers(text) <= MAX_YAML_NESTING => Ok(()),
        Err(e) => refuse(format!("cannot be parsed: {e}")),
    }
}

/// How many `[` and `{` the text holds, wherever they are: a bound on its flow nesting.
fn flow_openers(text: &str) -> usize {
    text.bytes().filter(|b| matches!(b, b'[' | b'{')).count()
}

/// The deepest nesting of collections in `text`, by the events of a streaming parser; it stops
/// (answering `limit + 1`) as soon as a level passes `limit`.
fn nesting_depth(text: &str, limit: usize) -> Result<usize, saphyr_parser::ScanError> {
    use saphyr_parser::{Event, Parser};
    let (mut depth, mut max) = (0usize, 0usize);
    for event in Parser::new_from_str(text) {
        let event = match event {
            Ok((e, _)) => e,
            // The scanner's own bound on flow nesting (it reads ahead of the events, so it can
            // meet it before `limit` levels were reported).
            Err(e) if e.info() == "recursion limit exceeded" => return Ok(limit + 1),
            Err(e) => return Err(e),
        };
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                max = max.max(depth);
                if depth > limit {
                    return Ok(depth);
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => break,
            _ => {}
        }
    }
    Ok(max)
}

#[cfg(test)]
mod tests;
