//! What building one backend takes ([`BuildSpec`]), and the short way to write a factory for one
//! config type ([`TypedFactory`]).
//!
//! A registry hands every factory the same four things (context, mesh, index, backend); each
//! backend's constructor needs the same handful derived from them (where its `conf` sits for
//! violations, its name, timing, store and data-source policy). [`BuildSpec::new`] derives them
//! once, and a [`TypedFactory`] gets them with its own config already downcast.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::config::conf::BackendConfig;
use crate::config::fields::Fields;
use crate::config::model::{backend_path, Backend, Timing};
use crate::datasource::{SecretStore, SourcePolicy};
use crate::error::{Error, Violations};
use crate::name::{BackendName, MeshName};
use crate::registry::{BackendFactory, BuildContext, BuildFuture, Built};

/// Everything a backend constructor needs besides its own config: the backend's place in the
/// Mesh (for violation paths), its mesh and name, its timing, the secret store and the
/// data-source policy.
///
/// A registry makes one per build with [`new`](Self::new); tests and callers that build a
/// backend without a registry make one with [`from_parts`](Self::from_parts).
#[derive(Clone, Debug)]
pub struct BuildSpec<'a> {
    conf_path: String,
    mesh: &'a MeshName,
    name: &'a BackendName,
    timing: Timing,
    store: Arc<dyn SecretStore>,
    sources: &'a SourcePolicy,
}

impl<'a> BuildSpec<'a> {
    /// What building `backend`, the `index`-th of `mesh`'s backends, takes: its `conf` at
    /// `mtls.backends[index].conf`, [`Timing::of`] the backend, `ctx`'s store and sources.
    pub fn new(
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        index: usize,
        backend: &'a Backend,
    ) -> Self {
        Self::from_parts(
            format!("{}.conf", backend_path(index)),
            mesh,
            &backend.name,
            Timing::of(backend),
            ctx.store.clone(),
            &ctx.sources,
        )
    }

    /// Backend `name` of `mesh`, whose `conf` sits at `conf_path` (`mtls.backends[0].conf`; empty
    /// for paths relative to the `conf`), with `timing`, secrets from `store` and data sources as
    /// `sources` allows.
    pub fn from_parts(
        conf_path: impl Into<String>,
        mesh: &'a MeshName,
        name: &'a BackendName,
        timing: Timing,
        store: Arc<dyn SecretStore>,
        sources: &'a SourcePolicy,
    ) -> Self {
        Self {
            conf_path: conf_path.into(),
            mesh,
            name,
            timing,
            store,
            sources,
        }
    }

    /// The same, with `timing` instead (a test that asks for another lifetime, say).
    #[must_use]
    pub fn with_timing(mut self, timing: Timing) -> Self {
        self.timing = timing;
        self
    }

    /// Where the backend's `conf` sits in the Mesh (`mtls.backends[i].conf`): every violation
    /// of the config is reported under it.
    pub fn conf_path(&self) -> &str {
        &self.conf_path
    }

    /// The path of `field` of the `conf` (`mtls.backends[i].conf.<field>`; just `field` when
    /// [`conf_path`](Self::conf_path) is empty).
    pub fn field(&self, field: &str) -> String {
        if self.conf_path.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.conf_path)
        }
    }

    /// The mesh the backend belongs to.
    pub fn mesh(&self) -> &'a MeshName {
        self.mesh
    }

    /// The backend's `name`.
    pub fn name(&self) -> &'a BackendName {
        self.name
    }

    /// The backend's timeouts and data plane certificate lifetime.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// `dpCert.rotation.expiration`: the lifetime of data plane certificates.
    pub fn dp_cert_lifetime(&self) -> Duration {
        self.timing.lifetime
    }

    /// Where mesh-scoped secrets live.
    pub fn store(&self) -> &dyn SecretStore {
        self.store.as_ref()
    }

    /// The store, for a backend that keeps it (the builtin CA persists its key there).
    pub fn shared_store(&self) -> Arc<dyn SecretStore> {
        self.store.clone()
    }

    /// What `file:` and `env:` data sources may reach.
    pub fn sources(&self) -> &'a SourcePolicy {
        self.sources
    }
}

/// A [`BackendFactory`] for one config type, without the type erasure: every `TypedFactory` is a
/// `BackendFactory` and registers as one.
///
/// The erased parts are said once, here: the decoded config becomes an
/// `Arc<dyn BackendConfig>`, and a build downcasts it back, makes the [`BuildSpec`] and boxes the
/// future. A factory that needs more (one wrapping another factory) implements
/// [`BackendFactory`] itself.
pub trait TypedFactory: std::fmt::Debug + Send + Sync {
    /// The `type` this factory builds, as written in YAML (`builtin`, `vault`, ...).
    const TYPE: &'static str;

