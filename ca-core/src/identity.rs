//! Data plane identities and the SANs derived from them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::error::echo;
use crate::name::{check_dns_name, MeshName, ServiceName, TagName, TagValue, SERVICE_TAG};
use crate::spiffe::{SpiffeId, SPIFFE_SCHEME};
use crate::Error;

/// The scheme prefix of Kuma's tag SANs, `kuma://<tag>/<value>`.
pub const KUMA_SCHEME: &str = "kuma://";

/// Most distinct tags an identity may have.
pub const MAX_TAGS: usize = 64;
/// Most values one tag may have (`kuma.io/service` included).
pub const MAX_VALUES_PER_TAG: usize = 32;
/// Most URI SANs a certificate may carry (one `spiffe://` per service plus one `kuma://` per tag
/// value). No real data plane comes near these limits; they bound the work a request can cause.
pub const MAX_SANS: usize = 1_000;
/// Most DNS SANs an identity may carry (see [`Identity::with_dns_names`]).
pub const MAX_DNS_NAMES: usize = 100;

/// Which URI SANs a certificate of an identity carries.
///
/// The profile is part of the identity: two identities with the same tags but another profile are
/// different certificates (and a watch of one never gets the other's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SanProfile {
    /// Kuma's: `spiffe://<mesh>/<service>` for each service, then `kuma://<tag>/<value>` for
    /// every tag value. What Kuma data planes expect.
    #[default]
    Kuma,
    /// An X.509-SVID (the SPIFFE X509-SVID specification): exactly one URI SAN, the SPIFFE ID
    /// `spiffe://<mesh>/<service>`. The identity must be exactly one `kuma.io/service` value and
    /// no other tag, because the certificate could not prove another tag when it is presented to
    /// renew itself.
    Svid,
}

