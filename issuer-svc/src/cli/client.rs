//! The gRPC client of `meshca issue --server`, `meshca agent` and `meshca token`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::IssueArgs;
use crate::flags::{Flag, UsageError};
use crate::proto::issuer_client::IssuerClient;
use crate::proto::IssueCertificateRequest;
use crate::serve::bootstrap::BootstrapPaths;

/// Why a call to the issuer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ClientError {
    /// `--server` and the TLS flags do not go together.
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// `--server` is not an address.
    #[error("`{server}` is not a server address (try 127.0.0.1:5690)")]
    Address {
        server: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A CA, certificate or key file for TLS cannot be read.
    #[error(
        "cannot read {} (run `meshca serve` once to create the bootstrap credentials, or pass \
         --data-dir / --ca-cert / --client-cert / --client-key)",
        path.display()
    )]
    Credentials {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// tonic refused the TLS configuration.
    #[error("TLS setup")]
    Tls(#[source] tonic::transport::Error),
    /// No connection.
    #[error("cannot reach the issuer at {url} (is `meshca serve` running there?)")]
    Unreachable {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// The issuer answered a call with an error status.
    #[error("the issuer refused")]
    Refused(#[source] Rpc),
    /// A watch stream ended with an error status.
    #[error("the watch broke")]
    WatchBroke(#[source] Rpc),
    /// A success without the certificate it should carry.
    #[error("the issuer answered without a certificate")]
    NoCertificate,
    /// A bootstrap token that a gRPC header cannot carry.
    #[error("the token holds characters a header cannot carry")]
    TokenNotHeader(#[source] tonic::metadata::errors::InvalidMetadataValue),
}

/// A gRPC status from the issuer, shown as `Code: message` (`PermissionDenied: ...`); its
/// `source()` is the status's own (a transport error on the client's side).
#[derive(Debug)]
pub(crate) struct Rpc(pub(crate) tonic::Status);

impl fmt::Display for Rpc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.0.code(), self.0.message())
    }
}

impl std::error::Error for Rpc {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

/// How to reach and authenticate to the issuer (the flags `meshca agent` and `meshca token`
/// share).
#[derive(Debug, Args)]
pub(crate) struct ConnArgs {
    /// The issuer's gRPC address (`127.0.0.1:5690` or `https://host:port`).
    #[arg(long, default_value = "127.0.0.1:5690")]
    pub(crate) server: String,
    /// Data directory holding client credentials (DATA_DIR/tls/), as `meshca issue`.
    #[arg(long, default_value = "./meshca-data")]
    pub(crate) data_dir: PathBuf,
    /// CA that signed the server certificate (default DATA_DIR/tls/ca.pem).
    #[arg(long)]
    pub(crate) ca_cert: Option<PathBuf>,
    /// Client certificate (default DATA_DIR/tls/admin.pem).
    #[arg(long, requires = "client_key")]
    pub(crate) client_cert: Option<PathBuf>,
    /// Client key (default DATA_DIR/tls/admin-key.pem).
    #[arg(long, requires = "client_cert")]
    pub(crate) client_key: Option<PathBuf>,
    /// Talk to an issuer started with --insecure-plaintext: no TLS, so loopback addresses only,
    /// and no --ca-cert, --client-cert or bootstrap token (nothing secret crosses in cleartext).
    #[arg(long, conflicts_with_all = ["ca_cert", "client_cert", "client_key"])]
    pub(crate) plaintext: bool,
}

impl ConnArgs {
    /// TLS with the client certificate of the flags (default: the bootstrap admin's); `None` with
    /// --plaintext.
    pub(crate) fn client_tls(&self) -> Option<ClientTls> {
        (!self.plaintext).then(|| self.tls())
    }

    /// TLS with the client certificate of the flags (default: the bootstrap admin's).
    pub(crate) fn tls(&self) -> ClientTls {
        let paths = BootstrapPaths::new(&self.data_dir);
        ClientTls {
            ca: self.ca(),
            identity: ClientIdentity::Files {
                cert: self.client_cert.clone().unwrap_or(paths.admin.clone()),
                key: self.client_key.clone().unwrap_or(paths.admin_key),
            },
        }
    }

    /// The CA file that verifies the server.
    pub(crate) fn ca(&self) -> PathBuf {
        self.ca_cert
            .clone()
            .unwrap_or_else(|| BootstrapPaths::new(&self.data_dir).ca)
    }
}

/// TLS to the issuer: the CA its certificate must chain to, and who we are.
#[derive(Debug, Clone)]
pub(crate) struct ClientTls {
    pub(crate) ca: PathBuf,
    pub(crate) identity: ClientIdentity,
}

/// The client certificate presented, if any.
#[derive(Debug, Clone)]
pub(crate) enum ClientIdentity {
    /// Certificate chain and key files (PEM).
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate chain and key in memory (an agent's own mesh certificate).
    Pem {
        cert: String,
        key: ca_core::SecretBytes,
    },
    /// None: a bootstrap token authenticates the call.
    None,
}

/// Connects to an issuer; `tls: None` for plaintext (loopback only, see [`server_endpoint`]).
pub(crate) async fn connect(
    server: &str,
    tls: Option<&ClientTls>,
) -> Result<IssuerClient<Channel>, ClientError> {
    let mut endpoint = server_endpoint(server, tls.is_some())?;
    let url = endpoint.uri().to_string();
    if let Some(t) = tls {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| ClientError::Credentials {
                path: p.to_owned(),
                source,
            })
        };
        let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&t.ca)?));
        match &t.identity {
            ClientIdentity::Files { cert, key } => {
                config = config.identity(tonic::transport::Identity::from_pem(
                    read(cert)?,
                    read(key)?,
                ));
            }
            ClientIdentity::Pem { cert, key } => {
                config = config.identity(tonic::transport::Identity::from_pem(cert, key.expose()));
            }
            ClientIdentity::None => {}
        }
        endpoint = endpoint.tls_config(config).map_err(ClientError::Tls)?;
    }
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| ClientError::Unreachable { url, source })?;
    Ok(IssuerClient::new(channel))
}

