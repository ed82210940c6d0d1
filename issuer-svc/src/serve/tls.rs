//! TLS for the gRPC listener: the server's certificate, and a client verifier whose roots follow
//! the mesh states (operators' CAs plus every mesh's current trust bundle), so a data plane can
//! present its mesh certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use ca_core::{ChainUsage, TrustBundle};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use meshca::{Manager, Snapshot};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::authz::OperatorRoots;
use crate::files::ReadError;
use crate::limits::TLS_HANDSHAKE_TIMEOUT;
use crate::serve::conn::{unless_evicted, AcceptBackoff, Conn, Connections};

/// Why TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum TlsError {
    /// The file cannot be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A certificate file that is not PEM certificates (ca-core's reason).
    #[error("{} {reason}", path.display())]
    Certificates { path: PathBuf, reason: String },
    /// A key file that is not PEM.
    #[error("{} is not PEM", path.display())]
    KeyNotPem {
        path: PathBuf,
        #[source]
        source: pem::PemError,
    },
    /// A key file without a private key block.
    #[error("{} holds no private key", path.display())]
    NoKey { path: PathBuf },
    /// A root that [`TrustBundle`] refuses.
    #[error("a client CA cannot be used as a trust anchor")]
    TrustAnchor(#[source] ca_core::Error),
    /// rustls refused the protocol versions of the provider.
    #[error("TLS setup")]
    Setup(#[source] rustls::Error),
    /// The certificate and key do not belong together.
    #[error("the server certificate and key do not fit together")]
    KeyMismatch(#[source] rustls::Error),
}

/// The aws-lc-rs provider (the workspace never uses ring).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Verifies client certificates against roots that can be replaced at run time (operators' CAs
/// plus every mesh's bundle), with the roots' own path-length and CA constraints enforced by
/// [`TrustBundle`] (rustls's `WebPkiClientVerifier` leaves those of trust anchors unchecked).
#[derive(Debug)]
pub(crate) struct DynamicClientVerifier {
    roots: RwLock<TrustBundle>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl DynamicClientVerifier {
    pub(crate) fn new(roots: &[CertificateDer<'static>]) -> Result<Self, TlsError> {
        Ok(Self {
            roots: RwLock::new(bundle(roots)?),
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// Replaces the roots; handshakes in progress finish with the old ones.
    pub(crate) fn set_roots(&self, roots: &[CertificateDer<'static>]) -> Result<(), TlsError> {
        let b = bundle(roots)?;
        *self
            .roots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = b;
        Ok(())
    }

    fn current(&self) -> TrustBundle {
        self.roots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn bundle(roots: &[CertificateDer<'static>]) -> Result<TrustBundle, TlsError> {
    TrustBundle::new(roots.to_vec()).map_err(TlsError::TrustAnchor)
}

impl ClientCertVerifier for DynamicClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        // A data plane bootstrapping with a token has no certificate yet. A connection without
        // one is `Caller::Unknown` unless it presents a valid token, and may then only get the
        // token's identity (see `api::authz`).
        false
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
        let now = std::time::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs());
        self.current()
            .verify_chain_for(end_entity, intermediates, now, ChainUsage::Client)
            .map(|_| ClientCertVerified::assertion())
            .map_err(|_| {
                rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Reads PEM certificates from a file.
pub(crate) fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = crate::files::read_file(path, "certificate file")?;
    ca_core::x509::parse_pem_certs(&pem).map_err(|reason| TlsError::Certificates {
        path: path.to_owned(),
        reason,
    })
}

/// Reads a PEM private key from a file.
pub(crate) fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = crate::files::read_file(path, "key file")?;
    let blocks = pem::parse_many(&pem).map_err(|source| TlsError::KeyNotPem {
        path: path.to_owned(),
        source,
    })?;
    for b in blocks {
        let der = b.contents().to_vec();
        match b.tag() {
            "PRIVATE KEY" => return Ok(PrivateKeyDer::Pkcs8(der.into())),
            "EC PRIVATE KEY" => return Ok(PrivateKeyDer::Sec1(der.into())),
            "RSA PRIVATE KEY" => return Ok(PrivateKeyDer::Pkcs1(der.into())),
            _ => {}
        }
    }
    Err(TlsError::NoKey {
        path: path.to_owned(),
    })
}

/// The server's rustls config: its certificate, client certificates (optional: see
/// [`DynamicClientVerifier`]) checked by `verifier`, HTTP/2 by ALPN.
pub(crate) fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    verifier: Arc<DynamicClientVerifier>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(TlsError::KeyMismatch)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The server's rustls config with a client verifier whose roots follow the meshes (operators'
/// CAs plus every mesh's bundle, updated on every config change).
pub(crate) fn server(
    manager: &Arc<Manager>,
    operators: &OperatorRoots,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let roots = operators.certs().to_vec();
    let verifier = Arc::new(DynamicClientVerifier::new(&client_roots(
        &roots,
        &manager.snapshot(),
    ))?);
    let config = server_config(chain, key, verifier.clone())?;
    tokio::spawn(follow_roots(manager.clone(), roots, verifier));
    Ok(Arc::new(config))
}

/// The roots client certificates may chain to: operators' CAs and every mesh's bundle.
fn client_roots(
    operator_roots: &[CertificateDer<'static>],
    snapshot: &Snapshot,
) -> Vec<CertificateDer<'static>> {
    let mut roots = operator_roots.to_vec();
    for s in snapshot.values() {
        if let Some(b) = &s.bundle() {
            for c in b.certs() {
                if !roots.contains(c) {
                    roots.push(c.clone());
                }
            }
        }
    }
    roots
}

async fn follow_roots(
    manager: Arc<Manager>,
    operator_roots: Vec<CertificateDer<'static>>,
    verifier: Arc<DynamicClientVerifier>,
) {
    let mut rx = manager.subscribe();
    while rx.changed().await.is_ok() {
        let snap = rx.borrow_and_update().clone();
        if let Err(e) = verifier.set_roots(&client_roots(&operator_roots, &snap)) {
            tracing::warn!(error = %crate::api::status::message(&e), "cannot update client certificate roots; keeping the old ones");
        }
    }
}

/// Accepts TCP connections and completes TLS handshakes off the accept loop, so one slow or bad
/// client never holds up the others; every connection holds a slot of `registry` from accept
/// on (see [`conn`](super::conn)). Without `config` (plaintext on loopback) every connection
/// counts as certified: it is the admin.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Option<Arc<rustls::ServerConfig>>,
    registry: Arc<Connections>,
) -> ReceiverStream<Result<Conn, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = config.map(tokio_rustls::TlsAcceptor::from);
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => {
                    backoff.succeeded();
                    x
                }
                Err(e) => {
                    backoff.failed("grpc", &e).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let Some(slot) = registry.admit() else {
                // Every connection is busy: closing this one at once keeps the descriptor free.
                tracing::debug!(%peer, "connection refused: every connection is busy");
                continue;
            };
            // Small request/response messages: without TCP_NODELAY, Nagle's algorithm and the
            // peer's delayed ACK add ~40 ms to every call.
            let _ = sock.set_nodelay(true);
            let Some(acceptor) = acceptor.clone() else {
                slot.established(false);
                if tx.send(Ok(Conn::plain(sock, slot))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(sock));
                match unless_evicted(&slot, handshake).await {
                    Some(Ok(Ok(stream))) => {
                        let anonymous = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .is_none_or(<[_]>::is_empty);
                        if slot.established(anonymous) {
                            let _ = tx.send(Ok(Conn::tls(stream, slot))).await;
                        } else {
                            tracing::debug!(%peer, "connection without a client certificate refused: every such connection is busy");
                        }
                    }
                    Some(Ok(Err(e))) => {
                        tracing::info!(%peer, error = %e, "TLS handshake failed");
                    }
                    Some(Err(_)) => tracing::info!(%peer, "TLS handshake timed out"),
                    None => {
                        tracing::debug!(%peer, "TLS handshake cut short: connection cap reached")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
