//! Backends whose upstream makes the data plane key (Vault's `issue` endpoint): core generates
//! none, checks the leaf against the key the backend returns, hands that key to the caller, and
//! refuses a caller's CSR clearly.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use ca_core::x509::random_serial;
use ca_core::{
    issue_certificate, CertificateAuthority, Error, Identity, IssueParams, IssueRequest,
    IssuedProblem, KeySource, KeyType, MeshName, TrustBundle, UncheckedCertificate,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    /// The key the leaf certifies.
    Right,
    /// Another key than the leaf's.
    Mismatched,
    /// No key at all.
    NoKey,
}

struct Upstream {
    root_der: CertificateDer<'static>,
    root_key: String,
    answer: Mutex<Answer>,
    seen: Mutex<Vec<(bool, KeyType)>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upstream")
    }
}

impl Upstream {
    fn new(answer: Answer) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "upstream root");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
        Self {
            root_der: p.self_signed(&key).unwrap().der().clone(),
            root_key: key.serialize_pem(),
            answer: Mutex::new(answer),
            seen: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl CertificateAuthority for Upstream {
    fn name(&self) -> &str {
        "upstream"
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        TrustBundle::new(vec![self.root_der.clone()])
    }

    async fn issue(&self, req: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        self.seen
            .lock()
            .unwrap()
            .push((req.subject_key().is_some(), req.key_type()));
        let leaf_key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.not_before = req.not_before().into();
        p.not_after = req.not_after().into();
        p.subject_alt_names = req
            .identity()
            .uri_sans()
            .iter()
            .map(|s| SanType::URI(s.as_str().try_into().unwrap()))
            .collect();
        let issuer =
            Issuer::from_ca_cert_der(&self.root_der, KeyPair::from_pem(&self.root_key).unwrap())
                .unwrap();
        let leaf = p.signed_by(&leaf_key, &issuer).unwrap().der().clone();
        match *self.answer.lock().unwrap() {
            Answer::Right => UncheckedCertificate::with_upstream_key(
                vec![leaf],
                leaf_key.serialize_pem().as_bytes(),
            ),
            Answer::Mismatched => UncheckedCertificate::with_upstream_key(
                vec![leaf],
                KeyPair::generate().unwrap().serialize_pem().as_bytes(),
            ),
            Answer::NoKey => Ok(UncheckedCertificate::new(vec![leaf])),
        }
    }

    fn generates_keys(&self) -> bool {
        true
    }
}

fn params(key: KeySource<'_>) -> IssueParams<'_> {
    let mesh = MeshName::new("default").unwrap();
    let identity = Identity::new(mesh, [("kuma.io/service", "web")]).unwrap();
    IssueParams::new(identity, key, Duration::from_secs(3600))
}

#[tokio::test]
async fn the_upstream_key_reaches_the_caller() {
    let ca = Upstream::new(Answer::Right);
    let issued = issue_certificate(&ca, params(KeySource::Generate(KeyType::Rsa(2048))))
        .await
        .unwrap();
    // Core generated nothing: the backend saw no subject key, only the type asked for.
    assert_eq!(*ca.seen.lock().unwrap(), [(false, KeyType::Rsa(2048))]);
    let key = KeyPair::from_pem(issued.key_pem().unwrap().expose_str().unwrap()).unwrap();
    let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice()
    );
    // The key is redacted in Debug output.
    assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
}

#[tokio::test]
async fn a_key_that_does_not_match_the_leaf_is_refused() {
    let ca = Upstream::new(Answer::Mismatched);
    let err = issue_certificate(&ca, params(KeySource::Generate(KeyType::EcdsaP256)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidIssued {
                problem: IssuedProblem::WrongKey,
                ..
            }
        ),
        "{err}"
    );
    *ca.answer.lock().unwrap() = Answer::NoKey;
    let err = issue_certificate(&ca, params(KeySource::Generate(KeyType::EcdsaP256)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("returned no private key"), "{err}");
}

#[tokio::test]
async fn a_callers_csr_is_refused_by_name() {
    let ca = Upstream::new(Answer::Right);
    let key = KeyPair::generate().unwrap();
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let err = issue_certificate(&ca, params(KeySource::Csr(csr.der())))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    assert!(err.to_string().contains("fromCp.mode: sign"), "{err}");
    // A malformed CSR is still reported as such, first.
    let err = issue_certificate(&ca, params(KeySource::Csr(b"\x30\x00")))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Csr(_)), "{err}");
    assert!(
        ca.seen.lock().unwrap().is_empty(),
        "the backend was never asked"
    );
}
