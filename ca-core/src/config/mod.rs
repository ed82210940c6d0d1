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
//! existing Mesh files load unchanged.

mod decode;

use std::time::Duration;

use serde_yaml::Value;

use crate::datasource::DataSource;
use crate::duration::KumaDuration;
use crate::error::Violations;
use crate::name::{BackendName, MeshName, SecretName};
use crate::template::CommonNameTemplate;
use crate::x509::KeyType;
use crate::Error;
use decode::{error_reason, Fields};

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
}

impl Backend {
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

    /// Every mesh-scoped secret the backend's config references.
    pub fn used_secrets(&self) -> Vec<SecretName> {
        let sources: Vec<&DataSource> = match &self.conf {
            BackendConf::Builtin(_) => Vec::new(),
            BackendConf::Provided(c) => vec![&c.cert, &c.key],
            BackendConf::Vault(c) => {
                let mut s: Vec<&DataSource> = c.tls_ca_cert.iter().collect();
                match &c.auth {
                    Some(VaultAuth::Token(t)) => s.push(t),
                    Some(VaultAuth::Tls {
                        client_key,
                        client_cert,
                    }) => {
                        s.push(client_key);
                        s.push(client_cert);
                    }
                    Some(VaultAuth::Aws { .. }) | None => {}
                }
                s
            }
            BackendConf::Acmpca(c) => {
                let mut s = vec![&c.ca_cert];
                if let Some(creds) = &c.credentials {
                    s.push(&creds.access_key);
                    s.push(&creds.access_key_secret);
                }
                s
            }
            BackendConf::Certmanager(c) => c.ca_cert.iter().collect(),
        };
        let mut names: Vec<SecretName> = sources
            .into_iter()
            .filter_map(|d| d.secret_name().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
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

/// `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendType {
    /// `builtin`.
    Builtin,
    /// `provided`.
    Provided,
    /// `vault`.
    Vault,
    /// `acmpca`.
    Acmpca,
    /// `certmanager`.
    Certmanager,
}

impl BackendType {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Builtin => "builtin",
            Self::Provided => "provided",
            Self::Vault => "vault",
            Self::Acmpca => "acmpca",
            Self::Certmanager => "certmanager",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "builtin" => Self::Builtin,
            "provided" => Self::Provided,
            "vault" => Self::Vault,
            "acmpca" => Self::Acmpca,
            "certmanager" => Self::Certmanager,
            _ => return None,
        })
    }
}

impl std::fmt::Display for BackendType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `conf`, by backend type.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BackendConf {
    /// `type: builtin`.
    Builtin(BuiltinConf),
    /// `type: provided`.
    Provided(ProvidedConf),
    /// `type: vault`.
    Vault(VaultConf),
    /// `type: acmpca`.
    Acmpca(AcmpcaConf),
    /// `type: certmanager`.
    Certmanager(CertmanagerConf),
}

impl BackendConf {
    /// The type.
    pub fn backend_type(&self) -> BackendType {
        match self {
            Self::Builtin(_) => BackendType::Builtin,
            Self::Provided(_) => BackendType::Provided,
            Self::Vault(_) => BackendType::Vault,
            Self::Acmpca(_) => BackendType::Acmpca,
            Self::Certmanager(_) => BackendType::Certmanager,
        }
    }
}

/// `conf` of a builtin backend.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuiltinConf {
    /// The CA key: `caCert.keyType` (ECDSA P-256 by default) or RSA with `caCert.RSAbits`.
    pub ca_key: KeyType,
    /// `caCert.expiration` (default 10y).
    pub ca_expiration: Duration,
}

impl Default for BuiltinConf {
    fn default() -> Self {
        Self {
            ca_key: KeyType::EcdsaP256,
            ca_expiration: DEFAULT_CA_EXPIRATION,
        }
    }
}

/// `conf` of a provided backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProvidedConf {
    /// `cert`: the CA certificate, optionally followed by its parents.
    pub cert: DataSource,
    /// `key`: the CA's private key.
    pub key: DataSource,
}

