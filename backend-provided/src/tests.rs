use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use ca_core::config::Mesh;
use ca_core::Registry;

use crate::{ProvidedConf, ProvidedFactory};
use ca_core::x509::certs_to_pem;
use ca_core::{
    issue_certificate, BackendName, CertificateAuthority, DirectorySecretStore, Error, Identity,
    IssueParams, IssuedCertificate, KeySource, KeyType, MeshName, Scope, SecretName, SecretStore,
    SourcePolicy, SERVICE_TAG,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::ProvidedCa;

const DAY: Duration = Duration::from_secs(24 * 3600);

// === test CAs ===

struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    cert: rcgen::Certificate,
}

impl TestCa {
    fn self_signed(params: CertificateParams) -> Self {
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { params, key, cert }
    }

    fn signed_by(params: CertificateParams, issuer: &TestCa) -> Self {
        let key = KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, &Issuer::from_params(&issuer.params, &issuer.key))
            .unwrap();
        Self { params, key, cert }
    }

    fn cert_pem(&self) -> String {
        certs_to_pem([self.cert.der()])
    }

    fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }
}

/// A CA valid from an hour ago for a year, with keyCertSign + cRLSign.
fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, "Test");
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(365);
    p
}

fn root() -> TestCa {
    TestCa::self_signed(ca_params("Root"))
}

/// A CA and an intermediate signed by it.
fn root_and_intermediate() -> (TestCa, TestCa) {
    let root = root();
    let inter = TestCa::signed_by(ca_params("Intermediate"), &root);
    (root, inter)
}

// === loading ===

fn mesh() -> MeshName {
    MeshName::new("default").unwrap()
}

fn backend() -> BackendName {
    BackendName::new("ca-1").unwrap()
}

/// `conf` of a provided backend whose sources are the YAML snippets `cert` and `key`.
fn conf(cert: &str, key: &str) -> ProvidedConf {
    let yaml = format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    \
         type: provided\n    conf:\n      cert:\n        {cert}\n      key:\n        {key}\n"
    );
    let mesh = Mesh::from_yaml(&yaml, &Registry::empty().with(ProvidedFactory::new())).unwrap();
    let backend = mesh.enabled_backend().unwrap();
    backend.conf_as::<ProvidedConf>().unwrap().clone()
}

/// Stores `cert` and `key` as the mesh secrets `ca-cert` / `ca-key` and loads the CA from them.
async fn load_with(cert: &str, key: &str, lifetime: Duration) -> Result<ProvidedCa, Error> {
    let dir = tempfile::tempdir().unwrap();
    let store = DirectorySecretStore::new(dir.path()).unwrap();
    for (name, value) in [("ca-cert", cert), ("ca-key", key)] {
        store
            .put(
                Scope::Mesh(&mesh()),
                &SecretName::new(name).unwrap(),
                value.as_bytes(),
            )
            .await
            .unwrap();
    }
    let conf = conf("secret: ca-cert", "secret: ca-key");
    ProvidedCa::load(
        &mesh(),
        backend(),
        &conf,
        lifetime,
        &store,
        &SourcePolicy::local(),
    )
    .await
}

async fn load(cert: &str, key: &str) -> Result<ProvidedCa, Error> {
    load_with(cert, key, DAY).await
}

