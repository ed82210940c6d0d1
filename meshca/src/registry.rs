//! Where backends are chosen: a table from [`BackendType`] to a constructor.
//!
//! A backend crate that lands adds one line to [`Registry::new`], behind its cargo feature.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ca_core::config::{backend_path, Backend, BackendConf, BackendType};
use ca_core::{CertificateAuthority, Error, MeshName, SecretStore, SourcePolicy, Violations};

/// What constructors get besides the backend's config.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BuildContext {
    /// Where mesh-scoped secrets live (and the builtin CA is persisted).
    pub store: Arc<dyn SecretStore>,
    /// What `file:` and `env:` data sources may reach.
    pub sources: SourcePolicy,
}

/// A built backend and what its constructor had to say about it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Built {
    /// The backend.
    pub ca: Arc<dyn CertificateAuthority>,
    /// What its constructor found worth saying (e.g. a provided CA that expires soon).
    pub warnings: Vec<String>,
}

impl Built {
    /// A backend and its warnings.
    pub fn new(ca: Arc<dyn CertificateAuthority>, warnings: Vec<String>) -> Self {
        Self { ca, warnings }
    }
}

/// What a [`Constructor`] returns.
pub type BuildFuture<'a> = Pin<Box<dyn Future<Output = Result<Built, Error>> + Send + 'a>>;

/// Builds one backend of `mesh`: the `usize` is the backend's index in `mtls.backends`, so the
/// constructor reports its violations at their full path
/// (`{`[`backend_path`](ca_core::config::backend_path)`(index)}.conf.cert`, ...) in an
/// [`Error::InvalidConfig`].
pub type Constructor =
    for<'a> fn(&'a BuildContext, &'a MeshName, usize, &'a Backend) -> BuildFuture<'a>;

impl BuildContext {
    /// Secrets from `store`; `file:` and `env:` data sources as `sources` allows.
    pub fn new(store: Arc<dyn SecretStore>, sources: SourcePolicy) -> Self {
        Self { store, sources }
    }

    /// The same context over an in-memory overlay of its store: what backends create while being
    /// checked is never persisted.
    pub fn dry_run(&self) -> Self {
        Self {
            store: Arc::new(ca_core::OverlaySecretStore::new(Some(self.store.clone()))),
            sources: self.sources.clone(),
        }
    }
}

/// Backend types this build knows how to construct.
#[derive(Clone)]
pub struct Registry {
    constructors: HashMap<BackendType, Constructor>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<&str> = self.constructors.keys().map(|t| t.as_str()).collect();
        types.sort_unstable();
        f.debug_struct("Registry").field("types", &types).finish()
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// Every backend compiled in: `builtin` and `provided`, and each remote backend whose
    /// cargo feature is on.
    pub fn new() -> Self {
        let registry = Self::empty()
            .register(BackendType::Builtin, build_builtin)
            .register(BackendType::Provided, build_provided);
        #[cfg(feature = "vault")]
        let registry = registry.register(BackendType::Vault, build_vault);
        #[cfg(feature = "acmpca")]
        let registry = registry.register(BackendType::Acmpca, build_acmpca);
        #[cfg(feature = "certmanager")]
        let registry = registry.register(BackendType::Certmanager, build_certmanager);
        registry
    }

    /// Without a constructor for `ty`: backends of that type are refused as not available in
    /// this build (tests of that refusal, builds that must not use a type).
    #[must_use]
    pub fn unregister(mut self, ty: BackendType) -> Self {
        self.constructors.remove(&ty);
        self
    }

    /// No backends at all (tests register their own).
    pub fn empty() -> Self {
        Self {
            constructors: HashMap::new(),
        }
    }

    /// Uses `ctor` for backends of type `ty` (replacing any other).
    #[must_use]
    pub fn register(mut self, ty: BackendType, ctor: Constructor) -> Self {
        self.constructors.insert(ty, ctor);
        self
    }

    /// Builds `backend` (the `index`-th of the mesh's backends, for error paths).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming `mtls.backends[index].type` for a type this build lacks,
    /// or with every violation of the backend's `conf` and data sources at their full paths;
    /// the constructor's other errors otherwise.
    pub async fn build(
        &self,
        ctx: &BuildContext,
        mesh: &MeshName,
        index: usize,
        backend: &Backend,
    ) -> Result<Built, Error> {
        let ty = backend.backend_type();
        let Some(ctor) = self.constructors.get(&ty) else {
            let mut v = Violations::default();
            v.add(
                format!("{}.type", backend_path(index)),
                format!("backend type {ty} is not available in this build yet"),
            );
            return Err(Error::InvalidConfig(v));
        };
        ctor(ctx, mesh, index, backend).await
    }
}

fn build_builtin<'a>(
    ctx: &'a BuildContext,
    mesh: &'a MeshName,
    _index: usize,
    backend: &'a Backend,
) -> BuildFuture<'a> {
    Box::pin(async move {
        let BackendConf::Builtin(conf) = &backend.conf else {
            return Err(wrong_conf(backend));
        };
        let ca = backend_builtin::BuiltinCa::new(
            mesh.clone(),
            backend.name.clone(),
            conf.clone(),
            ctx.store.clone(),
        );
        Ok(Built {
            ca: Arc::new(ca),
            warnings: Vec::new(),
        })
    })
}

