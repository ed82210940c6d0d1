//! # store-kubernetes
//!
//! A [`SecretStore`] on Kubernetes Secrets, laid out as Kong Mesh stores secrets: one Secret per
//! secret in the system namespace, the value under `data.value`; a mesh's secrets
//! ([`Scope::Mesh`]) have `type: system.kuma.io/secret` and label `kuma.io/mesh: <mesh>`, global
//! ones ([`Scope::Global`]) `type: system.kuma.io/global-secret` and no mesh label.
//!
//! - `create_if_absent` is an API `create`: of replicas racing to create the same secret exactly
//!   one gets `201`, the others `409 AlreadyExists` and read the winner's value. Two or more
//!   issuers starting at once therefore end up with one builtin CA, and all serve it.
//! - `put` replaces with optimistic concurrency (`resourceVersion`; a `409 Conflict` is retried
//!   with the newer object, a bounded number of times).
//! - A Secret of the same name that belongs to another scope (another mesh, by its label; global
//!   or mesh, by its type) is not this scope's: `get` does not see it and writing it is refused.
//!   Global secrets hold what belongs to no mesh, such as the issuer's bootstrap TLS CA and token
//!   signing key.
//! - It needs `get`, `create` and `update` on `secrets` in its namespace; it never lists or
//!   watches (every read is by name).
//! - Values are capped at [`ca_core::SourcePolicy::MAX_BYTES`] (Kubernetes' own limit is 1 MiB).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use ca_core::UpstreamError;
use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use ca_core::{Created, Error, Scope, SecretBytes, SecretName, SecretStore};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

/// The Secret type Kong Mesh gives mesh-scoped secrets.
pub const SECRET_TYPE: &str = "system.kuma.io/secret";
/// The Secret type Kong Mesh gives global (mesh-less) secrets.
pub const GLOBAL_SECRET_TYPE: &str = "system.kuma.io/global-secret";
/// The type of a TLS Secret (`tls.crt`, `tls.key`; `ca.crt` by convention).
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// The label naming a secret's mesh.
pub const MESH_LABEL: &str = "kuma.io/mesh";
/// The data key holding the value.
pub const VALUE_KEY: &str = "value";
/// The namespace used unless told otherwise (Kong Mesh's system namespace).
pub const DEFAULT_NAMESPACE: &str = ca_core::DEFAULT_SYSTEM_NAMESPACE;

/// [`kube::Client::try_default`]: the pod's service account in a cluster, else the kubeconfig
/// (`KUBECONFIG`, `~/.kube/config`).
///
/// # Errors
/// [`UpstreamKind::Unavailable`](ca_core::UpstreamKind::Unavailable) when there is no usable
/// configuration.
pub async fn default_client() -> Result<kube::Client, Error> {
    kube::Client::try_default().await.map_err(|e| {
        Error::from(UpstreamError::unavailable(
            "kubernetes",
            format!(
                "no Kubernetes client configuration (in-cluster service account or \
                 kubeconfig): {}",
                ca_core::error_chain(&e)
            ),
        ))
    })
}

/// The namespace to use when none is named, as kubectl picks it: `$MESHCA_NAMESPACE` (a
/// Deployment sets it from the downward API), else the pod's own namespace (its service
/// account's namespace file), else `client`'s default namespace — outside a pod the kubeconfig
/// context's, or `default` when the context names none. A value that is not a namespace name is
/// skipped.
pub fn default_namespace(client: &kube::Client) -> String {
    ca_core::named_system_namespace().unwrap_or_else(|| client.default_namespace().to_owned())
}

/// How many times `put` tries when another writer changed the Secret in between.
const PUT_ATTEMPTS: u32 = 8;
/// The most `put` waits before its next try, times the tries so far (the wait is random, so
/// writers that collided do not collide again in step).
const PUT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(25);

/// Mesh and global secrets in Kubernetes Secrets of one namespace.
#[derive(Clone)]
pub struct KubernetesSecretStore {
    api: Api<Secret>,
    namespace: String,
}

