//! # meshca-fuzz-targets
//!
//! meshca's fuzz targets: one function per target, each taking arbitrary bytes through one of
//! the parsers that read what a caller, an operator or an upstream CA hands meshca. None of them
//! may panic, whatever the input; where a parser's answer implies more (a round trip, an
//! invariant of the type) the target checks that too, and panics when it does not hold.
//!
//! | target | what the bytes are | what reads them |
//! | --- | --- | --- |
//! | [`csr`] | a caller's CSR, PEM or DER | `verify_csr`, `verify_csr_with_dns`, and the whole [`ca_core::issue_certificate`] path on a builtin CA |
//! | [`template`] | a `commonName` template (then, after a `0xff` byte, tag values) | [`ca_core::CommonNameTemplate`] parse and render |
//! | [`mesh_yaml`] | a Mesh file | [`ca_core::config::Mesh`] decoding, validation and what a control plane asks of it |
//! | [`data_source`] | a data source's value | PEM certificates and keys, trust bundles, `inline` base64, Secrets Manager JSON fields |
//! | [`vault_response`] | a Vault answer | `issue`/`sign` answers, `ca/pem` + `ca_chain`, tokens |
//! | [`acmpca_chain`] | an ACM PCA answer (`Certificate`, `0xff`, `CertificateChain`) | `GetCertificate`, `GetCertificateAuthorityCertificate`, `DescribeCertificateAuthority` |
//! | [`certmanager_status`] | a `CertificateRequest` (or its `status`) as JSON | the watch's outcome, `status.certificate`, `status.ca` |
//!
//! The cargo-fuzz project in `fuzz/` runs them under libFuzzer (`scripts/fuzz`); this crate's
//! smoke test runs every seed, every regression and a fixed number of mutations of them in
//! `cargo test`. [`TARGETS`] lists them by name.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use backend_builtin::{BuiltinCa, BuiltinConf};
use ca_core::config::{Mesh, Timing};
use ca_core::datasource::json_field;
use ca_core::x509::{
    anchors_of, certs_to_pem, is_self_issued, parse_pem_certs, verify_csr, verify_csr_with_dns,
};
use ca_core::{
    error_chain, issue_certificate, BackendName, CertificateAuthority, CommonNameTemplate,
    DataSource, Error, Identity, IssueParams, IssueRequest, KeySource, KeyType, MeshName,
    OverlaySecretStore, PrivateKey, TrustBundle, UncheckedCertificate, SERVICE_TAG,
};
use rustls_pki_types::CertificateDer;

/// A fuzz target: takes any bytes, never panics.
pub type Target = fn(&[u8]);

/// Every target by name (the names of `fuzz/fuzz_targets/*.rs`, `fuzz/seeds/*` and
/// `fuzz/regressions/*`).
pub const TARGETS: &[(&str, Target)] = &[
    ("csr", csr),
    ("template", template),
    ("mesh_yaml", mesh_yaml),
    ("data_source", data_source),
    ("vault_response", vault_response),
    ("acmpca_chain", acmpca_chain),
    ("certmanager_status", certmanager_status),
];

/// The target called `name`, if there is one.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The bytes before the first `0xff` and, when there is one, those after it (targets that read
/// two values from one input; `0xff` never occurs in UTF-8 text).
fn split_ff(data: &[u8]) -> (&[u8], Option<&[u8]>) {
    match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], Some(&data[i + 1..])),
        None => (data, None),
    }
}

/// Renders an error as a log line or a status message would (every `Display` in its chain).
fn say(e: &Error) -> usize {
    error_chain(e).len()
}

// === csr ===

/// The identity every CSR is checked against: mesh `default`, `kuma.io/service: web`,
/// `version: v1`, DNS name `web.mesh.local`.
fn csr_identity() -> Result<Identity, Error> {
    Identity::new(
        MeshName::new("default")?,
        [(SERVICE_TAG, "web"), ("version", "v1")],
    )?
    .with_dns_names(["web.mesh.local"])
}

/// What the `csr` target issues with, built once per process.
struct CsrFixture {
    runtime: tokio::runtime::Runtime,
    ca: CsrProbe,
    identity: Identity,
    template: CommonNameTemplate,
}

fn csr_fixture() -> &'static CsrFixture {
    static FIXTURE: OnceLock<CsrFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| match build_csr_fixture() {
        Ok(f) => f,
        // Not an input's fault: the target cannot run at all.
        Err(e) => panic!("the csr target's builtin CA cannot be set up: {e}"),
    })
}

