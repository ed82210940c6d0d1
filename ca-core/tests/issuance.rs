//! The issuance path: CSR checks and the checks core runs on every backend answer.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ca_core::x509::random_serial;
use ca_core::{
    issue_certificate, validate, CertificateAuthority, CommonNameTemplate, Error, Identity,
    IssueParams, IssueRequest, KeySource, KeyType, LocalCa, MeshName, PrivateKey, SanProfile,
    TrustBundle, UncheckedCertificate,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::CertificateDer;

/// What the test backend does wrong, if anything.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    ExtraSan,
    MissingSan,
    DnsSan,
    OtherKey,
    Expired,
    IsCa,
    OtherCa,
    WrongCn,
    Empty,
    LongerThanAsked,
    ServerAuthOnly,
    /// Signed correctly by the local CA, but the bundle holds another CA.
    LocalButForeignBundle,
}

#[derive(Debug)]
struct TestCa {
    root: LocalCa,
    root_der: CertificateDer<'static>,
    root_key_pem: String,
    fault: Mutex<Fault>,
}

fn make_root(cn: &str) -> (CertificateDer<'static>, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
    let cert = p.self_signed(&key).unwrap();
    (cert.der().clone(), key)
}

impl TestCa {
    fn new() -> Self {
        let (root_der, key) = make_root("test root");
        let pem = key.serialize_pem();
        let root = LocalCa::new(
            "test",
            vec![root_der.clone()],
            PrivateKey::from_pem(pem.as_bytes()).unwrap(),
        )
        .unwrap();
        Self {
            root,
            root_der,
            root_key_pem: pem,
            fault: Mutex::new(Fault::None),
        }
    }

    fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }

    /// Signs a leaf by hand so that it can be wrong in the ways core must catch.
    fn bad_leaf(&self, req: &IssueRequest, fault: Fault) -> CertificateDer<'static> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(10)).into();
        p.not_after = req.not_after().into();
        let mut sans: Vec<String> = req.identity().uri_sans();
        match fault {
            Fault::ExtraSan => sans.push("spiffe://default/admin".into()),
            Fault::MissingSan => {
                sans.pop();
            }
            Fault::Expired => {
                p.not_before = (now - Duration::from_secs(7200)).into();
                p.not_after = (now - Duration::from_secs(3600)).into();
            }
            Fault::IsCa => p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained),
            Fault::WrongCn => p.distinguished_name.push(DnType::CommonName, "admin.mesh"),
            Fault::ServerAuthOnly => {
                p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            }
            Fault::LongerThanAsked => {
                p.not_after = (req.not_after() + Duration::from_secs(3600)).into()
            }
            _ => {}
        }
        p.subject_alt_names = sans
            .iter()
            .map(|s| SanType::URI(s.as_str().try_into().unwrap()))
            .collect();
        if fault == Fault::DnsSan {
            p.subject_alt_names
                .push(SanType::DnsName("evil.example".try_into().unwrap()));
        }
        let other_key = KeyPair::generate().unwrap();
        let (issuer_key, issuer_der) = if fault == Fault::OtherCa {
            let (der, key) = make_root("other root");
            (key, der)
        } else {
            (
                KeyPair::from_pem(&self.root_key_pem).unwrap(),
                self.root_der.clone(),
            )
        };
        let issuer = rcgen::Issuer::from_ca_cert_der(&issuer_der, issuer_key).unwrap();
        let cert = if fault == Fault::OtherKey {
            p.signed_by(&other_key, &issuer).unwrap()
        } else {
            p.signed_by(&subject_spki(req), &issuer).unwrap()
        };
        cert.der().clone()
    }
}

#[async_trait]
impl CertificateAuthority for TestCa {
    fn name(&self) -> &str {
        "test-ca"
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        if *self.fault.lock().unwrap() == Fault::LocalButForeignBundle {
            return TrustBundle::new(vec![make_root("test root").0]);
        }
        TrustBundle::new(vec![self.root_der.clone()])
    }

