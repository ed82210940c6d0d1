//! The gRPC client of `meshca issue --server`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use super::IssueArgs;
use crate::error::{AppError, Context};
use crate::proto::issuer_client::IssuerClient;
use crate::proto::{IssueCertificateRequest, Tag};
use crate::serve::bootstrap::BootstrapPaths;

#[derive(Debug, Clone)]
pub(crate) struct ClientTls {
    pub(crate) ca: PathBuf,
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

/// Connects to an issuer; `tls: None` for plaintext.
pub(crate) async fn connect(
    server: &str,
    tls: Option<&ClientTls>,
) -> Result<IssuerClient<Channel>, AppError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = if server.contains("://") {
        server.to_owned()
    } else {
        format!("{scheme}://{server}")
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .ctx(|| format!("`{server}` is not a server address (try 127.0.0.1:5680)"))?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60));
    if let Some(t) = tls {
        let read = |p: &Path| {
            std::fs::read(p).ctx(|| {
            format!(
                "cannot read {} (run `meshca serve` once to create the bootstrap credentials, or pass --data-dir / --ca-cert / --client-cert / --client-key)",
                p.display()
            )
        })
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&t.ca)?))
            .identity(tonic::transport::Identity::from_pem(
                read(&t.cert)?,
                read(&t.key)?,
            ));
        endpoint = endpoint.tls_config(config).ctx(|| "TLS setup".into())?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        AppError(format!(
            "cannot reach the issuer at {url}: {} (is `meshca serve` running there?)",
            crate::api::status::message(&e)
        ))
    })?;
    Ok(IssuerClient::new(channel))
}

pub(super) async fn issue_remote(
    a: &IssueArgs,
    tags: &[(String, String)],
    csr: Option<Vec<u8>>,
) -> Result<(String, Option<String>, String, String), AppError> {
    let paths = BootstrapPaths::new(&a.data_dir);
    let tls = (!a.plaintext).then(|| ClientTls {
        ca: a.ca_cert.clone().unwrap_or(paths.ca.clone()),
        cert: a.client_cert.clone().unwrap_or(paths.admin.clone()),
        key: a.client_key.clone().unwrap_or(paths.admin_key.clone()),
    });
    let mut client = connect(&a.server, tls.as_ref()).await?;
    let req = IssueCertificateRequest {
        mesh: a.mesh.clone(),
        tags: tags
            .iter()
            .map(|(k, v)| Tag {
                name: k.clone(),
                value: v.clone(),
            })
            .collect(),
        csr: csr.unwrap_or_default(),
    };
    let resp = client
        .issue_certificate(req)
        .await
        .map_err(|s| {
            AppError(format!(
                "the issuer refused: {:?}: {}",
                s.code(),
                s.message()
            ))
        })?
        .into_inner();
    let c = resp
        .certificate
        .ok_or_else(|| AppError("the issuer answered without a certificate".into()))?;
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