fn build_csr_fixture() -> Result<CsrFixture, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let mesh = MeshName::new("default").map_err(|e| e.to_string())?;
    let backend = BackendName::new("ca-1").map_err(|e| e.to_string())?;
    let ca = CsrProbe(BuiltinCa::new(
        mesh,
        backend,
        BuiltinConf::default(),
        Arc::new(OverlaySecretStore::new(None)),
    ));
    runtime.block_on(ca.ensure()).map_err(|e| error_chain(&e))?;
    Ok(CsrFixture {
        runtime,
        ca,
        identity: csr_identity().map_err(|e| error_chain(&e))?,
        template: CommonNameTemplate::parse(r#"{{ tag "kuma.io/service" }}.mesh"#)
            .map_err(|e| error_chain(&e))?,
    })
}

/// A builtin CA that, before signing, also reads the request's CSR as the acmpca and
/// certmanager backends do ([`IssueRequest::csr_name_problems`], [`IssueRequest::csr_pem`]).
struct CsrProbe(BuiltinCa);

impl fmt::Debug for CsrProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CsrProbe").field(&self.0).finish()
    }
}

#[async_trait]
impl CertificateAuthority for CsrProbe {
    fn name(&self) -> &str {
        self.0.name()
    }

    async fn ensure(&self) -> Result<(), Error> {
        self.0.ensure().await
    }

    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.0.trust_bundle().await
    }

    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        let problems = request.csr_name_problems();
        let pem = request.csr_pem();
        if let Some(pem) = &pem {
            // What a remote backend sends upstream decodes to what the caller sent.
            let decoded = pem::parse(pem.as_bytes()).map(pem::Pem::into_contents).ok();
            assert_eq!(
                decoded.as_deref(),
                request.csr_der(),
                "csr_pem does not decode to csr_der"
            );
        }
        std::hint::black_box((problems, pem));
        self.0.issue(request).await
    }

    fn needs_csr(&self) -> bool {
        self.0.needs_csr()
    }

    fn generates_keys(&self) -> bool {
        self.0.generates_keys()
    }
}

/// A caller's CSR, PEM (as `meshca issue --csr` reads it) or DER (as the gRPC API carries it):
/// checked by `verify_csr` / `verify_csr_with_dns`, then issued through
/// [`ca_core::issue_certificate`] on a builtin CA (in memory, created once) for a fixed identity
/// with a common-name template, the path every caller's CSR takes.
pub fn csr(data: &[u8]) {
    let der = if data.starts_with(b"-----BEGIN") {
        match pem::parse(data) {
            Ok(p) => p.into_contents(),
            Err(_) => return,
        }
    } else {
        data.to_vec()
    };
    let f = csr_fixture();
    let uri = f.identity.uri_sans();
    let dns = f.identity.dns_sans();
    let checked = verify_csr_with_dns(&der, &uri, dns);
    match &checked {
        Ok(key) => {
            // The key a CSR proves is one meshca accepts, classified the same from its DER.
            let again = KeyType::of_spki(key.spki_der()).ok();
            assert_eq!(again, Some(key.key_type()), "SPKI classified differently");
        }
        Err(e) => {
            say(e);
        }
    }
    if let Err(e) = verify_csr(&der, &uri) {
        say(&e);
    }
    match issue_csr(&der) {
        Ok(issued) => {
            assert!(
                checked.is_ok(),
                "issued a certificate for a CSR that verify_csr_with_dns refuses"
            );
            assert_eq!(issued.identity(), &f.identity);
            assert!(!issued.chain().is_empty());
            assert!(issued.key_pem().is_none(), "a caller's CSR got a key back");
            std::hint::black_box(issued.chain_pem());
        }
        Err(e) => {
            say(&e);
        }
    }
}

/// Issues a certificate for the DER CSR `der` on the `csr` target's builtin CA.
fn issue_csr(der: &[u8]) -> Result<ca_core::IssuedCertificate, Error> {
    let f = csr_fixture();
    let params = IssueParams::new(f.identity.clone(), KeySource::Csr(der), CSR_LIFETIME)
        .with_common_name(Some(&f.template));
    f.runtime.block_on(issue_certificate(&f.ca, params))
}

