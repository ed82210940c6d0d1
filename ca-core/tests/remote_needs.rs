//! What the remote backends need from core: DNS SANs, idempotency keys, a trust bundle refreshed
//! when a cached one is stale, and structured errors.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ca_core::x509::random_serial;
use ca_core::{
    issue_certificate, CertificateAuthority, Error, IdempotencyKey, Identity, IssueParams,
    IssueRequest, IssuedProblem, KeySource, KeyType, LocalCa, MeshName, PrivateKey, TrustBundle,
    UncheckedCertificate,
};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls_pki_types::CertificateDer;

struct Root {
    der: CertificateDer<'static>,
    key_pem: String,
    local: LocalCa,
}

fn root(cn: &str) -> Root {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()));
    let der = p.self_signed(&key).unwrap().der().clone();
    let key_pem = key.serialize_pem();
    let local = LocalCa::new(
        "test",
        vec![der.clone()],
        PrivateKey::from_pem(key_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    Root {
        der,
        key_pem,
        local,
    }
}

/// How the test backend answers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    /// Signs with `LocalCa` (the identity's URI and DNS SANs).
    Local,
    /// Signs by hand with the identity's URI SANs and these DNS names instead of its own.
    DnsNames(&'static [&'static str]),
    /// Signs with another key than requested.
    OtherKey,
}

/// A backend that signs with `current` and whose `trust_bundle()` may answer a stale root, like a
/// wrapper that cached it before a CA rotation.
struct RotatingCa {
    stale: Root,
    current: Root,
    /// `trust_bundle()` answers the stale root this many more times.
    stale_answers: AtomicUsize,
    overrides_refresh: bool,
    mode: Mutex<Mode>,
    bundle_calls: AtomicUsize,
    refresh_calls: AtomicUsize,
    keys: Mutex<Vec<IdempotencyKey>>,
    csrs: Mutex<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for RotatingCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RotatingCa")
    }
}

impl RotatingCa {
    fn new(stale_answers: usize, overrides_refresh: bool) -> Self {
        Self {
            stale: root("old root"),
            current: root("new root"),
            stale_answers: AtomicUsize::new(stale_answers),
            overrides_refresh,
            mode: Mutex::new(Mode::Local),
            bundle_calls: AtomicUsize::new(0),
            refresh_calls: AtomicUsize::new(0),
            keys: Mutex::new(Vec::new()),
            csrs: Mutex::new(Vec::new()),
        }
    }

    fn bundle_of(root: &Root) -> Result<TrustBundle, Error> {
        TrustBundle::new(vec![root.der.clone()])
    }

    fn by_hand(
        &self,
        req: &IssueRequest,
        dns: &[&str],
        other_key: bool,
    ) -> CertificateDer<'static> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.not_before = req.not_before().into();
        p.not_after = req.not_after().into();
        p.subject_alt_names = req
            .identity()
            .uri_sans()
            .iter()
            .map(|s| SanType::URI(s.as_str().try_into().unwrap()))
            .chain(
                dns.iter()
                    .map(|d| SanType::DnsName((*d).try_into().unwrap())),
            )
            .collect();
        let issuer = rcgen::Issuer::from_ca_cert_der(
            &self.current.der,
            KeyPair::from_pem(&self.current.key_pem).unwrap(),
        )
        .unwrap();
        if other_key {
            p.signed_by(&KeyPair::generate().unwrap(), &issuer)
        } else {
            p.signed_by(&subject_spki(req), &issuer)
        }
        .unwrap()
        .der()
        .clone()
    }
}

#[async_trait]
impl CertificateAuthority for RotatingCa {
    fn name(&self) -> &str {
        "rotating"
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.bundle_calls.fetch_add(1, Ordering::SeqCst);
        let stale = self
            .stale_answers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        Self::bundle_of(if stale { &self.stale } else { &self.current })
    }

    async fn refresh_trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.refresh_calls.fetch_add(1, Ordering::SeqCst);
        if self.overrides_refresh {
            // Upstream: always current; the cache would be replaced here.
            self.stale_answers.store(0, Ordering::SeqCst);
            Self::bundle_of(&self.current)
        } else {
            self.trust_bundle().await
        }
    }

    async fn issue(&self, req: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        self.keys
            .lock()
            .unwrap()
            .push(req.idempotency_key().clone());
        if let Some(csr) = req.csr_der() {
            self.csrs.lock().unwrap().push(csr.to_vec());
        }
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Local => self.current.local.sign(req),
            Mode::DnsNames(dns) => Ok(UncheckedCertificate::new(vec![
                self.by_hand(req, dns, false)
            ])),
            Mode::OtherKey => Ok(UncheckedCertificate::new(vec![self.by_hand(
                req,
                &[],
                true,
            )])),
        }
    }
}

