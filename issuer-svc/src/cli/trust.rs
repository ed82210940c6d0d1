//! What `meshca agent` checks in an issuer's answer before it writes anything.
//!
//! The issuer is authenticated by the TLS channel (its certificate verifies against `--ca-cert`
//! or the bootstrap CA), but what it returns is still checked, as core checks a backend's answer:
//!
//! - no private key came back (the agent sent a CSR);
//! - the leaf certifies the agent's own key, is not a CA, and carries exactly the identity's URI
//!   SANs and the expected DNS SANs (`--dns-name`), no SAN of another kind;
//! - the leaf is valid now by its own dates (never the response's `not_after`);
//! - the leaf with its chain verifies against the answer's trust bundle for client and server
//!   authentication (mesh certificates are used both ways);
//! - that bundle keeps at least one root of the bundle the agent already holds (from an earlier
//!   answer, or `bundle.pem` a previous run left): a CA switch sends the old and the new roots
//!   first, then the new alone, so every honest step shares a root with the one before. The first
//!   bundle an agent ever sees is taken from the authenticated issuer (trust on first contact).
//!
//! Only [`Expected::check`] builds a [`Verified`], and the sinks write only a [`Verified`].

use std::time::{Duration, SystemTime};

use ca_core::{ChainUsage, Identity, IssuedProblem, TrustBundle};
use rustls_pki_types::CertificateDer;

use crate::proto::IssuedCertificate;

/// How far in the future a leaf's not-before may lie (clock skew), as core allows its backends.
const NOT_BEFORE_SKEW: Duration = Duration::from_secs(60);

/// What the agent asked for: the certificate it will accept.
#[derive(Debug)]
pub(crate) struct Expected {
    uri_sans: Vec<String>,
    dns_sans: Vec<String>,
    /// The agent's public key (SubjectPublicKeyInfo DER).
    spki: Vec<u8>,
}

/// An answer that passed every check: what the sinks write, normalized to the certificates that
/// were verified.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    /// Leaf, then intermediates.
    pub(crate) chain_pem: String,
    pub(crate) bundle_pem: String,
    pub(crate) bundle: TrustBundle,
    /// The leaf's own not-after (Unix seconds).
    pub(crate) not_after: i64,
    pub(crate) serial: String,
    /// The leaf's first URI SAN (its SPIFFE ID).
    pub(crate) spiffe_id: String,
}

/// Why an answer was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Refusal {
    /// The issuer made a key although the agent sent a CSR.
    #[error("the issuer generated a key although a CSR was sent")]
    GeneratedKey,
    /// `cert_chain_pem` is not PEM certificates.
    #[error("cert_chain_pem: {0}")]
    ChainPem(String),
    /// The leaf is not the agent's certificate (the same problems core names for a backend).
    #[error("the certificate: {0}")]
    Certificate(IssuedProblem),
    /// `trust_bundle_pem` is not a usable bundle.
    #[error("trust_bundle_pem: {0}")]
    Bundle(String),
    /// The bundle has none of the roots the agent trusts.
    #[error(
        "trust_bundle_pem shares no root with the trust bundle the agent holds ({held} \
         certificate(s)): a CA change must keep a trusted root until it is done; if the mesh's \
         CA was replaced on purpose, remove the agent's bundle.pem and restart it"
    )]
    UnknownRoots {
        /// How many roots the agent holds.
        held: usize,
    },
}

impl Expected {
    /// A certificate with exactly the SANs of `identity` (URI and DNS), for the key whose SPKI
    /// is `spki`.
    pub(crate) fn new(identity: &Identity, spki: Vec<u8>) -> Self {
        Self {
            uri_sans: identity.uri_sans(),
            dns_sans: identity.dns_sans().to_vec(),
            spki,
        }
    }

