use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::BuiltinConf;
use ca_core::{
    issue_certificate, BackendName, CertificateAuthority, DirectorySecretStore, Error, Identity,
    IssueParams, IssuedCertificate, KeySource, KeyType, MeshName, Scope, SecretStore, SERVICE_TAG,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::BuiltinCa;

const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn mesh() -> MeshName {
    MeshName::new("default").unwrap()
}

fn backend() -> BackendName {
    BackendName::new("ca-1").unwrap()
}

fn builtin(dir: &Path, conf: BuiltinConf) -> BuiltinCa {
    let store = DirectorySecretStore::new(dir).unwrap();
    BuiltinCa::new(mesh(), backend(), conf, Arc::new(store))
}

fn store(dir: &Path) -> DirectorySecretStore {
    DirectorySecretStore::new(dir).unwrap()
}

async fn stored_cert_pem(ca: &BuiltinCa) -> String {
    ca.trust_bundle().await.unwrap().to_pem()
}

/// Every regular (non-temporary) file of the mesh's directory, sorted.
fn secret_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("default"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".tmp-"))
        .collect();
    names.sort();
    names
}

async fn issue(ca: &BuiltinCa, key: KeySource<'_>) -> IssuedCertificate {
    let identity = Identity::new(mesh(), [(SERVICE_TAG, "web")]).unwrap();
    let params = IssueParams::new(identity, key, Duration::from_secs(24 * 3600));
    issue_certificate(ca, params).await.unwrap()
}

