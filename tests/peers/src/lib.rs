#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Test peers for meshca's backend suites, all on 127.0.0.1:
//!
//! - [`vault::VaultServer`]: a Vault HTTP API test server (PKI, tokens, policies,
//!   namespaces, `cert` and `aws` auth) over real TLS;
//! - [`moto::Moto`]: moto, a real AWS emulator, with IAM authentication enforced;
//! - [`pod_identity::PodIdentityEndpoint`]: an EKS Pod Identity / ECS container
//!   credentials endpoint;
//! - [`fault_proxy::FaultProxy`]: a reverse proxy in front of moto that answers chosen AWS
//!   JSON operations with the errors moto never gives (throttling, `RequestInProgressException`)
//!   or slowly, and counts what reached moto;
//! - [`kube::KubeApiServer`]: a Kubernetes API test server for cert-manager
//!   `CertificateRequest`s, validated against cert-manager's CRD schema, with a signer.

pub mod fault_proxy;
pub mod kube;
pub mod moto;
pub mod pod_identity;
pub mod vault;

pub use fault_proxy::{Arrival, Counts, Fault, FaultProxy};
pub use kube::{Behaviour, KubeApiServer};
pub use moto::{AwsKey, Moto};
pub use pod_identity::{isolate_aws_env, PodIdentityEndpoint};
pub use vault::{RequestLog, VaultOptions, VaultServer};
