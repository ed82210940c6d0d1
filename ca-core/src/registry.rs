//! The open backend seam: a [`BackendFactory`] per backend type, held by type name in a
//! [`Registry`].
//!
//! A backend crate owns its config type (a [`BackendConfig`]), decodes its `conf` with
//! [`Fields`] and builds its [`CertificateAuthority`]; ca-core keeps the Mesh model and hands
//! each factory its backend's `conf`. A control plane registers the five backends meshca ships,
//! its own, or both:
//!
//! ```
//! use ca_core::Registry;
//! let registry = Registry::empty();
//! assert_eq!(registry.types().count(), 0);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::authority::CertificateAuthority;
use crate::config::conf::BackendConfig;
use crate::config::fields::Fields;
use crate::config::model::{backend_path, Backend};
use crate::datasource::{SecretStore, SourcePolicy};
use crate::error::{Error, Violations};
use crate::name::MeshName;
use crate::store_overlay::OverlaySecretStore;

/// The backend types Kuma and Kong Mesh define: a Mesh naming one a build has no factory for is
/// told it is not available in this build, rather than that the type is unknown.
pub const KUMA_BACKEND_TYPES: [&str; 5] = ["builtin", "provided", "vault", "acmpca", "certmanager"];

/// Makes backends of one type: decodes their `conf` and builds them.
///
/// Object safe; a factory may carry settings (an AWS SDK config, a Kubernetes client, test
/// faults) that every backend it builds shares. A factory for one config type is shortest
/// written as a [`TypedFactory`](crate::TypedFactory), which is a `BackendFactory`.
pub trait BackendFactory: fmt::Debug + Send + Sync {
    /// The `type` this factory builds, as written in YAML (`builtin`, `vault`, ...).
    fn backend_type(&self) -> &str;

    /// Decodes `conf` (an empty object when the Mesh gives none), reporting every violation into
    /// `v` at its full path ([`Fields::at`]); `None` when it cannot be used. Decoding reads and
    /// contacts nothing: data sources are resolved when the backend is built.
    fn decode(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>>;

    /// Builds `backend` (the `index`-th of `mesh`'s backends; its `conf` is what
    /// [`decode`](Self::decode) returned). Violations found while building (a data source that
    /// cannot be read, a certificate that is not a CA) are reported in an
    /// [`Error::InvalidConfig`] at `{`[`backend_path`]`(index)}.conf.<field>`.
    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a>;
}

/// What [`BackendFactory::build`] returns.
pub type BuildFuture<'a> = Pin<Box<dyn Future<Output = Result<Built, Error>> + Send + 'a>>;

/// What factories get besides the backend's config.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BuildContext {
    /// Where mesh-scoped secrets live (and the builtin CA is persisted).
    pub store: Arc<dyn SecretStore>,
    /// What `file:` and `env:` data sources may reach.
    pub sources: SourcePolicy,
}

impl BuildContext {
    /// Secrets from `store`; data sources as `sources` allows.
    pub fn new(store: Arc<dyn SecretStore>, sources: SourcePolicy) -> Self {
        Self { store, sources }
    }

    /// The same context over an in-memory overlay of its store: what backends create while being
    /// checked is never persisted.
    pub fn dry_run(&self) -> Self {
        Self {
            store: Arc::new(OverlaySecretStore::new(Some(self.store.clone()))),
            sources: self.sources.clone(),
        }
    }
}

/// A built backend and what its factory had to say about it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Built {
    /// The backend.
    pub ca: Arc<dyn CertificateAuthority>,
    /// What its factory found worth saying (e.g. a provided CA that expires soon).
    pub warnings: Vec<String>,
}

impl Built {
    /// A backend and its warnings.
    pub fn new(ca: Arc<dyn CertificateAuthority>, warnings: Vec<String>) -> Self {
        Self { ca, warnings }
    }

    /// A backend with nothing to say about it.
    pub fn of(ca: impl CertificateAuthority + 'static) -> Self {
        Self::new(Arc::new(ca), Vec::new())
    }
}

/// The backend types a build knows, each with its [`BackendFactory`].
///
/// Cheap to clone (the table is shared), so an edge can hand it to every parse it runs off the
/// async runtime.
#[derive(Clone, Default)]
pub struct Registry {
    factories: Arc<BTreeMap<String, Arc<dyn BackendFactory>>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("types", &self.types().collect::<Vec<_>>())
            .finish()
    }
}

impl Registry {
    /// No backend types at all.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Uses `factory` for backends of its type, replacing any other.
    #[must_use]
    pub fn with(mut self, factory: impl BackendFactory + 'static) -> Self {
        self.register(Arc::new(factory));
        self
    }

    /// Uses `factory` for backends of its type, replacing any other.
    pub fn register(&mut self, factory: Arc<dyn BackendFactory>) {
        Arc::make_mut(&mut self.factories).insert(factory.backend_type().to_owned(), factory);
    }

    /// Without a factory for `backend_type`: Meshes that use it are told it is not available
    /// (tests of that refusal, builds that must not use a type).
    #[must_use]
    pub fn without(mut self, backend_type: &str) -> Self {
        Arc::make_mut(&mut self.factories).remove(backend_type);
        self
    }

    /// The factory for `backend_type`.
    pub fn get(&self, backend_type: &str) -> Option<&dyn BackendFactory> {
        self.factories.get(backend_type).map(|f| f.as_ref())
    }

    /// The registered types, in order.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.factories.keys().map(String::as_str)
    }

    /// Decodes a `conf` for `backend_type` at `at` (`mtls.backends[i].type` is the field a missing
    /// type is reported at).
    pub(crate) fn decode(
        &self,
        backend_type: &str,
        type_at: &str,
        conf: Fields<'_>,
        v: &mut Violations,
    ) -> Option<Arc<dyn BackendConfig>> {
        match self.get(backend_type) {
            Some(factory) => factory.decode(conf, v),
            None => {
                v.add(type_at, self.missing(backend_type));
                None
            }
        }
    }

    fn missing(&self, backend_type: &str) -> String {
        if KUMA_BACKEND_TYPES.contains(&backend_type) {
            format!("backend type {backend_type} is not available in this build yet")
        } else {
            // Kuma's types first, in Kuma's order, then any others.
            let mut known: Vec<&str> = KUMA_BACKEND_TYPES
                .into_iter()
                .filter(|t| self.factories.contains_key(*t))
                .collect();
            known.extend(self.types().filter(|t| !KUMA_BACKEND_TYPES.contains(t)));
            format!(
                "unknown type \"{}\" (one of {})",
                crate::error::echo(backend_type),
                known.join(", ")
            )
        }
    }

    /// Builds `backend` (the `index`-th of the mesh's backends, for error paths).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `mtls.backends[index].type` for a type this registry
    /// lacks, or with every violation of the backend's `conf` and data sources at their full
    /// paths; the factory's other errors otherwise.
    pub async fn build(
        &self,
        ctx: &BuildContext,
        mesh: &MeshName,
        index: usize,
        backend: &Backend,
    ) -> Result<Built, Error> {
        let ty = backend.backend_type();
        let Some(factory) = self.get(ty) else {
            let mut v = Violations::default();
            v.add(format!("{}.type", backend_path(index)), self.missing(ty));
            return Err(Error::InvalidConfig(v));
        };
        factory.build(ctx, mesh, index, backend).await
    }
}