    /// Checks an answer against what was asked for and the bundle the agent holds (`None`: the
    /// first contact), at `now`.
    ///
    /// # Errors
    /// The first [`Refusal`] found.
    pub(crate) fn check(
        &self,
        c: &IssuedCertificate,
        held: Option<&TrustBundle>,
        now: SystemTime,
    ) -> Result<Verified, Refusal> {
        let bad = Refusal::Certificate;
        if !c.private_key_pem.is_empty() {
            return Err(Refusal::GeneratedKey);
        }
        let chain = ca_core::x509::parse_pem_certs(c.cert_chain_pem.as_bytes())
            .map_err(Refusal::ChainPem)?;
        let leaf_der = chain.first().ok_or(bad(IssuedProblem::Empty))?;
        let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der)
            .map_err(|e| bad(IssuedProblem::Unparseable(e.to_string())))?;
        if leaf.is_ca() {
            return Err(bad(IssuedProblem::NotALeaf));
        }
        if leaf.public_key().raw != self.spki.as_slice() {
            return Err(bad(IssuedProblem::WrongKey));
        }
        ca_core::check_leaf_sans(leaf_der.as_ref(), &self.uri_sans, &self.dns_sans).map_err(bad)?;

        let not_before = leaf.validity().not_before.timestamp();
        let not_after = leaf.validity().not_after.timestamp();
        let now_secs = unix(now);
        if not_before > now_secs.saturating_add(secs(NOT_BEFORE_SKEW)) {
            return Err(bad(IssuedProblem::NotYetValid));
        }
        if not_after <= now_secs {
            return Err(bad(IssuedProblem::Expired));
        }

        let roots = ca_core::x509::parse_pem_certs(c.trust_bundle_pem.as_bytes())
            .map_err(Refusal::Bundle)?;
        let bundle = TrustBundle::new(roots).map_err(|e| Refusal::Bundle(e.to_string()))?;
        if let Some(held) = held {
            if !bundle.certs().iter().any(|r| held.certs().contains(r)) {
                return Err(Refusal::UnknownRoots {
                    held: held.certs().len(),
                });
            }
        }
        // Within the skew a leaf is checked at its own not-before, which webpki would otherwise
        // call not yet valid.
        let at = if not_before > now_secs {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(not_before).unwrap_or(0))
        } else {
            now
        };
        let intermediates: &[CertificateDer<'static>] = chain.get(1..).unwrap_or_default();
        bundle
            .verify_chain_for(leaf_der, intermediates, at, ChainUsage::ClientAndServer)
            .map_err(|e| bad(IssuedProblem::DoesNotChain(e)))?;

        Ok(Verified {
            chain_pem: ca_core::x509::certs_to_pem(chain.iter()),
            bundle_pem: bundle.to_pem(),
            serial: leaf.raw_serial_as_string(),
            spiffe_id: self.uri_sans.first().cloned().unwrap_or_default(),
            not_after,
            bundle,
        })
    }
}

