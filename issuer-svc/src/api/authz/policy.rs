//! The `--authz` file: which callers, each named by (CA, name), may act on which meshes.

use std::collections::BTreeMap;
use std::path::Path;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::OperatorId;
use crate::error::{AppError, Context};
use crate::hash::sha256_hex;

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
    pub(super) allowed: BTreeMap<(AnchorId, String), Vec<String>>,
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

    pub(super) fn allows(&self, caller: &OperatorId, mesh: &str) -> bool {
        self.allowed
            .get(&(caller.anchor.clone(), caller.name.clone()))
            .is_some_and(|m| m.iter().any(|x| x == "*" || x == mesh))
    }

    pub(super) fn has_any(&self, caller: &OperatorId) -> bool {
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