impl fmt::Debug for KubernetesSecretStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesSecretStore")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl KubernetesSecretStore {
    /// The store in `namespace`, through `client`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
        }
    }

    /// The store in `namespace`, through [`kube::Client::try_default`]: the pod's service account
    /// in a cluster, else the kubeconfig (`KUBECONFIG`, `~/.kube/config`).
    ///
    /// # Errors
    /// [`UpstreamKind::Unavailable`](ca_core::UpstreamKind::Unavailable) when there is no usable
    /// configuration.
    pub async fn connect(namespace: &str) -> Result<Self, Error> {
        Ok(Self::new(default_client().await?, namespace))
    }

    /// The namespace secrets live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn error(&self, doing: &str, name: &SecretName, e: kube::Error) -> Error {
        let what = format!(
            "Kubernetes secret store: {doing} Secret {}/{name}",
            self.namespace
        );
        let reason = match &e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "{what}: forbidden — the service account needs get, create and update on \
                 secrets in namespace {} (a Role and RoleBinding; see deploy/kubernetes; a \
                 rule with resourceNames must list `{name}`) ({})",
                self.namespace, s.message
            ),
            kube::Error::Api(s) => format!("{what}: {} ({}, {})", s.message, s.reason, s.code),
            other => format!("{what}: {}", ca_core::error_chain(other)),
        };
        Error::from(UpstreamError::unavailable(
            "kubernetes secret store",
            reason,
        ))
    }

    async fn read(&self, name: &SecretName) -> Result<Option<Secret>, Error> {
        self.api
            .get_opt(name.as_str())
            .await
            .map_err(|e| self.error("reading", name, e))
    }

    fn object(&self, owner: Owner<'_>, name: &SecretName, value: &[u8]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(self.namespace.clone()),
                labels: owner.labels(),
                ..ObjectMeta::default()
            },
            type_: Some(owner.secret_type().to_owned()),
            data: Some(BTreeMap::from([(
                VALUE_KEY.to_owned(),
                ByteString(value.to_vec()),
            )])),
            ..Secret::default()
        }
    }

    /// The value of `secret` if it is `owner`'s; `None` when it is someone else's.
    fn value_of(
        &self,
        owner: Owner<'_>,
        name: &SecretName,
        secret: &Secret,
    ) -> Result<Option<SecretBytes>, Error> {
        if !owner.owns(secret) {
            return Ok(None);
        }
        let value = secret
            .data
            .as_ref()
            .and_then(|d| d.get(VALUE_KEY))
            .map(|b| b.0.clone())
            .ok_or_else(|| {
                Error::Inconsistent(format!(
                    "Kubernetes Secret {}/{name} ({owner}) has no data.{VALUE_KEY}",
                    self.namespace
                ))
            })?;
        if value.len() > ca_core::SourcePolicy::MAX_BYTES {
            return Err(Error::Inconsistent(format!(
                "Kubernetes Secret {}/{name} is larger than {} bytes",
                self.namespace,
                ca_core::SourcePolicy::MAX_BYTES
            )));
        }
        Ok(Some(SecretBytes::new(value)))
    }

    fn taken(&self, owner: Owner<'_>, name: &SecretName, secret: &Secret) -> Error {
        let label = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MESH_LABEL))
            .map_or("none", String::as_str);
        let type_ = secret.type_.as_deref().unwrap_or("Opaque");
        Error::Inconsistent(format!(
            "Kubernetes Secret {}/{name} exists and is not {owner}'s (type {type_}, \
             {MESH_LABEL} label {label}); meshca does not overwrite it",
            self.namespace
        ))
    }

    async fn get_as(
        &self,
        owner: Owner<'_>,
        name: &SecretName,
    ) -> Result<Option<SecretBytes>, Error> {
        match self.read(name).await? {
            Some(s) => self.value_of(owner, name, &s),
            None => Ok(None),
        }
    }

    async fn create_as(
        &self,
        owner: Owner<'_>,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error> {
        ca_core::check_secret_value(value)?;
        match self
            .api
            .create(&PostParams::default(), &self.object(owner, name, value))
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %self.namespace, %owner, secret = %name, "created Secret");
                Ok((SecretBytes::new(value.to_vec()), Created::Ours))
            }
            Err(e) if is_code(&e, 409) => {
                // Someone else won the race (or made it earlier): read theirs.
                let existing = self.read(name).await?.ok_or_else(|| {
                    Error::Inconsistent(format!(
                        "Kubernetes Secret {}/{name} was reported to exist and then was gone",
                        self.namespace
                    ))
                })?;
                match self.value_of(owner, name, &existing)? {
                    Some(v) => Ok((v, Created::Existing)),
                    None => Err(self.taken(owner, name, &existing)),
                }
            }
            Err(e) => Err(self.error("creating", name, e)),
        }
    }

    /// Replaces (or creates) `owner`'s Secret `name` with optimistic concurrency: read, then
    /// replace with the `resourceVersion` read, again if someone changed it in between.
    async fn put_as(&self, owner: Owner<'_>, name: &SecretName, value: &[u8]) -> Result<(), Error> {
        ca_core::check_secret_value(value)?;
        for attempt in 0..PUT_ATTEMPTS {
            if attempt > 0 {
                // Lost to another writer: wait a random while, longer each time, then read again.
                let most = PUT_BACKOFF * attempt;
                tokio::time::sleep(most.mul_f64(rand::random_range(0.2..1.0))).await;
            }
            match self.read(name).await? {
                None => match self
                    .api
                    .create(&PostParams::default(), &self.object(owner, name, value))
                    .await
                {
                    Ok(_) => return Ok(()),
                    Err(e) if is_code(&e, 409) => continue,
                    Err(e) => return Err(self.error("creating", name, e)),
                },
                Some(current) => {
                    if !owner.owns(&current) {
                        return Err(self.taken(owner, name, &current));
                    }
                    let mut next = self.object(owner, name, value);
                    next.metadata.resource_version = current.metadata.resource_version.clone();
                    match self
                        .api
                        .replace(name.as_str(), &PostParams::default(), &next)
                        .await
                    {
                        Ok(_) => return Ok(()),
                        // Changed or deleted since we read it: read again.
                        Err(e) if is_code(&e, 409) || is_code(&e, 404) => continue,
                        Err(e) => return Err(self.error("replacing", name, e)),
                    }
                }
            }
        }
        Err(Error::from(UpstreamError::unavailable(
            "kubernetes secret store",
            format!(
                "Secret {}/{name} kept changing under {PUT_ATTEMPTS} attempts to replace it",
                self.namespace
            ),
        )))
    }
}