/// `conf.fromCp` of a vault backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct VaultConf {
    /// `address`.
    pub address: String,
    /// `agentAddress`: a local Vault agent that authenticates for us.
    pub agent_address: Option<String>,
    /// `namespace` (Vault Enterprise).
    pub namespace: Option<String>,
    /// `pki`: the PKI secrets engine mount.
    pub pki: String,
    /// `role`.
    pub role: String,
    /// `commonName`.
    pub common_name: Option<CommonNameTemplate>,
    /// `tls.caCert`.
    pub tls_ca_cert: Option<DataSource>,
    /// `tls.skipVerify`.
    pub tls_skip_verify: bool,
    /// `tls.serverName`.
    pub tls_server_name: Option<String>,
    /// `auth`; `None` only with `agentAddress`.
    pub auth: Option<VaultAuth>,
}

/// `conf.fromCp.auth`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum VaultAuth {
    /// `token`.
    Token(DataSource),
    /// `tls`: client certificate auth.
    Tls {
        /// `clientKey`.
        client_key: DataSource,
        /// `clientCert`.
        client_cert: DataSource,
    },
    /// `aws`.
    Aws {
        /// `type`.
        kind: AwsAuthType,
        /// `role`.
        role: Option<String>,
        /// `iamServerIdHeader`.
        iam_server_id_header: Option<String>,
    },
}

/// `auth.aws.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AwsAuthType {
    /// `IAM` (default).
    #[default]
    Iam,
    /// `EC2`.
    Ec2,
}

/// `conf` of an acmpca backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AcmpcaConf {
    /// `arn` of the private CA.
    pub arn: String,
    /// `commonName`.
    pub common_name: Option<CommonNameTemplate>,
    /// `caCert`: the root of the private CA's chain.
    pub ca_cert: DataSource,
    /// `auth.awsCredentials`; `None` uses the default AWS credential chain.
    pub credentials: Option<AwsCredentials>,
}

/// `auth.awsCredentials`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AwsCredentials {
    /// `accessKey`.
    pub access_key: DataSource,
    /// `accessKeySecret`.
    pub access_key_secret: DataSource,
}

/// `conf` of a certmanager backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CertmanagerConf {
    /// `issuerRef.name`.
    pub issuer_name: String,
    /// `issuerRef.kind` (default `Issuer`).
    pub issuer_kind: String,
    /// `issuerRef.group` (default `cert-manager.io`).
    pub issuer_group: String,
    /// `commonName`.
    pub common_name: Option<CommonNameTemplate>,
    /// `caCert`.
    pub ca_cert: Option<DataSource>,
    /// `dnsNames`.
    pub dns_names: Vec<String>,
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
        let mesh = decode_mesh(value, &mut v);
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

/// The largest Mesh YAML (one file or one request) meshca parses.
pub const MAX_YAML_BYTES: usize = 512 * 1024;
/// The deepest nesting of YAML flow collections (`[`, `{`) meshca parses. A Mesh needs fewer than
/// ten levels; the YAML parser's work grows with the square of this depth.
pub const MAX_YAML_NESTING: usize = 64;

/// Refuses YAML over [`MAX_YAML_BYTES`] or nested deeper than [`MAX_YAML_NESTING`] before it
/// reaches the parser, whose cost for deep flow nesting is quadratic (50,000 levels in 100 KB took
/// seconds). Block nesting needs indentation, so its depth is bounded by the size; the parser's
/// own recursion limit refuses what is left.
///
/// # Errors
/// [`Error::InvalidConfig`] at `(yaml)` naming the limit.
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
    if flow_depth(text) > MAX_YAML_NESTING {
        return refuse(format!(
            "nests collections deeper than {MAX_YAML_NESTING} levels"
        ));
    }
    Ok(())
}

