//! The `--authz` file: which callers, each named by (CA, name), may act on which meshes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use serde::Deserialize;
use x509_parser::error::X509Error;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::OperatorId;
use crate::files::ReadError;
use crate::hash::sha256_hex;
use crate::serve::tls::TlsError;

/// Why the `--authz` file cannot be used; the policy in force stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum AuthzError {
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Not YAML of the expected shape.
    #[error(
        "authz file {} is not valid (expected `callers: [{{id: NAME, ca: bootstrap|FILE|sha256:HEX, \
         meshes: [MESH|\"*\"]}}]`)",
        path.display()
    )]
    Syntax {
        path: PathBuf,
        #[source]
        source: yaml_serde::Error,
    },
    /// A `ca: sha256:...` pin that is not 64 hex digits.
    #[error("authz file {}: caller `{caller}`: ca `{pin}` is not sha256:<64 hex digits>", path.display())]
    BadPin {
        path: PathBuf,
        caller: String,
        pin: String,
    },
    /// A `ca: FILE` that cannot be read.
    #[error("authz file {}: caller `{caller}`", path.display())]
    CaFile {
        path: PathBuf,
        caller: String,
        #[source]
        source: Box<TlsError>,
    },
    /// A certificate of a `ca: FILE` that cannot be parsed.
    #[error("{}", path.display())]
    CaCertificate {
        path: PathBuf,
        #[source]
        source: NotACertificate,
    },
}

/// A CA certificate that cannot be parsed, so it has no anchor id.
#[derive(Debug, thiserror::Error)]
#[error("is not a certificate")]
pub(crate) struct NotACertificate(#[source] x509_parser::nom::Err<X509Error>);

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
pub(crate) fn anchor_id(ca: &CertificateDer<'_>) -> Result<AnchorId, NotACertificate> {
    let (_, cert) = X509Certificate::from_der(ca).map_err(NotACertificate)?;
    Ok(sha256_hex(cert.public_key().raw))
}

/// The allow list, by (anchor, caller name).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(super) allowed: BTreeMap<(AnchorId, String), Vec<String>>,
}

impl Policy {
    /// Reads the `--authz` file. Entries without `ca` mean `bootstrap_ca`; `ca` paths are
    /// relative to the file.
    pub(crate) fn load(path: &Path, bootstrap_ca: Option<&AnchorId>) -> Result<Self, AuthzError> {
        let text = crate::files::read_config_file(path, "authz file")?;
        let file: AuthzFile = yaml_serde::from_str(&text).map_err(|source| AuthzError::Syntax {
            path: path.to_owned(),
            source,
        })?;
        let mut allowed: BTreeMap<(AnchorId, String), Vec<String>> = BTreeMap::new();
        for c in file.callers {
            let anchors: Vec<AnchorId> = match c.ca.as_deref() {
                None | Some("bootstrap") => bootstrap_ca.cloned().into_iter().collect(),
                Some(pin) if pin.starts_with("sha256:") => {
                    let hex = pin.trim_start_matches("sha256:").to_ascii_lowercase();
                    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(AuthzError::BadPin {
                            path: path.to_owned(),
                            caller: c.id,
                            pin: pin.to_owned(),
                        });
                    }
                    vec![hex]
                }
                Some(file) => {
                    let ca_path = path.parent().unwrap_or(Path::new(".")).join(file);
                    let certs = crate::serve::tls::read_certs(&ca_path).map_err(|source| {
                        AuthzError::CaFile {
                            path: path.to_owned(),
                            caller: c.id.clone(),
                            source: Box::new(source),
                        }
                    })?;
                    certs
                        .iter()
                        .map(|cert| {
                            anchor_id(cert).map_err(|source| AuthzError::CaCertificate {
                                path: ca_path.clone(),
                                source,
                            })
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

/// The policy in force: read by every request, replaced whole when the `--authz` file changes
/// ([`SharedPolicy::follow`]).
#[derive(Debug, Default, Clone)]
pub(crate) struct SharedPolicy(Arc<RwLock<Arc<Policy>>>);

impl SharedPolicy {
    pub(crate) fn new(policy: Policy) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(policy))))
    }

    /// The policy now; a request decides with one policy from start to end.
    pub(crate) fn current(&self) -> Arc<Policy> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, policy: Policy) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(policy);
    }