/// The lifetime the `csr` target asks for.
const CSR_LIFETIME: Duration = Duration::from_secs(3600);

// === template ===

/// A `commonName` template (the bytes before the first `0xff`, as lossy UTF-8): parsed, cloned,
/// and rendered for fixed identities and, when tag values follow the `0xff` (`kuma.io/service`,
/// then `version`, separated by any byte that is not UTF-8, e.g. `0xfe`), for an identity with
/// those.
pub fn template(data: &[u8]) {
    let (source, values) = split_ff(data);
    let source = String::from_utf8_lossy(source);
    let template = match CommonNameTemplate::parse(&source) {
        Ok(t) => t,
        Err(e) => {
            say(&e);
            return;
        }
    };
    assert_eq!(template.as_str(), source, "as_str is not the source");
    assert!(template.clone() == template, "a clone differs");
    std::hint::black_box(format!("{template:?}"));
    let mut identities: Vec<Identity> = Vec::new();
    if let Ok(mesh) = MeshName::new("default") {
        let fixed: [&[(&str, &str)]; 3] = [
            &[(SERVICE_TAG, "web_app"), ("version", "v1")],
            &[
                (SERVICE_TAG, "a"),
                (SERVICE_TAG, "b"),
                ("kuma.io/zone", "eu"),
            ],
            &[(SERVICE_TAG, "Backend-API_v2.svc"), ("team", "x")],
        ];
        identities.extend(
            fixed
                .iter()
                .filter_map(|tags| Identity::new(mesh.clone(), tags.iter().copied()).ok()),
        );
        if let Some(values) = values {
            let values = String::from_utf8_lossy(values);
            let mut it = values.split('\u{fffd}');
            let service = it.next().unwrap_or_default();
            let mut tags = vec![(SERVICE_TAG, service)];
            if let Some(v) = it.next() {
                tags.push(("version", v));
            }
            match Identity::new(mesh, tags) {
                Ok(id) => identities.push(id),
                Err(e) => {
                    say(&e);
                }
            }
        }
    }
    for identity in &identities {
        match template.render(identity) {
            Ok(cn) => assert!(
                !cn.is_empty() && cn.len() <= ca_core::template::MAX_COMMON_NAME_LEN,
                "rendered a common name of {} bytes",
                cn.len()
            ),
            Err(e) => {
                say(&e);
            }
        }
    }
}

// === mesh_yaml ===

/// A Mesh file (lossy UTF-8): [`Mesh::from_yaml`] and [`Mesh::from_yaml_documents`], and for a
/// Mesh that decodes, what a control plane asks of it (the enabled backend, fingerprints, used
/// secrets, timing, the common-name template rendered). A document [`Mesh::from_yaml`] accepts
/// must decode the same through [`Mesh::from_yaml_documents`].
pub fn mesh_yaml(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let backends = backends();
    let one = Mesh::from_yaml(&text, backends);
    let all = Mesh::from_yaml_documents(&text, backends);
    match &one {
        Ok(mesh) => inspect_mesh(mesh),
        Err(e) => {
            say(e);
        }
    }
    match &all {
        Ok(meshes) => meshes.iter().for_each(inspect_mesh),
        Err(e) => {
            say(e);
        }
    }
    if let Ok(mesh) = &one {
        let meshes = match &all {
            Ok(m) => m,
            Err(e) => panic!("from_yaml accepts what from_yaml_documents refuses: {e}"),
        };
        assert_eq!(meshes.len(), 1, "one document decoded as {}", meshes.len());
        assert_eq!(meshes[0].name, mesh.name);
        assert_eq!(fingerprints(&meshes[0]), fingerprints(mesh));
    }
}

/// The five backends meshca ships, built once.
fn backends() -> &'static ca_core::Registry {
    static REGISTRY: OnceLock<ca_core::Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        ca_core::Registry::empty()
            .with(backend_builtin::BuiltinFactory::new())
            .with(backend_provided::ProvidedFactory::new())
            .with(backend_vault::VaultFactory::new())
            .with(backend_acmpca::AcmpcaFactory::new())
            .with(backend_certmanager::CertmanagerFactory::new())
    })
}

fn fingerprints(mesh: &Mesh) -> Vec<String> {
    mesh.mtls
        .iter()
        .flat_map(|m| m.backends.iter())
        .map(|b| b.fingerprint().as_str().to_owned())
        .collect()
}

