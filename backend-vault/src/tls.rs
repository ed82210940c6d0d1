//! The rustls `ClientConfig` for talking to Vault: `tls.caCert` (else the system's roots),
//! `tls.serverName`, `tls.skipVerify`, and the client certificate of `auth.tls`.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// What the backend's config says about TLS to Vault.
#[derive(Default)]
pub(crate) struct TlsSettings {
    /// `tls.caCert` (PEM): the only roots trusted when set.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// `tls.serverName`: the name Vault's certificate must have, instead of the address's host.
    pub(crate) server_name: Option<String>,
    /// `tls.skipVerify`.
    pub(crate) skip_verify: bool,
    /// `auth.tls`: the client certificate chain and key (PEM).
    pub(crate) client: Option<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>)>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("ca_pem", &self.ca_pem.is_some())
            .field("server_name", &self.server_name)
            .field("skip_verify", &self.skip_verify)
            .field("client_cert", &self.client.is_some())
            .finish()
    }
}

/// Which field is wrong, and why.
pub(crate) type FieldError = (&'static str, String);

/// Builds the client config; errors name the config field at fault.
pub(crate) fn client_config(s: &TlsSettings) -> Result<ClientConfig, FieldError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = if s.skip_verify {
        Arc::new(Verifier {
            check: None,
            provider: provider.clone(),
        })
    } else {
        let mut roots = RootCertStore::empty();
        match &s.ca_pem {
            Some(pem) => {
                let certs = ca_core::x509::parse_pem_certs(pem).map_err(|e| ("tls.caCert", e))?;
                for c in certs {
                    roots
                        .add(c)
                        .map_err(|e| ("tls.caCert", format!("is not a usable CA: {e}")))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for c in found.certs {
                    // A broken system root is skipped, as every TLS client does.
                    let _ = roots.add(c);
                }
            }
        }
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| ("tls.caCert", format!("cannot be used: {e}")))?;
        match &s.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone())
                    .map_err(|_| ("tls.serverName", format!("\"{name}\" is not a DNS name")))?;
                Arc::new(Verifier {
                    check: Some((inner, name)),
                    provider: provider.clone(),
                })
            }
            None => inner,
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("tls", e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &s.client {
        Some((cert_pem, key_pem)) => {
            let chain: Vec<CertificateDer<'static>> =
                ca_core::x509::parse_pem_certs(cert_pem).map_err(|e| ("auth.tls.clientCert", e))?;
            let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
                (
                    "auth.tls.clientKey",
                    "is not a PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned(),
                )
            })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                (
                    "auth.tls.clientKey",
                    format!("does not fit auth.tls.clientCert: {e}"),
                )
            })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A verifier for `tls.serverName` (`check`: Vault's certificate verified for that name instead
/// of the address's host) or `tls.skipVerify: true` (`check: None`: any certificate is accepted).
/// Either way the handshake's signatures are checked, so the session key belongs to whoever
/// presented the certificate.
#[derive(Debug)]
struct Verifier {
    check: Option<(Arc<WebPkiServerVerifier>, ServerName<'static>)>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.check {
            Some((inner, name)) => {
                inner.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
