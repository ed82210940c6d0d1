//! The upstreams a Mesh that arrives over the network may make meshca contact.
//!
//! A Mesh the operator wrote (a `--mesh-config` file) reaches whatever its backends name. A Mesh
//! sent to the server (`ValidateBackend`) is checked against an [`AllowedUpstreams`] list the
//! operator gave: Vault addresses (`scheme://host:port`), ACM PCA CA ARNs and cert-manager issuer
//! references. The list is empty by default, so such a Mesh contacts nothing and borrows nothing
//! the server holds (its AWS identity, service account, the mesh's stored secrets, its network
//! position). Toward an allowed upstream, validation may use what the operator's own Mesh would:
//! those credentials can only reach the upstream they belong to.

use std::fmt;

/// An upstream a backend contacts, as its config names it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upstream {
    /// A Vault server or agent, by the URL in `address` / `agentAddress`.
    Vault {
        /// The field naming it (`address` or `agentAddress`).
        field: &'static str,
        /// The URL as written.
        url: String,
    },
    /// An AWS Private CA, by its ARN.
    Acmpca {
        /// The CA's ARN.
        arn: String,
    },
    /// A cert-manager issuer.
    Certmanager(IssuerRef),
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vault { url, .. } => write!(f, "Vault at {}", crate::echo(url)),
            Self::Acmpca { arn } => write!(f, "ACM PCA {}", crate::echo(arn)),
            Self::Certmanager(r) => write!(f, "cert-manager issuer {r}"),
        }
    }
}

/// A cert-manager issuer reference: `kind` and `group` as in `issuerRef`, and `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerRef {
    /// `Issuer`, `ClusterIssuer` or an external issuer's kind.
    pub kind: String,
    /// `cert-manager.io` or an external issuer's group.
    pub group: String,
    /// The issuer's name.
    pub name: String,
}

impl IssuerRef {
    /// The group of cert-manager's own issuers.
    pub const DEFAULT_GROUP: &'static str = "cert-manager.io";

    /// Parses `KIND/NAME` or `KIND.GROUP/NAME` (`ClusterIssuer/mesh-ca`,
    /// `AWSPCAClusterIssuer.awspca.cert-manager.io/pca`); the group defaults to
    /// [`Self::DEFAULT_GROUP`].
    ///
    /// # Errors
    /// [`UpstreamSpecError::IssuerRef`] when `text` is not of that form.
    pub fn parse(text: &str) -> Result<Self, UpstreamSpecError> {
        let bad = || UpstreamSpecError::IssuerRef(crate::echo(text));
        let (kind_group, name) = text.split_once('/').ok_or_else(bad)?;
        let (kind, group) = kind_group
            .split_once('.')
            .unwrap_or((kind_group, Self::DEFAULT_GROUP));
        if kind.is_empty() || group.is_empty() || name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(Self {
            kind: kind.to_owned(),
            group: group.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl fmt::Display for IssuerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}/{}",
            crate::echo(&self.kind),
            crate::echo(&self.group),
            crate::echo(&self.name)
        )
    }
}

/// Why a text is not an upstream meshca can name: an operator's `--allow-*` flag, or a URL in a
/// Mesh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamSpecError {
    /// Not a URL at all; the URL parser's error is the source.
    #[error("is not a URL")]
    Url(#[source] crate::BoxError),
    /// Not `http://` or `https://`.
    #[error("must be an http:// or https:// URL")]
    Scheme,
    /// `user@` or `user:password@` in the URL.
    #[error("must not carry user information")]
    UserInfo,
    /// No host, or no port and no default one.
    #[error("has no host or port")]
    NoHostOrPort,
    /// A path, query or fragment where only an origin is allowed.
    #[error("must be scheme://host:port, without a path, query or fragment")]
    NotAnOrigin,
    /// Not an ACM PCA certificate authority ARN (the text, echoed).
    #[error("\"{0}\" is not an ACM PCA certificate authority ARN")]
    Arn(String),
    /// Not `KIND/NAME` or `KIND.GROUP/NAME` (the text, echoed).
    #[error("\"{0}\" is not KIND/NAME or KIND.GROUP/NAME")]
    IssuerRef(String),
}

