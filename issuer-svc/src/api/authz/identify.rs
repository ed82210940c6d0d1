//! Who a caller is, from its verified certificate chain: the anchor it verified to (by key) and
//! its name, or the data plane identity its SANs spell.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ca_core::{ChainUsage, Identity, MeshName, TrustBundle};
use meshca::Snapshot;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::policy::{anchor_id, AnchorId, NotACertificate};
use super::{Caller, OperatorId};
use crate::serve::bootstrap::ADMIN_CN;

/// Why the operators' roots cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RootsError {
    /// A root (the bootstrap CA or a `--client-ca`) cannot be parsed.
    #[error("client CA")]
    NotACertificate(#[source] NotACertificate),
    /// A root the trust bundle refuses.
    #[error("a client CA cannot be used as a trust anchor")]
    TrustAnchor(#[source] ca_core::Error),
}

/// Why a data plane's certificate names no identity of the mesh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CertIdentityError {
    /// The certificate cannot be parsed.
    #[error("cannot parse the certificate")]
    Parse(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// Its URI SANs spell no identity exactly.
    #[error("the certificate's URI SANs")]
    Sans(#[source] ca_core::Error),
}

/// Identifies the caller from its verified certificate chain (leaf first).
/// Callers identified by their client certificate, so a chain is verified once per certificate and
/// mesh configuration rather than on every request (the per-request verification cost as much as
/// signing the certificate). An entry is used only with the same config snapshot it was made
/// under (a CA switch or reload re-identifies everyone) and for at most [`CallerCache::TTL`].
#[derive(Debug, Default)]
pub(crate) struct CallerCache {
    /// By SHA-256 of the presented chain.
    entries: Mutex<HashMap<Vec<u8>, (Snapshot, Instant, Caller)>>,
}

impl CallerCache {
    /// How long an identification is reused.
    pub(crate) const TTL: Duration = Duration::from_secs(60);
    /// Entries kept at most; the cache is emptied when full.
    const CAPACITY: usize = 16_384;

    /// [`identify`], remembered.
    pub(crate) fn identify(
        &self,
        chain: &[CertificateDer<'static>],
        operators: &OperatorRoots,
        meshes: &Snapshot,
    ) -> Caller {
        if chain.is_empty() {
            return Caller::Unknown;
        }
        // The whole chain, not the leaf alone: who a caller is depends on the anchor its chain
        // reaches.
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for c in chain {
            ctx.update(&(c.len() as u64).to_be_bytes());
            ctx.update(c.as_ref());
        }
        let key = ctx.finish().as_ref().to_vec();
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((snapshot, at, caller)) = entries.get(&key) {
                if Arc::ptr_eq(snapshot, meshes) && at.elapsed() < Self::TTL {
                    return caller.clone();
                }
            }
        }
        let caller = identify(chain, operators, meshes);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::CAPACITY {
            entries.clear();
        }
        entries.insert(key, (meshes.clone(), Instant::now(), caller.clone()));
        caller
    }
}

/// The roots operator client certificates verify to: this server's bootstrap CA and the
/// `--client-ca` certificates, each known by its key.
#[derive(Debug)]
pub(crate) struct OperatorRoots {
    roots: TrustBundle,
    /// `anchor_id` of each root, same order.
    ids: Vec<AnchorId>,
}

impl OperatorRoots {
    pub(crate) fn new(
        bootstrap_ca: &CertificateDer<'static>,
        client_cas: &[CertificateDer<'static>],
    ) -> Result<Self, RootsError> {
        let mut roots = vec![bootstrap_ca.clone()];
        roots.extend(client_cas.iter().cloned());
        let ids: Vec<AnchorId> = roots
            .iter()
            .map(|r| anchor_id(r).map_err(RootsError::NotACertificate))
            .collect::<Result<_, _>>()?;
        let roots = TrustBundle::new(roots).map_err(RootsError::TrustAnchor)?;
        Ok(Self { roots, ids })
    }

    pub(crate) fn certs(&self) -> &[CertificateDer<'static>] {
        self.roots.certs()
    }

    pub(crate) fn ids(&self) -> &[AnchorId] {
        &self.ids
    }

    fn bootstrap(&self) -> &AnchorId {
        &self.ids[0]
    }

    /// Verifies `leaf` for client auth; the anchor it verified to, by key (names prove nothing).
    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Option<AnchorId> {
        let i = self
            .roots
            .verify_chain_for(leaf, intermediates, now, ChainUsage::Client)
            .ok()?;
        self.ids.get(i).cloned()
    }
}

pub(crate) fn identify(
    chain: &[CertificateDer<'static>],
    operators: &OperatorRoots,
    meshes: &Snapshot,
) -> Caller {
    let Some(leaf) = chain.first() else {
        return Caller::Unknown;
    };
    let intermediates = &chain[1..];
    let now = SystemTime::now();
    if let Some(anchor) = operators.verify(leaf, intermediates, now) {
        let Ok((_, cert)) = X509Certificate::from_der(leaf) else {
            return Caller::Unknown;
        };
        let cn = cert
            .subject()
            .iter_common_name()
            .filter_map(|c| c.as_str().ok())
            .next()
            .unwrap_or("")
            .to_owned();
        let spiffe = uri_sans(&cert)
            .into_iter()
            .find(|u| u.starts_with("spiffe://"));
        if cn == ADMIN_CN && spiffe.is_none() && &anchor == operators.bootstrap() {
            return Caller::Admin(cn);
        }
        return Caller::Operator(OperatorId {
            anchor,
            name: spiffe.unwrap_or(cn),
        });
    }
    for state in meshes.values() {
        let Some(bundle) = state.bundle() else {
            continue;
        };
        if bundle.verify_chain(leaf, intermediates, now).is_ok() {
            if let Ok(identity) = identity_from_cert(leaf, state.name()) {
                return Caller::DataPlane(identity);
            }
        }
    }
    Caller::Unknown
}

/// The certificate's URI SANs, in order.
pub(crate) fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::URI(u) = n {
                out.push((*u).to_owned());
            }
        }
    }
    out
}

/// Rebuilds a data plane's identity from its certificate's URI SANs
/// ([`Identity::from_uri_sans`]: the SANs must be exactly those of the identity they spell).
pub(crate) fn identity_from_cert(
    leaf: &CertificateDer<'_>,
    mesh: &MeshName,
) -> Result<Identity, CertIdentityError> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(CertIdentityError::Parse)?;
    Identity::from_uri_sans(mesh, &uri_sans(&cert)).map_err(CertIdentityError::Sans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_with(sans: &[&str]) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::default();
        p.subject_alt_names = sans
            .iter()
            .map(|s| rcgen::SanType::URI((*s).try_into().unwrap()))
            .collect();
        p.self_signed(&key).unwrap().der().clone()
    }

    fn mesh() -> MeshName {
        MeshName::new("default").unwrap()
    }

    #[test]
    fn identity_is_rebuilt_from_sans() {
        let cert = leaf_with(&[
            "spiffe://default/web",
            "kuma://kuma.io/service/web",
            "kuma://version/v1",
        ]);
        let id = identity_from_cert(&cert, &mesh()).unwrap();
        let want = Identity::new(mesh(), [("kuma.io/service", "web"), ("version", "v1")]).unwrap();
        assert_eq!(id, want);
        // The rules are Identity::from_uri_sans's (tested in ca-core); here only that a bad SAN
        // set in a real certificate is refused.
        let foreign = leaf_with(&[
            "spiffe://default/web",
            "kuma://kuma.io/service/web",
            "https://x",
        ]);
        assert!(identity_from_cert(&foreign, &mesh()).is_err());
    }
}