/// The identity of a data plane: its mesh and its (multi-valued) tags.
///
/// Built once per request by [`Identity::new`], which validates every name and computes the SAN
/// set, so the SANs of a certificate derive from nothing but a validated identity. A Mesh that
/// asks for DNS SANs adds them with [`Identity::with_dns_names`]; an identity without them has
/// URI SANs only.
///
/// It is kept compact — the mesh, the tags as one `name=value` text and the DNS SANs, about a
/// hundred bytes — because a manager keeps one per watched data plane; the services, SANs and
/// SPIFFE IDs are derived from it when asked for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    mesh: MeshName,
    /// Every tag value as `name=value`, `\n`-separated, sorted by name then value, without
    /// duplicates. Tag names and values never contain `=` or `\n` (see [`crate::name`]).
    tags: Box<str>,
    dns_sans: Box<[String]>,
    profile: SanProfile,
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
        let mut tags = String::new();
        for (name, values) in &map {
            for value in values {
                if !tags.is_empty() {
                    tags.push('\n');
                }
                tags.push_str(name.as_str());
                tags.push('=');
                tags.push_str(value.as_str());
            }
        }
        Ok(Self {
            mesh,
            tags: tags.into_boxed_str(),
            dns_sans: Box::default(),
            profile: SanProfile::Kuma,
        })
    }

    /// The identity with another SAN profile.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `tags`) when [`SanProfile::Svid`] is asked for an
    /// identity that is not exactly one `kuma.io/service` value: an SVID carries one SPIFFE ID and
    /// nothing else.
    pub fn with_profile(mut self, profile: SanProfile) -> Result<Self, Error> {
        if profile == SanProfile::Svid {
            let mut tags = self.tags();
            let one_service = matches!((tags.next(), tags.next()), (Some((SERVICE_TAG, _)), None));
            if !one_service {
                return Err(Error::invalid_argument(
                    "tags",
                    format!(
                        "an X.509-SVID carries exactly one SPIFFE ID: the identity must be one \
                         `{SERVICE_TAG}` value and no other tag"
                    ),
                ));
            }
        }
        self.profile = profile;
        Ok(self)
    }

    /// The SAN profile of its certificates.
    pub fn profile(&self) -> SanProfile {
        self.profile
    }

    /// Whether `other` names the same data plane: the same mesh and the same tags, whatever the
    /// SAN profile or DNS SANs. A data plane (or a bootstrap token) may get certificates of
    /// either profile for the identity it proved.
    pub fn same_data_plane(&self, other: &Self) -> bool {
        self.mesh == other.mesh && self.tags == other.tags
    }

    /// Rebuilds an identity from a certificate's URI SANs: every `kuma://<tag>/<value>` becomes a
    /// tag (tag names contain `/`, so the value is what follows the last `/`), and every
    /// `spiffe://` SAN must be a [`SpiffeId`] of `mesh` naming a service among the tags. The
    /// identity rebuilt from the tags must have exactly the SANs given, no more and no fewer (a
    /// missing `spiffe://` or `kuma://` SAN, or a duplicate, is refused).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `uri sans`) for a SAN of another scheme, a malformed
    /// SAN, a SPIFFE ID of another mesh or of a service that is not among the tags, or SANs that
    /// are not exactly the rebuilt identity's; the errors of [`Identity::new`] for invalid tags.
    ///
    /// A lone `spiffe://<mesh>/<service>` SAN is an X.509-SVID: the identity of that one service
    /// with the [`SanProfile::Svid`] profile.
    pub fn from_uri_sans(mesh: &MeshName, sans: &[String]) -> Result<Self, Error> {
        let bad = |reason: String| Error::invalid_argument("uri sans", reason);
        if sans.len() > MAX_SANS {
            return Err(bad(format!("more than {MAX_SANS} URI SANs")));
        }
        if let [only] = sans {
            if only.starts_with(SPIFFE_SCHEME) {
                let id: SpiffeId = only.parse()?;
                if id.trust_domain() != mesh {
                    return Err(bad(format!(
                        "`{}` is not a SPIFFE ID of mesh `{mesh}`",
                        echo(only)
                    )));
                }
                return Self::new(mesh.clone(), [(SERVICE_TAG, id.service().as_str())])?
                    .with_profile(SanProfile::Svid);
            }
        }
        let mut tags: Vec<(&str, &str)> = Vec::new();
        let mut spiffe_ids: Vec<SpiffeId> = Vec::new();
        for san in sans {
            if let Some(rest) = san.strip_prefix(KUMA_SCHEME) {
                let (tag, value) = rest
                    .rsplit_once('/')
                    .ok_or_else(|| bad(format!("`{}` is not kuma://<tag>/<value>", echo(san))))?;
                tags.push((tag, value));
            } else if san.starts_with(SPIFFE_SCHEME) {
                let id: SpiffeId = san.parse()?;
                if id.trust_domain() != mesh {
                    return Err(bad(format!(
                        "`{}` is not a SPIFFE ID of mesh `{mesh}`",
                        echo(san)
                    )));
                }
                spiffe_ids.push(id);
            } else {
                return Err(bad(format!("`{}` is not a meshca SAN", echo(san))));
            }
        }
        let identity = Self::new(mesh.clone(), tags)?;
        if let Some(id) = spiffe_ids
            .iter()
            .find(|id| !identity.services().any(|s| s == id.service().as_str()))
        {
            return Err(bad(format!(
                "`{id}` names a service that is not among the kuma.io/service tags"
            )));
        }
        let sans_of_identity = identity.uri_sans();
        let mut want: Vec<&str> = sans_of_identity.iter().map(String::as_str).collect();
        let mut got: Vec<&str> = sans.iter().map(String::as_str).collect();
        want.sort_unstable();
        got.sort_unstable();
        if want != got {
            return Err(bad("do not form a meshca identity".into()));
        }
        Ok(identity)
    }

    /// The identity with DNS SANs, for a Mesh that asks for them (a certmanager backend's
    /// `dnsNames`). Names are kept sorted and without duplicates, and replace any the identity
    /// had; an empty list leaves an identity with URI SANs only.
    ///
    /// The certificate then carries exactly these DNS SANs: core signs them ([`crate::LocalCa`]),
    /// refuses a backend's answer that lacks one or has another, and lets a CSR ask only for
    /// these.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] (field `dnsNames[i]`) for a name that is not a DNS name
    /// (letters, digits and `-` in labels of at most 63 characters, an optional leading `*.`, at
    /// most 253 characters), or (field `dnsNames`) for more than [`MAX_DNS_NAMES`] names.
    pub fn with_dns_names<I>(mut self, names: I) -> Result<Self, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for (i, name) in names.into_iter().enumerate() {
            if i >= MAX_DNS_NAMES {
                return Err(Error::invalid_argument(
                    "dnsNames",
                    format!("more than {MAX_DNS_NAMES} DNS names"),
                ));
            }
            let name = name.as_ref();
            check_dns_name(name).map_err(|reason| {
                Error::invalid_argument(
                    format!("dnsNames[{i}]"),
                    format!("`{}` {reason}", echo(name)),
                )
            })?;
            set.insert(name.to_owned());
        }
        self.dns_sans = set.into_iter().collect();
        Ok(self)
    }

    /// The mesh.
    pub fn mesh(&self) -> &MeshName {
        &self.mesh
    }

    /// The services (values of `kuma.io/service`), sorted.
    pub fn services(&self) -> impl Iterator<Item = &str> + '_ {
        self.tag(SERVICE_TAG)
    }

    /// All tags and their values as `(name, value)` pairs, sorted by name then value.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &str)> + '_ {
        self.tags
            .split('\n')
            .filter_map(|pair| pair.split_once('='))
    }

    /// The values of one tag, sorted; none if the identity does not have it.
    pub fn tag<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tags().filter(move |(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The URI SANs. With [`SanProfile::Kuma`], in Kuma's order: `spiffe://<mesh>/<service>`
    /// for each service, then `kuma://<tag>/<value>` for every tag and value, sorted by tag name
    /// then value. With [`SanProfile::Svid`], the one SPIFFE ID.
    pub fn uri_sans(&self) -> Vec<String> {
        let mesh = &self.mesh;
        let spiffe = self
            .services()
            .map(|s| format!("{SPIFFE_SCHEME}{mesh}/{s}"));
        match self.profile {
            SanProfile::Kuma => spiffe
                .chain(
                    self.tags()
                        .map(|(name, value)| format!("{KUMA_SCHEME}{name}/{value}")),
                )
                .collect(),
            SanProfile::Svid => spiffe.collect(),
        }
    }

    /// The DNS SANs, sorted; empty unless [`with_dns_names`](Identity::with_dns_names) added
    /// some.
    pub fn dns_sans(&self) -> &[String] {
        &self.dns_sans
    }

    /// The SPIFFE IDs, one per service, in the order of [`services`](Identity::services) (the
    /// same as the `spiffe://` entries of [`uri_sans`](Identity::uri_sans)).
    pub fn spiffe_ids(&self) -> Vec<SpiffeId> {
        self.services()
            .filter_map(|s| SpiffeId::new(self.mesh.as_str(), s).ok())
            .collect()
    }

    /// The SPIFFE ID of the first service, the identity's primary name
    /// (`spiffe://<mesh>/<service>`).
    pub fn spiffe_id(&self) -> String {
        self.to_string()
    }

    /// The first service (`new` refuses identities without one).
    fn primary_service(&self) -> &str {
        self.services().next().unwrap_or_default()
    }
}

/// The primary SPIFFE ID, `spiffe://<mesh>/<first service>`.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SPIFFE_SCHEME}{}/{}", self.mesh, self.primary_service())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_is_compact() {
        // A manager keeps one per watched data plane: three pointers' worth plus its text.
        assert!(std::mem::size_of::<Identity>() <= 64);
        let id = Identity::new(
            mesh(),
            [
                ("kuma.io/service", "web"),
                ("kuma.io/service", "api"),
                ("version", "v1"),
            ],
        )
        .unwrap();
        assert_eq!(
            id.tags().collect::<Vec<_>>(),
            [
                ("kuma.io/service", "api"),
                ("kuma.io/service", "web"),
                ("version", "v1")
            ]
        );
        assert_eq!(id.services().collect::<Vec<_>>(), ["api", "web"]);
        assert_eq!(id.tag("version").collect::<Vec<_>>(), ["v1"]);
        assert_eq!(id.tag("zone").count(), 0);
    }

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
    fn an_svid_is_one_service_and_one_spiffe_id() {
        let web = Identity::new(mesh(), [("kuma.io/service", "web")]).unwrap();
        let svid = web.clone().with_profile(SanProfile::Svid).unwrap();
        assert_eq!(svid.uri_sans(), ["spiffe://default/web"]);
        assert_eq!(svid.profile(), SanProfile::Svid);
        assert_ne!(svid, web, "another profile is another certificate");
        assert!(svid.same_data_plane(&web) && web.same_data_plane(&svid));
        // Rebuilt from its one SAN, it is the same identity.
        let sans = svid.uri_sans();
        assert_eq!(Identity::from_uri_sans(&mesh(), &sans).unwrap(), svid);
        // The Kuma SANs of the same service rebuild the Kuma profile.
        assert_eq!(
            Identity::from_uri_sans(&mesh(), &web.uri_sans()).unwrap(),
            web
        );
        // A lone SPIFFE ID of another mesh is refused.
        let err = Identity::from_uri_sans(&mesh(), &["spiffe://other/web".to_owned()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("is not a SPIFFE ID of mesh `default`"),
            "{err}"
        );
        // Anything but exactly one service value cannot be an SVID.
        for tags in [
            vec![("kuma.io/service", "web"), ("kuma.io/service", "api")],
            vec![("kuma.io/service", "web"), ("version", "v1")],
        ] {
            let err = Identity::new(mesh(), tags)
                .unwrap()
                .with_profile(SanProfile::Svid)
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                "tags: an X.509-SVID carries exactly one SPIFFE ID: the identity must be one \
                 `kuma.io/service` value and no other tag"
            );
        }
        // Another data plane is not the same one.
        let api = Identity::new(mesh(), [("kuma.io/service", "api")]).unwrap();
        assert!(!svid.same_data_plane(&api));
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

    fn strings(sans: &[&str]) -> Vec<String> {
        sans.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn identity_is_rebuilt_from_uri_sans() {
        let sans = strings(&[
            "spiffe://default/web",
            "kuma://kuma.io/service/web",
            "kuma://version/v1",
        ]);
        let id = Identity::from_uri_sans(&mesh(), &sans).unwrap();
        let want = Identity::new(mesh(), [("kuma.io/service", "web"), ("version", "v1")]).unwrap();
        assert_eq!(id, want);
        // Order does not matter; tag names with '/' split at the last '/'.
        let mut shuffled = want.uri_sans();
        shuffled.reverse();
        assert_eq!(Identity::from_uri_sans(&mesh(), &shuffled).unwrap(), want);
        let k8s = Identity::new(
            mesh(),
            [
                ("kuma.io/service", "web"),
                ("k8s.kuma.io/namespace", "demo"),
            ],
        )
        .unwrap();
        assert_eq!(
            Identity::from_uri_sans(&mesh(), &k8s.uri_sans()).unwrap(),
            k8s
        );
        // Another mesh's SPIFFE ID, a SPIFFE ID without its kuma:// tag, a foreign SAN, a missing
        // spiffe:// SAN, a duplicate, a malformed SPIFFE ID: not an identity.
        for bad in [
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
            &["kuma://kuma.io/service/web"],
            &[
                "spiffe://default/web",
                "spiffe://default/web",
                "kuma://kuma.io/service/web",
            ],
            &["spiffe://default/web/x", "kuma://kuma.io/service/web"],
            &[
                "spiffe://default/web",
                "kuma://kuma.io/service/web",
                "kuma://x",
            ],
            &[],
        ] {
            assert!(
                Identity::from_uri_sans(&mesh(), &strings(bad)).is_err(),
                "{bad:?}"
            );
        }
        let err = Identity::from_uri_sans(
            &mesh(),
            &strings(&["spiffe://other/web", "kuma://kuma.io/service/web"]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "uri sans: `spiffe://other/web` is not a SPIFFE ID of mesh `default`"
        );
    }

    #[test]
    fn spiffe_ids_follow_the_services() {
        let id = Identity::new(
            mesh(),
            [("kuma.io/service", "web"), ("kuma.io/service", "db")],
        )
        .unwrap();
        let ids: Vec<String> = id.spiffe_ids().iter().map(ToString::to_string).collect();
        assert_eq!(ids, ["spiffe://default/db", "spiffe://default/web"]);
        assert_eq!(ids[..], id.uri_sans()[..2]);
    }

    #[test]
    fn dns_names_are_validated_sorted_and_capped() {
        let base = Identity::new(mesh(), [("kuma.io/service", "web")]).unwrap();
        assert!(base.dns_sans().is_empty());
        let id = base
            .clone()
            .with_dns_names(["web.demo.svc", "*.example.com", "web.demo.svc"])
            .unwrap();
        assert_eq!(id.dns_sans(), ["*.example.com", "web.demo.svc"]);
        assert_eq!(id.uri_sans(), base.uri_sans());
        assert_ne!(id, base);
        let err = base
            .clone()
            .with_dns_names(["ok.example", "bad name"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dnsNames[1]: `bad name` is not a valid DNS name"
        );
        for bad in ["", "a..b", "a/b", "spiffe://default/web", &"a".repeat(64)] {
            assert!(base.clone().with_dns_names([bad]).is_err(), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_DNS_NAMES)
            .map(|i| format!("h{i}.example"))
            .collect();
        assert_eq!(
            base.clone().with_dns_names(&many).unwrap_err().to_string(),
            "dnsNames: more than 100 DNS names"
        );
        assert_eq!(
            base.with_dns_names(&many[..MAX_DNS_NAMES])
                .unwrap()
                .dns_sans()
                .len(),
            MAX_DNS_NAMES
        );
    }
}
