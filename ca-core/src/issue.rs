//! The issuance path: [`issue_certificate`], the checks core runs on every certificate a backend
//! returns ([`check_issued`]), and backend validation ([`validate`]).

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::authority::CertificateAuthority;
use crate::bundle::TrustBundle;
use crate::error::IssuedProblem;
use crate::identity::Identity;
use crate::name::MeshName;
use crate::refresh::{refresh_at, RefreshPolicy};
use crate::request::{
    IdempotencyKey, IssueParams, IssueRequest, KeySource, RequestKey, UncheckedCertificate,
};
use crate::secret::SecretBytes;
use crate::template::CommonNameTemplate;
use crate::x509::{
    certs_to_pem, describe_general_name, verify_csr_with_dns, KeyType, PrivateKey, SubjectKey,
    BACKDATE,
};
use crate::Error;

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

    /// When to refresh under `policy`: [`refresh_at`] over this certificate's effective lifetime
    /// (from its issuance to [`effective_not_after`](Self::effective_not_after)). `jitter_sample`
    /// is a random number in `[0, 1)` the caller draws.
    pub fn refresh_at(&self, policy: &RefreshPolicy, jitter_sample: f64) -> SystemTime {
        refresh_at(
            self.not_before,
            self.effective_not_after(),
            self.issued_at,
            policy,
            jitter_sample,
        )
    }

    /// The serial number in hex.
    pub fn serial_hex(&self) -> &str {
        &self.serial_hex
    }
}

/// Issues a certificate through `ca` and checks the result.
///
/// This is the only way to get an [`IssuedCertificate`]: the CSR's signature is verified, SANs
/// come only from `params.identity` (URI SANs, and DNS SANs when the identity has them), and the
/// backend's answer is checked by [`check_issued`] against
/// [`trust_bundle`](CertificateAuthority::trust_bundle). When that check fails only because the
/// leaf does not chain to the bundle (a cached bundle older than a CA rotation), the bundle is
/// fetched again once with [`refresh_trust_bundle`](CertificateAuthority::refresh_trust_bundle)
/// and the leaf re-checked against the fresh one.
///
/// The request carries `params.idempotency_key`, or a fresh [`IdempotencyKey`] per call.
///
/// # Errors
/// [`Error::InvalidArgument`] for a lifetime under 1 s, [`Error::Csr`] /
/// [`Error::UnsupportedKey`] for a bad CSR, [`Error::InvalidTemplate`] when the CN cannot be
/// rendered, the backend's error, or [`Error::InvalidIssued`] when the backend's certificate is
/// not what was asked for.
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
    let uri_sans = params.identity.uri_sans();
    let (request_key, csr_der, key) = match params.key {
        KeySource::Csr(der) => {
            let subject_key = verify_csr_with_dns(der, &uri_sans, params.identity.dns_sans())?;
            if ca.generates_keys() {
                return Err(Error::invalid_argument(
                    "csr",
                    format!(
                        "backend {} has its upstream generate data plane keys and cannot \
                         certify a caller's key; request a generated key, or (vault) set \
                         fromCp.mode: sign",
                        ca.name()
                    ),
                ));
            }
            (RequestKey::Certify(subject_key), Some(der.to_vec()), None)
        }
        KeySource::Generate(key_type) if ca.generates_keys() => {
            (RequestKey::Upstream(key_type), None, None)
        }
        KeySource::Generate(key_type) => {
            let key = key_type.generate()?;
            let csr = if ca.needs_csr() {
                Some(key.csr_der_with_names(
                    &uri_sans,
                    params.identity.dns_sans(),
                    common_name.as_deref(),
                )?)
            } else {
                None
            };
            (
                RequestKey::Certify(SubjectKey::from_spki_der(&key.spki_der())?),
                csr,
                Some(key),
            )
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
        uri_sans,
        key: request_key,
        csr_der,
        not_before: now - BACKDATE,
        not_after: now + params.lifetime,
        lifetime: params.lifetime,
        common_name,
        idempotency_key: params.idempotency_key.unwrap_or_else(IdempotencyKey::new),
    };
    let unchecked = ca.issue(&request).await?;
    let bundle = ca.trust_bundle().await?;
    let checked = match check(ca.name(), &request, &unchecked, &bundle, SystemTime::now()) {
        Err(Error::InvalidIssued {
            problem: IssuedProblem::DoesNotChain(_),
            ..
        }) => {
            // Every other check passed: the leaf may be from a CA newer than a cached bundle.
            let fresh = ca.refresh_trust_bundle().await?;
            let checked = check(ca.name(), &request, &unchecked, &fresh, SystemTime::now())?;
            (checked, fresh)
        }
        other => (other?, bundle),
    };
    let (checked, bundle) = checked;
    let mut issued = checked.into_issued(&request, unchecked, bundle);
    if let Some(k) = key {
        issued.key = Some(k.to_pem());
    }
    Ok(issued)
}