    /// The backend's decoded `conf`.
    type Conf: BackendConfig;

    /// Decodes `conf`, as [`BackendFactory::decode`] does.
    fn decode_conf(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<Self::Conf>>;

    /// Builds the backend `spec` describes from `conf` (what
    /// [`decode_conf`](Self::decode_conf) returned), as [`BackendFactory::build`] does:
    /// violations are reported under [`BuildSpec::conf_path`].
    fn build_backend<'a>(
        &'a self,
        spec: BuildSpec<'a>,
        conf: &'a Self::Conf,
    ) -> impl Future<Output = Result<Built, Error>> + Send + 'a;
}

impl<F: TypedFactory> BackendFactory for F {
    fn backend_type(&self) -> &str {
        F::TYPE
    }

    fn decode(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>> {
        self.decode_conf(conf, v)
            .map(|c| c as Arc<dyn BackendConfig>)
    }

    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let conf: &F::Conf = backend.conf_as()?;
            self.build_backend(BuildSpec::new(ctx, mesh, index, backend), conf)
                .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mesh;
    use crate::registry::Registry;
    use crate::store_overlay::OverlaySecretStore;
    use crate::test_util::block_on;

    /// `conf.note`, echoed back by [`Probe`].
    #[derive(Debug)]
    struct ProbeConf(Option<String>);

    impl BackendConfig for ProbeConf {}

    /// Builds nothing: reports what its spec says as a violation at `conf.probe`.
    #[derive(Debug)]
    struct Probe;

    impl TypedFactory for Probe {
        const TYPE: &'static str = "probe";
        type Conf = ProbeConf;

        fn decode_conf(&self, mut conf: Fields<'_>, v: &mut Violations) -> Option<Arc<ProbeConf>> {
            let note = conf.str("note", v);
            conf.finish(v);
            Some(Arc::new(ProbeConf(note)))
        }

        async fn build_backend(
            &self,
            spec: BuildSpec<'_>,
            conf: &ProbeConf,
        ) -> Result<Built, Error> {
            let mut v = Violations::default();
            v.add(
                spec.field("probe"),
                format!(
                    "{}/{} note={:?} lifetime={:?} timeout={:?}",
                    spec.mesh(),
                    spec.name(),
                    conf.0,
                    spec.dp_cert_lifetime(),
                    spec.timing().request_timeout,
                ),
            );
            Err(Error::InvalidConfig(v))
        }
    }

    #[test]
    fn a_typed_factory_decodes_and_builds_through_the_registry() {
        let registry = Registry::empty().with(Probe);
        assert_eq!(registry.types().collect::<Vec<_>>(), ["probe"]);
        let yaml = "type: Mesh\nname: default\nmtls:\n  enabledBackend: b\n  backends:\n    - name: a\n      type: probe\n    - name: b\n      type: probe\n      dpCert:\n        rotation: {expiration: 2h}\n        requestTimeout: 3s\n      conf: {note: hi}\n";
        let mesh = Mesh::from_yaml(yaml, &registry).unwrap();
        let (index, backend) = mesh.enabled_backend_indexed().unwrap();
        let ctx = BuildContext::new(
            Arc::new(OverlaySecretStore::new(None)),
            SourcePolicy::local(),
        );
        let err = block_on(registry.build(&ctx, &mesh.name, index, backend)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid mesh configuration: mtls.backends[1].conf.probe: default/b note=Some(\"hi\") \
             lifetime=7200s timeout=3s"
        );

        // Decoding reports at the full path, as every factory's does.
        let bad = yaml.replace("{note: hi}", "{note: hi, other: 1}");
        let err = Mesh::from_yaml(&bad, &registry).unwrap_err().to_string();
        assert!(err.contains("mtls.backends[1].conf.other"), "{err}");
    }

    #[test]
    fn field_paths_under_the_conf_or_relative_to_it() {
        let mesh = MeshName::new("default").unwrap();
        let name = BackendName::new("ca-1").unwrap();
        let sources = SourcePolicy::local();
        let timing = Timing::new(
            Duration::from_secs(1),
            Duration::from_secs(2),
            Duration::from_secs(3),
        );
        let store: Arc<dyn SecretStore> = Arc::new(OverlaySecretStore::new(None));
        let spec = BuildSpec::from_parts(
            "mtls.backends[2].conf",
            &mesh,
            &name,
            timing,
            store.clone(),
            &sources,
        );
        assert_eq!(spec.conf_path(), "mtls.backends[2].conf");
        assert_eq!(
            spec.field("fromCp.address"),
            "mtls.backends[2].conf.fromCp.address"
        );
        assert_eq!(spec.dp_cert_lifetime(), Duration::from_secs(3));
        let relative = BuildSpec::from_parts("", &mesh, &name, timing, store, &sources);
        assert_eq!(relative.field("cert"), "cert");
    }
}