fn mesh() -> MeshName {
    MeshName::new("default").unwrap()
}

fn identity() -> Identity {
    Identity::new(mesh(), [("kuma.io/service", "web")]).unwrap()
}

fn generate(identity: Identity) -> IssueParams<'static> {
    IssueParams::new(
        identity,
        KeySource::Generate(KeyType::EcdsaP256),
        Duration::from_secs(3600),
    )
}

fn leaf_sans(der: &CertificateDer<'_>) -> Vec<String> {
    ca_core::x509::describe_sans(der).unwrap()
}

fn problem(err: Error) -> IssuedProblem {
    match err {
        Error::InvalidIssued { problem, .. } => problem,
        other => panic!("not InvalidIssued: {other}"),
    }
}

#[tokio::test]
async fn a_stale_bundle_is_refreshed_once() {
    // The first trust_bundle() answer predates the CA rotation: refreshed, then accepted.
    let ca = RotatingCa::new(1, true);
    let issued = issue_certificate(&ca, generate(identity())).await.unwrap();
    assert_eq!(ca.refresh_calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        issued.bundle().certs(),
        std::slice::from_ref(&ca.current.der)
    );
    // The next issue uses the (refreshed) bundle and does not refresh again.
    issue_certificate(&ca, generate(identity())).await.unwrap();
    assert_eq!(ca.refresh_calls.load(Ordering::SeqCst), 1);

    // A backend that does not override refresh gets the default (trust_bundle again): one retry,
    // and a leaf that still does not chain is refused.
    let ca = RotatingCa::new(5, false);
    let err = issue_certificate(&ca, generate(identity()))
        .await
        .unwrap_err();
    assert!(matches!(problem(err), IssuedProblem::DoesNotChain(_)));
    assert_eq!(ca.refresh_calls.load(Ordering::SeqCst), 1);
    assert_eq!(ca.bundle_calls.load(Ordering::SeqCst), 2);
    // With the default, a second stale-then-fresh answer is enough.
    let ca = RotatingCa::new(1, false);
    issue_certificate(&ca, generate(identity())).await.unwrap();
    assert_eq!(ca.bundle_calls.load(Ordering::SeqCst), 2);

    // Any other problem is not a reason to refresh.
    let ca = RotatingCa::new(1, true);
    *ca.mode.lock().unwrap() = Mode::OtherKey;
    let err = issue_certificate(&ca, generate(identity()))
        .await
        .unwrap_err();
    assert_eq!(problem(err), IssuedProblem::WrongKey);
    assert_eq!(ca.refresh_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn dns_sans_are_signed_and_checked_exactly() {
    let ca = RotatingCa::new(0, true);
    let with_dns = identity()
        .with_dns_names(["web.demo.svc.cluster.local", "web.demo"])
        .unwrap();

    // LocalCa signs them after the URI SANs; a generated key's CSR asks for them too.
    let issued = issue_certificate(&ca, generate(with_dns.clone()))
        .await
        .unwrap();
    assert_eq!(
        leaf_sans(&issued.chain()[0]),
        [
            "URI:spiffe://default/web",
            "URI:kuma://kuma.io/service/web",
            "DNS:web.demo",
            "DNS:web.demo.svc.cluster.local",
        ]
    );
    let csr = ca.csrs.lock().unwrap().last().cloned().unwrap();
    ca_core::x509::verify_csr_with_dns(&csr, &with_dns.uri_sans(), with_dns.dns_sans()).unwrap();
    assert!(ca_core::x509::verify_csr(&csr, &with_dns.uri_sans()).is_err());

    // A CSR may ask for DNS names the identity has, and only those.
    let key = KeyPair::generate().unwrap();
    let csr_for = |dns: &[&str]| {
        let mut p = CertificateParams::default();
        p.subject_alt_names = dns
            .iter()
            .map(|d| SanType::DnsName((*d).try_into().unwrap()))
            .collect();
        p.serialize_request(&key).unwrap().der().to_vec()
    };
    let ok = csr_for(&["web.demo"]);
    let params = IssueParams::new(
        with_dns.clone(),
        KeySource::Csr(&ok),
        Duration::from_secs(60),
    );
    let issued = issue_certificate(&ca, params).await.unwrap();
    assert_eq!(
        leaf_sans(&issued.chain()[0]).len(),
        4,
        "SANs come from the identity"
    );
    let bad = csr_for(&["evil.example"]);
    let params = IssueParams::new(
        with_dns.clone(),
        KeySource::Csr(&bad),
        Duration::from_secs(60),
    );
    let err = issue_certificate(&ca, params).await.unwrap_err();
    assert!(
        err.to_string().contains("asks for SAN DNS:evil.example"),
        "{err}"
    );
    let params = IssueParams::new(identity(), KeySource::Csr(&ok), Duration::from_secs(60));
    assert!(
        issue_certificate(&ca, params).await.is_err(),
        "no DNS names: none may be asked"
    );

    // A backend answer that lacks one, or adds one, is refused.
    *ca.mode.lock().unwrap() = Mode::DnsNames(&["web.demo"]);
    let err = issue_certificate(&ca, generate(with_dns.clone()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("leaf lacks SAN DNS:web.demo.svc.cluster.local"),
        "{err}"
    );
    assert_eq!(
        problem(err),
        IssuedProblem::WrongDnsSans {
            missing: vec!["web.demo.svc.cluster.local".into()],
            extra: Vec::new(),
        }
    );
    *ca.mode.lock().unwrap() = Mode::DnsNames(&["web.demo", "web.demo.svc.cluster.local", "x.y"]);
    let err = issue_certificate(&ca, generate(with_dns.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        problem(err),
        IssuedProblem::WrongDnsSans {
            missing: Vec::new(),
            extra: vec!["x.y".into()],
        }
    );
    *ca.mode.lock().unwrap() = Mode::DnsNames(&["web.demo", "web.demo.svc.cluster.local"]);
    issue_certificate(&ca, generate(with_dns)).await.unwrap();
    // Without DNS names, as before: a DNS SAN is extra.
    *ca.mode.lock().unwrap() = Mode::DnsNames(&["web.demo"]);
    let err = issue_certificate(&ca, generate(identity()))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("leaf has SAN DNS:web.demo that was not requested"),
        "{err}"
    );
}

#[tokio::test]
async fn idempotency_keys_reach_the_backend() {
    let ca = RotatingCa::new(0, true);
    issue_certificate(&ca, generate(identity())).await.unwrap();
    issue_certificate(&ca, generate(identity())).await.unwrap();
    let key = IdempotencyKey::from_string("request-42").unwrap();
    for _ in 0..2 {
        issue_certificate(&ca, generate(identity()).with_idempotency_key(key.clone()))
            .await
            .unwrap();
    }
    let keys = ca.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 4);
    assert_ne!(keys[0], keys[1], "one fresh key per call without one");
    assert_eq!(keys[0].as_str().len(), 32);
    assert_eq!(&keys[2..], [key.clone(), key]);
}

#[test]
fn refresh_at_matches_rotate_at_without_jitter() {
    // The pure formula agrees with IssuedCertificate::rotate_at (counted from issuance).
    let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let issued = nb + Duration::from_secs(10);
    let na = issued + Duration::from_secs(3600);
    let policy = ca_core::RefreshPolicy::new(0.8, 0.0, Duration::ZERO, Duration::MAX);
    assert_eq!(
        ca_core::refresh_at(nb, na, issued, &policy, 0.5),
        issued + Duration::from_secs(2880)
    );
}

#[test]
fn crypto_errors_keep_their_source_without_the_type() {
    use std::error::Error as _;
    let err = Error::crypto("the library failed");
    assert_eq!(err.to_string(), "certificate generation failed");
    assert_eq!(err.source().unwrap().to_string(), "the library failed");
}

#[tokio::test]
async fn identity_round_trips_through_a_certificate() {
    let ca = RotatingCa::new(0, true);
    let id = Identity::new(
        mesh(),
        [
            ("kuma.io/service", "web"),
            ("k8s.kuma.io/namespace", "demo"),
        ],
    )
    .unwrap();
    let issued = issue_certificate(&ca, generate(id.clone())).await.unwrap();
    let uris: Vec<String> = leaf_sans(&issued.chain()[0])
        .into_iter()
        .filter_map(|s| s.strip_prefix("URI:").map(str::to_owned))
        .collect();
    assert_eq!(Identity::from_uri_sans(&mesh(), &uris).unwrap(), id);
    let ids: Vec<String> = id.spiffe_ids().iter().map(ToString::to_string).collect();
    assert_eq!(ids, ["spiffe://default/web"]);
}

/// The request's key for rcgen, which signs a public key given as its SubjectPublicKeyInfo.
fn subject_spki(req: &IssueRequest) -> rcgen::SubjectPublicKeyInfo {
    rcgen::SubjectPublicKeyInfo::from_der(req.subject_key().unwrap().spki_der()).unwrap()
}
