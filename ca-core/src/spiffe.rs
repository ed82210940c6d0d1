//! [`SpiffeId`]: the `spiffe://<trust-domain>/<path>` names of Kuma data planes.

use std::fmt;
use std::str::FromStr;

use crate::error::echo;
use crate::name::{MeshName, ServiceName};
use crate::Error;

/// The scheme prefix of every SPIFFE ID.
pub const SPIFFE_SCHEME: &str = "spiffe://";

/// A SPIFFE ID as Kuma writes it: `spiffe://<mesh>/<service>`.
///
/// The trust domain is a mesh name (a DNS-1123 label, see [`MeshName`]) and the path is exactly
/// one segment, a service name (see [`ServiceName`]). A value of this type is proof of both; there
/// is no query, fragment, port, user info or empty segment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpiffeId {
    trust_domain: MeshName,
    service: ServiceName,
}

impl SpiffeId {
    /// Validates a trust domain and a one-segment path (without the leading `/`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when `trust_domain` is not a valid mesh name or `path` is not a
    /// valid service name (which also refuses `/`, `?`, `#` and empty paths).
    pub fn new(trust_domain: impl AsRef<str>, path: impl AsRef<str>) -> Result<Self, Error> {
        Ok(Self {
            trust_domain: MeshName::new(trust_domain.as_ref())?,
            service: ServiceName::new(path.as_ref())?,
        })
    }

    /// The SPIFFE ID of `service` in `mesh`; cannot fail, both are validated already.
    pub fn from_parts(mesh: MeshName, service: ServiceName) -> Self {
        Self {
            trust_domain: mesh,
            service,
        }
    }

    /// The trust domain: the mesh.
    pub fn trust_domain(&self) -> &MeshName {
        &self.trust_domain
    }

    /// The path's one segment: the service.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// The path, with its leading `/` (`/web`).
    pub fn path(&self) -> String {
        format!("/{}", self.service)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SPIFFE_SCHEME}{}/{}", self.trust_domain, self.service)
    }
}

impl FromStr for SpiffeId {
    type Err = Error;

    /// Parses `spiffe://<trust-domain>/<path>`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `spiffe id`) for another scheme, a query or fragment, a
    /// path that is empty or has more than one segment, or an invalid trust domain or service.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad =
            |reason: &str| Error::invalid_argument("spiffe id", format!("`{}` {reason}", echo(s)));
        let rest = s
            .strip_prefix(SPIFFE_SCHEME)
            .ok_or_else(|| bad("does not start with spiffe://"))?;
        if rest.contains(['?', '#']) {
            return Err(bad("must not have a query or fragment"));
        }
        let (td, path) = rest
            .split_once('/')
            .ok_or_else(|| bad("has no path (spiffe://<mesh>/<service>)"))?;
        if path.is_empty() {
            return Err(bad("has an empty path"));
        }
        if path.contains('/') {
            return Err(bad(
                "must have exactly one path segment (spiffe://<mesh>/<service>)",
            ));
        }
        let reason = |e: Error| match e {
            Error::InvalidArgument { field, reason } => {
                bad(&format!("has an invalid {field}: {reason}"))
            }
            other => other,
        };
        Ok(Self {
            trust_domain: MeshName::new(td).map_err(reason)?,
            service: ServiceName::new(path).map_err(reason)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_kuma_spiffe_ids() {
        let id: SpiffeId = "spiffe://default/backend_kuma-demo_svc_8080"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain().as_str(), "default");
        assert_eq!(id.service().as_str(), "backend_kuma-demo_svc_8080");
        assert_eq!(id.path(), "/backend_kuma-demo_svc_8080");
        assert_eq!(
            id.to_string(),
            "spiffe://default/backend_kuma-demo_svc_8080"
        );
        assert_eq!(
            SpiffeId::new("default", "backend_kuma-demo_svc_8080").unwrap(),
            id
        );
        assert_eq!(
            SpiffeId::from_parts(
                MeshName::new("default").unwrap(),
                ServiceName::new("backend_kuma-demo_svc_8080").unwrap()
            ),
            id
        );
    }

    #[test]
    fn refuses_what_kuma_never_issues() {
        for bad in [
            "",
            "spiffe://",
            "spiffe://default",
            "spiffe://default/",
            "spiffe:///web",
            "spiffe://default//web",
            "spiffe://default/web/",
            "spiffe://default/a/b",
            "spiffe://default/web?x=1",
            "spiffe://default/web#f",
            "spiffe://Default/web",
            "spiffe://default:443/web",
            "spiffe://user@default/web",
            "SPIFFE://default/web",
            "https://default/web",
            "spiffe://default/.",
            "spiffe://default/..",
            "spiffe://default/a%2Fb",
            "kuma://kuma.io/service/web",
        ] {
            let err = bad.parse::<SpiffeId>().unwrap_err();
            assert!(err.to_string().starts_with("spiffe id: "), "{bad}: {err}");
        }
        assert!(SpiffeId::new("default", "a/b").is_err());
        assert!(SpiffeId::new("a.b", "web").is_err());
        let long = format!("spiffe://default/{}", "x".repeat(10_000));
        let msg = long.parse::<SpiffeId>().unwrap_err().to_string();
        assert!(msg.len() < 400, "{msg}");
    }
}
