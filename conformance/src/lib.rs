//! # meshca-conformance
//!
//! The conformance suite every meshca backend passes, usable by any crate that writes one: a
//! backend joins by implementing [`Fixture`] and either invoking [`conformance_suite!`] once in
//! a test file (one `#[tokio::test]` per check) or calling [`run_all`]. Every certificate is
//! checked with independent verifiers — `openssl verify` (the `openssl` command must be on
//! `PATH`) and a rustls mutual-TLS handshake — besides meshca's own checks.
//!
//! The checks panic with a message naming the fixture when the backend does not conform.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod checks;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use ca_core::{CertificateAuthority, Error, MeshName};

/// One backend under test.
#[async_trait]
pub trait Fixture: Send + Sync {
    /// A short name for messages.
    fn name(&self) -> &'static str;

    /// A ready backend for `mesh`, with data plane certificates of `lifetime`. Two calls with
    /// different meshes give CAs that do not trust each other.
    async fn backend(&self, mesh: &MeshName, lifetime: Duration) -> Arc<dyn CertificateAuthority>;

    /// A broken instance of the backend: either it cannot be built (`Err`) or validation of it
    /// must fail. Returns the substring the error must contain.
    async fn broken(
        &self,
        mesh: &MeshName,
    ) -> (Result<Arc<dyn CertificateAuthority>, Error>, &'static str);

    /// When the backend's signing CA expires, if leaves are clamped to it.
    fn ca_not_after(&self) -> Option<std::time::SystemTime> {
        None
    }

    /// Whether the backend certifies a caller's key (a CSR). Backends whose upstream makes the
    /// key (Vault's `issue` endpoint) refuse CSRs, by name.
    fn accepts_csrs(&self) -> bool {
        true
    }

    /// How far before the request the upstream sets not-before (core: 10 s; Vault's
    /// `not_before_duration`: 30 s).
    fn backdate(&self) -> Duration {
        ca_core::x509::BACKDATE
    }

    /// Whether the upstream makes the validity window asked for (not-before backdated by
    /// [`backdate`](Fixture::backdate), not-after = `dpCert.rotation.expiration`). moto's ACM PCA
    /// does not: it signs from the moment of issue for 365 days whatever `Validity` says, so
    /// the suite checks the rest of the certificate only.
    fn honours_validity(&self) -> bool {
        true
    }

    /// Whether the upstream copies the CSR's subject and SANs into the certificate (ACM PCA's
    /// `EndEntityCertificate/V1` template). The suite's caller CSRs then carry the identity's
    /// SANs, as a data plane's do, and a CSR with a subject CN is expected to be refused by
    /// name before the upstream is asked.
    fn csr_names_pass_through(&self) -> bool {
        false
    }
}

/// Instantiates every conformance check as a `#[tokio::test]` for one fixture.
///
/// ```text
/// meshca_conformance::conformance_suite!(builtin_p256, my_crate::BuiltinFixture::p256());
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($module:ident, $fixture:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            use $crate::checks;

            fn fixture() -> impl $crate::Fixture {
                $fixture
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sans_and_common_name() {
                checks::sans_and_common_name(&fixture()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn csr_path_keeps_key_with_caller() {
                checks::csr_path_keeps_key_with_caller(&fixture()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn generated_key_matches() {
                checks::generated_key_matches(&fixture()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn validity_follows_dp_cert_expiration() {
                checks::validity_follows_dp_cert_expiration(&fixture()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn validate_issues_test_certificate() {
                checks::validate_issues_test_certificate(&fixture()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bundle_verifies_leaves_with_openssl() {
                checks::bundle_verifies_leaves_with_openssl(&fixture()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn other_mesh_leaf_does_not_verify() {
                checks::other_mesh_leaf_does_not_verify(&fixture()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mutual_tls_between_identities() {
                checks::mutual_tls_between_identities(&fixture()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn bad_csrs_are_rejected() {
                checks::bad_csrs_are_rejected(&fixture()).await;
            }
        }
    };
}

/// Runs every check of the suite against `fixture`, one after another (what
/// [`conformance_suite!`] runs as separate tests).
pub async fn run_all(fixture: &dyn Fixture) {
    checks::sans_and_common_name(fixture).await;
    checks::csr_path_keeps_key_with_caller(fixture).await;
    checks::generated_key_matches(fixture).await;
    checks::validity_follows_dp_cert_expiration(fixture).await;
    checks::validate_issues_test_certificate(fixture).await;
    checks::bundle_verifies_leaves_with_openssl(fixture).await;
    checks::other_mesh_leaf_does_not_verify(fixture).await;
    checks::mutual_tls_between_identities(fixture).await;
    checks::bad_csrs_are_rejected(fixture).await;
}
