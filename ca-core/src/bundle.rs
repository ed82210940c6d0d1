//! [`TrustBundle`]: the certificates data planes trust, and chain verification against them.

use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, UnixTime};

use crate::x509::certs_to_pem;
use crate::Error;

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
