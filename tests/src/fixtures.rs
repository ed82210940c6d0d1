//! Fixtures for the local backends. Remote backends add theirs beside these.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use backend_builtin::BuiltinCa;
use backend_builtin::BuiltinConf;
use backend_provided::ProvidedCa;
use ca_core::config::Mesh;
use ca_core::x509::random_serial;
use ca_core::{
    BackendName, CertificateAuthority, DirectorySecretStore, Error, KeyType, MeshName, Scope,
    SecretStore,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::Fixture;

fn backend_name() -> BackendName {
    BackendName::new("ca-1").unwrap()
}

/// The builtin backend with a CA key of the given type, persisted in a temporary directory.
#[derive(Debug)]
pub struct Builtin {
    key: KeyType,
    _dir: tempfile::TempDir,
    store: Arc<DirectorySecretStore>,
}

impl Builtin {
    pub fn new(key: KeyType) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirectorySecretStore::new(dir.path()).unwrap());
        Self {
            key,
            _dir: dir,
            store,
        }
    }

    pub fn p256() -> Self {
        Self::new(KeyType::EcdsaP256)
    }

    pub fn rsa2048() -> Self {
        Self::new(KeyType::Rsa(2048))
    }

    fn conf(&self) -> BuiltinConf {
        let mut conf = BuiltinConf::default();
        conf.ca_key = self.key;
        conf
    }
}

#[async_trait]
impl Fixture for Builtin {
    fn name(&self) -> &'static str {
        match self.key {
            KeyType::Rsa(_) => "builtin (RSA CA)",
            _ => "builtin (P-256 CA)",
        }
    }

    async fn backend(&self, mesh: &MeshName, _lifetime: Duration) -> Arc<dyn CertificateAuthority> {
        let store: Arc<dyn SecretStore> = self.store.clone();
        let ca = BuiltinCa::new(mesh.clone(), backend_name(), self.conf(), store);
        ca.ensure().await.unwrap();
        Arc::new(ca)
    }

    async fn broken(
        &self,
        mesh: &MeshName,
    ) -> (Result<Arc<dyn CertificateAuthority>, Error>, &'static str) {
        // Persisted secrets of two different CAs: the backend must refuse, never regenerate.
        let dir = tempfile::tempdir().unwrap().keep();
        let store = Arc::new(DirectorySecretStore::new(&dir).unwrap());
        let (cert_name, key_name) = BuiltinCa::secret_names(mesh, &backend_name()).unwrap();
        let (cert_a, _) = self_signed_ca("a", Duration::from_secs(3600), SystemTime::now());
        let (_, key_b) = self_signed_ca("b", Duration::from_secs(3600), SystemTime::now());
        store
            .put(Scope::Mesh(mesh), &cert_name, cert_a.as_bytes())
            .await
            .unwrap();
        store
            .put(Scope::Mesh(mesh), &key_name, key_b.as_bytes())
            .await
            .unwrap();
        let store: Arc<dyn SecretStore> = store;
        let ca: Arc<dyn CertificateAuthority> = Arc::new(BuiltinCa::new(
            mesh.clone(),
            backend_name(),
            self.conf(),
            store,
        ));
        (Ok(ca), "inconsistent state")
    }
}

/// A self-signed CA: (cert PEM, key PEM).
pub fn self_signed_ca(cn: &str, validity: Duration, not_before: SystemTime) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p = ca_params(cn, validity, not_before);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn ca_params(cn: &str, validity: Duration, not_before: SystemTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "meshca tests");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
    p.not_before = (not_before - Duration::from_secs(60)).into();
    p.not_after = (not_before + validity).into();
    p
}

/// Files of one provided CA.
#[derive(Debug)]
struct ProvidedFiles {
    cert: PathBuf,
    key: PathBuf,
    not_after: SystemTime,
}

/// The provided backend with a user CA made at test time: a root only, or an intermediate
/// followed by its root; optionally short-lived, to exercise clamping.
#[derive(Debug)]
pub struct Provided {
    intermediate: bool,
    dir: tempfile::TempDir,
    cas: HashMap<&'static str, ProvidedFiles>,
    store: Arc<DirectorySecretStore>,
}

