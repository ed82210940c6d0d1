//! # issuer-svc
//!
//! The edge of the meshca zone issuer (`meshca serve`) and the `meshca` CLI: the gRPC API
//! `meshca.v1.Issuer` over mTLS, authorization, bootstrap TLS, mesh config files and their
//! reload, HTTP metrics. Everything else — backends, mesh state, the guarded issue path, rotation
//! — is the `meshca` library. This crate exposes only the generated protocol types (for clients
//! and tests) and the CLI entry point.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod api;
mod cli;
mod data_dir;
mod error;
mod files;
mod flags;
mod hash;
mod limits;
mod meshfile;
mod output;
mod reload;
mod serve;

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