/// Reads a bundle a previous run left (`bundle.pem`); `None` when there is none or it cannot be
/// used, which is logged.
pub(crate) fn read_held_bundle(path: &std::path::Path) -> Option<TrustBundle> {
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the trust bundle a previous run left; the issuer's next bundle is trusted as on first contact");
            return None;
        }
    };
    match ca_core::x509::parse_pem_certs(&pem)
        .and_then(|certs| TrustBundle::new(certs).map_err(|e| e.to_string()))
    {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "the trust bundle a previous run left is not usable; the issuer's next bundle is trusted as on first contact");
            None
        }
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, secs)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use ca_core::{KeyType, MeshName};
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        SanType,
    };

    use super::*;

    struct Ca {
        cert: rcgen::Certificate,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = p.self_signed(&key).unwrap();
        Ca {
            issuer: Issuer::new(p, key),
            cert,
        }
    }

    fn web() -> Identity {
        Identity::new(
            MeshName::new("default").unwrap(),
            [("kuma.io/service", "web")],
        )
        .unwrap()
    }

    /// A leaf for `spki_key` with `sans`, valid from `from` to `until` (seconds from now).
    fn leaf(
        ca: &Ca,
        key: &KeyPair,
        sans: &[SanType],
        from: i64,
        until: i64,
        ekus: Vec<ExtendedKeyUsagePurpose>,
    ) -> String {
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans.to_vec();
        p.extended_key_usages = ekus;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now + time::Duration::seconds(from);
        p.not_after = now + time::Duration::seconds(until);
        p.signed_by(key, &ca.issuer).unwrap().pem()
    }

    fn both() -> Vec<ExtendedKeyUsagePurpose> {
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ]
    }

    fn web_sans() -> Vec<SanType> {
        web()
            .uri_sans()
            .iter()
            .map(|u| SanType::URI(u.as_str().try_into().unwrap()))
            .collect()
    }

    fn answer(chain: String, bundle: &[&Ca]) -> IssuedCertificate {
        IssuedCertificate {
            cert_chain_pem: chain,
            trust_bundle_pem: bundle.iter().map(|c| c.cert.pem()).collect(),
            // The answer's own dates claim a long life whatever the certificate says.
            not_after: i64::MAX,
            ..Default::default()
        }
    }

    struct Agent {
        key: KeyPair,
        expected: Expected,
    }

    fn agent() -> Agent {
        let key = KeyType::EcdsaP256.generate().unwrap();
        let expected = Expected::new(&web(), key.spki_der());
        let key = KeyPair::from_pem(std::str::from_utf8(key.to_pem().expose()).unwrap()).unwrap();
        Agent { key, expected }
    }

    fn refusal(r: Result<Verified, Refusal>) -> String {
        r.expect_err("was accepted").to_string()
    }

    #[test]
    fn an_honest_answer_passes_and_is_written_as_verified() {
        let a = agent();
        let ca1 = ca("ca-1");
        let chain = leaf(&ca1, &a.key, &web_sans(), -10, 3600, both());
        let mut c = answer(format!("junk before\n{chain}"), &[&ca1]);
        c.serial = "forged".into();
        let v = a.expected.check(&c, None, SystemTime::now()).unwrap();
        let der = |pem: &str| ca_core::x509::parse_pem_certs(pem.as_bytes()).unwrap();
        assert_eq!(der(&v.chain_pem), der(&chain));
        assert!(!v.chain_pem.contains("junk"));
        assert_eq!(der(&v.bundle_pem), der(&ca1.cert.pem()));
        assert_eq!(v.spiffe_id, "spiffe://default/web");
        assert_ne!(v.serial, "forged");
        assert!(
            v.not_after < unix(SystemTime::now()) + 3700,
            "dates come from the leaf"
        );
        // A leaf without extended key usage is good for both directions too; one issued a few
        // seconds ahead of our clock as well.
        let chain = leaf(&ca1, &a.key, &web_sans(), 20, 3600, vec![]);
        a.expected
            .check(&answer(chain, &[&ca1]), Some(&v.bundle), SystemTime::now())
            .unwrap();
    }

    #[test]
    fn another_identity_key_kind_of_san_or_dates_is_refused() {
        let a = agent();
        let ca1 = ca("ca-1");
        let now = SystemTime::now();
        let check = |chain: String| a.expected.check(&answer(chain, &[&ca1]), None, now);

        let db = vec![SanType::URI("spiffe://default/db".try_into().unwrap())];
        let e = refusal(check(leaf(&ca1, &a.key, &db, -10, 3600, both())));
        assert!(
            e.contains("spiffe://default/db that was not requested"),
            "{e}"
        );

        let other = KeyPair::generate().unwrap();
        let e = refusal(check(leaf(&ca1, &other, &web_sans(), -10, 3600, both())));
        assert!(e.contains("different key"), "{e}");

        let mut sans = web_sans();
        sans.push(SanType::DnsName("evil.example".try_into().unwrap()));
        let e = refusal(check(leaf(&ca1, &a.key, &sans, -10, 3600, both())));
        assert!(e.contains("DNS:evil.example"), "{e}");

        let mut sans = web_sans();
        sans.push(SanType::IpAddress("10.0.0.1".parse().unwrap()));
        let e = refusal(check(leaf(&ca1, &a.key, &sans, -10, 3600, both())));
        assert!(e.contains("10.0.0.1"), "{e}");

        let e = refusal(check(leaf(&ca1, &a.key, &web_sans(), -7200, -3600, both())));
        assert!(e.contains("expired"), "{e}");
        let e = refusal(check(leaf(&ca1, &a.key, &web_sans(), 3600, 7200, both())));
        assert!(e.contains("not valid yet"), "{e}");

        let server_only = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let e = refusal(check(leaf(
            &ca1,
            &a.key,
            &web_sans(),
            -10,
            3600,
            server_only,
        )));
        assert!(e.contains("does not chain"), "{e}");

        for empty in ["", "not pem"] {
            let e = refusal(check(empty.into()));
            assert!(e.starts_with("cert_chain_pem"), "{e}");
        }

        let mut c = answer(leaf(&ca1, &a.key, &web_sans(), -10, 3600, both()), &[&ca1]);
        c.private_key_pem = "-----BEGIN PRIVATE KEY-----".into();
        assert!(refusal(a.expected.check(&c, None, now)).contains("generated a key"));
        c.private_key_pem.clear();
        c.trust_bundle_pem.clear();
        assert!(refusal(a.expected.check(&c, None, now)).starts_with("trust_bundle_pem"));
        // A DNS name the backend adds passes when it is expected.
        let with_dns = web().with_dns_names(["web.mesh"]).unwrap();
        let expected = Expected::new(&with_dns, a.expected.spki.clone());
        let mut sans = web_sans();
        sans.push(SanType::DnsName("web.mesh".try_into().unwrap()));
        expected
            .check(
                &answer(leaf(&ca1, &a.key, &sans, -10, 3600, both()), &[&ca1]),
                None,
                now,
            )
            .unwrap();
    }

    #[test]
    fn a_bundle_must_keep_a_root_the_agent_holds() {
        let a = agent();
        let (ca1, ca2, evil) = (ca("ca-1"), ca("ca-2"), ca("evil"));
        let now = SystemTime::now();
        let first = a
            .expected
            .check(
                &answer(leaf(&ca1, &a.key, &web_sans(), -10, 3600, both()), &[&ca1]),
                None,
                now,
            )
            .unwrap();
        // An attacker's CA with its own bundle: refused, however well-formed the leaf.
        let attack = answer(
            leaf(&evil, &a.key, &web_sans(), -10, 3600, both()),
            &[&evil],
        );
        let e = refusal(a.expected.check(&attack, Some(&first.bundle), now));
        assert!(e.contains("shares no root"), "{e}");
        // A leaf of the attacker presented with our bundle does not chain.
        let sneaky = answer(leaf(&evil, &a.key, &web_sans(), -10, 3600, both()), &[&ca1]);
        let e = refusal(a.expected.check(&sneaky, Some(&first.bundle), now));
        assert!(e.contains("does not chain"), "{e}");
        // A CA switch: old and new roots with a leaf of the new CA, then the new root alone.
        let during = a
            .expected
            .check(
                &answer(
                    leaf(&ca2, &a.key, &web_sans(), -10, 3600, both()),
                    &[&ca1, &ca2],
                ),
                Some(&first.bundle),
                now,
            )
            .unwrap();
        let after = answer(leaf(&ca2, &a.key, &web_sans(), -10, 3600, both()), &[&ca2]);
        a.expected.check(&after, Some(&during.bundle), now).unwrap();
        // ... but skipping the overlap is not a switch the agent can follow.
        let e = refusal(a.expected.check(&after, Some(&first.bundle), now));
        assert!(e.contains("shares no root"), "{e}");
    }

    #[test]
    fn a_held_bundle_is_read_back_or_ignored_when_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        assert!(read_held_bundle(&path).is_none());
        let ca1 = ca("ca-1");
        std::fs::write(&path, ca1.cert.pem()).unwrap();
        assert_eq!(read_held_bundle(&path).unwrap().certs().len(), 1);
        std::fs::write(&path, "garbage").unwrap();
        assert!(read_held_bundle(&path).is_none());
    }
}
