//! A fault backend for the library's tests: a builtin CA behind a switch, per mesh, that counts
//! the calls that reach it. Registered in the `Registry` in place of `builtin`; the production
//! binary has no such hook.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use meshca::ca_core::config::{Backend, BackendType};
use meshca::{
    BuildContext, BuildFuture, Built, CertificateAuthority, Error, IssueRequest, MeshName,
    Registry, TrustBundle, UncheckedCertificate,
};

static DOWN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
static CALLS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
static BUNDLE_CALLS: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);
static KEYS: Mutex<Option<HashMap<String, Vec<String>>>> = Mutex::new(None);
static EXTRA_ROOTS: Mutex<Option<HashMap<String, TrustBundle>>> = Mutex::new(None);
static PROBLEMS: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

/// Makes `mesh`'s backend report `problem` from `health()` (`None`: healthy).
#[allow(dead_code)]
pub fn set_problem(mesh: &str, problem: Option<&str>) {
    let mut p = PROBLEMS.lock().unwrap();
    let map = p.get_or_insert_with(HashMap::new);
    match problem {
        Some(text) => map.insert(mesh.to_owned(), text.to_owned()),
        None => map.remove(mesh),
    };
}

/// From now on the upstream of `mesh` also answers `roots` in its trust bundle (its CA rotated).
pub fn add_upstream_roots(mesh: &str, roots: TrustBundle) {
    EXTRA_ROOTS
        .lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(mesh.to_owned(), roots);
}

/// `trust_bundle` calls that reached the backend of `mesh`.
pub fn bundle_calls(mesh: &str) -> usize {
    BUNDLE_CALLS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|c| c.get(mesh).copied())
        .unwrap_or(0)
}

/// The idempotency key of every issue call that reached the backend of `mesh`, in order.
pub fn keys(mesh: &str) -> Vec<String> {
    KEYS.lock()
        .unwrap()
        .as_ref()
        .and_then(|k| k.get(mesh).cloned())
        .unwrap_or_default()
}

/// While down, every issue for `mesh` fails as an unreachable upstream would.
pub fn set_down(mesh: &str, down: bool) {
    let mut d = DOWN.lock().unwrap();
    let set = d.get_or_insert_with(HashSet::new);
    if down {
        set.insert(mesh.to_owned());
    } else {
        set.remove(mesh);
    }
}

/// Issue calls that reached the backend of `mesh`.
pub fn calls(mesh: &str) -> usize {
    CALLS
        .lock()
        .unwrap()
        .as_ref()
        .and_then(|c| c.get(mesh).copied())
        .unwrap_or(0)
}

#[derive(Debug)]
struct Faulty {
    mesh: String,
    inner: Arc<dyn CertificateAuthority>,
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
        let problem = PROBLEMS
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|p| p.get(&self.mesh).cloned());
        match problem {
            Some(reason) => Err(Error::UpstreamRefused {
                backend: self.name().to_owned(),
                reason,
            }),
            None => Ok(()),
        }
    }
    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        *BUNDLE_CALLS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .entry(self.mesh.clone())
            .or_default() += 1;
        let own = self.inner.trust_bundle().await?;
        let extra = EXTRA_ROOTS
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|e| e.get(&self.mesh).cloned());
        match extra {
            Some(extra) => TrustBundle::merge([&own, &extra]),
            None => Ok(own),
        }
    }
    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        KEYS.lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .entry(self.mesh.clone())
            .or_default()
            .push(request.idempotency_key().to_string());
        *CALLS
            .lock()
            .unwrap()
            .get_or_insert_with(HashMap::new)
            .entry(self.mesh.clone())
            .or_default() += 1;
        let down = DOWN
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|d| d.contains(&self.mesh));
        if down {
            // As slow as a connection attempt that times out, so concurrent callers overlap.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            return Err(Error::Unavailable {
                backend: self.name().to_owned(),
                source: "connection refused (injected)".into(),
            });
        }
        self.inner.issue(request).await
    }
    fn needs_csr(&self) -> bool {
        self.inner.needs_csr()
    }
}

fn build_faulty<'a>(
    ctx: &'a BuildContext,
    mesh: &'a MeshName,
    _index: usize,
    backend: &'a Backend,
) -> BuildFuture<'a> {
    Box::pin(async move {
        let built = Registry::new().build(ctx, mesh, 0, backend).await?;
        let faulty = Faulty {
            mesh: mesh.to_string(),
            inner: built.ca,
        };
        Ok(Built::new(Arc::new(faulty), built.warnings))
    })
}

/// A registry whose `builtin` backends can be switched off per mesh.
pub fn faulty_registry() -> Registry {
    Registry::empty().register(BackendType::Builtin, build_faulty)
}

/// A Mesh with one builtin backend `ca-1` whose certificates live `expiration`.
pub fn mesh_yaml(name: &str, expiration: &str) -> String {
    format!("type: Mesh\nname: {name}\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: {expiration}\n")
}