impl Provided {
    fn build(intermediate: bool, validity: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(DirectorySecretStore::new(dir.path().join("store")).unwrap());
        let mut cas = HashMap::new();
        for mesh in ["default", "other"] {
            let now = SystemTime::now();
            // Whole seconds, as X.509 stores them.
            let now = SystemTime::UNIX_EPOCH
                + Duration::from_secs(
                    now.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs(),
                );
            let root_key = KeyPair::generate().unwrap();
            let root_params = ca_params(
                &format!("{mesh} root"),
                Duration::from_secs(20 * 365 * 86400),
                now,
            );
            let root = root_params.self_signed(&root_key).unwrap();
            let (cert_pem, key_pem) = if intermediate {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
                let mut p = ca_params(&format!("{mesh} intermediate"), validity, now);
                p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
                p.use_authority_key_identifier_extension = true;
                let issuer = rcgen::Issuer::from_params(&root_params, &root_key);
                let cert = p.signed_by(&key, &issuer).unwrap();
                (format!("{}{}", cert.pem(), root.pem()), key.serialize_pem())
            } else {
                let mut p = ca_params(&format!("{mesh} root"), validity, now);
                p.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
                let cert = p.self_signed(&root_key).unwrap();
                (cert.pem(), root_key.serialize_pem())
            };
            let cert = dir.path().join(format!("{mesh}-ca.pem"));
            let key = dir.path().join(format!("{mesh}-ca.key"));
            std::fs::write(&cert, cert_pem).unwrap();
            std::fs::write(&key, key_pem).unwrap();
            cas.insert(
                mesh,
                ProvidedFiles {
                    cert,
                    key,
                    not_after: now + validity,
                },
            );
        }
        Self {
            intermediate,
            dir,
            cas,
            store,
        }
    }

    pub fn root() -> Self {
        Self::build(false, Duration::from_secs(5 * 365 * 86400))
    }

    pub fn intermediate() -> Self {
        Self::build(true, Duration::from_secs(5 * 365 * 86400))
    }

    /// An intermediate that expires in two hours: 24h leaves are clamped to it.
    pub fn short_lived() -> Self {
        Self::build(true, Duration::from_secs(2 * 3600))
    }

    async fn load(
        &self,
        mesh: &MeshName,
        cert: &std::path::Path,
        key: &std::path::Path,
        lifetime: Duration,
    ) -> Result<ProvidedCa, Error> {
        let yaml = format!(
            "type: Mesh\nname: {mesh}\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: provided\n    conf:\n      cert:\n        file: {}\n      key:\n        file: {}\n",
            cert.display(),
            key.display()
        );
        let parsed = Mesh::from_yaml(&yaml, &crate::all_backends()).unwrap();
        let backend = parsed.enabled_backend().unwrap();
        let conf: &backend_provided::ProvidedConf = backend.conf_as().unwrap();
        ProvidedCa::load(
            mesh,
            backend.name.clone(),
            conf,
            lifetime,
            self.store.as_ref(),
            &ca_core::SourcePolicy::local(),
        )
        .await
    }
}

#[async_trait]
impl Fixture for Provided {
    fn name(&self) -> &'static str {
        if self.intermediate {
            "provided (intermediate + root)"
        } else {
            "provided (root)"
        }
    }

    async fn backend(&self, mesh: &MeshName, lifetime: Duration) -> Arc<dyn CertificateAuthority> {
        let files = &self.cas[mesh.as_str()];
        Arc::new(
            self.load(mesh, &files.cert, &files.key, lifetime)
                .await
                .unwrap(),
        )
    }

    async fn broken(
        &self,
        mesh: &MeshName,
    ) -> (Result<Arc<dyn CertificateAuthority>, Error>, &'static str) {
        let year = Duration::from_secs(365 * 86400);
        let (cert, key) = self_signed_ca("expired", year, SystemTime::now() - 2 * year);
        let c = self.dir.path().join("expired.pem");
        let k = self.dir.path().join("expired.key");
        std::fs::write(&c, cert).unwrap();
        std::fs::write(&k, key).unwrap();
        let result = self
            .load(mesh, &c, &k, Duration::from_secs(3600))
            .await
            .map(|ca| Arc::new(ca) as Arc<dyn CertificateAuthority>);
        (result, "expired")
    }

    fn ca_not_after(&self) -> Option<SystemTime> {
        Some(self.cas["default"].not_after)
    }
}