/// Checks a backend's answer against its request.
///
/// # Errors
/// [`Error::InvalidIssued`] with the [`IssuedProblem`]: unparsable, a CA certificate, a different
/// key, missing or extra URI or DNS SANs, a SAN of another kind, a wrong common name, not valid
/// now, or not chaining to `bundle`.
pub fn check_issued(
    backend: &str,
    request: &IssueRequest,
    unchecked: UncheckedCertificate,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<IssuedCertificate, Error> {
    let checked = check(backend, request, &unchecked, bundle, now)?;
    Ok(checked.into_issued(request, unchecked, bundle.clone()))
}

/// What [`check`] reads off a leaf that passed.
struct Checked {
    not_before: SystemTime,
    not_after: SystemTime,
    serial_hex: String,
}

impl Checked {
    fn into_issued(
        self,
        request: &IssueRequest,
        unchecked: UncheckedCertificate,
        bundle: TrustBundle,
    ) -> IssuedCertificate {
        IssuedCertificate {
            not_before: self.not_before,
            not_after: self.not_after,
            requested_not_after: request.not_after,
            issued_at: request.not_before + BACKDATE,
            serial_hex: self.serial_hex,
            identity: request.identity.clone(),
            bundle,
            key: unchecked.upstream_key.as_ref().map(PrivateKey::to_pem),
            chain: unchecked.chain,
        }
    }
}

/// The checks of [`check_issued`], borrowing the answer so it can be re-checked against a
/// refreshed bundle. The chain check comes last: a [`IssuedProblem::DoesNotChain`] means every
/// other check passed.
fn check(
    backend: &str,
    request: &IssueRequest,
    unchecked: &UncheckedCertificate,
    bundle: &TrustBundle,
    now: SystemTime,
) -> Result<Checked, Error> {
    let bad = |problem: IssuedProblem| Error::InvalidIssued {
        backend: backend.to_owned(),
        problem,
    };
    let chain = &unchecked.chain;
    let leaf_der = chain.first().ok_or_else(|| bad(IssuedProblem::Empty))?;
    let (_, leaf) = X509Certificate::from_der(leaf_der)
        .map_err(|e| bad(IssuedProblem::Unparseable(e.to_string())))?;

    if leaf.is_ca() {
        return Err(bad(IssuedProblem::NotALeaf));
    }
    let upstream_spki = unchecked.upstream_key.as_ref().map(PrivateKey::spki_der);
    let certified: &[u8] = match (&request.key, &upstream_spki) {
        (RequestKey::Certify(k), None) => k.spki_der(),
        (RequestKey::Upstream(_), Some(k)) => k,
        (RequestKey::Certify(_), Some(_)) => {
            return Err(bad(IssuedProblem::Other(
                "backend returned a private key for a key it was to certify".into(),
            )))
        }
        (RequestKey::Upstream(_), None) => {
            return Err(bad(IssuedProblem::Other(
                "backend returned no private key for the key its upstream was to make".into(),
            )))
        }
    };
    if leaf.public_key().raw != certified {
        return Err(bad(IssuedProblem::WrongKey));
    }

    // A SAN extension that cannot be read counts as none: the identity's SANs are then missing.
    let names = match leaf.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.as_slice(),
        _ => &[],
    };
    sans_match(names, &request.uri_sans, request.identity.dns_sans()).map_err(bad)?;

    let cns: Vec<&str> = leaf
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .collect();
    match (request.common_name(), cns.as_slice()) {
        (None, []) => {}
        (Some(want), [got]) if *got == want => {}
        (want, got) => {
            return Err(bad(IssuedProblem::CommonName {
                expected: want.map(str::to_owned),
                got: got.iter().map(|s| (*s).to_owned()).collect(),
            }))
        }
    }

    let not_before = to_system(leaf.validity().not_before.timestamp());
    let not_after = to_system(leaf.validity().not_after.timestamp());
    if not_before > now + Duration::from_secs(60) {
        return Err(bad(IssuedProblem::NotYetValid));
    }
    if not_after <= now {
        return Err(bad(IssuedProblem::Expired));
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
            .map_err(|e| bad(IssuedProblem::DoesNotChain(e)))?;
    }

    Ok(Checked {
        not_before,
        not_after,
        serial_hex: leaf.raw_serial_as_string(),
    })
}

