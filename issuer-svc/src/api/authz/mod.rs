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
//!   Path-length and CA constraints of every anchor are enforced ([`ca_core::TrustBundle`]).
//! - A data plane presenting a certificate that chains to a mesh's trust bundle may renew only its
//!   own identity: the tags are parsed back from its `spiffe://` and `kuma://` SANs and must equal
//!   the requested identity exactly. It may also read its mesh's trust bundle.
//! - A caller without a client certificate that presents a valid bootstrap token
//!   ([`crate::api::token`]) may get a certificate for the one identity the token names, and
//!   nothing else.
//! - Everyone else is refused.
//!
//! Bootstrap tokens are minted (`CreateToken`) by the admin and by operators for the meshes the
//! authz file allows them; only the admin may rotate their signing key (`RotateTokenKey`).

//!
//! [`policy`] reads the `--authz` file, [`identify`] turns a verified chain into a [`Caller`],
//! and [`authorize`] decides.

mod identify;
mod policy;

pub(crate) use identify::{uri_sans, CallerCache, OperatorRoots, RootsError};
pub(crate) use policy::{AnchorId, AuthzError, AuthzSource, Policy, SharedPolicy};

use ca_core::Identity;

use crate::api::status::ApiError;

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
    /// A data plane without a certificate, with a bootstrap token for this identity.
    Bootstrap(Identity),
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
            Self::Bootstrap(id) => format!("bootstrap token holder for {id}"),
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
    /// Mint a bootstrap token for this identity.
    CreateToken(&'a Identity),
    /// Replace the token signing key.
    RotateTokenKey,
}

/// Whether `caller` may validate any mesh at all: checked before a Mesh sent to
/// `ValidateBackend` is parsed, so strangers and data planes cost nothing.
pub(crate) fn may_validate_any(policy: &Policy, caller: &Caller) -> bool {
    match caller {
        Caller::Admin(_) => true,
        Caller::Operator(id) => policy.has_any(id),
        Caller::DataPlane(_) | Caller::Bootstrap(_) | Caller::Unknown => false,
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
        (Caller::Operator(id), Action::CreateToken(identity)) => {
            if policy.allows(id, identity.mesh().as_str()) {
                Ok(())
            } else {
                deny(format!(
                    "create tokens for mesh `{}` (add it to the authz file)",
                    identity.mesh()
                ))
            }
        }
        (Caller::Operator(_), Action::RotateTokenKey) => {
            deny("rotate the token signing key (the admin only)".into())
        }
        (Caller::DataPlane(own) | Caller::Bootstrap(own), Action::Issue(requested)) => {
            // The same data plane, in either SAN profile: an SVID proves the one service it
            // names, which is all an SVID of it asks for.
            if own.same_data_plane(requested) {
                Ok(())
            } else {
                deny(format!(
                    "get a certificate for {requested} (a data plane or token may get only its own identity)"
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
        (Caller::DataPlane(_), Action::CreateToken(_) | Action::RotateTokenKey)
        | (Caller::Bootstrap(_), Action::CreateToken(_) | Action::RotateTokenKey) => {
            deny("manage bootstrap tokens".into())
        }
        (Caller::Bootstrap(_), Action::TrustBundle(_) | Action::Validate(_)) => {
            deny("do anything but get its first certificate".into())
        }
        (Caller::Unknown, _) => deny("call this issuer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_core::MeshName;

    fn mesh() -> MeshName {
        MeshName::new("default").unwrap()
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
        let token = Caller::Bootstrap(web.clone());
        assert!(authorize(&policy, &token, &Action::Issue(&web)).is_ok());
        assert!(authorize(&policy, &token, &Action::Issue(&db)).is_err());
        assert!(authorize(&policy, &token, &Action::Issue(&other)).is_err());
        assert!(authorize(&policy, &token, &Action::TrustBundle("default")).is_err());
        assert!(authorize(&policy, &token, &Action::CreateToken(&web)).is_err());
        assert!(authorize(&policy, &dp, &Action::CreateToken(&web)).is_err());
        assert!(authorize(&policy, &zone, &Action::CreateToken(&web)).is_ok());
        assert!(authorize(&policy, &zone, &Action::CreateToken(&other)).is_err());
        assert!(authorize(&policy, &zone, &Action::RotateTokenKey).is_err());
        let admin = Caller::Admin("meshca-admin".into());
        assert!(authorize(&policy, &admin, &Action::RotateTokenKey).is_ok());
        assert!(authorize(&policy, &admin, &Action::Issue(&other)).is_ok());
        assert!(authorize(&policy, &Caller::Unknown, &Action::Issue(&web)).is_err());
    }
}
