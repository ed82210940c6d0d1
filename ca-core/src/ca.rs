//! The [`CertificateAuthority`] trait, the issuance path, and the checks core runs on every
//! certificate a backend returns.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::identity::Identity;
use crate::name::{MeshName, SecretName};
use crate::secret::SecretBytes;
use crate::template::CommonNameTemplate;
use crate::x509::{
    certs_to_pem, describe_general_name, verify_csr, KeyType, LocalSigner, PrivateKey, SubjectKey,
    BACKDATE,
};
use crate::Error;

/// A certificate authority backend of a mesh.
///
/// Object safe (`Arc<dyn CertificateAuthority>`). Backends implement [`trust_bundle`] and
/// [`issue`]; everything a caller gets goes through [`issue_certificate`], which checks the
/// backend's answer before handing it out.
///
/// [`trust_bundle`]: CertificateAuthority::trust_bundle
/// [`issue`]: CertificateAuthority::issue
#[async_trait]
pub trait CertificateAuthority: fmt::Debug + Send + Sync {
    /// The backend's name in the Mesh (`mtls.backends[].name`).
    fn name(&self) -> &str;

    /// Creates whatever the backend must persist (the builtin backend: its CA). Idempotent: a
    /// second call, a restart or a racing process never replaces what exists.
    ///
    /// # Errors
    /// Store errors, or [`Error::Inconsistent`] when persisted state is damaged.
    async fn ensure(&self) -> Result<(), Error> {
        Ok(())
    }

    /// The certificates a data plane of this mesh must trust for this backend's leaves: the
    /// root, and intermediates where the backend has them.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when an upstream cannot be reached; backend-specific errors.
    async fn trust_bundle(&self) -> Result<TrustBundle, Error>;

    /// Issues one data plane certificate for `request`. Callers use [`issue_certificate`], which
    /// checks the result.
    ///
    /// # Errors
    /// Backend-specific errors; [`Error::Unavailable`] for an upstream outage.
    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error>;

    /// Names of mesh-scoped secrets this backend reads, so a control plane can refuse to delete
    /// them.
    fn used_secrets(&self) -> Vec<SecretName> {
        Vec::new()
    }

    /// Whether [`issue`](CertificateAuthority::issue) reads [`IssueRequest::csr_der`]. Backends
    /// that sign the public key themselves return `false`, and core then skips making a CSR for
    /// keys it generates (one signature less per certificate).
    fn needs_csr(&self) -> bool {
        true
    }
}

/// The certificates data planes trust, parsed once.
///
/// Chains are verified with webpki, which checks the constraints of every intermediate but, by
/// design, none of the trust anchor's own. The bundle enforces those itself: every anchor must be
/// a CA (`basicConstraints` `CA:TRUE`; version-1 roots excepted, as openssl does), and a path may
/// hold no more intermediates than the anchor's `pathLenConstraint` allows — a sub-CA under a
/// `pathlen:0` root is refused, as `openssl verify` refuses it.
#[derive(Clone)]
pub struct TrustBundle {
    certs: Arc<[CertificateDer<'static>]>,
    anchors: Arc<[rustls_pki_types::TrustAnchor<'static>]>,
    /// `pathLenConstraint` of each anchor, same order (`None`: unconstrained).
    path_lens: Arc<[Option<usize>]>,
}

/// The extended key usage a chain is verified for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainUsage {
    /// Client and server authentication both (mesh certificates are used in both directions).
    ClientAndServer,
    /// Client authentication (callers of the issuer).
    Client,
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("certs", &self.certs.len())
            .finish()
    }
}