/// A URL's origin: scheme, host and port (the default port when none is written).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// The origin of an `http://` or `https://` URL, parsed as the HTTP client parses it (the
    /// `url` crate: hosts lower-cased, IDNA, default ports). URLs with user info are refused:
    /// `https://allowed@elsewhere` must never look like `allowed`.
    ///
    /// # Errors
    /// [`UpstreamSpecError`] saying why `text` is not such a URL.
    pub fn parse(text: &str) -> Result<Self, UpstreamSpecError> {
        let url = url::Url::parse(text.trim()).map_err(|e| UpstreamSpecError::Url(Box::new(e)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UpstreamSpecError::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UpstreamSpecError::UserInfo);
        }
        let host = url
            .host_str()
            .ok_or(UpstreamSpecError::NoHostOrPort)?
            .to_owned();
        let port = url
            .port_or_known_default()
            .ok_or(UpstreamSpecError::NoHostOrPort)?;
        Ok(Self {
            scheme: url.scheme().to_owned(),
            host,
            port,
        })
    }

    /// Whether the scheme is `https`.
    pub fn is_https(&self) -> bool {
        self.scheme == "https"
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme, self.host, self.port)
    }
}

/// The upstreams a Mesh from the network may contact; empty by default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedUpstreams {
    vault: Vec<Origin>,
    acmpca: Vec<String>,
    certmanager: Vec<IssuerRef>,
}

impl AllowedUpstreams {
    /// Nothing allowed.
    pub fn none() -> Self {
        Self::default()
    }