/// The violations of an [`Error::InvalidConfig`] as `field: message` lines.
fn violations(result: Result<ProvidedCa, Error>) -> Vec<String> {
    match result.unwrap_err() {
        Error::InvalidConfig(v) => v.iter().map(ToString::to_string).collect(),
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

/// Asserts an [`Error::InvalidConfig`] with a violation at `field` whose message contains
/// `needle`; returns that violation as `field: message`.
fn assert_invalid(result: Result<ProvidedCa, Error>, field: &str, needle: &str) -> String {
    let all = violations(result);
    all.iter()
        .find(|v| v.starts_with(&format!("{field}: ")) && v.contains(needle))
        .unwrap_or_else(|| panic!("no violation at {field} containing {needle:?} in {all:#?}"))
        .clone()
}

// === issuing ===

async fn issue(ca: &ProvidedCa, key: KeySource<'_>, lifetime: Duration) -> IssuedCertificate {
    let identity = Identity::new(mesh(), [(SERVICE_TAG, "web")]).unwrap();
    let params = IssueParams::new(identity, key, lifetime);
    issue_certificate(ca, params).await.unwrap()
}

fn csr() -> (KeyPair, Vec<u8>) {
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    (key, csr.der().to_vec())
}

/// Verifies `issued` with openssl, an independent implementation: the bundle as trust store, the
/// rest of the chain as untrusted intermediates.
fn openssl_verify(issued: &IssuedCertificate) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("bundle.pem");
    let leaf = dir.path().join("leaf.pem");
    let untrusted = dir.path().join("untrusted.pem");
    std::fs::write(&ca, issued.bundle().to_pem()).unwrap();
    std::fs::write(&leaf, certs_to_pem(&issued.chain()[..1])).unwrap();
    let mut args: Vec<&Path> = vec![];
    if issued.chain().len() > 1 {
        std::fs::write(&untrusted, certs_to_pem(&issued.chain()[1..])).unwrap();
        args.push(&untrusted);
    }
    for purpose in ["sslclient", "sslserver"] {
        let mut cmd = Command::new("openssl");
        cmd.args(["verify", "-purpose", purpose, "-CAfile"])
            .arg(&ca);
        if let Some(u) = args.first() {
            cmd.arg("-untrusted").arg(u);
        }
        let out = cmd.arg(&leaf).output().expect("openssl must be installed");
        assert!(
            out.status.success(),
            "openssl verify ({purpose}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs openssl with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA made by openssl: `newkey` is the `-newkey` argument (or `None` with an
/// existing `key.pem` in `dir`). Returns (cert PEM, key PEM).
fn openssl_ca(dir: &Path, newkey: Option<&[&str]>) -> (String, String) {
    let mut args = vec![
        "req",
        "-x509",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/C=US/O=Ops/CN=Openssl CA",
    ];
    args.extend([
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "cert.pem",
    ]);
    match newkey {
        Some(k) => {
            args.push("-newkey");
            args.extend(k);
            args.extend(["-keyout", "key.pem"]);
        }
        None => args.extend(["-key", "key.pem"]),
    }
    openssl(dir, &args);
    (
        std::fs::read_to_string(dir.join("cert.pem")).unwrap(),
        std::fs::read_to_string(dir.join("key.pem")).unwrap(),
    )
}

// === good CAs ===

#[tokio::test]
async fn root_only_ca_issues_verifiable_leaves() {
    let root = root();
    let ca = load(&root.cert_pem(), &root.key_pem()).await.unwrap();
    assert!(ca.warnings().is_empty(), "{:?}", ca.warnings());
    assert_eq!(ca.name(), "ca-1");
    ca.ensure().await.unwrap();

    let bundle = ca.trust_bundle().await.unwrap();
    assert_eq!(bundle.certs(), [root.cert.der().clone()]);

    let issued = issue(&ca, KeySource::Generate(KeyType::EcdsaP256), DAY).await;
    assert_eq!(
        issued.chain().len(),
        1,
        "the root is not sent with the leaf"
    );
    assert!(issued.key_pem().is_some());
    assert!(!issued.shortened());
    let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
    assert_eq!(leaf.issuer().to_string(), "O=Test, CN=Root");
    assert!(!leaf.is_ca());
    openssl_verify(&issued);

    let (key, csr) = csr();
    let issued = issue(&ca, KeySource::Csr(&csr), DAY).await;
    assert!(issued.key_pem().is_none());
    let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
    openssl_verify(&issued);
}

#[tokio::test]
async fn intermediate_chain_is_the_bundle_and_leaves_chain_up_to_it() {
    let (root, inter) = root_and_intermediate();
    let chain_pem = format!("{}{}", inter.cert_pem(), root.cert_pem());
    let ca = load(&chain_pem, &inter.key_pem()).await.unwrap();
    assert!(ca.warnings().is_empty(), "{:?}", ca.warnings());

    let bundle = ca.trust_bundle().await.unwrap();
    assert_eq!(
        bundle.certs(),
        [inter.cert.der().clone(), root.cert.der().clone()]
    );
    assert_eq!(bundle.to_pem(), chain_pem);

    for key in [
        KeySource::Generate(KeyType::EcdsaP256),
        KeySource::Generate(KeyType::Rsa(2048)),
    ] {
        let issued = issue(&ca, key, DAY).await;
        assert_eq!(
            issued.chain()[1..],
            [inter.cert.der().clone(), root.cert.der().clone()]
        );
        let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
        assert_eq!(leaf.issuer().to_string(), "O=Test, CN=Intermediate");
        openssl_verify(&issued);
    }
    let (_, csr) = csr();
    let issued = issue(&ca, KeySource::Csr(&csr), DAY).await;
    openssl_verify(&issued);

    // Only the root as trust anchor: the leaf still verifies through the intermediates it
    // carries, so data planes trusting just the root accept it.
    let root_only = ca_core::TrustBundle::new(vec![root.cert.der().clone()]).unwrap();
    root_only
        .verify_chain(&issued.chain()[0], &issued.chain()[1..], SystemTime::now())
        .unwrap();
}

#[tokio::test]
async fn openssl_made_ca_with_sec1_key_and_ec_parameters_works() {
    let dir = tempfile::tempdir().unwrap();
    // `openssl ecparam -genkey` writes an `EC PARAMETERS` block before the SEC1 key.
    openssl(
        dir.path(),
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-out",
            "key.pem",
        ],
    );
    let (cert, key) = openssl_ca(dir.path(), None);
    assert!(key.contains("BEGIN EC PARAMETERS"), "{key}");
    assert!(key.contains("BEGIN EC PRIVATE KEY"), "{key}");
    let ca = load(&cert, &key).await.unwrap();
    let issued = issue(&ca, KeySource::Generate(KeyType::EcdsaP256), DAY).await;
    openssl_verify(&issued);

    // A PKCS#1 RSA key, as `openssl genrsa -traditional` writes it.
    let dir = tempfile::tempdir().unwrap();
    openssl(
        dir.path(),
        &["genrsa", "-traditional", "-out", "key.pem", "2048"],
    );
    let (cert, key) = openssl_ca(dir.path(), None);
    assert!(key.contains("BEGIN RSA PRIVATE KEY"), "{key}");
    let ca = load(&cert, &key).await.unwrap();
    let issued = issue(&ca, KeySource::Generate(KeyType::EcdsaP256), DAY).await;
    openssl_verify(&issued);
}

#[tokio::test]
async fn sources_other_than_secrets_work_and_only_secrets_are_used() {
    let root = root();
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("ca.pem");
    std::fs::write(&cert_file, root.cert_pem()).unwrap();
    let store = DirectorySecretStore::new(dir.path().join("store")).unwrap();
    store
        .put(
            Scope::Mesh(&mesh()),
            &SecretName::new("ca-key").unwrap(),
            root.key_pem().as_bytes(),
        )
        .await
        .unwrap();
    let from_file = conf(&format!("file: {}", cert_file.display()), "secret: ca-key");
    let ca = ProvidedCa::load(
        &mesh(),
        backend(),
        &from_file,
        DAY,
        &store,
        &SourcePolicy::local(),
    )
    .await
    .unwrap();
    assert_eq!(ca.used_secrets(), [SecretName::new("ca-key").unwrap()]);

    let both = load(&root.cert_pem(), &root.key_pem()).await.unwrap();
    assert_eq!(
        both.used_secrets(),
        [
            SecretName::new("ca-cert").unwrap(),
            SecretName::new("ca-key").unwrap()
        ]
    );
}

#[tokio::test]
async fn debug_does_not_show_the_key() {
    let root = root();
    let ca = load(&root.cert_pem(), &root.key_pem()).await.unwrap();
    let debug = format!("{ca:?}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(!debug.contains("PRIVATE"), "{debug}");
    let body: String = root
        .key_pem()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!debug.contains(&body[..16]), "{debug}");
}

// === validity ===

#[tokio::test]
async fn expired_ca_is_refused() {
    let mut p = ca_params("Old");
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(30);
    p.not_after = now - time::Duration::days(1);
    let old = TestCa::self_signed(p);
    let msg = assert_invalid(
        load(&old.cert_pem(), &old.key_pem()).await,
        "cert[0]",
        "expired",
    );
    // The path names the certificate (`cert[0]`), as Kuma's do.
    assert!(msg.starts_with("cert[0]: expired (notAfter "), "{msg}");

    // An expired parent is refused too, and named.
    let mut p = ca_params("Old root");
    p.not_before = now - time::Duration::days(30);
    p.not_after = now - time::Duration::days(1);
    let old_root = TestCa::self_signed(p);
    let inter = TestCa::signed_by(ca_params("Intermediate"), &old_root);
    let chain = format!("{}{}", inter.cert_pem(), old_root.cert_pem());
    let msg = assert_invalid(load(&chain, &inter.key_pem()).await, "cert[1]", "expired");
    assert!(msg.starts_with("cert[1]: expired"), "{msg}");
}

#[tokio::test]
async fn not_yet_valid_ca_is_refused() {
    let mut p = ca_params("Future");
    let now = OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(1);
    p.not_after = now + time::Duration::days(30);
    let future = TestCa::self_signed(p);
    assert_invalid(
        load(&future.cert_pem(), &future.key_pem()).await,
        "cert[0]",
        "not valid yet",
    );
}

#[tokio::test]
async fn near_expiry_warns_and_leaves_are_clamped() {
    let mut p = ca_params("Short");
    p.not_after = OffsetDateTime::now_utc() + time::Duration::hours(2);
    let short = TestCa::self_signed(p);
    let ca = load_with(&short.cert_pem(), &short.key_pem(), DAY)
        .await
        .unwrap();
    assert_eq!(ca.warnings().len(), 1, "{:?}", ca.warnings());
    let warning = &ca.warnings()[0];
    assert!(
        warning.contains("CA expires in less than the data plane certificate lifetime"),
        "{warning}"
    );
    assert!(warning.contains("CN=Short"), "{warning}");

    let issued = issue(&ca, KeySource::Generate(KeyType::EcdsaP256), DAY).await;
    assert!(issued.shortened());
    let (_, ca_cert) = X509Certificate::from_der(short.cert.der()).unwrap();
    let ca_not_after = SystemTime::UNIX_EPOCH
        + Duration::from_secs(u64::try_from(ca_cert.validity().not_after.timestamp()).unwrap());
    assert_eq!(issued.not_after(), ca_not_after, "clamped to the CA");
    assert!(issued.requested_not_after() > ca_not_after);
    assert_eq!(issued.effective_not_after(), ca_not_after);
    openssl_verify(&issued);

    // A lifetime that fits: no warning, no clamping.
    let ca = load_with(
        &short.cert_pem(),
        &short.key_pem(),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert!(ca.warnings().is_empty(), "{:?}", ca.warnings());
    let issued = issue(
        &ca,
        KeySource::Generate(KeyType::EcdsaP256),
        Duration::from_secs(3600),
    )
    .await;
    assert!(!issued.shortened());
}

#[tokio::test]
async fn parent_expiring_before_the_signing_ca_is_reported() {
    let mut p = ca_params("Short root");
    p.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
    let root = TestCa::self_signed(p);
    let inter = TestCa::signed_by(ca_params("Intermediate"), &root);
    let chain = format!("{}{}", inter.cert_pem(), root.cert_pem());
    let ca = load(&chain, &inter.key_pem()).await.unwrap();
    assert_eq!(ca.warnings().len(), 1, "{:?}", ca.warnings());
    assert!(
        ca.warnings()[0]
            .contains("certificate 2 of 2 (`O=Test, CN=Short root`) expires before the signing CA"),
        "{:?}",
        ca.warnings()
    );
}

#[tokio::test]
async fn ca_expiring_after_load_stops_issuing() {
    let mut p = ca_params("Brief");
    p.not_after = OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let brief = TestCa::self_signed(p);
    let ca = load(&brief.cert_pem(), &brief.key_pem()).await.unwrap();
    assert_eq!(ca.warnings().len(), 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let identity = Identity::new(mesh(), [(SERVICE_TAG, "web")]).unwrap();
    let params = IssueParams::new(identity, KeySource::Generate(KeyType::EcdsaP256), DAY);
    let err = issue_certificate(&ca, params).await.unwrap_err();
    assert!(matches!(err, Error::InvalidCa { .. }), "{err:?}");
    assert!(err.to_string().contains("has expired"), "{err}");
}

// === key and PEM ===

#[tokio::test]
async fn key_must_match_the_first_certificate() {
    let root = root();
    let other = KeyPair::generate().unwrap();
    assert_invalid(
        load(&root.cert_pem(), &other.serialize_pem()).await,
        "cert",
        "not a valid TLS key pair: tls: private key does not match public key",
    );
    // The parent's key is not the signing CA's key either.
    let (root, inter) = root_and_intermediate();
    let chain = format!("{}{}", inter.cert_pem(), root.cert_pem());
    assert_invalid(
        load(&chain, &root.key_pem()).await,
        "cert",
        "not a valid TLS key pair: tls: private key does not match public key",
    );
}

#[tokio::test]
async fn no_pem_data_is_refused() {
    let root = root();
    assert_invalid(
        load("not a certificate", &root.key_pem()).await,
        "cert",
        "not a valid TLS key pair: tls: failed to find any PEM data in certificate input",
    );
    assert_invalid(
        load("", &root.key_pem()).await,
        "cert",
        "not a valid TLS key pair: tls: failed to find any PEM data in certificate input",
    );
    // A key where the certificate belongs.
    assert_invalid(
        load(&root.key_pem(), &root.key_pem()).await,
        "cert",
        "not a valid TLS key pair: tls: failed to find any PEM data in certificate input",
    );
    assert_invalid(
        load(&root.cert_pem(), "not a key").await,
        "cert",
        "not a valid TLS key pair: tls: failed to find any PEM data in key input",
    );
    assert_invalid(
        load(&root.cert_pem(), &root.cert_pem()).await,
        "cert",
        "not a valid TLS key pair: tls: failed to find any PEM data in key input",
    );
    // PEM framing around garbage.
    let garbage = "-----BEGIN PRIVATE KEY-----\naGVsbG8=\n-----END PRIVATE KEY-----\n";
    assert_invalid(
        load(&root.cert_pem(), garbage).await,
        "cert",
        "unsupported key",
    );
}

#[tokio::test]
async fn encrypted_key_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let root = root();
    std::fs::write(dir.path().join("plain.pem"), root.key_pem()).unwrap();
    openssl(
        dir.path(),
        &[
            "pkcs8",
            "-topk8",
            "-in",
            "plain.pem",
            "-out",
            "enc.pem",
            "-passout",
            "pass:secret",
            "-v2",
            "aes-256-cbc",
        ],
    );
    let enc = std::fs::read_to_string(dir.path().join("enc.pem")).unwrap();
    assert_invalid(load(&root.cert_pem(), &enc).await, "cert", "is encrypted");
}

#[tokio::test]
async fn unsupported_key_types_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_ca(
        dir.path(),
        Some(&["ec", "-pkeyopt", "ec_paramgen_curve:P-521"]),
    );
    let msg = assert_invalid(load(&cert, &key).await, "cert[0]", "unsupported key");
    assert!(msg.contains("elliptic curve"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = openssl_ca(dir.path(), Some(&["rsa:1024"]));
    let msg = assert_invalid(load(&cert, &key).await, "cert[0]", "unsupported key");
    assert!(msg.contains("RSA-1024"), "{msg}");
}

// === CA profile ===

#[tokio::test]
async fn certificate_without_ca_flag_is_refused() {
    for is_ca in [IsCa::NoCa, IsCa::ExplicitNoCa] {
        let mut p = ca_params("Not a CA");
        p.is_ca = is_ca;
        let leaf = TestCa::self_signed(p);
        assert_invalid(
            load(&leaf.cert_pem(), &leaf.key_pem()).await,
            "cert[0]",
            "basic constraint 'CA' must be set to 'true'",
        );
    }
}

#[tokio::test]
async fn ca_without_key_cert_sign_is_refused() {
    for usages in [
        vec![KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature],
        vec![],
    ] {
        let mut p = ca_params("No keyCertSign");
        p.key_usages = usages;
        let ca = TestCa::self_signed(p);
        assert_invalid(
            load(&ca.cert_pem(), &ca.key_pem()).await,
            "cert[0]",
            "'keyCertSign' must be set",
        );
    }
}

#[tokio::test]
async fn ca_with_key_agreement_is_refused() {
    let mut p = ca_params("Key agreement");
    p.key_usages.push(KeyUsagePurpose::KeyAgreement);
    let ca = TestCa::self_signed(p);
    assert_invalid(
        load(&ca.cert_pem(), &ca.key_pem()).await,
        "cert[0]",
        "'keyAgreement' must NOT be set",
    );
}

#[tokio::test]
async fn a_bad_parent_is_refused_and_named() {
    let root = root();
    let mut p = ca_params("Intermediate");
    p.key_usages.push(KeyUsagePurpose::KeyAgreement);
    let bad_inter = TestCa::signed_by(p, &root);
    let signing = TestCa::signed_by(ca_params("Signing"), &bad_inter);
    let chain = format!(
        "{}{}{}",
        signing.cert_pem(),
        bad_inter.cert_pem(),
        root.cert_pem()
    );
    let msg = assert_invalid(
        load(&chain, &signing.key_pem()).await,
        "cert[1]",
        "keyAgreement",
    );
    assert_eq!(
        msg,
        "cert[1]: key usage extension 'keyAgreement' must NOT be set (see X509-SVID: Appendix A. \
         X.509 Field Reference)"
    );
}

// === chain order ===

#[tokio::test]
async fn chain_out_of_order_is_refused() {
    // root -> inter1 -> inter2 (signing), listed as inter2, root, inter1.
    let root = root();
    let inter1 = TestCa::signed_by(ca_params("Inter 1"), &root);
    let inter2 = TestCa::signed_by(ca_params("Inter 2"), &inter1);
    let good = format!(
        "{}{}{}",
        inter2.cert_pem(),
        inter1.cert_pem(),
        root.cert_pem()
    );
    let ca = load(&good, &inter2.key_pem()).await.unwrap();
    let issued = issue(&ca, KeySource::Generate(KeyType::EcdsaP256), DAY).await;
    assert_eq!(issued.chain().len(), 4);
    openssl_verify(&issued);

    let shuffled = format!(
        "{}{}{}",
        inter2.cert_pem(),
        root.cert_pem(),
        inter1.cert_pem()
    );
    let msg = assert_invalid(
        load(&shuffled, &inter2.key_pem()).await,
        "cert[0]",
        "out of order",
    );
    assert!(
        msg.starts_with("cert[0]: issued by `O=Test, CN=Inter 1`"),
        "{msg}"
    );
    assert!(
        msg.contains("not by the next certificate `O=Test, CN=Root`"),
        "{msg}"
    );

    // Root first: its key would have to be given, and the chain is still backwards.
    let backwards = format!("{}{}", root.cert_pem(), inter1.cert_pem());
    assert_invalid(
        load(&backwards, &root.key_pem()).await,
        "cert[0]",
        "out of order",
    );
}

#[tokio::test]
async fn parent_with_the_right_name_but_wrong_key_is_refused() {
    let real_root = root();
    let impostor = root(); // same subject, another key
    let inter = TestCa::signed_by(ca_params("Intermediate"), &real_root);
    let chain = format!("{}{}", inter.cert_pem(), impostor.cert_pem());
    assert_invalid(
        load(&chain, &inter.key_pem()).await,
        "cert[0]",
        "signature does not verify",
    );
}

// === data sources ===

#[tokio::test]
async fn missing_secret_is_named() {
    let root = root();
    let dir = tempfile::tempdir().unwrap();
    let store = DirectorySecretStore::new(dir.path()).unwrap();
    store
        .put(
            Scope::Mesh(&mesh()),
            &SecretName::new("ca-key").unwrap(),
            root.key_pem().as_bytes(),
        )
        .await
        .unwrap();
    let missing = conf("secret: missing-cert", "secret: ca-key");
    let err = ProvidedCa::load(
        &mesh(),
        backend(),
        &missing,
        DAY,
        &store,
        &SourcePolicy::local(),
    )
    .await
    .unwrap_err();
    // Kuma: a source that cannot be read is a violation at its field ("could not load data").
    let Error::InvalidConfig(v) = err else {
        panic!("expected InvalidConfig, got {err:?}")
    };
    assert_eq!(
        v.to_string(),
        "cert: could not load data: secret `missing-cert` not found in mesh `default`"
    );

    let unreadable = conf("secret: ca-key", "file: /nonexistent/meshca/key.pem");
    let err = ProvidedCa::load(
        &mesh(),
        backend(),
        &unreadable,
        DAY,
        &store,
        &SourcePolicy::local(),
    )
    .await
    .unwrap_err();
    let Error::InvalidConfig(v) = err else {
        panic!("expected InvalidConfig, got {err:?}")
    };
    let v: Vec<String> = v.iter().map(ToString::to_string).collect();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].starts_with("key: could not load data: "), "{v:?}");
    assert!(v[0].contains("/nonexistent/meshca/key.pem"), "{v:?}");
}

// === Kuma parity (issue 15) ===
//
// Kuma v2.14.3 `pkg/plugins/ca/provided/ca_cert_validator_test.go` ("should reject invalid
// input") and `manager_test.go` ("should Validate invalid config"): the same inputs, Kuma's
// fields and messages. `load_at` puts them under the backend's `conf` path.

const NOT_CA: &str =
    "basic constraint 'CA' must be set to 'true' (see X509-SVID: 4.1. Basic Constraints)";
const NO_CERT_SIGN: &str =
    "key usage extension 'keyCertSign' must be set (see X509-SVID: 4.3. Key Usage)";
const KEY_AGREEMENT: &str = "key usage extension 'keyAgreement' must NOT be set (see X509-SVID: \
                             Appendix A. X.509 Field Reference)";

/// A self-signed RSA-2048 certificate made from `params` (Kuma's `NewSelfSignedCert`).
fn kuma_self_signed(params: CertificateParams) -> TestCa {
    let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap_or_else(|_| {
        // rcgen cannot generate RSA keys with every crypto provider; P-256 tests the same rules.
        KeyPair::generate().unwrap()
    });
    let cert = params.self_signed(&key).unwrap();
    TestCa { params, key, cert }
}

fn kuma_params(is_ca: IsCa, usages: Vec<KeyUsagePurpose>) -> CertificateParams {
    let mut p = ca_params("Kuma case");
    p.is_ca = is_ca;
    p.key_usages = usages;
    p
}

#[tokio::test]
async fn kuma_empty_and_plain_text_key_pairs() {
    let no_pem =
        "cert: not a valid TLS key pair: tls: failed to find any PEM data in certificate input";
    // "empty key pair"
    assert_eq!(violations(load("", "").await), [no_pem]);
    // "bad plain text values"
    assert_eq!(violations(load("CERT", "KEY").await), [no_pem]);
    // manager_test "config with invalid cert": inline `dGVzdA==` ("test") for both.
    assert_eq!(violations(load("test", "test").await), [no_pem]);
}

#[tokio::test]
async fn kuma_cert_and_key_do_not_match() {
    let (a, b) = (root(), root());
    assert_eq!(
        violations(load(&a.cert_pem(), &b.key_pem()).await),
        ["cert: not a valid TLS key pair: tls: private key does not match public key"]
    );
}

#[tokio::test]
async fn kuma_every_problem_of_a_certificate_is_listed() {
    // "certificate without basic constraint `CA`" (no extensions at all).
    let ca = kuma_self_signed(kuma_params(IsCa::NoCa, Vec::new()));
    assert_eq!(
        violations(load(&ca.cert_pem(), &ca.key_pem()).await),
        [
            format!("cert[0]: {NOT_CA}"),
            format!("cert[0]: {NO_CERT_SIGN}")
        ]
    );
    // "certificate without key usage extension `keyCertSign`"
    let ca = kuma_self_signed(kuma_params(
        IsCa::Ca(BasicConstraints::Unconstrained),
        Vec::new(),
    ));
    assert_eq!(
        violations(load(&ca.cert_pem(), &ca.key_pem()).await),
        [format!("cert[0]: {NO_CERT_SIGN}")]
    );
    // "certificate with key usage extension `keyAgreement`"
    let ca = kuma_self_signed(kuma_params(
        IsCa::Ca(BasicConstraints::Unconstrained),
        vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::KeyAgreement,
        ],
    ));
    assert_eq!(
        violations(load(&ca.cert_pem(), &ca.key_pem()).await),
        [format!("cert[0]: {KEY_AGREEMENT}")]
    );
    // "certificate with multiple violations"
    let ca = kuma_self_signed(kuma_params(
        IsCa::NoCa,
        vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyAgreement,
            KeyUsagePurpose::KeyEncipherment,
        ],
    ));
    assert_eq!(
        violations(load(&ca.cert_pem(), &ca.key_pem()).await),
        [
            format!("cert[0]: {NOT_CA}"),
            format!("cert[0]: {NO_CERT_SIGN}"),
            format!("cert[0]: {KEY_AGREEMENT}")
        ]
    );
}

#[tokio::test]
async fn kuma_paths_under_the_backend_conf_and_unreadable_files() {
    // manager_test "config with empty secret" (files): Kuma reports the first load error at both
    // fields; meshca reports each source's own error at its own field.
    let missing = conf(
        "file: /tmp/non-existing-file-meshca",
        "file: /tmp/non-existing-file-meshca",
    );
    let (mesh, name, sources) = (mesh(), backend(), SourcePolicy::local());
    let store: std::sync::Arc<dyn ca_core::SecretStore> =
        std::sync::Arc::new(ca_core::OverlaySecretStore::new(None));
    let timing = ca_core::config::Timing::new(DAY, DAY, DAY);
    let spec = |at: &str| {
        ca_core::BuildSpec::from_parts(at, &mesh, &name, timing, store.clone(), &sources)
    };
    let err = ProvidedCa::load_at(&spec("mtls.backends[0].conf"), &missing)
        .await
        .unwrap_err();
    let Error::InvalidConfig(v) = err else {
        panic!("expected InvalidConfig, got {err:?}")
    };
    let fields: Vec<&str> = v.iter().map(|v| v.field.as_str()).collect();
    assert_eq!(
        fields,
        ["mtls.backends[0].conf.cert", "mtls.backends[0].conf.key"]
    );
    assert!(v
        .iter()
        .all(|v| v.message.starts_with("could not load data: ")
            && v.message.contains("/tmp/non-existing-file-meshca")));

    // A certificate problem under the same prefix.
    let leaf = kuma_self_signed(kuma_params(
        IsCa::Ca(BasicConstraints::Unconstrained),
        Vec::new(),
    ));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.pem"), leaf.cert_pem()).unwrap();
    std::fs::write(dir.path().join("k.pem"), leaf.key_pem()).unwrap();
    let files = conf(
        &format!("file: {}", dir.path().join("c.pem").display()),
        &format!("file: {}", dir.path().join("k.pem").display()),
    );
    let err = ProvidedCa::load_at(&spec("mtls.backends[2].conf"), &files)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("invalid mesh configuration: mtls.backends[2].conf.cert[0]: {NO_CERT_SIGN}")
    );
}