/// Verifies `issued` with openssl, an independent implementation.
fn openssl_verify(dir: &Path, issued: &IssuedCertificate) {
    let ca = dir.join("bundle.pem");
    let leaf = dir.join("leaf.pem");
    std::fs::write(&ca, issued.bundle().to_pem()).unwrap();
    std::fs::write(&leaf, issued.chain_pem()).unwrap();
    for purpose in ["sslclient", "sslserver"] {
        let out = Command::new("openssl")
            .arg("verify")
            .arg("-purpose")
            .arg(purpose)
            .arg("-CAfile")
            .arg(&ca)
            .arg(&leaf)
            .output()
            .expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl verify ({purpose}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn unix(t: x509_parser::time::ASN1Time) -> i64 {
    t.timestamp()
}

fn now_unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

#[test]
fn secret_names_follow_kuma() {
    let (cert, key) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    assert_eq!(cert.as_str(), "default.ca-builtin-cert-ca-1");
    assert_eq!(key.as_str(), "default.ca-builtin-key-ca-1");

    // The longest mesh and backend names (DNS labels, 63 characters) still make valid secret names.
    let long_mesh = MeshName::new("m".repeat(63)).unwrap();
    let longest_backend = BackendName::new("b".repeat(63)).unwrap();
    let (cert, key) = BuiltinCa::secret_names(&long_mesh, &longest_backend).unwrap();
    assert_eq!(cert.as_str().len(), 63 + ".ca-builtin-cert-".len() + 63);
    assert_eq!(key.as_str().len(), 63 + ".ca-builtin-key-".len() + 63);
    let dir = tempfile::tempdir().unwrap();
    let ca = builtin(dir.path(), BuiltinConf::default());
    let used: Vec<String> = ca.used_secrets().iter().map(|s| s.to_string()).collect();
    assert_eq!(
        used,
        [
            "default.ca-builtin-cert-ca-1",
            "default.ca-builtin-key-ca-1"
        ]
    );
    assert_eq!(ca.name(), "ca-1");
}

#[tokio::test]
async fn ensure_is_idempotent_across_calls_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let ca = builtin(dir.path(), BuiltinConf::default());
    ca.ensure().await.unwrap();
    let first = stored_cert_pem(&ca).await;
    ca.ensure().await.unwrap();
    assert_eq!(stored_cert_pem(&ca).await, first);

    // A restart: a new value on the same directory loads the same CA.
    let restarted = builtin(dir.path(), BuiltinConf::default());
    restarted.ensure().await.unwrap();
    assert_eq!(stored_cert_pem(&restarted).await, first);
    // Even when the config now asks for another key type: the CA is never regenerated.
    let rsa = BuiltinConf::default().with_ca_key(KeyType::Rsa(2048));
    let reconfigured = builtin(dir.path(), rsa);
    reconfigured.ensure().await.unwrap();
    assert_eq!(stored_cert_pem(&reconfigured).await, first);

    assert_eq!(
        secret_files(dir.path()),
        [
            "default.ca-builtin-cert-ca-1",
            "default.ca-builtin-key-ca-1"
        ]
    );
    // The stored certificate is what the bundle serves.
    let (cert_name, _) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    let stored = store(dir.path())
        .get(Scope::Mesh(&mesh()), &cert_name)
        .await
        .unwrap();
    assert_eq!(stored.unwrap().expose_str().unwrap(), first);
}

#[tokio::test]
async fn secrets_are_private_and_key_is_pkcs8() {
    let dir = tempfile::tempdir().unwrap();
    let ca = builtin(dir.path(), BuiltinConf::default());
    ca.ensure().await.unwrap();
    let s = store(dir.path());
    let (cert_name, key_name) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    for name in [&cert_name, &key_name] {
        let mode = std::fs::metadata(s.path_of(Scope::Mesh(&mesh()), name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    let key = s
        .get(Scope::Mesh(&mesh()), &key_name)
        .await
        .unwrap()
        .unwrap();
    assert!(key
        .expose_str()
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
    let cert = s
        .get(Scope::Mesh(&mesh()), &cert_name)
        .await
        .unwrap()
        .unwrap();
    assert!(cert
        .expose_str()
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));
}

#[tokio::test]
async fn ca_certificate_has_kumas_profile() {
    let dir = tempfile::tempdir().unwrap();
    let ca = builtin(dir.path(), BuiltinConf::default());
    let before = now_unix();
    ca.ensure().await.unwrap();
    let after = now_unix();
    let bundle = ca.trust_bundle().await.unwrap();
    assert_eq!(bundle.certs().len(), 1);
    let (_, cert) = X509Certificate::from_der(&bundle.certs()[0]).unwrap();

    assert_eq!(cert.subject().to_string(), "O=Kuma, OU=Mesh, CN=default");
    assert_eq!(cert.issuer(), cert.subject(), "self-signed");
    cert.verify_signature(None).unwrap();

    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        [GeneralName::URI("spiffe://default")]
    );

    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical);
    assert!(bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, None, "pathlen unconstrained");

    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign());
    assert!(ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    assert!(!ku.value.key_agreement());

    assert!(cert.tbs_certificate.raw_serial().iter().any(|b| *b != 0));
    assert!(cert.serial.bits() > 64, "random 128-bit serial");

    let nb = unix(cert.validity().not_before);
    let na = unix(cert.validity().not_after);
    assert!(
        (before - 11..=after - 9).contains(&nb),
        "backdated 10 s: {nb}"
    );
    let ten_years = i64::try_from(TEN_YEARS.as_secs()).unwrap();
    assert!(
        (before + ten_years - 1..=after + ten_years + 1).contains(&na),
        "valid for caCert.expiration: {na}"
    );

    assert_eq!(
        KeyType::of_spki(cert.public_key().raw).unwrap(),
        KeyType::EcdsaP256
    );
}

#[tokio::test]
async fn expiration_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let conf = BuiltinConf::default().with_ca_expiration(Duration::from_secs(3600));
    let ca = builtin(dir.path(), conf);
    let bundle = ca.trust_bundle().await.unwrap();
    let (_, cert) = X509Certificate::from_der(&bundle.certs()[0]).unwrap();
    let life = unix(cert.validity().not_after) - unix(cert.validity().not_before);
    assert!((3609..=3611).contains(&life), "{life}");

    // Issued leaves are clamped to the CA.
    let issued = issue(&ca, KeySource::Generate(KeyType::EcdsaP256)).await;
    assert!(issued.shortened());

    // A lifetime X.509 cannot express is an error, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let conf =
        BuiltinConf::default().with_ca_expiration(Duration::from_secs(10_000 * 365 * 24 * 3600));
    let err = builtin(dir.path(), conf).ensure().await.unwrap_err();
    assert!(err.to_string().starts_with("caCert.expiration: "), "{err}");
}

#[tokio::test]
async fn issues_leaves_for_generated_keys_and_csrs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = builtin(dir.path(), BuiltinConf::default());
    // No explicit ensure: issue creates the CA lazily.
    let issued = issue(&ca, KeySource::Generate(KeyType::EcdsaP256)).await;
    assert!(issued.key_pem().is_some());
    assert_eq!(issued.chain().len(), 1, "a root is not sent with the leaf");
    assert!(!issued.shortened());
    openssl_verify(dir.path(), &issued);

    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let issued = issue(&ca, KeySource::Csr(csr.der())).await;
    assert!(issued.key_pem().is_none());
    let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
    openssl_verify(dir.path(), &issued);
}

#[tokio::test]
async fn rsa_2048_ca_works() {
    let dir = tempfile::tempdir().unwrap();
    let conf = BuiltinConf::default().with_ca_key(KeyType::Rsa(2048));
    let ca = builtin(dir.path(), conf);
    ca.ensure().await.unwrap();
    let bundle = ca.trust_bundle().await.unwrap();
    let (_, cert) = X509Certificate::from_der(&bundle.certs()[0]).unwrap();
    assert_eq!(
        KeyType::of_spki(cert.public_key().raw).unwrap(),
        KeyType::Rsa(2048)
    );
    let issued = issue(&ca, KeySource::Generate(KeyType::EcdsaP256)).await;
    openssl_verify(dir.path(), &issued);
}

#[tokio::test]
async fn crash_after_key_completes_with_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (_, key_name) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    // What a process that died right after storing the key leaves behind.
    let key = KeyType::EcdsaP256.generate().unwrap();
    s.create_if_absent(Scope::Mesh(&mesh()), &key_name, key.to_pem().expose())
        .await
        .unwrap();

    let ca = builtin(dir.path(), BuiltinConf::default());
    ca.ensure().await.unwrap();
    let bundle = ca.trust_bundle().await.unwrap();
    let (_, cert) = X509Certificate::from_der(&bundle.certs()[0]).unwrap();
    assert_eq!(cert.public_key().raw, key.spki_der().as_slice());
    let stored = s
        .get(Scope::Mesh(&mesh()), &key_name)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.expose(), key.to_pem().expose(), "key kept");
}