impl TrustBundle {
    /// Builds a bundle from DER certificates.
    ///
    /// # Errors
    /// [`Error::InvalidCa`] when the list is empty or a certificate cannot be a trust anchor.
    pub fn new(certs: Vec<CertificateDer<'static>>) -> Result<Self, Error> {
        if certs.is_empty() {
            return Err(Error::invalid_ca("trust bundle", "is empty"));
        }
        let path_lens = certs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                anchor_path_len(c).map_err(|e| Error::invalid_ca(format!("trust bundle[{i}]"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let anchors = certs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                webpki::anchor_from_trusted_cert(c)
                    .map(|a| a.to_owned())
                    .map_err(|e| {
                        Error::invalid_ca(
                            format!("trust bundle[{i}]"),
                            format!("not a usable CA certificate: {e}"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            certs: certs.into(),
            anchors: anchors.into(),
            path_lens: path_lens.into(),
        })
    }

    /// Joins several bundles (during a CA switch), without duplicates.
    pub fn merge<'a>(bundles: impl IntoIterator<Item = &'a TrustBundle>) -> Result<Self, Error> {
        let mut certs: Vec<CertificateDer<'static>> = Vec::new();
        for b in bundles {
            for c in b.certs.iter() {
                if !certs.contains(c) {
                    certs.push(c.clone());
                }
            }
        }
        Self::new(certs)
    }

    /// The DER certificates.
    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The certificates as concatenated PEM.
    pub fn to_pem(&self) -> String {
        certs_to_pem(self.certs.iter())
    }

    /// Verifies that `leaf` chains to this bundle through `intermediates`, for client and server
    /// authentication, at `now`.
    ///
    /// # Errors
    /// A message from the verifier.
    pub fn verify_chain(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), String> {
        self.verify_chain_for(leaf, intermediates, now, ChainUsage::ClientAndServer)
            .map(|_| ())
    }

    /// Verifies that `leaf` chains to this bundle through `intermediates` for `usage` at `now`,
    /// with the anchors' own constraints enforced; returns the index (in [`certs`](Self::certs))
    /// of the anchor the path ends at.
    ///
    /// # Errors
    /// A message from the verifier.
    pub fn verify_chain_for(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
        usage: ChainUsage,
    ) -> Result<usize, String> {
        let ee = webpki::EndEntityCert::try_from(leaf)
            .map_err(|e| format!("leaf cannot be parsed: {e}"))?;
        let now = UnixTime::since_unix_epoch(
            now.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        let index_of = |path: &webpki::VerifiedPath<'_>| {
            let spki = path.anchor().subject_public_key_info.as_ref();
            self.anchors
                .iter()
                .position(|a| a.subject_public_key_info.as_ref() == spki)
        };
        // Rejecting a path here makes webpki try the others (another anchor may allow it).
        let anchor_constraints = |path: &webpki::VerifiedPath<'_>| {
            let limit = index_of(path).and_then(|i| self.path_lens.get(i).copied().flatten());
            match limit {
                Some(max) if path.intermediate_certificates().count() > max => {
                    Err(webpki::Error::PathLenConstraintViolated)
                }
                _ => Ok(()),
            }
        };
        let path = match usage {
            ChainUsage::ClientAndServer => ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                now,
                ClientAndServerAuth,
                None,
                Some(&anchor_constraints),
            ),
            ChainUsage::Client => ee.verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::client_auth(),
                None,
                Some(&anchor_constraints),
            ),
        }
        .map_err(|e| format!("does not chain to the trust bundle: {e}"))?;
        index_of(&path).ok_or_else(|| "does not chain to the trust bundle".to_owned())
    }
}

/// The `pathLenConstraint` of a trust anchor; an error when it is not a CA.
fn anchor_path_len(cert: &CertificateDer<'_>) -> Result<Option<usize>, String> {
    let (_, c) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    match c.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => Ok(bc
            .value
            .path_len_constraint
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX))),
        Ok(None) if c.version() == x509_parser::x509::X509Version::V1 => Ok(None),
        Ok(_) => Err("not a CA certificate (basicConstraints CA:TRUE is required)".into()),
        Err(e) => Err(format!("not a usable CA certificate: {e}")),
    }
}

/// Requires both serverAuth and clientAuth of every certificate in the path that restricts its
/// extended key usage: mesh certificates are used in both directions. One path build checks both.
struct ClientAndServerAuth;

impl webpki::ExtendedKeyUsageValidator for ClientAndServerAuth {
    fn validate(&self, iter: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        const SERVER: webpki::KeyPurposeId<'static> =
            webpki::KeyPurposeId::new(&[0x2b, 6, 1, 5, 5, 7, 3, 1]);
        const CLIENT: webpki::KeyPurposeId<'static> =
            webpki::KeyPurposeId::new(&[0x2b, 6, 1, 5, 5, 7, 3, 2]);
        let (mut any, mut server, mut client) = (false, false, false);
        for id in iter {
            let id = id?;
            any = true;
            server |= id == SERVER;
            client |= id == CLIENT;
        }
        if !any || (server && client) {
            Ok(())
        } else {
            #[allow(deprecated)]
            Err(webpki::Error::RequiredEkuNotFound)
        }
    }
}

