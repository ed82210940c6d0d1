//! TLS for the gRPC listener: the server's certificate, and a client verifier whose roots follow
//! the mesh states (operators' CAs plus every mesh's current trust bundle), so a data plane can
//! present its mesh certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use ca_core::{ChainUsage, TrustBundle};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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
    parse_key(path, &crate::files::read_file(path, "key file")?)
}

/// The first PEM private key of `pem`, read from `path`.
fn parse_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    let blocks = pem::parse_many(pem).map_err(|source| TlsError::KeyNotPem {
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

/// The server's certificate and key, which every new handshake reads afresh: fixed for the
/// bootstrap certificate, swapped in place by [`follow_cert_files`] for the operator's
/// `--tls-cert`/`--tls-key`. Handshakes in progress finish with the pair they started with.
#[derive(Debug)]
pub(crate) struct ServerCert {
    current: ArcSwap<CertifiedKey>,
}

impl ServerCert {
    /// The pair, checked to fit together.
    pub(crate) fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(certified(chain, key)?),
        }))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::KeyMismatch)
}

/// The operator's certificate and key files (`--tls-cert`, `--tls-key`).
#[derive(Debug, Clone)]
pub(crate) struct CertFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
}

impl CertFiles {
    /// Both files' bytes and a hash of them together.
    fn read(&self) -> Result<(Vec<u8>, Vec<u8>, String), TlsError> {
        let cert = crate::files::read_file(&self.cert, "certificate file")?;
        let key = crate::files::read_file(&self.key, "key file")?;
        let mut both = crate::hash::sha256_hex(&cert);
        both.push_str(&crate::hash::sha256_hex(&key));
        Ok((cert, key, both))
    }

    /// The pair in `cert` and `key`, checked to fit together.
    fn parse(&self, cert: &[u8], key: &[u8]) -> Result<CertifiedKey, TlsError> {
        let chain =
            ca_core::x509::parse_pem_certs(cert).map_err(|reason| TlsError::Certificates {
                path: self.cert.clone(),
                reason,
            })?;
        certified(chain, parse_key(&self.key, key)?)
    }
}

/// Reloads `--tls-cert`/`--tls-key` into `cert` when their content changes (cert-manager and
/// other rotators replace them in place or swap a symlink). The files are read every `interval`
/// and compared by content hash: unlike inotify this sees a Kubernetes Secret volume's
/// `..data` symlink swap and works on every file system, and two small reads per interval cost
/// nothing. A pair that cannot be read, parsed or does not fit together (a rotator half way
/// through writing it, a mistake) is refused with a warning, once per content, and the
/// previous pair keeps serving; `on_reload` gets every chain put into service.
pub(crate) async fn follow_cert_files(
    cert: Arc<ServerCert>,
    files: CertFiles,
    interval: Duration,
    on_reload: impl Fn(&[CertificateDer<'static>]) + Send + 'static,
) {
    // The pair `serve` checked at start is the one in service.
    let mut seen = files.read().ok().map(|(_, _, hash)| hash);
    let mut unreadable: Option<String> = None;
    loop {
        tokio::time::sleep(interval).await;
        let (c, k, hash) = match files.read() {
            Ok(read) => read,
            Err(e) => {
                let message = crate::api::status::message(&e);
                if unreadable.as_ref() != Some(&message) {
                    tracing::warn!(error = %message, cert = %files.cert.display(), "cannot read the server certificate files; the previous pair keeps serving");
                    unreadable = Some(message);
                }
                continue;
            }
        };
        unreadable = None;
        if seen.as_ref() == Some(&hash) {
            continue;
        }
        seen = Some(hash);
        match files.parse(&c, &k) {
            Ok(new) => {
                on_reload(&new.cert);
                cert.current.store(Arc::new(new));
                tracing::info!(cert = %files.cert.display(), key = %files.key.display(), "reloaded the server certificate");
            }
            Err(e) => tracing::warn!(
                error = %crate::api::status::message(&e),
                cert = %files.cert.display(),
                key = %files.key.display(),
                "refused the changed server certificate files; the previous pair keeps serving"
            ),
        }
    }
}

/// The server's rustls config: its certificate from `cert`, client certificates (optional: see
/// [`DynamicClientVerifier`]) checked by `verifier`, HTTP/2 by ALPN.
pub(crate) fn server_config(
    cert: Arc<ServerCert>,
    verifier: Arc<DynamicClientVerifier>,
) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The server's rustls config with a client verifier whose roots follow the meshes (operators'
/// CAs plus every mesh's bundle, updated on every config change).
pub(crate) fn server(
    manager: &Arc<Manager>,
    operators: &OperatorRoots,
    cert: Arc<ServerCert>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let roots = operators.certs().to_vec();
    let verifier = Arc::new(DynamicClientVerifier::new(&client_roots(
        &roots,
        &manager.snapshot(),
    ))?);
    let config = server_config(cert, verifier.clone())?;
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
