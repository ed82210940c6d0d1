//! A backend type none of meshca's five know, registered by the embedding control plane and
//! passed through the conformance suite.
//!
//! `type: memory` is an in-memory CA per mesh that counts the calls that reach it. Its crate (this
//! file) owns its config (`conf.commonName`, `conf.keyType`), decodes it into meshca's shared
//! violations with Kuma-style field paths, and builds the CA: exactly what `backend-builtin`
//! and the other backend crates do.
//!
//! `cargo run -p meshca --example custom_backend` runs the whole conformance suite against it
//! (`openssl` must be on `PATH`); `cargo test` runs it too.

// The fixture panics with a message when the backend does not build, as test code does.
#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use meshca::config::{BackendConfig, Fields, Mesh};
use meshca::{
    BuildContext, BuildSpec, Built, CertificateAuthority, CommonNameTemplate, Error, IssueRequest,
    KeyType, LocalCa, MeshName, OverlaySecretStore, PrivateKey, Registry, SourcePolicy,
    TrustBundle, TypedFactory, UncheckedCertificate, Violations,
};
use meshca_conformance::Fixture;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

// === the backend crate's side ===

/// `conf` of a `memory` backend.
#[derive(Debug)]
struct MemoryConf {
    common_name: Option<CommonNameTemplate>,
    key: KeyType,
}

impl BackendConfig for MemoryConf {
    // Nothing is read and nothing contacted: the defaults say so. It has a common-name template.
    fn common_name(&self) -> Option<&CommonNameTemplate> {
        self.common_name.as_ref()
    }
}

/// Calls that reached the memory CAs of one factory, by mesh.
#[derive(Debug, Default)]
struct Calls {
    issued: AtomicUsize,
    by_mesh: Mutex<HashMap<String, usize>>,
}

/// The CAs a factory made, by (mesh, backend).
type CaTable = HashMap<(String, String), Arc<MemoryCa>>;

/// Builds `type: memory` backends. It carries its state itself, nothing global: the CAs it made
/// (one per mesh and backend, for the life of the factory: a backend built again for the same
/// mesh signs with the same CA) and the call counter.
#[derive(Debug, Default, Clone)]
struct MemoryFactory {
    cas: Arc<Mutex<CaTable>>,
    calls: Arc<Calls>,
}

// A `TypedFactory` is a `BackendFactory` for one config type: meshca does the type erasure.
impl TypedFactory for MemoryFactory {
    const TYPE: &'static str = "memory";
    type Conf = MemoryConf;

    fn decode_conf(&self, mut conf: Fields<'_>, v: &mut Violations) -> Option<Arc<MemoryConf>> {
        let common_name = conf.common_name(v);
        let key_at = conf.at("keyType");
        let key = match conf.str("keyType", v).as_deref() {
            None | Some("ecdsa-p256") => Some(KeyType::EcdsaP256),
            Some("rsa") => Some(KeyType::Rsa(2048)),
            Some(other) => {
                v.add(
                    key_at,
                    format!("\"{other}\" is not a key type (ecdsa-p256 or rsa)"),
                );
                None
            }
        };
        conf.finish(v);
        Some(Arc::new(MemoryConf {
            common_name,
            key: key?,
        }))
    }

    // `spec` says which mesh and backend, where its `conf` sits (`spec.field("keyType")` is
    // `mtls.backends[i].conf.keyType`), its timing, the store and the data-source policy.
    async fn build_backend(&self, spec: BuildSpec<'_>, conf: &MemoryConf) -> Result<Built, Error> {
        let key = (spec.mesh().to_string(), spec.name().to_string());
        let mut cas = self
            .cas
            .lock()
            .map_err(|_| Error::Inconsistent("CA table poisoned".into()))?;
        let ca = match cas.get(&key) {
            Some(ca) => ca.clone(),
            None => {
                let ca = Arc::new(MemoryCa::new(
                    spec.mesh(),
                    spec.name().as_str(),
                    conf.key,
                    self.calls.clone(),
                )?);
                cas.insert(key, ca.clone());
                ca
            }
        };
        Ok(Built::new(ca, Vec::new()))
    }
}

/// A self-signed CA that lives as long as the value.
#[derive(Debug)]
struct MemoryCa {
    name: String,
    mesh: String,
    signer: LocalCa,
    bundle: TrustBundle,
    calls: Arc<Calls>,
}

