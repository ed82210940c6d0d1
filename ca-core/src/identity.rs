//! Data plane identities and the URI SANs derived from them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::name::{MeshName, ServiceName, TagName, TagValue, SERVICE_TAG};
use crate::Error;

/// The identity of a data plane: its mesh and its (multi-valued) tags.
///
/// Built once per request by [`Identity::new`], which validates every name and computes the SAN
/// set, so the SANs of a certificate derive from nothing but a validated identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    mesh: MeshName,
    tags: BTreeMap<TagName, BTreeSet<TagValue>>,
    services: Vec<ServiceName>,
    uri_sans: Vec<String>,
}

impl Identity {
    /// Builds an identity from a mesh and `(tag, value)` pairs. A tag may appear several times;
    /// its values are kept as a set.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when a tag name or value is invalid, when there is no
    /// `kuma.io/service` tag, or when a service name cannot be a SPIFFE path segment.
    pub fn new<I, K, V>(mesh: MeshName, tags: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut map: BTreeMap<TagName, BTreeSet<TagValue>> = BTreeMap::new();
        for (k, v) in tags {
            let name = TagName::new(k.as_ref())?;
            let value = TagValue::new(v.as_ref()).map_err(|e| match e {
                Error::InvalidArgument { reason, .. } => {
                    Error::invalid_argument(format!("tags[\"{name}\"]"), reason)
                }
                other => other,
            })?;
            map.entry(name).or_default().insert(value);
        }
        let services = match map.iter().find(|(k, _)| k.as_str() == SERVICE_TAG) {
            Some((_, values)) => values
                .iter()
                .map(|v| {
                    ServiceName::new(v.as_str()).map_err(|e| match e {
                        Error::InvalidArgument { reason, .. } => {
                            Error::invalid_argument(format!("tags[\"{SERVICE_TAG}\"]"), reason)
                        }
                        other => other,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            None => {
                return Err(Error::invalid_argument(
                    "tags",
                    format!("the `{SERVICE_TAG}` tag is required"),
                ))
            }
        };

        let mut uri_sans =
            Vec::with_capacity(services.len() + map.values().map(|v| v.len()).sum::<usize>());
        for service in &services {
            uri_sans.push(format!("spiffe://{mesh}/{service}"));
        }
        for (name, values) in &map {
            for value in values {
                uri_sans.push(format!("kuma://{name}/{value}"));
            }
        }
        Ok(Self {
            mesh,
            tags: map,
            services,
            uri_sans,
        })
    }

    /// The mesh.
    pub fn mesh(&self) -> &MeshName {
        &self.mesh
    }

    /// The services (values of `kuma.io/service`), sorted.
    pub fn services(&self) -> &[ServiceName] {
        &self.services
    }

    /// All tags and their values, sorted by name then value.
    pub fn tags(&self) -> &BTreeMap<TagName, BTreeSet<TagValue>> {
        &self.tags
    }

    /// The values of one tag, if the identity has it.
    pub fn tag(&self, name: &str) -> Option<&BTreeSet<TagValue>> {
        self.tags
            .iter()
            .find(|(k, _)| k.as_str() == name)
            .map(|(_, v)| v)
    }

    /// The URI SANs, in Kuma's order: `spiffe://<mesh>/<service>` for each service, then
    /// `kuma://<tag>/<value>` for every tag and value, sorted by tag name then value.
    pub fn uri_sans(&self) -> &[String] {
        &self.uri_sans
    }

    /// The SPIFFE ID of the first service, the identity's primary name.
    pub fn spiffe_id(&self) -> &str {
        // Invariant: `new` refuses identities without a service, and pushes SPIFFE IDs first.
        &self.uri_sans[0]
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.spiffe_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> MeshName {
        MeshName::new("default").unwrap()
    }

    #[test]
    fn sans_follow_kuma_order_with_multi_valued_tags() {
        let id = Identity::new(
            mesh(),
            [
                ("version", "v2"),
                ("kuma.io/service", "web"),
                ("kuma.io/service", "backend_kuma-demo_svc_8080"),
                ("version", "v1"),
                ("kuma.io/zone", "eu-1"),
            ],
        )
        .unwrap();
        assert_eq!(
            id.uri_sans(),
            [
                "spiffe://default/backend_kuma-demo_svc_8080",
                "spiffe://default/web",
                "kuma://kuma.io/service/backend_kuma-demo_svc_8080",
                "kuma://kuma.io/service/web",
                "kuma://kuma.io/zone/eu-1",
                "kuma://version/v1",
                "kuma://version/v2",
            ]
        );
        assert_eq!(
            id.spiffe_id(),
            "spiffe://default/backend_kuma-demo_svc_8080"
        );
    }

    #[test]
    fn duplicate_values_collapse() {
        let id =
            Identity::new(mesh(), [("kuma.io/service", "a"), ("kuma.io/service", "a")]).unwrap();
        assert_eq!(
            id.uri_sans(),
            ["spiffe://default/a", "kuma://kuma.io/service/a"]
        );
    }

    #[test]
    fn service_tag_is_required() {
        let err = Identity::new(mesh(), [("version", "v1")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tags: the `kuma.io/service` tag is required"
        );
        let none: [(&str, &str); 0] = [];
        assert!(Identity::new(mesh(), none).is_err());
    }

    #[test]
    fn bad_tags_are_named() {
        let err =
            Identity::new(mesh(), [("kuma.io/service", "a"), ("version", "v 1")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tags[\"version\"]: `v 1` must consist of letters, digits, '.', '-', '_' and ':'"
        );
        let err = Identity::new(mesh(), [("kuma.io/service", "a:1")]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tags[\"kuma.io/service\"]: `a:1`"),
            "{err}"
        );
        let err = Identity::new(mesh(), [("kuma.io/service", "a"), ("bad tag", "x")]).unwrap_err();
        assert!(err.to_string().starts_with("tag: `bad tag`"), "{err}");
    }
}
