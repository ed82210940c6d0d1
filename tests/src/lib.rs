//! Cross-crate tests: the fixtures that run the conformance suite ([`meshca_conformance`])
//! against the five backends meshca ships, with their real peers.

#![forbid(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

pub mod acmpca;
pub mod certmanager;
pub mod fixtures;
pub mod openbao;
pub mod stores;
pub mod vault;
pub mod vault_api;

pub use meshca_conformance::{checks, conformance_suite, tls, Fixture};

/// A registry of the five backends meshca ships, with default settings (tests that need other
/// settings register their own factory).
pub fn all_backends() -> ca_core::Registry {
    ca_core::Registry::empty()
        .with(backend_builtin::BuiltinFactory::new())
        .with(backend_provided::ProvidedFactory::new())
        .with(backend_vault::VaultFactory::new())
        .with(backend_acmpca::AcmpcaFactory::new())
        .with(backend_certmanager::CertmanagerFactory::new())
}