fn build_provided<'a>(
    ctx: &'a BuildContext,
    mesh: &'a MeshName,
    index: usize,
    backend: &'a Backend,
) -> BuildFuture<'a> {
    Box::pin(async move {
        let BackendConf::Provided(conf) = &backend.conf else {
            return Err(wrong_conf(backend));
        };
        let ca = backend_provided::ProvidedCa::load_at(
            &format!("{}.conf", backend_path(index)),
            mesh,
            backend.name.clone(),
            conf,
            backend.dp_cert_expiration,
            ctx.store.as_ref(),
            &ctx.sources,
        )
        .await?;
        let warnings = ca.warnings().to_vec();
        Ok(Built {
            ca: Arc::new(ca),
            warnings,
        })
    })
}

#[cfg(feature = "vault")]
fn build_vault<'a>(
    ctx: &'a BuildContext,
    mesh: &'a MeshName,
    index: usize,
    backend: &'a Backend,
) -> BuildFuture<'a> {
    Box::pin(async move {
        let BackendConf::Vault(conf) = &backend.conf else {
            return Err(wrong_conf(backend));
        };
        let ca = backend_vault::VaultCa::load_at(
            &format!("{}.conf", backend_path(index)),
            mesh,
            backend.name.clone(),
            conf,
            ca_core::config::Timing::of(backend),
            ctx.store.as_ref(),
            &ctx.sources,
        )
        .await?;
        let warnings = ca.warnings().to_vec();
        Ok(Built::new(Arc::new(ca), warnings))
    })
}

#[cfg(feature = "acmpca")]
fn build_acmpca<'a>(
    ctx: &'a BuildContext,
    mesh: &'a MeshName,
    index: usize,
    backend: &'a Backend,
) -> BuildFuture<'a> {
    Box::pin(async move {
        let BackendConf::Acmpca(conf) = &backend.conf else {
            return Err(wrong_conf(backend));
        };
        let ca = backend_acmpca::AcmpcaCa::load_at(
            &format!("{}.conf", backend_path(index)),
            mesh,
            backend.name.clone(),
            conf,
            ca_core::config::Timing::of(backend),
            ctx.store.as_ref(),
            &ctx.sources,
        )
        .await?;
        Ok(Built::new(Arc::new(ca), Vec::new()))
    })
}

/// Environment variable naming the namespace certmanager backends create CertificateRequests
/// in; default [`ca_core::system_namespace`] (`MESHCA_NAMESPACE`, else the pod's namespace, else
/// `kuma-system`).
#[cfg(feature = "certmanager")]
pub const CERTMANAGER_NAMESPACE_ENV: &str = "MESHCA_CERTMANAGER_NAMESPACE";

#[cfg(feature = "certmanager")]
fn build_certmanager<'a>(
    ctx: &'a BuildContext,
    mesh: &'a MeshName,
    index: usize,
    backend: &'a Backend,
) -> BuildFuture<'a> {
    Box::pin(async move {
        let BackendConf::Certmanager(conf) = &backend.conf else {
            return Err(wrong_conf(backend));
        };
        // The Kubernetes client (in-cluster, else kubeconfig) is made on first use.
        let mut ca = backend_certmanager::CertmanagerCa::load_at(
            &format!("{}.conf", backend_path(index)),
            mesh,
            backend.name.clone(),
            conf,
            ca_core::config::Timing::of(backend),
            ctx.store.as_ref(),
            &ctx.sources,
        )
        .await?;
        let ns = std::env::var(CERTMANAGER_NAMESPACE_ENV)
            .ok()
            .map(|n| n.trim().to_owned())
            .filter(|n| ca_core::is_namespace_name(n))
            .unwrap_or_else(ca_core::system_namespace);
        ca = ca.with_namespace(ns);
        Ok(Built::new(Arc::new(ca), Vec::new()))
    })
}

fn wrong_conf(backend: &Backend) -> Error {
    Error::Inconsistent(format!(
        "backend `{}`: conf does not match type {}",
        backend.name,
        backend.backend_type()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn missing_backend_types_are_refused_with_their_path() {
        let yaml = "type: Mesh\nname: m\nmtls:\n  enabledBackend: c\n  backends:\n    - name: b\n      type: builtin\n    - name: c\n      type: certmanager\n      conf:\n        issuerRef: {name: x}\n";
        let mesh = ca_core::config::Mesh::from_yaml(yaml).unwrap();
        let ctx = BuildContext::new(
            Arc::new(ca_core::OverlaySecretStore::new(None)),
            SourcePolicy::local(),
        );
        let backend = mesh.enabled_backend().unwrap();
        // Only builtin registered: certmanager stands for any type this build lacks.
        let registry = Registry::empty().register(BackendType::Builtin, build_builtin);
        let err = registry
            .build(&ctx, &mesh.name, 1, backend)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid mesh configuration: mtls.backends[1].type: backend type certmanager is not available in this build yet"
        );
        let builtin = &mesh.mtls.as_ref().unwrap().backends[0];
        let built = registry.build(&ctx, &mesh.name, 0, builtin).await.unwrap();
        assert_eq!(built.ca.name(), "b");
    }
}