/// Checks that the SANs of the leaf certificate `leaf_der` are exactly `uri_sans` and
/// `dns_sans`, with no SAN of another kind: the check core makes of every issued certificate,
/// for clients that verify what an issuer returns.
///
/// # Errors
/// The [`IssuedProblem`]: unparsable, missing or extra URI or DNS SANs, a SAN of another kind.
pub fn check_leaf_sans(
    leaf_der: &[u8],
    uri_sans: &[String],
    dns_sans: &[String],
) -> Result<(), IssuedProblem> {
    let (_, leaf) = X509Certificate::from_der(leaf_der)
        .map_err(|e| IssuedProblem::Unparseable(e.to_string()))?;
    let san = leaf
        .subject_alternative_name()
        .map_err(|e| IssuedProblem::Unparseable(e.to_string()))?;
    let names = san.map_or(&[][..], |s| s.value.general_names.as_slice());
    sans_match(names, uri_sans, dns_sans)
}

/// `names` are exactly `uri_sans` and `dns_sans`, nothing of another kind.
fn sans_match(
    names: &[GeneralName<'_>],
    uri_sans: &[String],
    dns_sans: &[String],
) -> Result<(), IssuedProblem> {
    let mut uris: Vec<&str> = Vec::new();
    let mut dns: Vec<&str> = Vec::new();
    for name in names {
        match name {
            GeneralName::URI(u) => uris.push(u),
            GeneralName::DNSName(d) => dns.push(d),
            other => return Err(IssuedProblem::UnexpectedSan(describe_general_name(other))),
        }
    }
    let (missing, extra) = difference(uri_sans, &uris);
    if !missing.is_empty() || !extra.is_empty() {
        return Err(IssuedProblem::WrongUriSans { missing, extra });
    }
    let (missing, extra) = difference(dns_sans, &dns);
    if !missing.is_empty() || !extra.is_empty() {
        return Err(IssuedProblem::WrongDnsSans { missing, extra });
    }
    Ok(())
}

/// What `want` has that `got` lacks, and what `got` has that `want` does not, each in order.
fn difference(want: &[String], got: &[&str]) -> (Vec<String>, Vec<String>) {
    let missing = want
        .iter()
        .filter(|w| !got.contains(&w.as_str()))
        .cloned()
        .collect();
    let extra = got
        .iter()
        .filter(|g| !want.iter().any(|w| w == *g))
        .map(|g| (*g).to_owned())
        .collect();
    (missing, extra)
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
/// then issue one test certificate (generated P-256 key), check it, and ask the backend for its
/// [`health`](CertificateAuthority::health).
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
    // What has not failed yet but will (a token that cannot be renewed).
    ca.health().await?;
    Ok(TestCertificate { certificate })
}

fn to_system(ts: i64) -> SystemTime {
    match u64::try_from(ts) {
        Ok(s) => SystemTime::UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => SystemTime::UNIX_EPOCH,
    }
}
