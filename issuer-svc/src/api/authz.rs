//! Who may ask for what.
//!
//! Callers are identified by the key their certificate chain verifies to, never by names alone:
//!
//! - The bootstrap admin: a client certificate `CN=meshca-admin` whose chain verifies to *this*
//!   server's bootstrap CA key. It may do everything. The same name under any other CA (another
//!   install's bootstrap CA, a `--client-ca`, a CA merely *named* like ours) is just an operator.
//! - Operators: any other client certificate that verifies to the bootstrap CA or a `--client-ca`
//!   root. An operator is the pair (trust anchor, name): the anchor by the SHA-256 of its public
//!   key, the name by the first `spiffe://` URI SAN, else the CN. The `--authz` file lists, per
//!   (CA, name), the meshes it may act on; the same CN under two CAs is two callers.
//!   Path-length and CA constraints of every anchor are enforced by webpki.
//! - A data plane presenting a certificate that chains to a mesh's trust bundle may renew only its
//!   own identity: the tags are parsed back from its `spiffe://` and `kuma://` SANs and must equal
//!   the requested identity exactly. It may also read its mesh's trust bundle.
//! - Everyone else is refused.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use ca_core::{ChainUsage, Identity, MeshName, TrustBundle};
use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::api::status::ApiError;
use crate::error::{AppError, Context};
use crate::hash::sha256_hex;
use crate::serve::bootstrap::ADMIN_CN;
use meshca::Snapshot;

/// The `--authz` file.
///
/// ```yaml
/// callers:
///   - id: zone-cp-eu-1            # CN or SPIFFE ID of the client certificate
///     ca: bootstrap               # the CA it must chain to (default: this server's bootstrap CA);
///                                 # or a PEM file, or sha256:<hex of the CA's SubjectPublicKeyInfo>
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
    ca: Option<String>,
    #[serde(default)]
    meshes: Vec<String>,
}

/// A trust anchor, by the SHA-256 of its SubjectPublicKeyInfo (hex).
pub(crate) type AnchorId = String;

/// The SHA-256 (hex) of a CA certificate's SubjectPublicKeyInfo.
pub(crate) fn anchor_id(ca: &CertificateDer<'_>) -> Result<AnchorId, String> {
    let (_, cert) =
        X509Certificate::from_der(ca).map_err(|e| format!("is not a certificate: {e}"))?;
    Ok(sha256_hex(cert.public_key().raw))
}

/// The allow list, by (anchor, caller name).
#[derive(Debug, Default, Clone)]
pub(crate) struct Policy {
    allowed: BTreeMap<(AnchorId, String), Vec<String>>,
}

impl Policy {
    /// Reads the `--authz` file. Entries without `ca` mean `bootstrap_ca`; `ca` paths are
    /// relative to the file.
    pub(crate) fn load(path: &Path, bootstrap_ca: Option<&AnchorId>) -> Result<Self, AppError> {
        let text = crate::limits::read_config_file(path, "authz file")?;
        let file: AuthzFile = serde_yaml::from_str(&text).ctx(|| {
            format!(
                "authz file {} is not valid (expected `callers: [{{id: NAME, ca: bootstrap|FILE|sha256:HEX, meshes: [MESH|\"*\"]}}]`)",
                path.display()
            )
        })?;
        let mut allowed: BTreeMap<(AnchorId, String), Vec<String>> = BTreeMap::new();
        for c in file.callers {
            let anchors: Vec<AnchorId> = match c.ca.as_deref() {
                None | Some("bootstrap") => bootstrap_ca.cloned().into_iter().collect(),
                Some(pin) if pin.starts_with("sha256:") => {
                    let hex = pin.trim_start_matches("sha256:").to_ascii_lowercase();
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(AppError(format!(
                            "authz file {}: caller `{}`: ca `{pin}` is not sha256:<64 hex digits>",
                            path.display(),
                            c.id
                        )));
                    }
                    vec![hex]
                }
                Some(file) => {
                    let ca_path = path.parent().unwrap_or(Path::new(".")).join(file);
                    let certs = crate::serve::tls::read_certs(&ca_path)?;
                    certs
                        .iter()
                        .map(|c| {
                            anchor_id(c)
                                .map_err(|e| AppError(format!("{}: {e}", ca_path.display())))
                        })
                        .collect::<Result<_, _>>()?
                }
            };
            for a in anchors {
                allowed
                    .entry((a, c.id.clone()))
                    .or_default()
                    .extend(c.meshes.iter().cloned());
            }
        }
        Ok(Self { allowed })
    }

    fn allows(&self, caller: &OperatorId, mesh: &str) -> bool {
        self.allowed
            .get(&(caller.anchor.clone(), caller.name.clone()))
            .is_some_and(|m| m.iter().any(|x| x == "*" || x == mesh))
    }

    fn has_any(&self, caller: &OperatorId) -> bool {
        self.allowed
            .get(&(caller.anchor.clone(), caller.name.clone()))
            .is_some_and(|m| !m.is_empty())
    }

    /// Callers whose `ca` is none of `anchors` (a CA the server does not trust): they can never
    /// connect, which is worth a warning at start.
    pub(crate) fn unknown_anchors(&self, anchors: &[AnchorId]) -> Vec<String> {
        self.allowed
            .keys()
            .filter(|(a, _)| !anchors.contains(a))
            .map(|(_, n)| n.clone())
            .collect()
    }
}

