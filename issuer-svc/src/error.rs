//! The CLI's error: what failed, with the cause of each concern nested as its `source()`, so
//! that `meshca: error: <what>: <cause>: <cause>…` reads the way the operator needs it.
//!
//! Each concern has its own small enum next to the code that raises it (flags, files, the data
//! directory, TLS material, bootstrap TLS, authz, tokens, the gRPC client, the agent, inspect,
//! mesh files); [`CliError`] wraps them, and adds what only the top-level commands raise. Those
//! modules never import this one.

use std::net::SocketAddr;

use ca_core::fsutil::FileError;

use crate::api::authz::{AuthzError, RootsError};
use crate::api::token::TokenError;
use crate::cli::agent::AgentError;
use crate::cli::client::ClientError;
use crate::cli::inspect::InspectError;
use crate::data_dir::DataDirError;
use crate::files::{IoError, ReadError};
use crate::flags::UsageError;
use crate::meshfile::MeshFileError;
use crate::serve::bootstrap::BootstrapError;
use crate::serve::tls::TlsError;

/// Why a `meshca` command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum CliError {
    /// A flag cannot be used as given; nothing was done.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// An operator's file cannot be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// One of meshca's own files cannot be written (ca-core's atomic writer).
    #[error(transparent)]
    File(#[from] FileError),
    /// Another file system operation failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The data directory is not safe to use.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// TLS material cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// `--tls-cert` and `--tls-key` are not a pair.
    #[error(
        "--tls-cert {} and --tls-key {} do not fit together",
        cert.display(),
        key.display()
    )]
    TlsPair {
        cert: std::path::PathBuf,
        key: std::path::PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The bootstrap TLS set cannot be made or used.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The operators' roots cannot be used.
    #[error(transparent)]
    Roots(#[from] RootsError),
    /// The `--authz` file cannot be used.
    #[error(transparent)]
    Authz(#[from] AuthzError),
    /// The token signing key cannot be loaded.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A call to the issuer failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// `meshca agent` failed.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// `meshca inspect` found a problem.
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// A Mesh file cannot be used as asked.
    #[error(transparent)]
    MeshFile(#[from] MeshFileError),
    /// ca-core, a backend, a store or the library failed; its message names what.
    #[error(transparent)]
    Core(#[from] ca_core::Error),
    /// ca-core failed at something `context` names (`--store kubernetes`).
    #[error("{context}")]
    CoreIn {
        context: &'static str,
        #[source]
        source: ca_core::Error,
    },
    /// `--csr` starts like PEM but is not.
    #[error("the CSR is not valid PEM")]
    CsrPem(#[source] pem::PemError),
    /// `serve` refused the mesh configuration (each refusal is in the log).
    #[error(
        "the mesh configuration is invalid (see the log above); {}fix it and start again",
        if *nothing_written { "nothing was written; " } else { "" }
    )]
    MeshConfig { nothing_written: bool },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}{hint}")]
    Listen {
        addr: SocketAddr,
        /// What the listener is for and what to try (` for metrics (try ...)`).
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A bound listener has no local address.
    #[error("cannot read the local address of the listener")]
    LocalAddr(#[source] std::io::Error),
    /// The reflection service could not be built.
    #[error("reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The gRPC server stopped with an error.
    #[error("gRPC server failed")]
    Grpc(#[source] tonic::transport::Error),
}

/// `e` and its causes as one line, `: `-joined, each cause once: what the top-level printer
/// writes after `meshca: error: `.
pub(crate) fn chain(e: &CliError) -> String {
    crate::api::status::message(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::Flag;

    #[test]
    fn the_printed_chain_keeps_every_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = CliError::from(ReadError::Io {
            what: "authz file",
            path: "/etc/authz.yaml".into(),
            source: io,
        });
        assert_eq!(
            chain(&e),
            "cannot read authz file /etc/authz.yaml: No such file or directory"
        );
        assert!(std::error::Error::source(&e).is_some());
        let e = CliError::CoreIn {
            context: "--store kubernetes",
            source: ca_core::Error::invalid_argument("kubeconfig", "none found"),
        };
        assert_eq!(chain(&e), "--store kubernetes: kubeconfig: none found");
        let e = CliError::from(UsageError::invalid(Flag::new("--mesh"))(
            ca_core::Error::invalid_argument("mesh", "bad"),
        ));
        assert_eq!(chain(&e), "--mesh: mesh: bad");
    }
}
