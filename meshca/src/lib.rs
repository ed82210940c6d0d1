//! # meshca
//!
//! meshca for control planes (Kuma / Kong Mesh style): everything that makes the backends useful
//! together, without the gRPC edge of the zone issuer.
//!
//! - [`Registry`]: a [`BackendFactory`] per backend type, which decodes a backend's `conf` and
//!   builds its [`CertificateAuthority`]; [`registry()`] holds every backend of this build
//!   (`builtin` and `provided` always, remote backends behind cargo features), and a control
//!   plane can add its own.
//! - [`Manager`]: the meshes served now. Apply parsed Meshes, and it builds (with a dry run
//!   first, so nothing is persisted for a config it refuses), ensures and validates their enabled
//!   backends, keeps the previous backend during a CA switch (both roots in the trust bundle) and
//!   issues through the [`Guard`].
//! - [`Guard`]: the path every certificate goes through — per-backend concurrency, the backend's
//!   request timeout, a circuit that opens after repeated upstream failures, an [`Observer`] for
//!   metrics — and [`CachedBundle`], which keeps a backend's trust bundle instead of fetching it
//!   per certificate.
//! - [`rotation`]: the scheduler that re-issues watched certificates before they expire and when a
//!   mesh's CA changes, publishing [`Rotated`] domain values.
//!
//! ca-core's types are re-exported, so `meshca` is the only dependency a control plane needs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meshca::Error> {
//! use std::sync::Arc;
//! use meshca::{config::Mesh, Identity, Manager, OverlaySecretStore, SourcePolicy};
//!
//! let mesh = Mesh::from_yaml(
//!     "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n",
//!     &meshca::registry(),
//! )?;
//! let manager = Manager::builder(meshca::registry(), Arc::new(OverlaySecretStore::new(None)))
//!     .sources(SourcePolicy::local())
//!     .build();
//! manager.apply("example", vec![mesh]).await?;
//! let identity = Identity::new(meshca::MeshName::new("default")?, [("kuma.io/service", "web")])?;
//! let cert = manager.issue(identity, None).await?;
//! println!("{}", cert.certificate.chain_pem());
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod guard;
mod manager;
mod registry;
pub mod rotation;
mod running;

pub use ca_core;
pub use ca_core::{
    config, echo, BackendName, CertificateAuthority, CommonNameTemplate, Created, DataSource,
    DirectorySecretStore, Error, ErrorKind, Identity, IssueParams, IssueRequest, IssuedCertificate,
    KeySource, KeyType, LocalCa, MeshName, OverlaySecretStore, PrivateKey, SecretBytes, SecretName,
    SecretStore, SourcePolicy, TestCertificate, TrustBundle, UncheckedCertificate, Violation,
    Violations,
};
pub use ca_core::{BackendFactory, BuildContext, BuildFuture, Built, Registry};
pub use guard::{
    ActiveBackend, BackendKey, CachedBundle, CircuitState, Guard, HealthReport, Limits, NoObserver,
    Observer,
};
pub use manager::{
    Issued, Manager, ManagerBuilder, MeshState, NotContacted, Previous, Snapshot, Validation,
    DEFAULT_BUNDLE_REFRESH, DEFAULT_HOUSEKEEPING,
};
pub use registry::registry;
#[cfg(feature = "certmanager")]
pub use registry::CERTMANAGER_NAMESPACE_ENV;
pub use rotation::{Rotated, RotationPolicy, RotationReason, Scheduler, Watch, WatchReceiver};
pub use running::Running;

/// [`SourcePolicy::local`] with every data source this build can reach: with the
/// `aws-secrets-manager` feature, `awsSecretsManager` sources read through the default AWS
/// credential chain ([`meshca_aws::SecretsManager`]). For configuration the operator wrote;
/// a Mesh from the network gets [`SourcePolicy::remote`], which reads no AWS secrets.
pub fn local_sources() -> SourcePolicy {
    let policy = SourcePolicy::local();
    #[cfg(feature = "aws-secrets-manager")]
    let policy =
        policy.with_aws_secrets_manager(std::sync::Arc::new(meshca_aws::SecretsManager::new()));
    policy
}

#[cfg(feature = "aws-secrets-manager")]
pub use meshca_aws;

/// The README's Rust code runs as doc tests, so its library example cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