#[tokio::test]
async fn mismatched_secrets_are_inconsistent_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    builtin(dir.path(), BuiltinConf::default())
        .ensure()
        .await
        .unwrap();
    let s = store(dir.path());
    let (cert_name, key_name) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    let other = KeyType::EcdsaP256.generate().unwrap();
    s.put(Scope::Mesh(&mesh()), &key_name, other.to_pem().expose())
        .await
        .unwrap();
    let cert_before = s
        .get(Scope::Mesh(&mesh()), &cert_name)
        .await
        .unwrap()
        .unwrap();

    let ca = builtin(dir.path(), BuiltinConf::default());
    for _ in 0..2 {
        let err = ca.ensure().await.unwrap_err();
        assert!(matches!(err, Error::Inconsistent(_)), "{err:?}");
        assert!(err.to_string().contains("does not match"), "{err}");
        assert!(ca.trust_bundle().await.is_err());
    }
    assert_eq!(
        s.get(Scope::Mesh(&mesh()), &cert_name)
            .await
            .unwrap()
            .unwrap(),
        cert_before
    );
    assert_eq!(
        s.get(Scope::Mesh(&mesh()), &key_name)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        other.to_pem().expose()
    );
}

#[tokio::test]
async fn cert_without_key_is_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    builtin(dir.path(), BuiltinConf::default())
        .ensure()
        .await
        .unwrap();
    let s = store(dir.path());
    let (cert_name, key_name) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    std::fs::remove_file(s.path_of(Scope::Mesh(&mesh()), &key_name)).unwrap();
    let cert_before = s
        .get(Scope::Mesh(&mesh()), &cert_name)
        .await
        .unwrap()
        .unwrap();

    let err = builtin(dir.path(), BuiltinConf::default())
        .ensure()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Inconsistent(_)), "{err:?}");
    assert!(err.to_string().contains(key_name.as_str()), "{err}");
    assert!(s
        .get(Scope::Mesh(&mesh()), &key_name)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.get(Scope::Mesh(&mesh()), &cert_name)
            .await
            .unwrap()
            .unwrap(),
        cert_before
    );
}