    /// Also allows the Vault at `address` (`https://vault.example:8200`): only its origin counts
    /// (a path, query or fragment is refused, so the entry says exactly what it allows).
    ///
    /// # Errors
    /// [`UpstreamSpecError`] when `address` is not an origin-only http(s) URL.
    pub fn allow_vault(mut self, address: &str) -> Result<Self, UpstreamSpecError> {
        let url =
            url::Url::parse(address.trim()).map_err(|e| UpstreamSpecError::Url(Box::new(e)))?;
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(UpstreamSpecError::NotAnOrigin);
        }
        self.vault.push(Origin::parse(address)?);
        Ok(self)
    }

    /// Also allows the ACM PCA CA with this ARN (compared exactly).
    ///
    /// # Errors
    /// [`UpstreamSpecError::Arn`] when `arn` is not an ACM PCA certificate authority ARN.
    pub fn allow_acmpca(mut self, arn: &str) -> Result<Self, UpstreamSpecError> {
        let arn = arn.trim();
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let ok = parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "acm-pca"
            && parts[5].starts_with("certificate-authority/");
        if !ok {
            return Err(UpstreamSpecError::Arn(crate::echo(arn)));
        }
        self.acmpca.push(arn.to_owned());
        Ok(self)
    }

    /// Also allows the cert-manager issuer `reference` (see [`IssuerRef::parse`]).
    ///
    /// # Errors
    /// [`UpstreamSpecError::IssuerRef`] when `reference` cannot be parsed.
    pub fn allow_certmanager(mut self, reference: &str) -> Result<Self, UpstreamSpecError> {
        self.certmanager.push(IssuerRef::parse(reference.trim())?);
        Ok(self)
    }

    /// Whether nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.vault.is_empty() && self.acmpca.is_empty() && self.certmanager.is_empty()
    }

    /// Whether `upstream` is on the list.
    ///
    /// # Errors
    /// Why not, for the caller: which upstream, and which server flag would allow it.
    pub fn check(&self, upstream: &Upstream) -> Result<(), String> {
        let allowed = match upstream {
            Upstream::Vault { url, .. } => match Origin::parse(url) {
                Ok(o) => self.vault.contains(&o),
                Err(_) => false,
            },
            Upstream::Acmpca { arn } => self.acmpca.iter().any(|a| a == arn),
            Upstream::Certmanager(r) => self.certmanager.contains(r),
        };
        if allowed {
            return Ok(());
        }
        let flag = match upstream {
            Upstream::Vault { .. } => "--allow-vault-address",
            Upstream::Acmpca { .. } => "--allow-acmpca-arn",
            Upstream::Certmanager(_) => "--allow-certmanager-issuer",
        };
        Err(format!(
            "not contacted: {upstream} is not among the upstreams this server lets a Mesh sent over the network reach (the operator allows one with {flag})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vault(url: &str) -> Upstream {
        Upstream::Vault {
            field: "address",
            url: url.into(),
        }
    }

    #[test]
    fn vault_addresses_match_by_origin_only() {
        let list = AllowedUpstreams::none()
            .allow_vault("https://Vault.Example:8200")
            .unwrap()
            .allow_vault("https://other.example")
            .unwrap();
        assert!(list.check(&vault("https://vault.example:8200")).is_ok());
        assert!(list.check(&vault("https://VAULT.example:8200/")).is_ok());
        assert!(list.check(&vault("https://other.example:443")).is_ok());
        for refused in [
            "https://vault.example:8201",
            "http://vault.example:8200",
            "https://vault.example.evil:8200",
            "https://vault.example:8200@evil.example",
            "https://user@vault.example:8200",
            "https://evil.example\\@vault.example:8200",
            "https://%76ault.example.evil:8200",
            "not a url",
            "file:///etc/passwd",
        ] {
            let err = list.check(&vault(refused)).unwrap_err();
            assert!(err.contains("--allow-vault-address"), "{refused}: {err}");
        }
        assert!(AllowedUpstreams::none()
            .check(&vault("https://vault.example:8200"))
            .is_err());
    }

    #[test]
    fn allow_list_entries_are_parsed_strictly() {
        let l = AllowedUpstreams::none();
        assert!(l.clone().allow_vault("https://v:8200/v1/pki").is_err());
        assert!(l.clone().allow_vault("https://v:8200?x=y").is_err());
        assert!(l.clone().allow_vault("ftp://v").is_err());
        assert!(l.clone().allow_acmpca("arn:aws:s3:::bucket").is_err());
        assert!(l.clone().allow_certmanager("mesh-ca").is_err());
        assert!(l.clone().allow_certmanager("Issuer/").is_err());
        let l = l
            .allow_acmpca("arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/abc")
            .unwrap()
            .allow_certmanager("ClusterIssuer/mesh-ca")
            .unwrap()
            .allow_certmanager("AWSPCAIssuer.awspca.cert-manager.io/pca")
            .unwrap();
        assert!(l
            .check(&Upstream::Acmpca {
                arn: "arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/abc".into()
            })
            .is_ok());
        assert!(l
            .check(&Upstream::Acmpca {
                arn: "arn:aws:acm-pca:eu-west-1:111122223333:certificate-authority/abd".into()
            })
            .is_err());
        let issuer = |kind: &str, group: &str, name: &str| {
            Upstream::Certmanager(IssuerRef {
                kind: kind.into(),
                group: group.into(),
                name: name.into(),
            })
        };
        assert!(l
            .check(&issuer("ClusterIssuer", "cert-manager.io", "mesh-ca"))
            .is_ok());
        assert!(l
            .check(&issuer("Issuer", "cert-manager.io", "mesh-ca"))
            .is_err());
        assert!(l
            .check(&issuer("AWSPCAIssuer", "awspca.cert-manager.io", "pca"))
            .is_ok());
        assert!(l
            .check(&issuer("AWSPCAIssuer", "cert-manager.io", "pca"))
            .is_err());
    }
}
