#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Test peers for meshca's backend suites, all on 127.0.0.1:
//!
//! - [`vault::VaultServer`]: a Vault HTTP API test server (PKI, tokens, policies,
//!   namespaces, `cert` and `aws` auth) over real TLS;
//! - [`moto::Moto`]: moto, a real AWS emulator, with IAM authentication enforced;
//! - [`pod_identity::PodIdentityEndpoint`]: an EKS Pod Identity / ECS container
//!   credentials endpoint;
//! - [`kube::KubeApiServer`]: a Kubernetes API test server for cert-manager
//!   `CertificateRequest`s, validated against cert-manager's CRD schema, with a signer.

pub mod kube;
pub mod moto;
pub mod pod_identity;
pub mod vault;

pub use kube::{Behaviour, KubeApiServer};
pub use moto::{AwsKey, Moto};
pub use pod_identity::{isolate_aws_env, PodIdentityEndpoint};
pub use vault::{RequestLog, VaultOptions, VaultServer};