#[tokio::test]
async fn garbage_in_secrets_is_inconsistent() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let (cert_name, key_name) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    s.put(Scope::Mesh(&mesh()), &key_name, b"not a key")
        .await
        .unwrap();
    let err = builtin(dir.path(), BuiltinConf::default())
        .ensure()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Inconsistent(_)), "{err:?}");
    assert!(s
        .get(Scope::Mesh(&mesh()), &cert_name)
        .await
        .unwrap()
        .is_none());

    let key = KeyType::EcdsaP256.generate().unwrap();
    s.put(Scope::Mesh(&mesh()), &key_name, key.to_pem().expose())
        .await
        .unwrap();
    s.put(Scope::Mesh(&mesh()), &cert_name, b"not a cert")
        .await
        .unwrap();
    let err = builtin(dir.path(), BuiltinConf::default())
        .ensure()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Inconsistent(_)), "{err:?}");
}

#[tokio::test]
async fn debug_does_not_show_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = builtin(dir.path(), BuiltinConf::default());
    ca.ensure().await.unwrap();
    let debug = format!("{ca:?}");
    assert!(debug.contains("loaded: true"), "{debug}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
    let (_, key_name) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    let key = store(dir.path())
        .get(Scope::Mesh(&mesh()), &key_name)
        .await
        .unwrap()
        .unwrap();
    let body: String = key
        .expose_str()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!debug.contains(&body[..16]), "{debug}");
}

#[test]
fn thread_race_ends_with_one_ca() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let n = 8;
        let barrier = Arc::new(Barrier::new(n));
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let barrier = barrier.clone();
                let root = dir.path().to_owned();
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .build()
                        .unwrap();
                    // Each "issuer" has its own store and BuiltinCa on the same directory.
                    let ca = builtin(&root, BuiltinConf::default());
                    barrier.wait();
                    rt.block_on(async {
                        ca.ensure().await.unwrap();
                        stored_cert_pem(&ca).await
                    })
                })
            })
            .collect();
        let pems: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(pems.iter().all(|p| *p == pems[0]), "round {round}: one CA");
        assert_eq!(
            secret_files(dir.path()),
            [
                "default.ca-builtin-cert-ca-1",
                "default.ca-builtin-key-ca-1"
            ]
        );
    }
}

const RACE_DIR_ENV: &str = "MESHCA_BUILTIN_RACE_DIR";
const RACE_START_ENV: &str = "MESHCA_BUILTIN_RACE_START_MS";
const RACE_TEST: &str = "tests::two_process_race_ends_with_one_ca";
const PEM_BEGIN: &str = "=== CA PEM BEGIN ===";
const PEM_END: &str = "=== CA PEM END ===";
const EMPTY_BEFORE: &str = "=== NO CA BEFORE ENSURE ===";

