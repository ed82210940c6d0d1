//! Data plane identities and the URI SANs derived from them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::name::{MeshName, ServiceName, TagName, TagValue, SERVICE_TAG};
use crate::Error;

/// Most distinct tags an identity may have.
pub const MAX_TAGS: usize = 64;
/// Most values one tag may have (`kuma.io/service` included).
pub const MAX_VALUES_PER_TAG: usize = 32;
/// Most URI SANs a certificate may carry (one `spiffe://` per service plus one `kuma://` per tag
/// value). No real data plane comes near these limits; they bound the work a request can cause.
pub const MAX_SANS: usize = 1_000;

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
    /// `kuma.io/service` tag, when a service name cannot be a SPIFFE path segment, or when the
    /// identity is over [`MAX_TAGS`], [`MAX_VALUES_PER_TAG`] or [`MAX_SANS`].
    pub fn new<I, K, V>(mesh: MeshName, tags: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut map: BTreeMap<TagName, BTreeSet<TagValue>> = BTreeMap::new();
        let mut pairs = 0usize;
        for (k, v) in tags {
            // Counted before any work on the pair, so a request with 100,000 tags costs no more
            // than one just over the limit.
            pairs += 1;
            if pairs > MAX_SANS {
                return Err(Error::invalid_argument(
                    "tags",
                    format!("more than {MAX_SANS} tag values"),
                ));
            }
            let name = TagName::new(k.as_ref())?;
            let value = TagValue::new(v.as_ref()).map_err(|e| match e {
                Error::InvalidArgument { reason, .. } => {
                    Error::invalid_argument(format!("tags[\"{name}\"]"), reason)
                }
                other => other,
            })?;
            if !map.contains_key(&name) && map.len() >= MAX_TAGS {
                return Err(Error::invalid_argument(
                    "tags",
                    format!("more than {MAX_TAGS} distinct tags"),
                ));
            }
            let values = map.entry(name).or_default();
            values.insert(value);
            if values.len() > MAX_VALUES_PER_TAG {
                return Err(Error::invalid_argument(
                    "tags",
                    format!("a tag has more than {MAX_VALUES_PER_TAG} values"),
                ));
            }
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

        let total = services.len() + map.values().map(BTreeSet::len).sum::<usize>();
        if total > MAX_SANS {
            return Err(Error::invalid_argument(
                "tags",
                format!("the identity would have {total} URI SANs; at most {MAX_SANS} are allowed"),
            ));
        }
        let mut uri_sans = Vec::with_capacity(total);
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

    #[test]
    fn identities_are_bounded() {
        let many: Vec<(String, String)> = (0..100_000)
            .map(|i| (format!("t{i}"), "v".to_owned()))
            .chain([("kuma.io/service".to_owned(), "web".to_owned())])
            .collect();
        let err = Identity::new(mesh(), many).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        let tags: Vec<(String, String)> = (0..MAX_TAGS)
            .map(|i| (format!("t{i}"), "v".to_owned()))
            .chain([("kuma.io/service".to_owned(), "web".to_owned())])
            .collect();
        assert_eq!(
            Identity::new(mesh(), tags).unwrap_err().to_string(),
            "tags: more than 64 distinct tags"
        );
        let values: Vec<(&str, String)> = (0..=MAX_VALUES_PER_TAG)
            .map(|i| ("version", format!("v{i}")))
            .chain([("kuma.io/service", "web".to_owned())])
            .collect();
        assert_eq!(
            Identity::new(mesh(), values).unwrap_err().to_string(),
            "tags: a tag has more than 32 values"
        );
        // At the limits it still works.
        let ok: Vec<(String, String)> = (0..MAX_TAGS - 1)
            .flat_map(|t| (0..15).map(move |v| (format!("t{t}"), format!("v{v}"))))
            .chain([("kuma.io/service".to_owned(), "web".to_owned())])
            .collect();
        assert_eq!(
            Identity::new(mesh(), ok).unwrap().uri_sans().len(),
            63 * 15 + 2
        );
    }

    #[test]
    fn long_input_is_not_echoed_whole() {
        let long = "x".repeat(10_000);
        let err = Identity::new(mesh(), [("kuma.io/service", long.as_str())]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.len() < 300, "{msg}");
        assert!(msg.contains("(10000 bytes)"), "{msg}");
    }

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
