//! # ca-core
//!
//! The core of meshca, a certificate authority for service meshes: the [`CertificateAuthority`]
//! trait every backend implements, the issuance path that checks each backend's answer
//! ([`issue_certificate`]), Kuma-compatible SPIFFE identities ([`Identity`], [`SpiffeId`]), the
//! refresh formula ([`refresh_at`]), common-name
//! templates ([`CommonNameTemplate`]), the Kuma / Kong Mesh `mtls` config model ([`config`]), data
//! sources and the [`SecretStore`] (secrets per mesh or global, see [`Scope`]) with its directory
//! implementation, and the one [`Error`] enum.
//!
//! ca-core is synchronous but for the trait's async methods: it has no runtime dependency.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authority;
mod bundle;
pub mod ca;
mod cached;
pub mod config;
pub mod datasource;
pub mod duration;
mod error;
pub mod fsutil;
pub mod identity;
mod issue;
mod local_ca;
pub mod name;
pub mod refresh;
mod registry;
mod request;
pub mod secret;
mod spec;
pub mod spiffe;
pub mod store;
mod store_overlay;
mod system_namespace;
pub mod template;
pub mod upstream;
pub mod x509;

#[cfg(test)]
pub(crate) mod test_util;

pub use authority::CertificateAuthority;
pub use bundle::{ChainUsage, TrustBundle};
pub use cached::CachedBundle;
pub use datasource::{
    check_secret_value, AwsSecretRef, AwsSecretsManager, Created, DataSource, FetchError, Scope,
    SecretStore, SourceDirError, SourcePolicy,
};
pub use duration::KumaDuration;
pub use error::{
    echo, error_chain, BoxError, CsrError, Error, ErrorKind, IssuedProblem, ManagerError,
    UpstreamError, UpstreamKind, Violation, Violations, ECHO_LIMIT,
};
pub use identity::{Identity, SanProfile};
pub use issue::{
    check_issued, check_leaf_sans, issue_certificate, validate, IssuedCertificate, TestCertificate,
    TEST_SERVICE,
};
pub use local_ca::LocalCa;
pub use name::{BackendName, MeshName, SecretName, ServiceName, TagName, TagValue, SERVICE_TAG};
pub use refresh::{refresh_at, RefreshPolicy};
pub use registry::{
    BackendFactory, BuildContext, BuildFuture, Built, Registry, KUMA_BACKEND_TYPES,
};
pub use request::{IdempotencyKey, IssueParams, IssueRequest, KeySource, UncheckedCertificate};
pub use secret::SecretBytes;
pub use spec::{BuildSpec, TypedFactory};
pub use spiffe::SpiffeId;
pub use store::DirectorySecretStore;
pub use store_overlay::OverlaySecretStore;
pub use system_namespace::{
    is_namespace_name, named_system_namespace, system_namespace, DEFAULT_SYSTEM_NAMESPACE,
    SERVICE_ACCOUNT_NAMESPACE_FILE, SYSTEM_NAMESPACE_ENV,
};
pub use template::CommonNameTemplate;
pub use upstream::{AllowedUpstreams, IssuerRef, Upstream, UpstreamSpecError};
pub use x509::{KeyType, PrivateKey};
