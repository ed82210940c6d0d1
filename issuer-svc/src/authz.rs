//! Who may ask for what.
//!
//! - The bootstrap admin (client certificate `CN=meshca-admin` from the bootstrap CA) may do
//!   everything.
//! - Operators (any other client certificate from the bootstrap CA or from `--client-ca`) are
//!   named by their first `spiffe://` URI SAN, else their CN, and may act on the meshes the
//!   `--authz` file lists for them.
//! - A data plane presenting a certificate that chains to a mesh's trust bundle may renew only its
//!   own identity: the tags are parsed back from its `spiffe://` and `kuma://` SANs and must equal
//!   the requested identity exactly. It may also read its mesh's trust bundle.
//! - Everyone else is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ca_core::{Identity, MeshName, TrustBundle};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bootstrap::ADMIN_CN;
use crate::state::Snapshot;
use crate::status::ApiError;
use crate::util::{AppError, Context};

/// The `--authz` file.
///
/// ```yaml
/// callers:
///   - id: zone-cp-eu-1            # CN or SPIFFE ID of the client certificate
///     meshes: [default, payments] # "*" for every mesh
/// ```
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthzFile {
    #[serde(default)]
    callers: Vec<CallerEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CallerEntry {
    id: String,
    #[serde(default)]
    meshes: Vec<String>,
}

/// The allow list, by caller.
#[derive(Debug, Default, Clone)]
pub(crate) struct Policy {
    allowed: BTreeMap<String, Vec<String>>,
}

impl Policy {
    pub(crate) fn load(path: &Path) -> Result<Self, AppError> {
        let text = std::fs::read_to_string(path)
            .ctx(|| format!("cannot read authz file {}", path.display()))?;
        let file: AuthzFile = serde_yaml::from_str(&text).ctx(|| {
            format!(
                "authz file {} is not valid (expected `callers: [{{id: NAME, meshes: [MESH|\"*\"]}}]`)",
                path.display()
            )
        })?;
        let mut allowed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for c in file.callers {
            allowed.entry(c.id).or_default().extend(c.meshes);
        }
        Ok(Self { allowed })
    }

    fn allows(&self, caller: &str, mesh: &str) -> bool {
        self.allowed
            .get(caller)
            .is_some_and(|m| m.iter().any(|x| x == "*" || x == mesh))
    }

    fn has_any(&self, caller: &str) -> bool {
        self.allowed.get(caller).is_some_and(|m| !m.is_empty())
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// The bootstrap admin, or anyone on a plaintext loopback listener.
    Admin(String),
    /// A certificate from the bootstrap CA or `--client-ca`.
    Operator(String),
    /// A data plane with its current mesh certificate.
    DataPlane(Identity),
    /// A certificate that chains to nothing we know (cannot happen past the TLS handshake).
    Unknown,
}

impl Caller {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Admin(n) | Self::Operator(n) => n.clone(),
            Self::DataPlane(id) => format!("data plane {id}"),
            Self::Unknown => "an unknown client".into(),
        }
    }
}

