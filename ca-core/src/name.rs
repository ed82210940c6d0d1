//! Validated names: meshes, services, tags, secrets and backends.
//!
//! Each type can only be built through its constructor, which applies Kuma's rules, so a value of
//! the type is proof that the name is acceptable.

use std::fmt;

use crate::Error;

/// The tag that names a data plane's service.
pub const SERVICE_TAG: &str = "kuma.io/service";

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `value`.
            ///
            /// # Errors
            /// [`Error::InvalidArgument`] naming the rule that `value` breaks.
            pub fn new(value: impl Into<String>) -> Result<Self, Error> {
                let value = value.into();
                match $check(&value) {
                    Ok(()) => Ok(Self(value)),
                    Err(reason) => Err(Error::invalid_argument(
                        $field,
                        format!("`{}` {reason}", crate::error::echo(&value)),
                    )),
                }
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// A mesh name: an RFC 1035 label (lower-case letters, digits and `-`, at most 63 characters,
    /// starting with a letter and ending with a letter or digit), as Kuma requires since it
    /// enforces RFC 1035 resource names. It becomes the SPIFFE trust domain.
    MeshName,
    "mesh",
    check_rfc1035_label
);

name_type!(
    /// A service name (a value of the `kuma.io/service` tag). It becomes one segment of the SPIFFE
    /// path, so it is limited to letters, digits, `.`, `-` and `_` (Kuma names such as
    /// `backend_kuma-demo_svc_8080` are fine), at most 253 characters, and not `.` or `..`.
    ServiceName,
    "service",
    check_service
);

name_type!(
    /// A tag name such as `kuma.io/service` or `k8s.kuma.io/namespace`: letters, digits, `.`, `-`,
    /// `_`, `:` and `/`, as Kuma's tag validation allows, at most 253 characters.
    TagName,
    "tag",
    check_tag_name
);

name_type!(
    /// A tag value: letters, digits, `.`, `-`, `_` and `:`, as Kuma's tag validation allows, at most
    /// 253 characters.
    TagValue,
    "tag value",
    check_tag_value
);

name_type!(
    /// A secret name (within a mesh, or global: see [`Scope`](crate::Scope)): a DNS-1123 subdomain of at most 253 characters, as Kuma's secret
    /// names (`default.ca-builtin-cert-ca-1`).
    SecretName,
    "secret",
    check_dns_subdomain
);

name_type!(
    /// A CA backend name (`mtls.backends[].name`): a lower-case DNS-1123 label, as Kuma requires,
    /// so the secret names derived from it stay valid.
    BackendName,
    "name",
    check_dns_label
);

fn check_dns_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 63 {
        return Err("must be at most 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("must consist of lower case letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

fn check_rfc1035_label(s: &str) -> Result<(), &'static str> {
    check_dns_label(s)?;
    if !s.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("must start with a letter (RFC 1035 label)");
    }
    Ok(())
}

fn check_dns_subdomain(s: &str) -> Result<(), &'static str> {
    // Kubernetes' IsDNS1123Subdomain: at most 253 characters of dot-separated lower-case
    // alphanumeric runs joined by '-'; unlike a hostname, labels have no 63-character limit.
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("must be at most 253 characters");
    }
    for label in s.split('.') {
        if label.is_empty() {
            return Err("must not contain empty labels ('..', or a leading or trailing '.')");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("must consist of lower case letters, digits, '-' and '.'");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("must start and end each '.'-separated part with a letter or digit");
        }
    }
    Ok(())
}

/// A DNS name for a certificate's `dNSName` SAN: at most 253 characters of `.`-separated labels
/// of letters, digits and `-` (each 1 to 63 characters), optionally starting with `*.`. The rule
/// the certmanager backend's `dnsNames` are decoded with.
pub(crate) fn check_dns_name(d: &str) -> Result<(), &'static str> {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.trim_start_matches("*.").split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err("is not a valid DNS name")
    }
}

fn check_service(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("must be at most 253 characters");
    }
    if s == "." || s == ".." {
        return Err("must not be '.' or '..'");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("must consist of letters, digits, '.', '-' and '_'");
    }
    Ok(())
}

fn check_tag_name(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("must be at most 253 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'/'))
    {
        return Err("must consist of letters, digits, '.', '-', '_', ':' and '/'");
    }
    if s.starts_with('/') || s.ends_with('/') || s.contains("//") {
        return Err("must not start or end with '/' or contain '//'");
    }
    Ok(())
}

fn check_tag_value(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 253 {
        return Err("must be at most 253 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
    {
        return Err("must consist of letters, digits, '.', '-', '_' and ':'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_names_follow_dns_label_rules() {
        assert!(MeshName::new("default").is_ok());
        assert!(MeshName::new("mesh-1").is_ok());
        for bad in ["", "Default", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            let err = MeshName::new(bad).unwrap_err().to_string();
            assert!(err.starts_with("mesh: "), "{bad}: {err}");
        }
        assert_eq!(
            MeshName::new("My_Mesh").unwrap_err().to_string(),
            "mesh: `My_Mesh` must consist of lower case letters, digits and '-'"
        );
    }

    #[test]
    fn service_names_allow_kuma_generated_names() {
        assert!(ServiceName::new("backend_kuma-demo_svc_8080").is_ok());
        assert!(ServiceName::new("web.v1").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a:1", &"s".repeat(254)] {
            assert!(ServiceName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_names_and_values() {
        assert!(TagName::new("kuma.io/service").is_ok());
        assert!(TagName::new("k8s.kuma.io/namespace").is_ok());
        assert!(TagName::new("/a").is_err());
        assert!(TagName::new("a//b").is_err());
        assert!(TagName::new("a b").is_err());
        assert!(TagValue::new("eu-west:1").is_ok());
        assert!(TagValue::new("a/b").is_err());
        assert!(TagValue::new("").is_err());
    }

    #[test]
    fn secret_names_are_dns_subdomains() {
        assert!(SecretName::new("default.ca-builtin-cert-ca-1").is_ok());
        assert!(SecretName::new("a..b").is_err());
        assert!(SecretName::new("../etc").is_err());
        assert!(SecretName::new("a/b").is_err());
        assert!(SecretName::new("x".repeat(254)).is_err());
        assert!(SecretName::new(format!("default.ca-builtin-cert-{}", "b".repeat(63))).is_ok());
    }
}
