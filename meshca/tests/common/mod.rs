//! A fault backend for the library's tests: a builtin CA behind a switch, per mesh, that counts
//! the calls that reach it. Its factory, carrying its own [`Faults`], is registered in place of
//! `builtin`; the production binary has no such hook.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use meshca::UpstreamError;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use backend_builtin::BuiltinFactory;
use meshca::config::{Backend, BackendConfig, Fields};
use meshca::{
    BackendFactory, BuildContext, BuildFuture, Built, CertificateAuthority, Error, IssueRequest,
    MeshName, Registry, TrustBundle, UncheckedCertificate, Violations,
};

/// The switches and counters of one test's fault backends, by mesh.
#[derive(Clone, Debug, Default)]
pub struct Faults(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    down: HashSet<String>,
    calls: HashMap<String, usize>,
    bundle_calls: HashMap<String, usize>,
    keys: HashMap<String, Vec<String>>,
    extra_roots: HashMap<String, TrustBundle>,
    problems: HashMap<String, String>,
}

impl Faults {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// A registry whose `builtin` backends obey these switches.
    pub fn registry(&self) -> Registry {
        Registry::empty().with(FaultyFactory {
            faults: self.clone(),
        })
    }

    /// Makes `mesh`'s backend report `problem` from `health()` (`None`: healthy).
    pub fn set_problem(&self, mesh: &str, problem: Option<&str>) {
        let mut s = self.state();
        match problem {
            Some(text) => s.problems.insert(mesh.to_owned(), text.to_owned()),
            None => s.problems.remove(mesh),
        };
    }

    /// From now on the upstream of `mesh` also answers `roots` in its trust bundle (its CA
    /// rotated).
    pub fn add_upstream_roots(&self, mesh: &str, roots: TrustBundle) {
        self.state().extra_roots.insert(mesh.to_owned(), roots);
    }

    /// `trust_bundle` calls that reached the backend of `mesh`.
    pub fn bundle_calls(&self, mesh: &str) -> usize {
        self.state().bundle_calls.get(mesh).copied().unwrap_or(0)
    }

    /// The idempotency key of every issue call that reached the backend of `mesh`, in order.
    pub fn keys(&self, mesh: &str) -> Vec<String> {
        self.state().keys.get(mesh).cloned().unwrap_or_default()
    }

    /// While down, every issue for `mesh` fails as an unreachable upstream would.
    pub fn set_down(&self, mesh: &str, down: bool) {
        let mut s = self.state();
        if down {
            s.down.insert(mesh.to_owned());
        } else {
            s.down.remove(mesh);
        }
    }

    /// Issue calls that reached the backend of `mesh`.
    pub fn calls(&self, mesh: &str) -> usize {
        self.state().calls.get(mesh).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct FaultyFactory {
    faults: Faults,
}

impl BackendFactory for FaultyFactory {
    fn backend_type(&self) -> &str {
        "builtin"
    }

    fn decode(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>> {
        BuiltinFactory::new().decode(conf, v)
    }

    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let built = BuiltinFactory::new()
                .build(ctx, mesh, index, backend)
                .await?;
            let faulty = Faulty {
                mesh: mesh.to_string(),
                inner: built.ca,
                faults: self.faults.clone(),
            };
            Ok(Built::new(Arc::new(faulty), built.warnings))
        })
    }
}

#[derive(Debug)]
struct Faulty {
    mesh: String,
    inner: Arc<dyn CertificateAuthority>,
    faults: Faults,
}

#[async_trait]
impl CertificateAuthority for Faulty {
    fn name(&self) -> &str {
        self.inner.name()
    }
    async fn ensure(&self) -> Result<(), Error> {
        self.inner.ensure().await
    }
    async fn health(&self) -> Result<(), Error> {
        let problem = self.faults.state().problems.get(&self.mesh).cloned();
        match problem {
            Some(reason) => Err(Error::from(UpstreamError::refused(
                self.name().to_owned(),
                reason,
            ))),
            None => Ok(()),
        }
    }
    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        *self
            .faults
            .state()
            .bundle_calls
            .entry(self.mesh.clone())
            .or_default() += 1;
        let own = self.inner.trust_bundle().await?;
        let extra = self.faults.state().extra_roots.get(&self.mesh).cloned();
        match extra {
            Some(extra) => TrustBundle::merge([&own, &extra]),
            None => Ok(own),
        }
    }
    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        let down = {
            let mut s = self.faults.state();
            s.keys
                .entry(self.mesh.clone())
                .or_default()
                .push(request.idempotency_key().to_string());
            *s.calls.entry(self.mesh.clone()).or_default() += 1;
            s.down.contains(&self.mesh)
        };
        if down {
            // As slow as a connection attempt that times out, so concurrent callers overlap.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            return Err(Error::from(UpstreamError::unavailable(
                self.name().to_owned(),
                "connection refused (injected)",
            )));
        }
        self.inner.issue(request).await
    }
    fn needs_csr(&self) -> bool {
        self.inner.needs_csr()
    }
}

/// A Mesh with one builtin backend `ca-1` whose certificates live `expiration`.
pub fn mesh_yaml(name: &str, expiration: &str) -> String {
    format!("type: Mesh\nname: {name}\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: {expiration}\n")
}