/// Whose a Secret is, as Kong Mesh marks it: a mesh's (type [`SECRET_TYPE`], label
/// [`MESH_LABEL`]) or global (type [`GLOBAL_SECRET_TYPE`], no mesh label).
#[derive(Clone, Copy)]
struct Owner<'a>(Scope<'a>);

impl Owner<'_> {
    fn labels(self) -> Option<BTreeMap<String, String>> {
        match self.0 {
            Scope::Mesh(m) => Some(BTreeMap::from([(MESH_LABEL.to_owned(), m.to_string())])),
            Scope::Global => None,
        }
    }

    fn secret_type(self) -> &'static str {
        match self.0 {
            Scope::Mesh(_) => SECRET_TYPE,
            Scope::Global => GLOBAL_SECRET_TYPE,
        }
    }

    fn owns(self, secret: &Secret) -> bool {
        let label = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MESH_LABEL))
            .map(String::as_str);
        let type_ = secret.type_.as_deref();
        match self.0 {
            Scope::Mesh(m) => type_ == Some(SECRET_TYPE) && label == Some(m.as_str()),
            Scope::Global => type_ == Some(GLOBAL_SECRET_TYPE) && label.is_none(),
        }
    }
}

impl fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Scope::Mesh(m) => write!(f, "mesh `{m}`"),
            Scope::Global => f.write_str("a global secret"),
        }
    }
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

#[async_trait]
impl SecretStore for KubernetesSecretStore {
    async fn get(&self, scope: Scope<'_>, name: &SecretName) -> Result<Option<SecretBytes>, Error> {
        self.get_as(Owner(scope), name).await
    }

