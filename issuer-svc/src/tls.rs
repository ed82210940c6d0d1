//! TLS for the gRPC listener: the server's certificate, and a client verifier whose roots follow
//! the mesh states (operators' CAs plus every mesh's current trust bundle), so a data plane can
//! present its mesh certificate.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::util::{AppError, Context};

/// The aws-lc-rs provider (the workspace never uses ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Verifies client certificates against roots that can be replaced at run time.
#[derive(Debug)]
pub(crate) struct DynamicClientVerifier {
    inner: RwLock<Arc<dyn ClientCertVerifier>>,
}

impl DynamicClientVerifier {
    pub(crate) fn new(roots: &[CertificateDer<'static>]) -> Result<Self, AppError> {
        Ok(Self {
            inner: RwLock::new(build_verifier(roots)?),
        })
    }

    /// Replaces the roots; handshakes in progress finish with the old ones.
    pub(crate) fn set_roots(&self, roots: &[CertificateDer<'static>]) -> Result<(), AppError> {
        let v = build_verifier(roots)?;
        *self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = v;
        Ok(())
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn build_verifier(
    roots: &[CertificateDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, AppError> {
    let mut store = RootCertStore::empty();
    for r in roots {
        store
            .add(r.clone())
            .ctx(|| "a client CA cannot be used as a trust anchor".into())?;
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
        .build()
        .ctx(|| "cannot build the client certificate verifier".into())
}

impl ClientCertVerifier for DynamicClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The roots change at run time; clients send their one certificate without hints.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// Reads PEM certificates from a file.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, AppError> {
    let pem = std::fs::read(path).ctx(|| format!("cannot read {}", path.display()))?;
    ca_core::x509::parse_pem_certs(&pem).map_err(|e| AppError(format!("{} {e}", path.display())))
}

/// Reads a PEM private key from a file.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, AppError> {
    let pem = std::fs::read(path).ctx(|| format!("cannot read {}", path.display()))?;
    let blocks = pem::parse_many(&pem).ctx(|| format!("{} is not PEM", path.display()))?;
    for b in blocks {
        let der = b.contents().to_vec();
        match b.tag() {
            "PRIVATE KEY" => return Ok(PrivateKeyDer::Pkcs8(der.into())),
            "EC PRIVATE KEY" => return Ok(PrivateKeyDer::Sec1(der.into())),
            "RSA PRIVATE KEY" => return Ok(PrivateKeyDer::Pkcs1(der.into())),
            _ => {}
        }
    }
    Err(AppError(format!("{} holds no private key", path.display())))
}

/// The server's rustls config: its certificate, mandatory client certificates checked by
/// `verifier`, HTTP/2 by ALPN.
pub(crate) fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<DynamicClientVerifier>,
) -> Result<rustls::ServerConfig, AppError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .ctx(|| "TLS setup".into())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .ctx(|| "the server certificate and key do not fit together".into())?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