fn inspect_mesh(mesh: &Mesh) {
    std::hint::black_box(format!("{mesh:?}"));
    let enabled = mesh.enabled_backend().map(|b| &b.name);
    let indexed = mesh.enabled_backend_indexed();
    assert_eq!(enabled, indexed.map(|(_, b)| &b.name));
    if let (Some((i, b)), Some(mtls)) = (indexed, &mesh.mtls) {
        assert_eq!(mtls.backends[i].name, b.name);
        std::hint::black_box(ca_core::config::backend_path(i));
    }
    let identity = csr_identity().ok();
    for backend in mesh.mtls.iter().flat_map(|m| m.backends.iter()) {
        assert_eq!(backend.fingerprint().as_str().len(), 64);
        std::hint::black_box((
            backend.backend_type(),
            backend.used_secrets(),
            backend.upstreams(),
            backend.data_sources().len(),
            Timing::of(backend),
        ));
        if let (Some(t), Some(id)) = (backend.common_name(), &identity) {
            if let Err(e) = t.render(id) {
                say(&e);
            }
        }
    }
}

// === data_source ===

/// A data source's value: read as PEM certificates (a provided CA, `caCert`, a bundle), as a
/// trust bundle and its anchors, as a private key; as an `inline` base64 value and as a Secrets
/// Manager `SecretString` with `key: cert` / `key: key`, whose decoded values are read as PEM
/// again.
pub fn data_source(data: &[u8]) {
    pem_material(data);
    for key in ["cert", "key"] {
        if let Ok(v) = json_field(data, key) {
            pem_material(v.expose());
        }
    }
    match DataSource::inline_base64(&String::from_utf8_lossy(data)) {
        Ok(DataSource::Inline(v)) => pem_material(v.expose()),
        Ok(other) => panic!("inline_base64 made {other:?}"),
        Err(_) => {}
    }
}

/// Certificates, anchors, a bundle and a key out of PEM bytes, with their round trips.
fn pem_material(bytes: &[u8]) {
    if let Ok(certs) = parse_pem_certs(bytes) {
        let again = parse_pem_certs(certs_to_pem(certs.iter()).as_bytes());
        assert_eq!(
            again.as_ref(),
            Ok(&certs),
            "PEM round trip changed the chain"
        );
        bundle(certs);
    }
    if let Ok(anchors) = anchors_of(bytes) {
        assert!(
            !anchors.is_empty(),
            "anchors_of found no anchor but no error"
        );
        bundle(anchors);
    }
    if let Ok(key) = PrivateKey::from_pem(bytes) {
        let again = match PrivateKey::from_pem(key.to_pem().expose()) {
            Ok(k) => k,
            Err(e) => panic!("a key's own PEM does not parse: {e}"),
        };
        assert_eq!(again.key_type(), key.key_type());
        assert_eq!(again.spki_der(), key.spki_der());
    }
}

/// A trust bundle of `certs`, as the backends make one, and what is read of it.
fn bundle(certs: Vec<CertificateDer<'static>>) {
    for c in &certs {
        std::hint::black_box(is_self_issued(c));
    }
    match TrustBundle::new(certs) {
        Ok(b) => {
            std::hint::black_box(b.to_pem());
        }
        Err(e) => {
            say(&e);
        }
    }
}

// === vault_response ===

/// A Vault answer: as JSON, an `issue`/`sign` answer; split at the first `0xff`, the `ca/pem`
/// and `ca_chain` answers of a PKI mount made into a trust bundle; whole, a token.
pub fn vault_response(data: &[u8]) {
    use backend_vault::fuzzing;
    if let Ok(answer) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(n) = fuzzing::parse_issued(&answer) {
            assert!(n >= 1, "an issue answer without a leaf was accepted");
        }
    }
    let (ca_pem, chain_pem) = split_ff(data);
    std::hint::black_box(fuzzing::anchors(ca_pem, chain_pem.unwrap_or_default()).ok());
    std::hint::black_box(fuzzing::token(data));
}

// === acmpca_chain ===

