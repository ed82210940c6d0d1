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
//!   metrics — with each backend's trust bundle kept rather than fetched per certificate.
//! - [`Running`] ([`ManagerBuilder::start`]): the manager with its background work — the
//!   [`rotation`] scheduler that re-issues watched certificates before they expire and when a
//!   mesh's CA changes ([`Rotated`] values), trust-bundle refresh, CA switch completion, health.
//!
//! What a control plane needs of ca-core is re-exported here (the Mesh model in [`config`]), so
//! `meshca` is the only dependency it adds.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use meshca::{config::Mesh, Identity, Manager, MeshName, OverlaySecretStore};
//!
//! let running = Manager::builder(meshca::registry(), Arc::new(OverlaySecretStore::new(None)))
//!     .start();
//! let mesh = Mesh::from_yaml(
//!     "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n",
//!     &meshca::registry(),
//! )?;
//! running.manager().apply("example", vec![mesh]).await?;
//! let identity = Identity::new(MeshName::new("default")?, [("kuma.io/service", "web")])?;
//! let mut certificates = running.watch(identity, None).await?;
//! let first = certificates.recv().await.ok_or("watch ended")??;
//! assert!(first.certificate.chain_pem().starts_with("-----BEGIN CERTIFICATE-----"));
//! running.shutdown().await;
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod deadline;
mod guard;
mod manager;
mod registry;
pub mod rotation;
mod running;

// The Mesh model and what issuing, storing and validating speak in.
pub use ca_core::{
    config, AllowedUpstreams, BackendName, Created, CsrError, DataSource, DirectorySecretStore,
    Error, ErrorKind, Identity, IssuedCertificate, IssuedProblem, KeyType, ManagerError, MeshName,
    OverlaySecretStore, Scope, SecretBytes, SecretName, SecretStore, SourcePolicy, TestCertificate,
    TrustBundle, Upstream, UpstreamError, UpstreamKind, Violation, Violations,
};
// What a backend of the control plane's own is written with (README: "Write your own backend").
pub use ca_core::{
    BackendFactory, BuildContext, BuildFuture, BuildSpec, Built, CachedBundle,
    CertificateAuthority, CommonNameTemplate, IssueRequest, LocalCa, PrivateKey, Registry,
    TypedFactory, UncheckedCertificate,
};
pub use deadline::Deadline;
pub use guard::{
    ActiveBackend, BackendKey, CircuitState, Guard, HealthReport, Limits, NoObserver, Observer,
};
pub use manager::{
    Issued, Manager, ManagerBuilder, MeshState, NotContacted, Previous, Snapshot, Validation,
    DEFAULT_BUNDLE_REFRESH, DEFAULT_HOUSEKEEPING,
};
pub use registry::registry;
#[cfg(feature = "certmanager")]
pub use registry::CERTMANAGER_NAMESPACE_ENV;
pub use rotation::{Rotated, RotationPolicy, RotationReason, Scheduler, WatchReceiver};
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

/// The README's Rust code runs as doc tests, so an example added there cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The book's chapters with Rust code (`docs/src`), run as doc tests in the same way.
#[cfg(doctest)]
mod book;