    async fn issue(&self, req: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        let fault = *self.fault.lock().unwrap();
        // This backend keeps the default `needs_csr() == true`: it always gets a valid CSR for the
        // very key it is asked to certify, also when core generated the key.
        let csr = req.csr_der().expect("a CSR for a backend that needs one");
        let key = ca_core::x509::verify_csr(csr, req.uri_sans()).unwrap();
        assert_eq!(key.spki_der(), req.subject_key().unwrap().spki_der());
        match fault {
            Fault::None | Fault::LocalButForeignBundle => self.root.sign(req),
            Fault::Empty => Ok(UncheckedCertificate::new(Vec::new())),
            f => Ok(UncheckedCertificate::new(vec![self.bad_leaf(req, f)])),
        }
    }
}

fn identity() -> Identity {
    Identity::new(
        MeshName::new("default").unwrap(),
        [("kuma.io/service", "web"), ("version", "v1")],
    )
    .unwrap()
}

fn params(key: KeySource<'_>) -> IssueParams<'_> {
    IssueParams::new(identity(), key, Duration::from_secs(3600))
}

fn csr(key: &KeyPair, sans: &[&str]) -> Vec<u8> {
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans
        .iter()
        .map(|s| SanType::URI((*s).try_into().unwrap()))
        .collect();
    p.serialize_request(key).unwrap().der().to_vec()
}

#[tokio::test]
async fn good_backend_passes_for_every_key_source() {
    let ca = TestCa::new();
    for kt in [KeyType::EcdsaP256, KeyType::EcdsaP384, KeyType::Rsa(2048)] {
        let issued = issue_certificate(&ca, params(KeySource::Generate(kt)))
            .await
            .unwrap();
        assert!(issued.key_pem().is_some(), "{kt}");
        assert!(!issued.shortened());
        let life = issued
            .not_after()
            .duration_since(issued.not_before())
            .unwrap();
        assert_eq!(life, Duration::from_secs(3610), "{kt}: backdated 10s");
        let no_jitter = ca_core::RefreshPolicy::new(0.8, 0.0, Duration::ZERO, Duration::MAX);
        let rotate = issued.refresh_at(&no_jitter, 0.0);
        assert_eq!(
            rotate.duration_since(issued.not_before()).unwrap(),
            Duration::from_secs(10 + 2880),
            "4/5 of the lifetime, counted from issuance"
        );
    }
    let key = KeyPair::generate().unwrap();
    let issued = issue_certificate(&ca, params(KeySource::Csr(&csr(&key, &[]))))
        .await
        .unwrap();
    assert!(issued.key_pem().is_none(), "CSR path never returns a key");
    // A CSR may repeat SANs the identity has.
    let der = csr(&key, &["spiffe://default/web"]);
    issue_certificate(&ca, params(KeySource::Csr(&der)))
        .await
        .unwrap();
}

#[tokio::test]
async fn leaf_profile_is_kuma_compatible() {
    use x509_parser::prelude::*;
    let ca = TestCa::new();
    let tpl = CommonNameTemplate::parse(r#"{{ tag "kuma.io/service" }}.mesh"#).unwrap();
    let issued = issue_certificate(
        &ca,
        params(KeySource::Generate(KeyType::EcdsaP256)).with_common_name(Some(&tpl)),
    )
    .await
    .unwrap();
    let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
    let cn: Vec<_> = leaf
        .subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cn, ["web.mesh"]);
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && ku.key_agreement());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!leaf.is_ca());
    assert!(leaf.raw_serial().len() >= 16);
    let sans = ca_core::x509::describe_sans(&issued.chain()[0]).unwrap();
    assert_eq!(
        sans,
        [
            "URI:spiffe://default/web",
            "URI:kuma://kuma.io/service/web",
            "URI:kuma://version/v1"
        ]
    );
    // RSA leaf keys get no keyAgreement.
    let issued = issue_certificate(&ca, params(KeySource::Generate(KeyType::Rsa(2048))))
        .await
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_agreement());
    // Serials differ.
    let a = issue_certificate(&ca, params(KeySource::Generate(KeyType::EcdsaP256)))
        .await
        .unwrap();
    let b = issue_certificate(&ca, params(KeySource::Generate(KeyType::EcdsaP256)))
        .await
        .unwrap();
    assert_ne!(a.serial_hex(), b.serial_hex());
}