/// The endpoint for `--server`, before any connection: `https://` (the default without a
/// scheme) whenever TLS is used; `http://` only for plaintext, and plaintext only to a loopback
/// address. An `http://` URL with TLS material or a token is refused: tonic would otherwise drop
/// the TLS configuration and send the credentials in cleartext.
pub(crate) fn server_endpoint(server: &str, tls: bool) -> Result<Endpoint, ClientError> {
    let refused = |reason: String| UsageError::refused(Flag::with("--server", server), reason);
    let url = match server.split_once("://") {
        None => format!("{}://{server}", if tls { "https" } else { "http" }),
        Some((scheme, _)) => {
            match (scheme.to_ascii_lowercase().as_str(), tls) {
                ("https", true) | ("http", false) => {}
                ("http", true) => {
                    return Err(refused(
                        "refusing plaintext http:// with TLS credentials or a bootstrap token, \
                         which would cross the network in cleartext; use https://HOST:PORT or HOST:PORT \
                         (an issuer started with --insecure-plaintext on loopback is reached with --plaintext)"
                            .into(),
                    )
                    .into())
                }
                ("https", false) => {
                    return Err(refused(
                        "https:// and --plaintext contradict each other; drop one".into(),
                    )
                    .into())
                }
                _ => {
                    return Err(refused(
                        "the scheme must be https:// (or http:// with --plaintext)".into(),
                    )
                    .into())
                }
            }
            server.to_owned()
        }
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|source| ClientError::Address {
            server: server.to_owned(),
            source,
        })?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if !tls {
        let host = endpoint.uri().host().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(refused(format!(
                "plaintext is allowed only to a loopback address (127.0.0.1, ::1, localhost); \
                 use TLS for {host}"
            ))
            .into());
        }
    }
    Ok(endpoint)
}

pub(super) async fn issue_remote(
    a: &IssueArgs,
    tags: &[(String, String)],
    csr: Option<Vec<u8>>,
) -> Result<(String, Option<String>, String, String), ClientError> {
    let paths = BootstrapPaths::new(&a.data_dir);
    let tls = (!a.plaintext).then(|| ClientTls {
        ca: a.ca_cert.clone().unwrap_or(paths.ca.clone()),
        identity: ClientIdentity::Files {
            cert: a.client_cert.clone().unwrap_or(paths.admin.clone()),
            key: a.client_key.clone().unwrap_or(paths.admin_key.clone()),
        },
    });
    let mut client = connect(&a.server, tls.as_ref()).await?;
    let req = IssueCertificateRequest {
        mesh: a.mesh.clone(),
        tags: super::proto_tags(tags),
        csr: csr.unwrap_or_default(),
        profile: super::proto_profile(a.profile()),
    };
    let resp = client
        .issue_certificate(req)
        .await
        .map_err(refused)?
        .into_inner();
    let c = resp.certificate.ok_or(ClientError::NoCertificate)?;
    let summary = format!(
        "issued {} from backend `{}` of mesh `{}`, serial {}, valid until {}, rotate at {}",
        c.uri_sans.first().map_or("?", String::as_str),
        c.backend,
        a.mesh,
        c.serial,
        crate::cli::inspect::fmt_time(c.not_after),
        crate::cli::inspect::fmt_time(c.rotate_at),
    );
    let key = (!c.private_key_pem.is_empty()).then_some(c.private_key_pem);
    Ok((c.cert_chain_pem, key, c.trust_bundle_pem, summary))
}

/// `req` carrying `authorization: Bearer <token>`.
pub(crate) fn with_token<T>(req: T, token: &str) -> Result<tonic::Request<T>, ClientError> {
    let mut r = tonic::Request::new(req);
    let value = format!("Bearer {token}")
        .parse()
        .map_err(ClientError::TokenNotHeader)?;
    r.metadata_mut()
        .insert(crate::api::token::METADATA_KEY, value);
    Ok(r)
}

/// An error for a call the issuer refused.
pub(crate) fn refused(s: tonic::Status) -> ClientError {
    ClientError::Refused(Rpc(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_refused_with_credentials_and_plaintext_is_loopback_only() {
        let err = |server: &str, tls: bool| server_endpoint(server, tls).unwrap_err().to_string();
        // TLS material or a token never goes over http://, whatever the host.
        for server in ["http://127.0.0.1:5690", "HTTP://issuer.example:5690"] {
            let e = err(server, true);
            assert!(e.contains("refusing plaintext http://"), "{e}");
        }
        assert_eq!(
            server_endpoint("127.0.0.1:5690", true)
                .unwrap()
                .uri()
                .scheme_str(),
            Some("https")
        );
        assert!(server_endpoint("https://issuer.example:5690", true).is_ok());
        // Plaintext: loopback only, never https://.
        for server in [
            "127.0.0.1:5690",
            "http://[::1]:5690",
            "http://localhost:5690",
        ] {
            assert!(server_endpoint(server, false).is_ok(), "{server}");
        }
        for server in ["10.0.0.1:5690", "http://issuer.example:5690"] {
            let e = err(server, false);
            assert!(e.contains("only to a loopback address"), "{e}");
        }
        assert!(err("https://127.0.0.1:5690", false).contains("contradict"));
        assert!(err("ftp://127.0.0.1:5690", true).contains("scheme"));
    }
}