/// An operator: the anchor its chain verified to, and its name under that anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OperatorId {
    pub(crate) anchor: AnchorId,
    pub(crate) name: String,
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// The bootstrap admin, or anyone on a plaintext loopback listener.
    Admin(String),
    /// A certificate from the bootstrap CA or `--client-ca`.
    Operator(OperatorId),
    /// A data plane with its current mesh certificate.
    DataPlane(Identity),
    /// A certificate that chains to nothing we know (cannot happen past the TLS handshake).
    Unknown,
}

impl Caller {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Admin(n) => n.clone(),
            Self::Operator(o) => format!(
                "{} (CA sha256:{})",
                o.name,
                o.anchor.get(..16).unwrap_or("")
            ),
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
    /// Validate a Mesh of this name.
    Validate(&'a str),
}

/// Whether `caller` may validate any mesh at all: checked before a Mesh sent to
/// `ValidateBackend` is parsed, so strangers and data planes cost nothing.
pub(crate) fn may_validate_any(policy: &Policy, caller: &Caller) -> bool {
    match caller {
        Caller::Admin(_) => true,
        Caller::Operator(id) => policy.has_any(id),
        Caller::DataPlane(_) | Caller::Unknown => false,
    }
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
                deny(format!(
                    "read the trust bundle of mesh `{}`",
                    ca_core::echo(mesh)
                ))
            }
        }
        (Caller::Operator(id), Action::Validate(mesh)) => {
            if policy.allows(id, mesh) {
                Ok(())
            } else {
                deny(format!("validate mesh `{}`", ca_core::echo(mesh)))
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
                deny(format!(
                    "read the trust bundle of mesh `{}`",
                    ca_core::echo(mesh)
                ))
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
    ) -> Result<Self, AppError> {
        let mut roots = vec![bootstrap_ca.clone()];
        roots.extend(client_cas.iter().cloned());
        let ids: Vec<AnchorId> = roots
            .iter()
            .map(|r| anchor_id(r).map_err(|e| AppError(format!("client CA {e}"))))
            .collect::<Result<_, _>>()?;
        let roots = TrustBundle::new(roots)
            .map_err(|e| AppError(format!("a client CA cannot be used as a trust anchor: {e}")))?;
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
        let anchor = "a".repeat(64);
        let policy = Policy {
            allowed: [(
                (anchor.clone(), "zone".to_string()),
                vec!["default".to_string()],
            )]
            .into(),
        };
        let op = |a: &str, n: &str| {
            Caller::Operator(OperatorId {
                anchor: a.into(),
                name: n.into(),
            })
        };
        let web = Identity::new(mesh(), [("kuma.io/service", "web")]).unwrap();
        let db = Identity::new(mesh(), [("kuma.io/service", "db")]).unwrap();
        let other = Identity::new(
            MeshName::new("other").unwrap(),
            [("kuma.io/service", "web")],
        )
        .unwrap();
        let zone = op(&anchor, "zone");
        assert!(authorize(&policy, &zone, &Action::Issue(&web)).is_ok());
        assert!(authorize(&policy, &zone, &Action::Issue(&other)).is_err());
        assert!(authorize(&policy, &zone, &Action::Validate("default")).is_ok());
        assert!(authorize(&policy, &zone, &Action::Validate("other")).is_err());
        let stranger = op(&anchor, "stranger");
        assert!(authorize(&policy, &stranger, &Action::Issue(&web)).is_err());
        assert!(authorize(&policy, &stranger, &Action::Validate("default")).is_err());
        // The same name under another CA is another caller.
        let impostor = op(&"b".repeat(64), "zone");
        assert!(authorize(&policy, &impostor, &Action::Issue(&web)).is_err());
        assert!(authorize(&policy, &impostor, &Action::TrustBundle("default")).is_err());
        let dp = Caller::DataPlane(web.clone());
        assert!(authorize(&policy, &dp, &Action::Issue(&web)).is_ok());
        assert!(authorize(&policy, &dp, &Action::Issue(&db)).is_err());
        assert!(authorize(&policy, &dp, &Action::TrustBundle("default")).is_ok());
        assert!(authorize(&policy, &dp, &Action::TrustBundle("other")).is_err());
        assert!(authorize(&policy, &dp, &Action::Validate("default")).is_err());
        let admin = Caller::Admin("meshca-admin".into());
        assert!(authorize(&policy, &admin, &Action::Issue(&other)).is_ok());
        assert!(authorize(&policy, &Caller::Unknown, &Action::Issue(&web)).is_err());
    }
}