    async fn create_if_absent(
        &self,
        scope: Scope<'_>,
        name: &SecretName,
        value: &[u8],
    ) -> Result<(SecretBytes, Created), Error> {
        self.create_as(Owner(scope), name, value).await
    }

    async fn put(&self, scope: Scope<'_>, name: &SecretName, value: &[u8]) -> Result<(), Error> {
        self.put_as(Owner(scope), name, value).await
    }

    fn location(&self, _scope: Scope<'_>, name: &SecretName) -> String {
        format!("Secret {}/{name}", self.namespace)
    }
}

/// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`, `ca.crt`) kept up to date with a
/// certificate, for proxies and ingresses that read one (`meshca agent --k8s-secret`).
#[derive(Clone)]
pub struct TlsSecretSink {
    api: Api<Secret>,
    namespace: String,
    name: String,
}

impl fmt::Debug for TlsSecretSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSecretSink")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TlsSecretSink {
    /// Secret `name` in `namespace`, through `client`.
    pub fn new(client: kube::Client, namespace: &str, name: &SecretName) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: name.to_string(),
        }
    }

    /// Creates the Secret, or replaces its data with `resourceVersion` (a conflict is read again,
    /// a bounded number of times). A Secret of that name that is not `kubernetes.io/tls` is not
    /// overwritten.
    ///
    /// # Errors
    /// [`UpstreamKind::Unavailable`](ca_core::UpstreamKind::Unavailable) when the API refuses or
    /// cannot be reached (403 names the RBAC
    /// rule); [`Error::Inconsistent`] for a Secret of another type.
    pub async fn write(
        &self,
        chain_pem: &[u8],
        key_pem: &[u8],
        ca_pem: &[u8],
    ) -> Result<(), Error> {
        let data = BTreeMap::from([
            ("tls.crt".to_owned(), ByteString(chain_pem.to_vec())),
            ("tls.key".to_owned(), ByteString(key_pem.to_vec())),
            ("ca.crt".to_owned(), ByteString(ca_pem.to_vec())),
        ]);
        let fail = |doing: &str, e: kube::Error| {
            let what = format!(
                "Kubernetes TLS Secret {}/{}: {doing}",
                self.namespace, self.name
            );
            let reason = match &e {
                kube::Error::Api(s) if s.code == 403 => format!(
                    "{what}: forbidden — the service account needs get, create and update on \
                     secrets in namespace {} ({})",
                    self.namespace, s.message
                ),
                kube::Error::Api(s) => format!("{what}: {} ({}, {})", s.message, s.reason, s.code),
                other => format!("{what}: {}", ca_core::error_chain(other)),
            };
            Error::from(UpstreamError::unavailable("kubernetes tls secret", reason))
        };
        for _ in 0..PUT_ATTEMPTS {
            let current = self
                .api
                .get_opt(&self.name)
                .await
                .map_err(|e| fail("reading", e))?;
            let mut next = Secret {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "meshca".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                },
                type_: Some(TLS_SECRET_TYPE.to_owned()),
                data: Some(data.clone()),
                ..Secret::default()
            };
            let result = match current {
                None => self.api.create(&PostParams::default(), &next).await,
                Some(cur) => {
                    if cur.type_.as_deref() != Some(TLS_SECRET_TYPE) {
                        return Err(Error::Inconsistent(format!(
                            "Kubernetes Secret {}/{} exists and is of type {}, not \
                             {TLS_SECRET_TYPE}; meshca does not overwrite it",
                            self.namespace,
                            self.name,
                            cur.type_.as_deref().unwrap_or("Opaque")
                        )));
                    }
                    next.metadata.resource_version = cur.metadata.resource_version;
                    next.metadata.labels = cur.metadata.labels.or(next.metadata.labels);
                    self.api
                        .replace(&self.name, &PostParams::default(), &next)
                        .await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(e) if is_code(&e, 409) || is_code(&e, 404) => continue,
                Err(e) => return Err(fail("writing", e)),
            }
        }
        Err(Error::from(UpstreamError::unavailable(
            "kubernetes tls secret",
            format!(
                "Secret {}/{} kept changing under {PUT_ATTEMPTS} attempts to write it",
                self.namespace, self.name
            ),
        )))
    }
}
