//! The checks of the conformance suite. Each takes a [`Fixture`] and panics with a message that
//! names the backend when the backend does not conform.

use ca_core::CsrError;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime};

use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::x509::describe_sans;
use ca_core::{
    issue_certificate, validate, CommonNameTemplate, Error, Identity, IssueParams,
    IssuedCertificate, KeySource, KeyType, MeshName,
};
use rcgen::{CertificateParams, KeyPair, PublicKeyData, SanType};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::{tls, Fixture};

pub fn mesh(name: &str) -> MeshName {
    MeshName::new(name).unwrap()
}

pub fn identity(mesh_name: &str, service: &str) -> Identity {
    Identity::new(
        mesh(mesh_name),
        [
            ("kuma.io/service", service),
            ("kuma.io/zone", "zone-1"),
            ("version", "v1"),
            ("version", "v2"),
        ],
    )
    .unwrap()
}

pub async fn issue(
    f: &dyn Fixture,
    mesh_name: &str,
    service: &str,
    key: KeySource<'_>,
) -> IssuedCertificate {
    let ca = f
        .backend(&mesh(mesh_name), DEFAULT_DP_CERT_EXPIRATION)
        .await;
    issue_certificate(
        ca.as_ref(),
        IssueParams::new(
            identity(mesh_name, service),
            key,
            DEFAULT_DP_CERT_EXPIRATION,
        ),
    )
    .await
    .unwrap_or_else(|e| panic!("{}: issuing failed: {e}", f.name()))
}

fn leaf_sans(der: &[u8]) -> Vec<String> {
    describe_sans(der).unwrap()
}

fn leaf_cns(der: &[u8]) -> Vec<String> {
    let (_, leaf) = X509Certificate::from_der(der).unwrap();
    leaf.subject()
        .iter_common_name()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect()
}

