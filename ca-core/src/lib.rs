//! # ca-core
//!
//! The core of meshca, a certificate authority for service meshes: the [`CertificateAuthority`]
//! trait every backend implements, the issuance path that checks each backend's answer
//! ([`issue_certificate`]), Kuma-compatible SPIFFE identities ([`Identity`]), common-name
//! templates ([`CommonNameTemplate`]), the Kuma / Kong Mesh `mtls` config model ([`config`]), data
//! sources and the [`SecretStore`] with its directory implementation, and the one [`Error`] enum.
//!
//! ca-core is synchronous but for the trait's async methods: it has no runtime dependency.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ca;
pub mod config;
pub mod datasource;
pub mod duration;
mod error;
pub mod identity;
pub mod name;
pub mod secret;
pub mod store;
mod store_overlay;
pub mod template;
pub mod x509;

#[cfg(test)]
pub(crate) mod test_util;

pub use ca::{
    check_issued, issue_certificate, validate, CertificateAuthority, ChainUsage, IssueParams,
    IssueRequest, IssuedCertificate, KeySource, TestCertificate, TrustBundle, UncheckedCertificate,
};
pub use datasource::{Created, DataSource, SecretStore, SourcePolicy};
pub use duration::KumaDuration;
pub use error::{echo, BoxError, Error, Violation, Violations, ECHO_LIMIT};
pub use identity::Identity;
pub use name::{BackendName, MeshName, SecretName, ServiceName, TagName, TagValue, SERVICE_TAG};
pub use secret::SecretBytes;
pub use store::DirectorySecretStore;
pub use store_overlay::OverlaySecretStore;
pub use template::CommonNameTemplate;
pub use x509::{KeyType, LocalCa, PrivateKey};