/// The SVID profile (the SPIFFE X509-SVID specification): one URI SAN, the SPIFFE ID; a leaf
/// with a critical key usage of digitalSignature and no certificate signing; not a CA. Core holds
/// a backend's answer to it as to any profile.
#[tokio::test]
async fn svid_profile_is_one_spiffe_id() {
    use x509_parser::prelude::*;
    let ca = TestCa::new();
    let svid = Identity::new(
        MeshName::new("default").unwrap(),
        [("kuma.io/service", "web")],
    )
    .unwrap()
    .with_profile(SanProfile::Svid)
    .unwrap();
    let issued = issue_certificate(
        &ca,
        IssueParams::new(
            svid.clone(),
            KeySource::Generate(KeyType::EcdsaP256),
            Duration::from_secs(3600),
        ),
    )
    .await
    .unwrap();
    let sans = ca_core::x509::describe_sans(&issued.chain()[0]).unwrap();
    assert_eq!(sans, ["URI:spiffe://default/web"]);
    let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    assert!(!leaf.is_ca());
    // A CSR that asks for the Kuma SANs of the same service asks for more than an SVID has.
    let key = KeyPair::generate().unwrap();
    let der = csr(
        &key,
        &["spiffe://default/web", "kuma://kuma.io/service/web"],
    );
    let err = issue_certificate(
        &ca,
        IssueParams::new(
            svid.clone(),
            KeySource::Csr(&der),
            Duration::from_secs(3600),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("kuma://kuma.io/service/web"),
        "{err}"
    );
    // A backend that adds a SAN to an SVID is refused, as for every profile.
    ca.set(Fault::ExtraSan);
    let err = issue_certificate(
        &ca,
        IssueParams::new(
            svid,
            KeySource::Generate(KeyType::EcdsaP256),
            Duration::from_secs(3600),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("leaf has SAN spiffe://default/admin that was not requested"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_backend_answers_are_refused() {
    let ca = TestCa::new();
    let cases = [
        (
            Fault::ExtraSan,
            "leaf has SAN spiffe://default/admin that was not requested",
        ),
        (Fault::MissingSan, "leaf lacks SAN kuma://version/v1"),
        (Fault::DnsSan, "that was not requested"),
        (Fault::OtherKey, "certifies a different key"),
        (Fault::Expired, "already expired"),
        (Fault::IsCa, "leaf is a CA certificate"),
        (Fault::OtherCa, "does not chain to the trust bundle"),
        (
            Fault::WrongCn,
            "leaf common name is [\"admin.mesh\"], expected none",
        ),
        (Fault::Empty, "no certificate"),
        (
            Fault::LocalButForeignBundle,
            "does not chain to the trust bundle",
        ),
        (
            Fault::ServerAuthOnly,
            "does not chain to the trust bundle: RequiredEkuNotFound",
        ),
    ];
    for (fault, msg) in cases {
        ca.set(fault);
        let err = issue_certificate(&ca, params(KeySource::Generate(KeyType::EcdsaP256)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidIssued { .. }),
            "{fault:?}: {err}"
        );
        let text = err.to_string();
        assert!(
            text.starts_with("backend `test-ca` returned an unacceptable certificate: "),
            "{text}"
        );
        assert!(text.contains(msg), "{fault:?}: {text}");
    }
    // An upstream that ignores the requested lifetime is accepted; rotation uses the earlier end.
    ca.set(Fault::LongerThanAsked);
    let issued = issue_certificate(&ca, params(KeySource::Generate(KeyType::EcdsaP256)))
        .await
        .unwrap();
    assert!(issued.not_after() > issued.requested_not_after());
    assert_eq!(issued.effective_not_after(), issued.requested_not_after());
}

#[tokio::test]
async fn bad_csrs_are_refused() {
    let ca = TestCa::new();
    let err = issue_certificate(&ca, params(KeySource::Csr(b"not a csr")))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid CSR: not a DER-encoded PKCS#10"),
        "{err}"
    );

    let key = KeyPair::generate().unwrap();
    let mut der = csr(&key, &[]);
    let n = der.len();
    der[n - 5] ^= 0x55; // inside the signature
    let err = issue_certificate(&ca, params(KeySource::Csr(&der)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("signature does not verify"),
        "{err}"
    );

    let der = csr(&key, &["spiffe://default/admin"]);
    let err = issue_certificate(&ca, params(KeySource::Csr(&der)))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid CSR: asks for SAN URI:spiffe://default/admin which the identity does not have; SANs come only from the identity"
    );

    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::DnsName("web.example".try_into().unwrap())];
    let der = p.serialize_request(&key).unwrap().der().to_vec();
    let err = issue_certificate(&ca, params(KeySource::Csr(&der)))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("asks for SAN DNS:web.example"),
        "{err}"
    );

    let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let err = issue_certificate(&ca, params(KeySource::Csr(&csr(&p521, &[]))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedKey(_)), "{err}");
    assert!(err.to_string().contains("elliptic curve"), "{err}");

    // Keys data planes cannot use, or that weaken RSA, are refused by name (both were issued
    // before: Ed25519 and RSA with exponent 3).
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let err = issue_certificate(&ca, params(KeySource::Csr(&csr(&ed, &[]))))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedKey(_)), "{err}");
    assert!(err.to_string().contains("Ed25519"), "{err}");
    let e3 = openssl_csr_rsa_exponent_3();
    let err = issue_certificate(&ca, params(KeySource::Csr(&e3)))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported key: RSA public exponent 3 (only 65537 is accepted)"
    );
}