/// Where the data plane's key comes from.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeySource<'a> {
    /// The caller's CSR (DER); the key never leaves the caller.
    Csr(&'a [u8]),
    /// meshca generates a key of this type and returns it with the certificate.
    Generate(KeyType),
}

/// What a caller asks [`issue_certificate`] for.
#[derive(Debug)]
#[non_exhaustive]
pub struct IssueParams<'a> {
    /// The identity; SANs come only from it.
    pub identity: Identity,
    /// The key.
    pub key: KeySource<'a>,
    /// The requested lifetime (`dpCert.rotation.expiration`).
    pub lifetime: Duration,
    /// The common-name template, if the backend has one.
    pub common_name: Option<&'a CommonNameTemplate>,
}

impl<'a> IssueParams<'a> {
    /// A request with no common name.
    pub fn new(identity: Identity, key: KeySource<'a>, lifetime: Duration) -> Self {
        Self {
            identity,
            key,
            lifetime,
            common_name: None,
        }
    }

    /// Sets the common-name template.
    #[must_use]
    pub fn with_common_name(mut self, template: Option<&'a CommonNameTemplate>) -> Self {
        self.common_name = template;
        self
    }
}

/// A request as a backend sees it: a validated identity, a key whose possession was proven, a
/// validity window and an optional rendered CN. Built only by core.
#[derive(Debug)]
pub struct IssueRequest {
    identity: Identity,
    subject_key: SubjectKey,
    csr_der: Option<Vec<u8>>,
    not_before: SystemTime,
    not_after: SystemTime,
    lifetime: Duration,
    common_name: Option<String>,
}

impl IssueRequest {
    /// The identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The public key to certify.
    pub fn subject_key(&self) -> &SubjectKey {
        &self.subject_key
    }

    /// A CSR for the key (the caller's, or one core made for a generated key), for backends that
    /// forward CSRs upstream.
    /// `None` only for a generated key and a backend whose
    /// [`needs_csr`](CertificateAuthority::needs_csr) is `false`.
    pub fn csr_der(&self) -> Option<&[u8]> {
        self.csr_der.as_deref()
    }

    /// The CSR as PEM.
    pub fn csr_pem(&self) -> Option<String> {
        self.csr_der
            .as_ref()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone())))
    }

    /// The requested not-before (now, backdated 10 s).
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The requested not-after.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The requested lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// The rendered common name, if the backend has a template.
    pub fn common_name(&self) -> Option<&str> {
        self.common_name.as_deref()
    }
}

/// What a backend returns: the leaf first, then any intermediates. Nobody but core sees it.
#[derive(Debug)]
pub struct UncheckedCertificate {
    chain: Vec<CertificateDer<'static>>,
    signed_by: Option<Arc<LocalSigner>>,
}

impl UncheckedCertificate {
    /// Wraps a chain (leaf first).
    pub fn new(chain: Vec<CertificateDer<'static>>) -> Self {
        Self {
            chain,
            signed_by: None,
        }
    }

    /// A chain whose leaf core's own [`crate::LocalCa`] signed.
    pub(crate) fn signed_locally(
        chain: Vec<CertificateDer<'static>>,
        signer: Arc<LocalSigner>,
    ) -> Self {
        Self {
            chain,
            signed_by: Some(signer),
        }
    }
}

/// A certificate core has checked against its request: exactly the identity's SANs, the
/// requested key, valid now, chaining to the trust bundle for client and server auth.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    chain: Vec<CertificateDer<'static>>,
    key: Option<SecretBytes>,
    bundle: TrustBundle,
    not_before: SystemTime,
    not_after: SystemTime,
    requested_not_after: SystemTime,
    issued_at: SystemTime,
    serial_hex: String,
    identity: Identity,
}

impl IssuedCertificate {
    /// Leaf first, then intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The chain as PEM.
    pub fn chain_pem(&self) -> String {
        certs_to_pem(self.chain.iter())
    }