impl MemoryCa {
    fn new(mesh: &MeshName, name: &str, key: KeyType, calls: Arc<Calls>) -> Result<Self, Error> {
        let private = key.generate()?;
        let pem = private.to_pem();
        let pem = std::str::from_utf8(pem.expose())
            .map_err(|e| Error::Inconsistent(format!("key PEM: {e}")))?;
        let key_pair = KeyPair::from_pem(pem).map_err(Error::crypto)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("memory CA of {mesh}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (SystemTime::now() - Duration::from_secs(60)).into();
        params.not_after = (SystemTime::now() + Duration::from_secs(24 * 3600)).into();
        let cert = params.self_signed(&key_pair).map_err(Error::crypto)?;
        let der = cert.der().clone();
        let signer = LocalCa::new(
            "memory",
            vec![der.clone()],
            PrivateKey::from_pem(pem.as_bytes())?,
        )?;
        Ok(Self {
            name: name.to_owned(),
            mesh: mesh.to_string(),
            signer,
            bundle: TrustBundle::new(vec![der])?,
            calls,
        })
    }
}

#[async_trait]
impl CertificateAuthority for MemoryCa {
    fn name(&self) -> &str {
        &self.name
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        Ok(self.bundle.clone())
    }

    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        self.calls.issued.fetch_add(1, Ordering::Relaxed);
        *self
            .calls
            .by_mesh
            .lock()
            .map_err(|_| Error::Inconsistent("call counter poisoned".into()))?
            .entry(self.mesh.clone())
            .or_default() += 1;
        self.signer.sign(request)
    }
}

// === the control plane's side ===

/// meshca's backends plus `memory`.
fn registry(factory: &MemoryFactory) -> Registry {
    meshca::registry().with(factory.clone())
}

fn mesh_yaml(mesh: &str, key: &str) -> String {
    format!(
        "type: Mesh\nname: {mesh}\nmtls:\n  enabledBackend: mem\n  backends:\n    - name: mem\n      type: memory\n      conf:\n        keyType: {key}\n"
    )
}

/// The conformance suite's view of the backend: each mesh's CA is built from YAML through the
/// registry, as a control plane builds it.
#[derive(Debug, Default)]
struct MemoryFixture {
    factory: MemoryFactory,
}

#[async_trait]
impl Fixture for MemoryFixture {
    fn name(&self) -> &'static str {
        "memory (custom backend)"
    }

    async fn backend(&self, mesh: &MeshName, lifetime: Duration) -> Arc<dyn CertificateAuthority> {
        let _ = lifetime; // Leaves get the lifetime the request asks for.
        build(&self.factory, &mesh_yaml(mesh.as_str(), "ecdsa-p256"))
            .await
            .expect("the memory backend builds")
    }

    async fn broken(
        &self,
        mesh: &MeshName,
    ) -> (Result<Arc<dyn CertificateAuthority>, Error>, &'static str) {
        (
            build(&self.factory, &mesh_yaml(mesh.as_str(), "dsa")).await,
            "mtls.backends[0].conf.keyType: \"dsa\" is not a key type",
        )
    }
}

async fn build(
    factory: &MemoryFactory,
    yaml: &str,
) -> Result<Arc<dyn CertificateAuthority>, Error> {
    let registry = registry(factory);
    let mesh = Mesh::from_yaml(yaml, &registry)?;
    let (index, backend) = mesh
        .enabled_backend_indexed()
        .ok_or(Error::Inconsistent("mTLS is off".into()))?;
    let ctx = BuildContext::new(
        Arc::new(OverlaySecretStore::new(None)),
        SourcePolicy::local(),
    );
    Ok(registry.build(&ctx, &mesh.name, index, backend).await?.ca)
}

#[tokio::main]
async fn main() {
    let fixture = MemoryFixture::default();
    meshca_conformance::run_all(&fixture).await;
    let calls = &fixture.factory.calls;
    let meshes = calls.by_mesh.lock().map(|m| m.len()).unwrap_or(0);
    println!(
        "the memory backend passed the conformance suite: {} certificates over {meshes} meshes",
        calls.issued.load(Ordering::Relaxed)
    );
    assert!(
        calls.issued.load(Ordering::Relaxed) > 0,
        "the suite issued through the factory"
    );
}

#[cfg(test)]
mod tests {
    // One test per check, as the five backends run the suite.
    meshca_conformance::conformance_suite!(memory, crate::MemoryFixture::default());

    #[test]
    fn the_example_runs() {
        super::main();
    }
}
