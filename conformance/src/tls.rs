//! An in-memory rustls mutual-TLS handshake between two issued identities, each side checking the
//! other's chain against its trust bundle and the other's SPIFFE ID — the independent verifier
//! data planes effectively are.

use std::sync::Arc;

use ca_core::IssuedCertificate;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, ServerConfig,
    ServerConnection,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// One side of the handshake.
#[derive(Debug, Clone)]
pub struct Party {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_pem: Vec<u8>,
    pub roots: Vec<CertificateDer<'static>>,
    /// The SPIFFE ID this side requires of its peer, if any.
    pub expect_peer: Option<String>,
}

impl Party {
    pub fn new(issued: &IssuedCertificate, key_pem: &[u8]) -> Self {
        Self {
            chain: issued.chain().to_vec(),
            key_pem: key_pem.to_vec(),
            roots: issued.bundle().certs().to_vec(),
            expect_peer: None,
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).expect("test keys are PEM")
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The first `spiffe://` URI SAN of a certificate.
pub fn spiffe_id(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|g| match g {
        GeneralName::URI(u) if u.starts_with("spiffe://") => Some((*u).to_owned()),
        _ => None,
    })
}

#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Vec<rustls::pki_types::TrustAnchor<'static>>,
    expect: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("bad server cert: {e}")))?;
        ee.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| rustls::Error::General(format!("server chain: {e}")))?;
        let id = spiffe_id(end_entity)
            .ok_or_else(|| rustls::Error::General("server has no SPIFFE ID".into()))?;
        if let Some(want) = &self.expect {
            if &id != want {
                return Err(rustls::Error::General(format!(
                    "server is {id}, expected {want}"
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
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

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs a TLS 1.3 handshake with client certificates in memory. Returns the SPIFFE IDs each side
/// saw: (the server's, as seen by the client; the client's, as seen by the server).
///
/// # Errors
/// The first failure of either side, as text.
pub fn mutual_handshake(client: &Party, server: &Party) -> Result<(String, String), String> {
    let provider = provider();
    let mut server_roots = RootCertStore::empty();
    for r in &server.roots {
        server_roots.add(r.clone()).map_err(|e| e.to_string())?;
    }
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(server_roots), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
    let server_config = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(server.chain.clone(), server.key())
        .map_err(|e| format!("server config: {e}"))?;

    let anchors = client
        .roots
        .iter()
        .map(|r| {
            webpki::anchor_from_trusted_cert(r)
                .map(|a| a.to_owned())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let verifier = SpiffeServerVerifier {
        roots: anchors,
        expect: client.expect_peer.clone(),
        provider: provider.clone(),
    };
    let client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(client.chain.clone(), client.key())
        .map_err(|e| format!("client config: {e}"))?;

    let name = ServerName::try_from("peer.mesh").map_err(|e| e.to_string())?;
    let mut c = ClientConnection::new(Arc::new(client_config), name).map_err(|e| e.to_string())?;
    let mut s = ServerConnection::new(Arc::new(server_config)).map_err(|e| e.to_string())?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while c.wants_write() {
            c.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        if !buf.is_empty() {
            s.read_tls(&mut buf.as_slice()).map_err(|e| e.to_string())?;
            s.process_new_packets()
                .map_err(|e| format!("server: {e}"))?;
        }
        let mut buf = Vec::new();
        while s.wants_write() {
            s.write_tls(&mut buf).map_err(|e| e.to_string())?;
        }
        if !buf.is_empty() {
            c.read_tls(&mut buf.as_slice()).map_err(|e| e.to_string())?;
            c.process_new_packets()
                .map_err(|e| format!("client: {e}"))?;
        }
        if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
            let server_id = c
                .peer_certificates()
                .and_then(|p| p.first())
                .and_then(|l| spiffe_id(l))
                .ok_or("client saw no server certificate")?;
            let client_id = s
                .peer_certificates()
                .and_then(|p| p.first())
                .and_then(|l| spiffe_id(l))
                .ok_or("server saw no client certificate")?;
            if let Some(want) = &server.expect_peer {
                if &client_id != want {
                    return Err(format!("client is {client_id}, expected {want}"));
                }
            }
            return Ok((server_id, client_id));
        }
    }
    Err("handshake did not complete".into())
}