/// The deepest nesting of `[`/`{` outside quoted scalars and comments. Brackets inside plain or
/// block scalars are counted too, which can only over-estimate.
fn flow_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    let mut prev = '\n';
    while let Some(c) = chars.next() {
        match c {
            '[' | '{' => {
                depth += 1;
                max = max.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            '#' if prev.is_whitespace() => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                prev = '\n';
                continue;
            }
            '\'' if !prev.is_alphanumeric() => {
                // Single-quoted: '' is an escaped quote.
                while let Some(n) = chars.next() {
                    if n == '\'' {
                        if chars.peek() == Some(&'\'') {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '"' => {
                while let Some(n) = chars.next() {
                    match n {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        prev = c;
    }
    max
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

fn decode_mesh(value: &Value, v: &mut Violations) -> Option<Mesh> {
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
            spec.ignore(OTHER_MESH_SECTIONS);
            let mtls = spec.obj("mtls", v).and_then(|f| decode_mtls(f, v));
            spec.finish(v);
            mtls
        });
        (MeshForm::Kubernetes, name, mtls)
    } else {
        if root.str("type", v).as_deref() != Some("Mesh") {
            v.add("type", "must be Mesh");
        }
        let name = root.required_str("name", v);
        root.ignore(OTHER_MESH_SECTIONS);
        root.ignore(&["labels", "creationTime", "modificationTime"]);
        let mtls = root.obj("mtls", v).and_then(|f| decode_mtls(f, v));
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

fn decode_mtls(mut f: Fields<'_>, v: &mut Violations) -> Option<Mtls> {
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
                        format!("\"{name}\" is already used for another backend"),
                    );
                }
                names_seen.push(name.to_owned());
            }
            if let Some(b) = Fields::of(item, &path, v).and_then(|bf| decode_backend(bf, v)) {
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

fn decode_backend(mut f: Fields<'_>, v: &mut Violations) -> Option<Backend> {
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
    let ty = f.required_str("type", v).and_then(|t| {
        BackendType::parse(&t).or_else(|| {
            v.add(
                &type_at,
                format!(
                    "unknown type \"{t}\" (one of builtin, provided, vault, acmpca, certmanager)"
                ),
            );
            None
        })
    });
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
            if let Some(d) = rot.duration("expiration", v) {
                positive(&d, &rot.at("expiration"), v);
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
    let empty = Value::Mapping(serde_yaml::Mapping::new());
    let conf = ty.and_then(|ty| {
        let value = conf_value.unwrap_or(&empty);
        let cf = Fields::of(value, &conf_at, v)?;
        match ty {
            BackendType::Builtin => decode_builtin(cf, v).map(BackendConf::Builtin),
            BackendType::Provided => decode_provided(cf, v).map(BackendConf::Provided),
            BackendType::Vault => decode_vault(cf, v).map(BackendConf::Vault),
            BackendType::Acmpca => decode_acmpca(cf, v).map(BackendConf::Acmpca),
            BackendType::Certmanager => decode_certmanager(cf, v).map(BackendConf::Certmanager),
        }
    });
    f.finish(v);
    Some(Backend {
        name: name?,
        mode,
        dp_cert_expiration,
        dp_cert_request_timeout,
        root_chain_request_timeout,
        conf: conf?,
    })
}

fn positive(d: &KumaDuration, at: &str, v: &mut Violations) {
    if d.get().is_zero() {
        v.add(at, "must be greater than 0");
    }
}

fn template(f: &mut Fields<'_>, v: &mut Violations) -> Option<CommonNameTemplate> {
    let at = f.at("commonName");
    let s = f.str("commonName", v)?;
    if s.trim().is_empty() {
        return None;
    }
    CommonNameTemplate::parse(&s)
        .map_err(|e| match e {
            Error::InvalidTemplate { reason, .. } => v.add(&at, reason),
            other => v.add(&at, other.to_string()),
        })
        .ok()
}

fn decode_builtin(mut f: Fields<'_>, v: &mut Violations) -> Option<BuiltinConf> {
    let mut conf = BuiltinConf::default();
    let mut ok = true;
    if let Some(mut ca) = f.obj("caCert", v) {
        let bits_at = ca.at("RSAbits");
        let bits = ca.u32("RSAbits", v);
        if let Some(b) = bits {
            if ![2048, 3072, 4096].contains(&b) {
                v.add(
                    &bits_at,
                    format!("{b} is not supported: use 2048, 3072 or 4096"),
                );
                ok = false;
            }
        }
        let kt_at = ca.at("keyType");
        match ca.str("keyType", v).as_deref() {
            None => conf.ca_key = bits.map_or(KeyType::EcdsaP256, KeyType::Rsa),
            Some("ecdsa-p256") => {
                if bits.is_some() {
                    v.add(&bits_at, "applies only to keyType rsa");
                    ok = false;
                }
                conf.ca_key = KeyType::EcdsaP256;
            }
            Some("rsa") => conf.ca_key = KeyType::Rsa(bits.unwrap_or(2048)),
            Some(other) => {
                v.add(
                    &kt_at,
                    format!("\"{other}\" is not a key type (ecdsa-p256 or rsa)"),
                );
                ok = false;
            }
        }
        if let Some(d) = ca.duration("expiration", v) {
            positive(&d, &ca.at("expiration"), v);
            conf.ca_expiration = d.get();
        }
        ca.finish(v);
    }
    f.finish(v);
    ok.then_some(conf)
}

fn decode_provided(mut f: Fields<'_>, v: &mut Violations) -> Option<ProvidedConf> {
    let cert = required_source(&mut f, "cert", v);
    let key = required_source(&mut f, "key", v);
    f.finish(v);
    Some(ProvidedConf {
        cert: cert?,
        key: key?,
    })
}

fn required_source<'a>(f: &mut Fields<'a>, key: &'a str, v: &mut Violations) -> Option<DataSource> {
    if !f.has(key) {
        v.add(f.at(key), "has to be defined");
        let _ = f.get(key);
        return None;
    }
    f.data_source(key, v)
}

fn decode_vault(mut f: Fields<'_>, v: &mut Violations) -> Option<VaultConf> {
    if f.has("fromDp") {
        v.add(f.at("fromDp"), "is not supported: use fromCp");
        let _ = f.get("fromDp");
    }
    let Some(mut cp) = f.obj("fromCp", v) else {
        if !f.has("fromCp") {
            v.add(f.at("fromCp"), "has to be defined");
        }
        f.finish(v);
        return None;
    };
    let agent_address = cp.str("agentAddress", v).filter(|s| !s.trim().is_empty());
    let address = cp.str("address", v).filter(|s| !s.trim().is_empty());
    for (key, value) in [("address", &address), ("agentAddress", &agent_address)] {
        if let Some(a) = value {
            if !(a.starts_with("http://") || a.starts_with("https://"))
                || a.len() <= "https://".len()
            {
                v.add(
                    cp.at(key),
                    format!("\"{a}\" must be an http:// or https:// URL"),
                );
            }
        }
    }
    if address.is_none() && agent_address.is_none() {
        v.add(cp.at("address"), "cannot be empty");
    }
    let namespace = cp.str("namespace", v).filter(|s| !s.trim().is_empty());
    let pki = cp.required_str("pki", v);
    let role = cp.required_str("role", v);
    let common_name = template(&mut cp, v);

    let mut tls_ca_cert = None;
    let mut tls_skip_verify = false;
    let mut tls_server_name = None;
    if let Some(mut tls) = cp.obj("tls", v) {
        if tls.has("caCert") {
            tls_ca_cert = tls.data_source("caCert", v);
        }
        tls_skip_verify = tls.bool("skipVerify", v).unwrap_or(false);
        tls_server_name = tls.str("serverName", v).filter(|s| !s.is_empty());
        tls.finish(v);
    }

    let auth_at = cp.at("auth");
    let mut auth = None;
    let mut auth_ok = true;
    match cp.obj("auth", v) {
        Some(mut a) => {
            let set: Vec<&str> = ["token", "tls", "aws"]
                .into_iter()
                .filter(|k| a.has(k))
                .collect();
            if set.len() != 1 && agent_address.is_none() {
                v.add(&auth_at, "exactly one of token, tls, aws must be set");
                auth_ok = false;
            } else if set.len() > 1 {
                v.add(&auth_at, "at most one of token, tls, aws may be set");
                auth_ok = false;
            }
            if a.has("token") {
                auth = a.data_source("token", v).map(VaultAuth::Token);
            }
            if let Some(mut t) = a.obj("tls", v) {
                let key = required_source(&mut t, "clientKey", v);
                let cert = required_source(&mut t, "clientCert", v);
                t.finish(v);
                if let (Some(client_key), Some(client_cert)) = (key, cert) {
                    auth = Some(VaultAuth::Tls {
                        client_key,
                        client_cert,
                    });
                }
            }
            if let Some(mut aws) = a.obj("aws", v) {
                let kind = match aws.str("type", v).as_deref() {
                    None | Some("IAM") => AwsAuthType::Iam,
                    Some("EC2") => AwsAuthType::Ec2,
                    Some(other) => {
                        v.add(
                            aws.at("type"),
                            format!("\"{other}\" is not supported (IAM or EC2)"),
                        );
                        AwsAuthType::Iam
                    }
                };
                let role = aws.str("role", v).filter(|s| !s.is_empty());
                let iam_server_id_header =
                    aws.str("iamServerIdHeader", v).filter(|s| !s.is_empty());
                aws.finish(v);
                auth = Some(VaultAuth::Aws {
                    kind,
                    role,
                    iam_server_id_header,
                });
            }
            a.finish(v);
        }
        None => {
            if agent_address.is_none() && !cp.has("auth") {
                v.add(&auth_at, "exactly one of token, tls, aws must be set");
                auth_ok = false;
            }
        }
    }
    cp.finish(v);
    f.finish(v);
    if !auth_ok {
        return None;
    }
    Some(VaultConf {
        address: address.or_else(|| agent_address.clone())?,
        agent_address,
        namespace,
        pki: pki?,
        role: role?,
        common_name,
        tls_ca_cert,
        tls_skip_verify,
        tls_server_name,
        auth,
    })
}

fn decode_acmpca(mut f: Fields<'_>, v: &mut Violations) -> Option<AcmpcaConf> {
    let arn_at = f.at("arn");
    let arn = f.required_str("arn", v);
    if let Some(a) = &arn {
        let parts: Vec<&str> = a.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[1].starts_with("aws")
            && parts[2] == "acm-pca"
            && parts[5].starts_with("certificate-authority/");
        if !ok {
            v.add(&arn_at, format!("\"{a}\" is not an ACM PCA certificate authority ARN (arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>)"));
        }
    }
    let common_name = template(&mut f, v);
    let ca_cert = required_source(&mut f, "caCert", v);
    let mut credentials = None;
    if let Some(mut auth) = f.obj("auth", v) {
        if let Some(mut c) = auth.obj("awsCredentials", v) {
            let access_key = required_source(&mut c, "accessKey", v);
            let access_key_secret = required_source(&mut c, "accessKeySecret", v);
            c.finish(v);
            if let (Some(access_key), Some(access_key_secret)) = (access_key, access_key_secret) {
                credentials = Some(AwsCredentials {
                    access_key,
                    access_key_secret,
                });
            }
        }
        auth.finish(v);
    }
    f.finish(v);
    Some(AcmpcaConf {
        arn: arn?,
        common_name,
        ca_cert: ca_cert?,
        credentials,
    })
}

fn decode_certmanager(mut f: Fields<'_>, v: &mut Violations) -> Option<CertmanagerConf> {
    let mut issuer = None;
    match f.obj("issuerRef", v) {
        Some(mut r) => {
            let name = r.required_str("name", v);
            let kind = r
                .str("kind", v)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "Issuer".into());
            let group = r
                .str("group", v)
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "cert-manager.io".into());
            r.finish(v);
            issuer = name.map(|n| (n, kind, group));
        }
        None => {
            if !f.has("issuerRef") {
                v.add(f.at("issuerRef"), "has to be defined");
            }
        }
    }
    let common_name = template(&mut f, v);
    let ca_cert = if f.has("caCert") {
        f.data_source("caCert", v)
    } else {
        None
    };
    let dns_at = f.at("dnsNames");
    let dns_names = f.string_list("dnsNames", v);
    for (i, d) in dns_names.iter().enumerate() {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.trim_start_matches("*.").split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            v.add(
                format!("{dns_at}[{i}]"),
                format!("\"{d}\" is not a valid DNS name"),
            );
        }
    }
    f.finish(v);
    let (issuer_name, issuer_kind, issuer_group) = issuer?;
    Some(CertmanagerConf {
        issuer_name,
        issuer_kind,
        issuer_group,
        common_name,
        ca_cert,
        dns_names,
    })
}

#[cfg(test)]
mod tests;