/// An ACM PCA answer, split at the first `0xff` into `Certificate` (none when empty) and
/// `CertificateChain` (none without the `0xff`), read as `GetCertificate` (the issued chain) and
/// as `GetCertificateAuthorityCertificate` (anchors, a trust bundle); and the same two strings
/// as a `DescribeCertificateAuthority` key algorithm and signing algorithm, and an ARN with its
/// status.
pub fn acmpca_chain(data: &[u8]) {
    use backend_acmpca::fuzzing;
    let (certificate, chain) = split_ff(data);
    let certificate = String::from_utf8_lossy(certificate);
    let chain = chain.map(String::from_utf8_lossy);
    let cert_field = (!certificate.is_empty()).then_some(&*certificate);
    if let Ok(n) = fuzzing::issued_chain(cert_field, chain.as_deref()) {
        assert!(n >= 1, "an issued chain without a leaf was accepted");
    }
    let mut pem = certificate.to_string();
    pem.push('\n');
    pem.push_str(chain.as_deref().unwrap_or_default());
    if let Ok(anchors) = anchors_of(pem.as_bytes()) {
        bundle(anchors);
    }
    let other = chain.as_deref().unwrap_or_default();
    std::hint::black_box(fuzzing::signing_algorithm(&certificate, other));
    std::hint::black_box(fuzzing::not_active(&certificate, other));
    std::hint::black_box(fuzzing::arn(&certificate));
}

// === certmanager_status ===

/// A cert-manager `CertificateRequest` as the API server sends it (JSON), or only its `status`:
/// the watch's outcome, then `status.certificate` (base64 PEM, the issued chain) and
/// `status.ca` (base64 PEM, anchors, a trust bundle) as the backend reads them.
pub fn certmanager_status(data: &[u8]) {
    use backend_certmanager::fuzzing;
    let status = match serde_json::from_slice::<backend_certmanager::CertificateRequest>(data) {
        Ok(request) => request.status,
        Err(_) => match serde_json::from_slice::<backend_certmanager::RequestStatus>(data) {
            Ok(status) => Some(status),
            Err(_) => return,
        },
    };
    assert_eq!(
        fuzzing::outcome(None),
        Ok(false),
        "no status is not pending"
    );
    let Some(status) = status else { return };
    if let Ok(true) = fuzzing::outcome(Some(&status)) {
        assert!(
            status.certificate.as_deref().is_some_and(|c| !c.is_empty()),
            "issued without a certificate"
        );
    }
    if let Ok(n) = fuzzing::decode_pem_field(status.certificate.as_deref())
        .and_then(|pem| fuzzing::issued_chain(&pem))
    {
        assert!(n >= 1, "an issued chain without a leaf was accepted");
    }
    if let Ok(anchors) =
        fuzzing::decode_pem_field(status.ca.as_deref()).and_then(|pem| anchors_of(&pem))
    {
        bundle(anchors);
    }
}

#[cfg(test)]
mod tests {
    //! The seeds reach what they are meant to: a target that returns early on everything (a
    //! fixture that drifted, an identity that no longer matches) would pass the smoke run.

    use super::*;