    /// The private key (PKCS#8 PEM), only when meshca generated it.
    pub fn key_pem(&self) -> Option<&SecretBytes> {
        self.key.as_ref()
    }

    /// The trust bundle the leaf was verified against.
    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// The identity the certificate is for.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The leaf's not-before.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// The leaf's actual not-after.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The not-after that was asked for.
    pub fn requested_not_after(&self) -> SystemTime {
        self.requested_not_after
    }

    /// True when the CA shortened the lifetime (a Vault `max_ttl`, a provided CA expiring sooner).
    pub fn shortened(&self) -> bool {
        self.not_after < self.requested_not_after
    }

    /// Whichever of the requested and the actual not-after comes first: rotation is scheduled
    /// from it.
    pub fn effective_not_after(&self) -> SystemTime {
        self.not_after.min(self.requested_not_after)
    }

    /// When the certificate was asked for (its not-before is backdated from this by 10 s).
    pub fn issued_at(&self) -> SystemTime {
        self.issued_at
    }

    /// When to rotate: `fraction` (Kuma: 4/5) of the effective lifetime, counted from issuance
    /// (not from the backdated not-before, which matters for short lifetimes).
    pub fn rotate_at(&self, fraction: f64) -> SystemTime {
        let life = self
            .effective_not_after()
            .duration_since(self.issued_at)
            .unwrap_or_default();
        self.issued_at + life.mul_f64(fraction.clamp(0.0, 1.0))
    }

    /// The serial number in hex.
    pub fn serial_hex(&self) -> &str {
        &self.serial_hex
    }
}