/// Spawns real OS processes (this test binary, re-invoked in child mode) that run `ensure` on the
/// same directory at the same instant.
#[tokio::test]
async fn two_process_race_ends_with_one_ca() {
    if let Ok(dir) = std::env::var(RACE_DIR_ENV) {
        return race_child(Path::new(&dir)).await;
    }
    let exe = std::env::current_exe().unwrap();
    let mut contested = 0;
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let start_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            + 500;
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args(["--exact", RACE_TEST, "--nocapture", "--test-threads=1"])
                    .env(RACE_DIR_ENV, dir.path())
                    .env(RACE_START_ENV, start_ms.to_string())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut pems = Vec::new();
        let mut saw_empty = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "round {round}: child failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let pem = stdout
                .split_once(PEM_BEGIN)
                .and_then(|(_, rest)| rest.split_once(PEM_END))
                .map(|(pem, _)| pem.trim().to_owned())
                .unwrap_or_else(|| panic!("round {round}: child printed no CA: {stdout}"));
            pems.push(pem);
            saw_empty += usize::from(stdout.contains(EMPTY_BEFORE));
        }
        if saw_empty == 2 {
            contested += 1;
        }
        assert!(pems[0].starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(pems[0], pems[1], "round {round}: both processes see one CA");
        assert_eq!(
            secret_files(dir.path()),
            [
                "default.ca-builtin-cert-ca-1",
                "default.ca-builtin-key-ca-1"
            ],
            "round {round}: exactly one CA is stored"
        );
        let ca = builtin(dir.path(), BuiltinConf::default());
        assert_eq!(stored_cert_pem(&ca).await.trim(), pems[0]);
    }
    // The start barrier works: in some round both processes found no CA and had to race.
    assert!(contested > 0, "no round was an actual race");
}

async fn race_child(dir: &Path) {
    let start_ms: u128 = std::env::var(RACE_START_ENV).unwrap().parse().unwrap();
    let ca = builtin(dir, BuiltinConf::default());
    // Spin (not sleep) up to the common start time, so both processes hit the store together.
    while SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        < start_ms
    {
        std::hint::spin_loop();
    }
    let (_, key_name) = BuiltinCa::secret_names(&mesh(), &backend()).unwrap();
    let empty = store(dir)
        .get(Scope::Mesh(&mesh()), &key_name)
        .await
        .unwrap()
        .is_none();
    ca.ensure().await.unwrap();
    let pem = stored_cert_pem(&ca).await;
    if empty {
        println!("{EMPTY_BEFORE}");
    }
    println!("{PEM_BEGIN}\n{pem}\n{PEM_END}");
}

/// A shared store another writer (replica) fills with its CA just before our second read of
/// the certificate: after our key was created (in the overlay), before our certificate is.
#[derive(Debug)]
struct RacedStore {
    lower: Arc<DirectorySecretStore>,
    other: BuiltinCa,
    cert_reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl SecretStore for RacedStore {
    async fn get(
        &self,
        scope: Scope<'_>,
        name: &ca_core::SecretName,
    ) -> Result<Option<ca_core::SecretBytes>, Error> {
        if name.as_str().contains("-cert-")
            && self
                .cert_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
                == 1
        {
            self.other.ensure().await?;
        }
        self.lower.get(scope, name).await
    }
    async fn create_if_absent(
        &self,
        scope: Scope<'_>,
        name: &ca_core::SecretName,
        value: &[u8],
    ) -> Result<(ca_core::SecretBytes, ca_core::Created), Error> {
        self.lower.create_if_absent(scope, name, value).await
    }
    async fn put(
        &self,
        scope: Scope<'_>,
        name: &ca_core::SecretName,
        value: &[u8],
    ) -> Result<(), Error> {
        self.lower.put(scope, name, value).await
    }
}

#[tokio::test]
async fn a_dry_run_racing_another_writer_sees_the_winners_ca() {
    // The dry run's overlay keeps its own key in memory; the other writer's certificate shows
    // through from below. The CA must then be read again as the winner's pair, not refused.
    let dir = tempfile::tempdir().unwrap();
    let lower = Arc::new(store(dir.path()));
    let other = BuiltinCa::new(mesh(), backend(), BuiltinConf::default(), lower.clone());
    let raced = Arc::new(RacedStore {
        lower: lower.clone(),
        other,
        cert_reads: 0.into(),
    });
    let overlay = ca_core::OverlaySecretStore::new(Some(raced));
    let ca = BuiltinCa::new(mesh(), backend(), BuiltinConf::default(), Arc::new(overlay));
    ca.ensure().await.unwrap();
    let winner = builtin(dir.path(), BuiltinConf::default());
    assert_eq!(stored_cert_pem(&ca).await, stored_cert_pem(&winner).await);
}