pub async fn sans_and_common_name(f: &dyn Fixture) {
    let issued = issue(
        f,
        "default",
        "backend_kuma-demo_svc_8080",
        KeySource::Generate(KeyType::EcdsaP256),
    )
    .await;
    assert_eq!(
        leaf_sans(&issued.chain()[0]),
        [
            "URI:spiffe://default/backend_kuma-demo_svc_8080",
            "URI:kuma://kuma.io/service/backend_kuma-demo_svc_8080",
            "URI:kuma://kuma.io/zone/zone-1",
            "URI:kuma://version/v1",
            "URI:kuma://version/v2",
        ],
        "{}: exactly the Kuma SAN set, in Kuma's order",
        f.name()
    );
    assert!(
        leaf_cns(&issued.chain()[0]).is_empty(),
        "{}: empty subject without a template",
        f.name()
    );

    let tpl =
        CommonNameTemplate::parse(r#"{{ tag "kuma.io/service" | replace "_" "-" }}.mesh"#).unwrap();
    let ca = f
        .backend(&mesh("default"), DEFAULT_DP_CERT_EXPIRATION)
        .await;
    let params = IssueParams::new(
        identity("default", "backend_kuma-demo_svc_8080"),
        KeySource::Generate(KeyType::EcdsaP256),
        DEFAULT_DP_CERT_EXPIRATION,
    )
    .with_common_name(Some(&tpl));
    let issued = issue_certificate(ca.as_ref(), params).await.unwrap();
    assert_eq!(
        leaf_cns(&issued.chain()[0]),
        ["backend-kuma-demo-svc-8080.mesh"],
        "{}",
        f.name()
    );
}

/// A caller's CSR for `identity(mesh_name, service)`: no names, or (for upstreams that copy
/// them from the CSR) the identity's SANs, as a data plane's CSR carries them.
pub fn caller_csr(f: &dyn Fixture, key: &KeyPair, mesh_name: &str, service: &str) -> Vec<u8> {
    let mut p = CertificateParams::default();
    if f.csr_names_pass_through() {
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.subject_alt_names = identity(mesh_name, service)
            .uri_sans()
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .collect();
    }
    p.serialize_request(key).unwrap().der().to_vec()
}

/// What a backend that refuses CSRs must answer: an invalid argument that says why.
fn assert_csr_refused(f: &dyn Fixture, r: Result<IssuedCertificate, Error>) {
    match r {
        Err(e @ Error::InvalidArgument { .. }) if e.to_string().contains("cannot certify") => {}
        other => panic!("{}: a CSR must be refused by name, got {other:?}", f.name()),
    }
}

pub async fn csr_path_keeps_key_with_caller(f: &dyn Fixture) {
    let key = KeyPair::generate().unwrap();
    let csr = caller_csr(f, &key, "default", "web");
    if !f.accepts_csrs() {
        let ca = f
            .backend(&mesh("default"), DEFAULT_DP_CERT_EXPIRATION)
            .await;
        let r = issue_certificate(
            ca.as_ref(),
            IssueParams::new(
                identity("default", "web"),
                KeySource::Csr(&csr),
                DEFAULT_DP_CERT_EXPIRATION,
            ),
        )
        .await;
        assert_csr_refused(f, r);
        return;
    }
    let issued = issue(f, "default", "web", KeySource::Csr(&csr)).await;
    assert!(
        issued.key_pem().is_none(),
        "{}: no key returned on the CSR path",
        f.name()
    );
    let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
    assert_eq!(
        leaf.public_key().raw,
        key.subject_public_key_info().as_slice(),
        "{}",
        f.name()
    );
    // The caller's key works with the certificate in a real handshake.
    let other = issue(
        f,
        "default",
        "backend",
        KeySource::Generate(KeyType::EcdsaP256),
    )
    .await;
    let me = tls::Party::new(&issued, key.serialize_pem().as_bytes());
    let peer = tls::Party::new(&other, other.key_pem().unwrap().expose());
    tls::mutual_handshake(&me, &peer).unwrap_or_else(|e| panic!("{}: {e}", f.name()));
}

pub async fn generated_key_matches(f: &dyn Fixture) {
    for kt in [KeyType::EcdsaP256, KeyType::Rsa(2048)] {
        let issued = issue(f, "default", "web", KeySource::Generate(kt)).await;
        let pem = issued
            .key_pem()
            .unwrap_or_else(|| panic!("{}: generated key returned", f.name()));
        let key = KeyPair::from_pem(pem.expose_str().unwrap()).unwrap();
        let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
        assert_eq!(
            leaf.public_key().raw,
            key.subject_public_key_info().as_slice(),
            "{} {kt}",
            f.name()
        );
    }
}

pub async fn validity_follows_dp_cert_expiration(f: &dyn Fixture) {
    for lifetime in [DEFAULT_DP_CERT_EXPIRATION, Duration::from_secs(3600)] {
        let ca = f.backend(&mesh("default"), lifetime).await;
        let before = SystemTime::now();
        let issued = issue_certificate(
            ca.as_ref(),
            IssueParams::new(
                identity("default", "web"),
                KeySource::Generate(KeyType::EcdsaP256),
                lifetime,
            ),
        )
        .await
        .unwrap();
        let after = SystemTime::now();
        let (_, leaf) = X509Certificate::from_der(&issued.chain()[0]).unwrap();
        let nb = SystemTime::UNIX_EPOCH
            + Duration::from_secs(leaf.validity().not_before.timestamp() as u64);
        let na = SystemTime::UNIX_EPOCH
            + Duration::from_secs(leaf.validity().not_after.timestamp() as u64);
        if !f.honours_validity() {
            // The upstream picks its own window: the leaf is valid now, and the refresh time
            // still falls within the requested lifetime.
            assert!(nb <= after && na > after + lifetime / 2, "{}", f.name());
            let policy = ca_core::RefreshPolicy::default();
            assert!(issued.refresh_at(&policy, 0.99) < issued.effective_not_after());
            eprintln!(
                "{}: the upstream does not honour the requested validity; window not checked",
                f.name()
            );
            continue;
        }
        let skew = f.backdate() + Duration::from_secs(2);
        assert!(
            nb <= before && nb + skew >= before,
            "{}: not-before backdated ~{:?}",
            f.name(),
            f.backdate()
        );
        match f.ca_not_after() {
            Some(ca_end) if ca_end < after + lifetime => {
                assert!(na <= ca_end, "{}: clamped to the CA", f.name());
                assert!(issued.shortened(), "{}: the caller is told", f.name());
            }
            _ => {
                assert!(
                    na + Duration::from_secs(2) >= before + lifetime,
                    "{}: lifetime {lifetime:?}",
                    f.name()
                );
                assert!(
                    na <= after + lifetime,
                    "{}: lifetime {lifetime:?}",
                    f.name()
                );
                assert!(!issued.shortened(), "{}", f.name());
            }
        }
        let policy = ca_core::RefreshPolicy::default();
        assert!(issued.refresh_at(&policy, 0.99) < issued.effective_not_after());
    }
}

pub async fn validate_issues_test_certificate(f: &dyn Fixture) {
    let m = mesh("default");
    let ca = f.backend(&m, DEFAULT_DP_CERT_EXPIRATION).await;
    let t = validate(ca.as_ref(), &m, DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}: validation failed: {e}", f.name()));
    assert_eq!(
        t.certificate.identity().spiffe_id(),
        "spiffe://default/meshca-validation"
    );

    let (broken, expect) = f.broken(&m).await;
    let err: Error = match broken {
        Err(e) => e,
        Ok(ca) => validate(ca.as_ref(), &m, DEFAULT_DP_CERT_EXPIRATION, None)
            .await
            .err()
            .unwrap_or_else(|| panic!("{}: a broken backend validated", f.name())),
    };
    assert!(
        err.to_string().contains(expect),
        "{}: `{err}` should mention `{expect}`",
        f.name()
    );
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs `openssl verify -purpose <purpose>` and returns (success, output).
pub fn openssl_verify(bundle_pem: &str, chain_pem: &str, purpose: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let blocks = pem::parse_many(chain_pem).unwrap();
    let leaf = write(dir.path(), "leaf.pem", &pem::encode(&blocks[0]));
    let untrusted: String = blocks[1..].iter().map(pem::encode).collect();
    let ca = write(dir.path(), "bundle.pem", bundle_pem);
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-purpose", purpose, "-CAfile"])
        .arg(&ca);
    if !untrusted.is_empty() {
        cmd.arg("-untrusted")
            .arg(write(dir.path(), "untrusted.pem", &untrusted));
    }
    let out = cmd
        .arg(&leaf)
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

pub async fn bundle_verifies_leaves_with_openssl(f: &dyn Fixture) {
    let ca = f
        .backend(&mesh("default"), DEFAULT_DP_CERT_EXPIRATION)
        .await;
    let bundle = ca.trust_bundle().await.unwrap().to_pem();
    let key = KeyPair::generate().unwrap();
    let csr = caller_csr(f, &key, "default", "web");
    let mut sources = vec![KeySource::Generate(KeyType::EcdsaP256)];
    if f.accepts_csrs() {
        sources.push(KeySource::Csr(&csr));
    }
    for k in sources {
        let issued = issue(f, "default", "web", k).await;
        for purpose in ["sslclient", "sslserver"] {
            let (ok, out) = openssl_verify(&bundle, &issued.chain_pem(), purpose);
            assert!(ok, "{}: openssl verify -purpose {purpose}: {out}", f.name());
        }
    }
}

pub async fn other_mesh_leaf_does_not_verify(f: &dyn Fixture) {
    let ca = f
        .backend(&mesh("default"), DEFAULT_DP_CERT_EXPIRATION)
        .await;
    let bundle = ca.trust_bundle().await.unwrap();
    let foreign = issue(f, "other", "web", KeySource::Generate(KeyType::EcdsaP256)).await;
    let (ok, out) = openssl_verify(&bundle.to_pem(), &foreign.chain_pem(), "sslclient");
    assert!(
        !ok,
        "{}: a leaf of another mesh's CA verified: {out}",
        f.name()
    );
    assert!(
        bundle
            .verify_chain(
                &foreign.chain()[0],
                &foreign.chain()[1..],
                SystemTime::now()
            )
            .is_err(),
        "{}",
        f.name()
    );
    // And a handshake across meshes fails.
    let mine = issue(f, "default", "web", KeySource::Generate(KeyType::EcdsaP256)).await;
    let a = tls::Party::new(&mine, mine.key_pem().unwrap().expose());
    let b = tls::Party::new(&foreign, foreign.key_pem().unwrap().expose());
    assert!(
        tls::mutual_handshake(&a, &b).is_err(),
        "{}: cross-mesh mTLS must fail",
        f.name()
    );
}

pub async fn mutual_tls_between_identities(f: &dyn Fixture) {
    let web = issue(f, "default", "web", KeySource::Generate(KeyType::EcdsaP256)).await;
    let backend = issue(
        f,
        "default",
        "backend",
        KeySource::Generate(KeyType::Rsa(2048)),
    )
    .await;
    let a = tls::Party::new(&web, web.key_pem().unwrap().expose());
    let b = tls::Party::new(&backend, backend.key_pem().unwrap().expose());
    let (client_saw, server_saw) =
        tls::mutual_handshake(&a, &b).unwrap_or_else(|e| panic!("{}: {e}", f.name()));
    assert_eq!(client_saw, "spiffe://default/backend");
    assert_eq!(server_saw, "spiffe://default/web");
    // Expecting the wrong peer identity fails the handshake.
    let wrong = tls::Party {
        expect_peer: Some("spiffe://default/db".into()),
        ..a
    };
    assert!(
        tls::mutual_handshake(&wrong, &b).is_err(),
        "{}: SPIFFE ID is checked",
        f.name()
    );
}

pub async fn bad_csrs_are_rejected(f: &dyn Fixture) {
    let ca = f
        .backend(&mesh("default"), DEFAULT_DP_CERT_EXPIRATION)
        .await;
    let run = |der: Vec<u8>| {
        let ca = ca.clone();
        async move {
            issue_certificate(
                ca.as_ref(),
                IssueParams::new(
                    identity("default", "web"),
                    KeySource::Csr(&der),
                    DEFAULT_DP_CERT_EXPIRATION,
                ),
            )
            .await
        }
    };
    let key = KeyPair::generate().unwrap();
    let good = CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();

    let err = run(b"\x30\x03\x02\x01\x00".to_vec()).await.unwrap_err();
    assert!(
        matches!(err, Error::Csr(CsrError::Encoding { .. })),
        "{}: malformed: {err}",
        f.name()
    );

    let mut bad_sig = good.clone();
    let n = bad_sig.len();
    bad_sig[n - 3] ^= 0x01;
    let err = run(bad_sig).await.unwrap_err();
    assert!(
        err.to_string().contains("signature does not verify"),
        "{}: {err}",
        f.name()
    );

    let p521 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P521_SHA512).unwrap();
    let der = CertificateParams::default()
        .serialize_request(&p521)
        .unwrap()
        .der()
        .to_vec();
    let err = run(der).await.unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedKey(_)),
        "{}: {err}",
        f.name()
    );

    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![
        SanType::URI("spiffe://default/web".try_into().unwrap()),
        SanType::URI("spiffe://default/admin".try_into().unwrap()),
    ];
    let der = p.serialize_request(&key).unwrap().der().to_vec();
    let err = run(der).await.unwrap_err();
    assert!(
        err.to_string().contains("spiffe://default/admin"),
        "{}: extra SAN: {err}",
        f.name()
    );

    // A CSR's subject is ignored: the CN only ever comes from the template.
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "admin");
    if f.csr_names_pass_through() {
        p.subject_alt_names = identity("default", "web")
            .uri_sans()
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .collect();
    }
    let der = p.serialize_request(&key).unwrap().der().to_vec();
    if !f.accepts_csrs() {
        assert_csr_refused(f, run(der).await);
        return;
    }
    if f.csr_names_pass_through() {
        // The upstream would copy the CN: refused by name, before the upstream is asked.
        match run(der).await {
            Err(e @ Error::InvalidArgument { .. }) if e.to_string().contains("\"admin\"") => {}
            other => panic!(
                "{}: a CSR with a CN must be refused by name, got {other:?}",
                f.name()
            ),
        }
        return;
    }
    let issued = run(der).await.unwrap();
    assert!(leaf_cns(&issued.chain()[0]).is_empty(), "{}", f.name());
}