/// A DER CSR for an RSA-2048 key with public exponent 3, made by openssl (rcgen cannot).
fn openssl_csr_rsa_exponent_3() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k.pem");
    let csr = dir.path().join("r.der");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (k, c) = (key.to_str().unwrap(), csr.to_str().unwrap());
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-pkeyopt",
        "rsa_keygen_pubexp:3",
        "-out",
        k,
    ]);
    run(&[
        "req", "-new", "-key", k, "-subj", "/CN=x", "-outform", "DER", "-out", c,
    ]);
    std::fs::read(&csr).unwrap()
}

#[tokio::test]
async fn validate_issues_a_test_certificate() {
    let ca = TestCa::new();
    let mesh = MeshName::new("default").unwrap();
    let t = validate(&ca, &mesh, Duration::from_secs(60), None)
        .await
        .unwrap();
    assert_eq!(
        t.certificate.identity().spiffe_id(),
        "spiffe://default/meshca-validation"
    );
    ca.set(Fault::OtherCa);
    let err = validate(&ca, &mesh, Duration::from_secs(60), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not chain"), "{err}");
}

#[test]
fn private_keys_are_redacted() {
    let k = KeyType::EcdsaP256.generate().unwrap();
    assert_eq!(format!("{k:?}"), "PrivateKey(ECDSA P-256, <redacted>)");
    let pem = k.to_pem();
    assert_eq!(format!("{pem:?}"), "<redacted>");
    let back = PrivateKey::from_pem(pem.expose()).unwrap();
    assert_eq!(back.spki_der(), k.spki_der());
}

/// The request's key for rcgen, which signs a public key given as its SubjectPublicKeyInfo.
fn subject_spki(req: &IssueRequest) -> rcgen::SubjectPublicKeyInfo {
    rcgen::SubjectPublicKeyInfo::from_der(req.subject_key().unwrap().spki_der()).unwrap()
}