/// What a request wants to do.
#[derive(Debug)]
pub(crate) enum Action<'a> {
    Issue(&'a Identity),
    TrustBundle(&'a str),
    /// Validate a Mesh; the name when the YAML has one.
    Validate(Option<&'a str>),
}

/// Decides.
pub(crate) fn authorize(
    policy: &Policy,
    caller: &Caller,
    action: &Action<'_>,
) -> Result<(), ApiError> {
    let deny = |what: String| {
        Err(ApiError::Denied(format!(
            "{} may not {what}",
            caller.describe()
        )))
    };
    match (caller, action) {
        (Caller::Admin(_), _) => Ok(()),
        (Caller::Operator(id), Action::Issue(identity)) => {
            if policy.allows(id, identity.mesh().as_str()) {
                Ok(())
            } else {
                deny(format!(
                    "issue certificates in mesh `{}` (add it to the authz file)",
                    identity.mesh()
                ))
            }
        }
        (Caller::Operator(id), Action::TrustBundle(mesh)) => {
            if policy.allows(id, mesh) {
                Ok(())
            } else {
                deny(format!("read the trust bundle of mesh `{mesh}`"))
            }
        }
        (Caller::Operator(id), Action::Validate(mesh)) => {
            let ok = match mesh {
                Some(m) => policy.allows(id, m),
                None => policy.has_any(id),
            };
            if ok {
                Ok(())
            } else {
                deny("validate this mesh".into())
            }
        }
        (Caller::DataPlane(own), Action::Issue(requested)) => {
            if own.mesh() == requested.mesh() && own.uri_sans() == requested.uri_sans() {
                Ok(())
            } else {
                deny(format!(
                    "get a certificate for {requested} (a data plane may renew only its own identity)"
                ))
            }
        }
        (Caller::DataPlane(own), Action::TrustBundle(mesh)) => {
            if own.mesh().as_str() == *mesh {
                Ok(())
            } else {
                deny(format!("read the trust bundle of mesh `{mesh}`"))
            }
        }
        (Caller::DataPlane(_), Action::Validate(_)) => deny("validate meshes".into()),
        (Caller::Unknown, _) => deny("call this issuer".into()),
    }
}

/// Identifies the caller from its verified certificate chain (leaf first).
/// Callers identified by their client certificate, so a chain is verified once per certificate and
/// mesh configuration rather than on every request (the per-request verification cost as much as
/// signing the certificate). An entry is used only with the same config snapshot it was made
/// under (a CA switch or reload re-identifies everyone) and for at most [`CallerCache::TTL`].
#[derive(Debug, Default)]
pub(crate) struct CallerCache {
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
        operator_roots: &TrustBundle,
        bootstrap_ca: &[CertificateDer<'static>],
        meshes: &Snapshot,
    ) -> Caller {
        let Some(leaf) = chain.first() else {
            return Caller::Unknown;
        };
        let key = leaf.as_ref();
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((snapshot, at, caller)) = entries.get(key) {
                if Arc::ptr_eq(snapshot, meshes) && at.elapsed() < Self::TTL {
                    return caller.clone();
                }
            }
        }
        let caller = identify(chain, operator_roots, bootstrap_ca, meshes);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::CAPACITY {
            entries.clear();
        }
        entries.insert(
            key.to_vec(),
            (meshes.clone(), Instant::now(), caller.clone()),
        );
        caller
    }
}

pub(crate) fn identify(
    chain: &[CertificateDer<'static>],
    operator_roots: &TrustBundle,
    bootstrap_ca: &[CertificateDer<'static>],
    meshes: &Snapshot,
) -> Caller {
    let Some(leaf) = chain.first() else {
        return Caller::Unknown;
    };
    let intermediates = &chain[1..];
    let now = SystemTime::now();
    if verify_client(operator_roots, leaf, intermediates, now) {
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
        let issued_by_bootstrap = bootstrap_ca.iter().any(|ca| {
            X509Certificate::from_der(ca)
                .map(|(_, c)| c.subject().as_raw() == cert.issuer().as_raw())
                .unwrap_or(false)
        });
        if cn == ADMIN_CN && issued_by_bootstrap && spiffe.is_none() {
            return Caller::Admin(cn);
        }
        return Caller::Operator(spiffe.unwrap_or(cn));
    }
    for state in meshes.values() {
        let Some(bundle) = &state.bundle else {
            continue;
        };
        if bundle.verify_chain(leaf, intermediates, now).is_ok() {
            if let Ok(identity) = identity_from_cert(leaf, &state.name) {
                return Caller::DataPlane(identity);
            }
        }
    }
    Caller::Unknown
}

fn verify_client(
    roots: &TrustBundle,
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: SystemTime,
) -> bool {
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let anchors: Vec<_> = roots
        .certs()
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let now = rustls_pki_types::UnixTime::since_unix_epoch(
        now.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .is_ok()
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
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

/// Rebuilds a data plane's identity from its certificate's SANs: `kuma://<tag>/<value>` become
/// tags; every `spiffe://<mesh>/<service>` must name `mesh` and a service among the tags.
pub(crate) fn identity_from_cert(
    leaf: &CertificateDer<'_>,
    mesh: &MeshName,
) -> Result<Identity, String> {
    let (_, cert) = X509Certificate::from_der(leaf).map_err(|e| format!("cannot parse: {e}"))?;
    let sans = uri_sans(&cert);
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut spiffe: Vec<String> = Vec::new();
    for s in &sans {
        if let Some(rest) = s.strip_prefix("kuma://") {
            let (tag, value) = rest
                .rsplit_once('/')
                .ok_or_else(|| format!("bad SAN {s}"))?;
            tags.push((tag.to_owned(), value.to_owned()));
        } else if s.starts_with("spiffe://") {
            spiffe.push(s.clone());
        } else {
            return Err(format!("unexpected SAN {s}"));
        }
    }
    let identity = Identity::new(mesh.clone(), tags).map_err(|e| e.to_string())?;
    // The certificate must carry exactly the SANs of the identity rebuilt from it.
    let mut want: Vec<&String> = identity.uri_sans().iter().collect();
    let mut got: Vec<&String> = sans.iter().collect();
    want.sort();
    got.sort();
    if want != got {
        return Err("SANs do not form a meshca identity".into());
    }
    Ok(identity)
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
        // Another mesh's SPIFFE ID, a missing kuma:// SAN, or a foreign SAN: not an identity.
        for sans in [
            &["spiffe://other/web", "kuma://kuma.io/service/web"][..],
            &[
                "spiffe://default/web",
                "spiffe://default/db",
                "kuma://kuma.io/service/web",
            ],
            &[
                "spiffe://default/web",
                "kuma://kuma.io/service/web",
                "https://x",
            ],
        ] {
            assert!(
                identity_from_cert(&leaf_with(sans), &mesh()).is_err(),
                "{sans:?}"
            );
        }
    }

    #[test]
    fn decisions() {
        let policy = Policy {
            allowed: [("zone".to_string(), vec!["default".to_string()])].into(),
        };
        let web = Identity::new(mesh(), [("kuma.io/service", "web")]).unwrap();
        let db = Identity::new(mesh(), [("kuma.io/service", "db")]).unwrap();
        let other = Identity::new(
            MeshName::new("other").unwrap(),
            [("kuma.io/service", "web")],
        )
        .unwrap();
        let zone = Caller::Operator("zone".into());
        assert!(authorize(&policy, &zone, &Action::Issue(&web)).is_ok());
        assert!(authorize(&policy, &zone, &Action::Issue(&other)).is_err());
        assert!(authorize(&policy, &zone, &Action::Validate(Some("default"))).is_ok());
        assert!(authorize(&policy, &zone, &Action::Validate(Some("other"))).is_err());
        let stranger = Caller::Operator("stranger".into());
        assert!(authorize(&policy, &stranger, &Action::Issue(&web)).is_err());
        assert!(authorize(&policy, &stranger, &Action::Validate(None)).is_err());
        let dp = Caller::DataPlane(web.clone());
        assert!(authorize(&policy, &dp, &Action::Issue(&web)).is_ok());
        assert!(authorize(&policy, &dp, &Action::Issue(&db)).is_err());
        assert!(authorize(&policy, &dp, &Action::TrustBundle("default")).is_ok());
        assert!(authorize(&policy, &dp, &Action::TrustBundle("other")).is_err());
        assert!(authorize(&policy, &dp, &Action::Validate(Some("default"))).is_err());
        let admin = Caller::Admin("meshca-admin".into());
        assert!(authorize(&policy, &admin, &Action::Issue(&other)).is_ok());
        assert!(authorize(&policy, &Caller::Unknown, &Action::Issue(&web)).is_err());
    }
}