    /// Reads the `--authz` file again (and the CA files it names) and applies it when the
    /// result differs from the policy in force. A file that cannot be read or parsed changes
    /// nothing: the previous policy stays, and the refusal is logged and counted once per
    /// distinct error. Returns what happened: `Some("applied")`, `Some("refused")` or `None`.
    pub(crate) fn reload(
        &self,
        source: &AuthzSource,
        last_error: &mut Option<String>,
    ) -> Option<&'static str> {
        match Policy::load(&source.path, source.bootstrap.as_ref()) {
            Ok(policy) => {
                *last_error = None;
                if *self.current() == policy {
                    return None;
                }
                for name in policy.unknown_anchors(&source.anchors) {
                    tracing::warn!(caller = %name, "authz entry names a CA that is neither the bootstrap CA nor a --client-ca; it can never connect");
                }
                tracing::info!(file = %source.path.display(), callers = policy.allowed.len(), "authz file reloaded");
                self.replace(policy);
                Some("applied")
            }
            Err(e) => {
                // The whole chain is what the operator reads; one log line per distinct refusal.
                let message = crate::api::status::message(&e);
                if last_error.as_deref() == Some(message.as_str()) {
                    return None;
                }
                tracing::warn!(file = %source.path.display(), error = %message, "authz file refused; the previous policy stays in effect");
                *last_error = Some(message);
                Some("refused")
            }
        }
    }

    /// Reloads the `--authz` file every `interval` ([`reload`](Self::reload)), reporting each
    /// outcome to `counted`.
    pub(crate) async fn follow(
        self,
        source: AuthzSource,
        interval: Duration,
        counted: impl Fn(&'static str) + Send,
    ) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_error = None;
        loop {
            tick.tick().await;
            if let Some(result) = self.reload(&source, &mut last_error) {
                counted(result);
            }
        }
    }
}

/// Where the `--authz` file is and what its entries are resolved against.
#[derive(Debug, Clone)]
pub(crate) struct AuthzSource {
    pub(crate) path: PathBuf,
    /// The bootstrap CA's anchor: what an entry without `ca` means.
    pub(crate) bootstrap: Option<AnchorId>,
    /// Every anchor the server trusts (for the warning about entries that can never connect).
    pub(crate) anchors: Vec<AnchorId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reload_applies_changes_and_keeps_the_policy_on_a_broken_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authz.yaml");
        let anchor = "a".repeat(64);
        let source = AuthzSource {
            path: path.clone(),
            bootstrap: Some(anchor.clone()),
            anchors: vec![anchor.clone()],
        };
        let op = |n: &str| OperatorId {
            anchor: anchor.clone(),
            name: n.into(),
        };
        std::fs::write(&path, "callers:\n  - id: zone\n    meshes: [default]\n").unwrap();
        let shared = SharedPolicy::new(Policy::load(&path, Some(&anchor)).unwrap());
        let mut last = None;
        assert_eq!(shared.reload(&source, &mut last), None, "unchanged");
        assert!(shared.current().allows(&op("zone"), "default"));

        std::fs::write(&path, "callers:\n  - id: other\n    meshes: [default]\n").unwrap();
        assert_eq!(shared.reload(&source, &mut last), Some("applied"));
        assert!(!shared.current().allows(&op("zone"), "default"));
        assert!(shared.current().allows(&op("other"), "default"));

        std::fs::write(&path, "callers: [{id: x, mehses: []}]\n").unwrap();
        assert_eq!(shared.reload(&source, &mut last), Some("refused"));
        assert_eq!(shared.reload(&source, &mut last), None, "refused once");
        assert!(shared.current().allows(&op("other"), "default"));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(shared.reload(&source, &mut last), Some("refused"));
        assert!(shared.current().allows(&op("other"), "default"));
    }
}
