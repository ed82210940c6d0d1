//! # issuer-svc
//!
//! The meshca zone issuer (`meshca serve`) and the `meshca` CLI: the gRPC API
//! `meshca.v1.Issuer` over mTLS, authorization, rotation of watched certificates, mesh config
//! reload, metrics. The library exposes only the generated protocol types (for clients and
//! tests) and the CLI entry point.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod authz;
mod bench;
mod bootstrap;
mod cli;
mod codec;
mod inspect;
mod issuer;
mod limits;
mod memstore;
mod meshfile;
mod metrics;
mod registry;
mod rotation;
mod serve;
mod service;
mod state;
mod status;
mod tls;
mod util;

/// The generated `meshca.v1` protocol: messages, `issuer_client::IssuerClient` and
/// `issuer_server`.
pub mod proto {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("meshca.v1");

    /// The encoded descriptor set of `meshca.proto`, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("meshca_descriptor");
}

/// Runs the `meshca` command line and returns its exit status.
pub fn main() -> std::process::ExitCode {
    cli::main()
}