    fn seed(target: &str, file: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/seeds")
            .join(target)
            .join(file);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn der_of(data: &[u8]) -> Vec<u8> {
        if data.starts_with(b"-----BEGIN") {
            pem::parse(data).unwrap().into_contents()
        } else {
            data.to_vec()
        }
    }

    #[test]
    fn csr_seeds_issue_or_are_refused() {
        for ok in [
            "p256-identity.der",
            "p256-identity.pem",
            "p384-no-sans.der",
            "rsa2048-spiffe.pem",
        ] {
            let issued =
                issue_csr(&der_of(&seed("csr", ok))).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(issued.chain().len(), 1, "{ok}");
        }
        for bad in [
            "p256-bad-signature.der",
            "p256-foreign-san.der",
            "p256-ip-email-san.der",
            "p256-trailing-bytes.der",
            "p256-truncated.der",
            "p521-unsupported.der",
            "ed25519-unsupported.der",
        ] {
            assert!(issue_csr(&der_of(&seed("csr", bad))).is_err(), "{bad}");
        }
    }

    #[test]
    fn template_seeds_render() {
        let t = CommonNameTemplate::parse(
            &String::from_utf8(seed("template", "angle-lower.txt")).unwrap(),
        )
        .unwrap();
        let id = Identity::new(
            MeshName::new("default").unwrap(),
            [(SERVICE_TAG, "Web_App")],
        )
        .unwrap();
        assert_eq!(t.render(&id).unwrap(), "web-app.mesh");
    }

    #[test]
    fn mesh_seeds_decode() {
        for ok in [
            "universal-builtin.yaml",
            "kubernetes-builtin.yaml",
            "provided.yaml",
            "vault.yaml",
            "acmpca.yaml",
            "certmanager.yaml",
        ] {
            let text = String::from_utf8(seed("mesh_yaml", ok)).unwrap();
            let mesh = Mesh::from_yaml(&text, backends()).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(mesh.enabled_backend().is_some(), "{ok}");
        }
        let two = String::from_utf8(seed("mesh_yaml", "two-documents.yaml")).unwrap();
        assert_eq!(
            Mesh::from_yaml_documents(&two, backends()).unwrap().len(),
            2
        );
        for bad in [
            "violations.yaml",
            "zone-egress-without-mtls.yaml",
            "flow-nesting.yaml",
            "not-yaml.yaml",
        ] {
            let text = String::from_utf8(seed("mesh_yaml", bad)).unwrap();
            assert!(Mesh::from_yaml(&text, backends()).is_err(), "{bad}");
        }
    }

    #[test]
    fn data_source_seeds_decode() {
        let chain = parse_pem_certs(&seed("data_source", "chain.pem")).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(
            anchors_of(&seed("data_source", "leaf-int-root.pem"))
                .unwrap()
                .len(),
            1
        );
        TrustBundle::new(chain).unwrap();
        let field = json_field(&seed("data_source", "secret-string-cert.json"), "cert").unwrap();
        assert_eq!(parse_pem_certs(field.expose()).unwrap().len(), 2);
        let key = json_field(&seed("data_source", "secret-string-key.json"), "key").unwrap();
        assert_eq!(
            PrivateKey::from_pem(key.expose()).unwrap().key_type(),
            KeyType::EcdsaP256
        );
        for k in ["pkcs8-key.pem", "sec1-key.pem", "rsa-pkcs1-key.pem"] {
            PrivateKey::from_pem(&seed("data_source", k)).unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        let text = String::from_utf8(seed("data_source", "inline-base64-chain.txt")).unwrap();
        let Ok(DataSource::Inline(v)) = DataSource::inline_base64(&text) else {
            panic!("inline-base64-chain.txt")
        };
        assert_eq!(parse_pem_certs(v.expose()).unwrap().len(), 2);
    }

    #[test]
    fn backend_answer_seeds_decode() {
        use serde_json::from_slice;
        let vault = |f: &str| {
            backend_vault::fuzzing::parse_issued(&from_slice(&seed("vault_response", f)).unwrap())
        };
        // Leaf and intermediate; the root stays in the bundle.
        assert_eq!(vault("issue-answer.json"), Ok(2));
        assert_eq!(vault("sign-answer-chain-string.json"), Ok(2));
        assert_eq!(vault("issue-answer-old-vault.json"), Ok(2));
        assert!(vault("no-certificate.json").is_err());
        let mount = seed("vault_response", "ca-pem-and-chain.bin");
        let (ca, chain) = split_ff(&mount);
        assert_eq!(backend_vault::fuzzing::anchors(ca, chain.unwrap()), Ok(1));
        assert!(backend_vault::fuzzing::token(&seed(
            "vault_response",
            "token.txt"
        )));

        let get = seed("acmpca_chain", "get-certificate.bin");
        let (cert, chain) = split_ff(&get);
        let (cert, chain) = (
            std::str::from_utf8(cert).unwrap(),
            std::str::from_utf8(chain.unwrap()).unwrap(),
        );
        assert_eq!(
            backend_acmpca::fuzzing::issued_chain(Some(cert), Some(chain)),
            Ok(2)
        );

        use backend_certmanager::fuzzing as cm;
        let status: backend_certmanager::RequestStatus =
            from_slice(&seed("certmanager_status", "ready.json")).unwrap();
        assert_eq!(cm::outcome(Some(&status)), Ok(true));
        let pem = cm::decode_pem_field(status.certificate.as_deref()).unwrap();
        assert_eq!(cm::issued_chain(&pem), Ok(2));
        let request: backend_certmanager::CertificateRequest =
            from_slice(&seed("certmanager_status", "certificate-request.json")).unwrap();
        assert_eq!(cm::outcome(request.status.as_ref()), Ok(true));
        for refused in ["denied.json", "invalid.json", "failed.json"] {
            let status: backend_certmanager::RequestStatus =
                from_slice(&seed("certmanager_status", refused)).unwrap();
            assert!(cm::outcome(Some(&status)).is_err(), "{refused}");
        }
    }
}