/// Issues a certificate through `ca` and checks the result.
///
/// This is the only way to get an [`IssuedCertificate`]: the CSR's signature is verified, SANs
/// come only from `params.identity`, and the backend's answer is checked by [`check_issued`].
///
/// # Errors
/// [`Error::InvalidCsr`] / [`Error::UnsupportedKey`] for a bad CSR, [`Error::InvalidTemplate`]
/// when the CN cannot be rendered, the backend's error, or [`Error::InvalidIssued`] when the
/// backend's certificate is not what was asked for.
pub async fn issue_certificate(
    ca: &dyn CertificateAuthority,
    params: IssueParams<'_>,
) -> Result<IssuedCertificate, Error> {
    if params.lifetime < Duration::from_secs(1) {
        return Err(Error::invalid_argument("lifetime", "must be at least 1s"));
    }
    let common_name = params
        .common_name
        .map(|t| t.render(&params.identity))
        .transpose()?;
    let (subject_key, csr_der, key) = match params.key {
        KeySource::Csr(der) => (
            verify_csr(der, params.identity.uri_sans())?,
            Some(der.to_vec()),
            None,
        ),
        KeySource::Generate(key_type) => {
            let key = key_type.generate()?;
            let csr = if ca.needs_csr() {
                Some(key.csr_der(params.identity.uri_sans())?)
            } else {
                None
            };
            (SubjectKey::from_spki_der(&key.spki_der())?, csr, Some(key))
        }
    };
    // Whole seconds: X.509 times have no fractions, so the leaf can match the request exactly.
    let now = SystemTime::UNIX_EPOCH
        + Duration::from_secs(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
    let request = IssueRequest {
        identity: params.identity,
        subject_key,
        csr_der,
        not_before: now - BACKDATE,
        not_after: now + params.lifetime,
        lifetime: params.lifetime,
        common_name,
    };
    let unchecked = ca.issue(&request).await?;
    let bundle = ca.trust_bundle().await?;
    let mut issued = check_issued(ca.name(), &request, unchecked, &bundle, SystemTime::now())?;
    issued.key = key.map(|k: PrivateKey| k.to_pem());
    Ok(issued)
}

/// Checks a backend's answer against its request.
///
/// # Errors
/// [`Error::InvalidIssued`] naming what is wrong: unparsable, a CA certificate, a different key,
/// missing or extra SANs, a wrong common name, not valid now, or not chaining to `bundle`.
pub fn check_issued(
    backend: &str,
    request: &IssueRequest,
    unchecked: UncheckedCertificate,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<IssuedCertificate, Error> {
    let bad = |reason: String| Error::InvalidIssued {
        backend: backend.to_owned(),
        reason,
    };
    let chain = &unchecked.chain;
    let leaf_der = chain.first().ok_or_else(|| bad("no certificate".into()))?;
    let (_, leaf) = X509Certificate::from_der(leaf_der)
        .map_err(|e| bad(format!("leaf cannot be parsed: {e}")))?;

    if leaf.is_ca() {
        return Err(bad("leaf is a CA certificate".into()));
    }
    if leaf.public_key().raw != request.subject_key.spki_der() {
        return Err(bad(
            "leaf certifies a different key than the one requested".into()
        ));
    }

    let mut uris: Vec<&str> = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) => uris.push(u),
                other => {
                    return Err(bad(format!(
                        "leaf has SAN {} that was not requested",
                        describe_general_name(other)
                    )))
                }
            }
        }
    }
    let want = request.identity.uri_sans();
    if let Some(extra) = uris.iter().find(|u| !want.iter().any(|w| w == *u)) {
        return Err(bad(format!("leaf has SAN {extra} that was not requested")));
    }
    if let Some(missing) = want.iter().find(|w| !uris.contains(&w.as_str())) {
        return Err(bad(format!("leaf lacks SAN {missing}")));
    }

    let cns: Vec<&str> = leaf
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .collect();
    match (request.common_name(), cns.as_slice()) {
        (None, []) => {}
        (Some(want), [got]) if *got == want => {}
        (want, got) => {
            return Err(bad(format!(
                "leaf common name is {got:?}, expected {}",
                want.map_or("none".to_string(), |w| format!("{w:?}"))
            )))
        }
    }

    let not_before = to_system(leaf.validity().not_before.timestamp());
    let not_after = to_system(leaf.validity().not_after.timestamp());
    if not_before > now + Duration::from_secs(60) {
        return Err(bad("leaf is not valid yet".into()));
    }
    if not_after <= now {
        return Err(bad("leaf has already expired".into()));
    }

    // A leaf that core's own LocalCa signed, whose signing CA is itself a trust anchor of the
    // bundle, chains by construction: the signature was made with the key that matches that CA
    // certificate (checked when the LocalCa was built), and webpki checks neither the validity
    // nor the extensions of a trust anchor. Skipping the signature verification here saves one
    // verify per certificate on the local backends' hot path. Everything else goes to webpki.
    let anchored_locally = unchecked.signed_by.as_ref().is_some_and(|s| {
        leaf.issuer().as_raw() == s.ca_subject.as_slice() && bundle.certs().contains(&s.ca_cert)
    });
    if !anchored_locally {
        bundle
            .verify_chain(leaf_der, &chain[1..], now)
            .map_err(|e| bad(format!("leaf {e}")))?;
    }

    let serial_hex = leaf.raw_serial_as_string();
    Ok(IssuedCertificate {
        not_before,
        not_after,
        requested_not_after: request.not_after,
        issued_at: request.not_before + BACKDATE,
        serial_hex,
        identity: request.identity.clone(),
        bundle: bundle.clone(),
        key: None,
        chain: unchecked.chain,
    })
}

/// The summary of a test certificate issued by [`validate`].
#[derive(Debug, Clone)]
pub struct TestCertificate {
    /// The issued (and checked) certificate.
    pub certificate: IssuedCertificate,
}

/// The identity [`validate`] issues its test certificate for.
pub const TEST_SERVICE: &str = "meshca-validation";

/// Validates a backend the way the global control plane does before accepting a Mesh: `ensure`,
/// then issue one test certificate (generated P-256 key) and check it.
///
/// # Errors
/// The first failure, wrapped so that the message says the backend failed validation.
pub async fn validate(
    ca: &dyn CertificateAuthority,
    mesh: &MeshName,
    lifetime: Duration,
    common_name: Option<&CommonNameTemplate>,
) -> Result<TestCertificate, Error> {
    ca.ensure().await?;
    let identity = Identity::new(mesh.clone(), [(crate::name::SERVICE_TAG, TEST_SERVICE)])?;
    let params = IssueParams::new(identity, KeySource::Generate(KeyType::EcdsaP256), lifetime)
        .with_common_name(common_name);
    let certificate = issue_certificate(ca, params).await?;
    Ok(TestCertificate { certificate })
}

fn to_system(ts: i64) -> SystemTime {
    match u64::try_from(ts) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}
