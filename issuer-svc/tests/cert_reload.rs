//! `--tls-cert`/`--tls-key` are reloaded while serving: a rotated pair serves the next
//! handshake, a broken one is refused and the previous pair keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Accepts any server certificate: the test looks at which one was sent, not at whom it names.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The leaf the server sends in a fresh handshake (which also proves it holds the key).
fn served_leaf(addr: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = Arc::new(AnyServer(provider.signature_verification_algorithms));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let mut sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).unwrap();
    }
    conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

/// A self-signed pair for localhost: (cert PEM, key PEM, cert DER).
fn pair() -> (String, String, Vec<u8>) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (
        c.cert.pem(),
        c.signing_key.serialize_pem(),
        c.cert.der().to_vec(),
    )
}

/// Rewrites a file in place, as an operator's `cp` would.
fn rewrite(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// Waits until `done` holds, checking every 50 ms, at most 600 times (a bound on a hang, not
/// a timed assertion).
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("never: {what}");
}

#[test]
fn a_rotated_pair_serves_the_next_handshake_and_a_broken_one_is_refused() {
    let files = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (files.path().join("tls.crt"), files.path().join("tls.key"));
    let (a_cert, a_key, a_der) = pair();
    rewrite(&cert_path, &a_cert);
    rewrite(&key_path, &a_key);
    let server = Server::start(
        &[],
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--tls-reload-interval",
            "100ms",
        ],
    );
    assert_eq!(served_leaf(&server.grpc), a_der);

    // Pair B, certificate first: for a moment the files hold B's certificate and A's key, which
    // is refused; then the pair fits and serves.
    let (b_cert, b_key, b_der) = pair();
    rewrite(&cert_path, &b_cert);
    rewrite(&key_path, &b_key);
    eventually("pair B served", || served_leaf(&server.grpc) == b_der);
    assert!(server.log().contains("reloaded the server certificate"));

    // Garbage: refused with a log line, B keeps serving.
    let refusals = |s: &Server| {
        s.log()
            .matches("refused the changed server certificate files")
            .count()
    };
    let before = refusals(&server);
    rewrite(&cert_path, "not a certificate\n");
    eventually("the garbage refused", || refusals(&server) > before);
    assert_eq!(served_leaf(&server.grpc), b_der);
    // A key that is not B's beside B's certificate: refused too.
    let (_, c_key, _) = pair();
    rewrite(&cert_path, &b_cert);
    let before = refusals(&server);
    rewrite(&key_path, &c_key);
    eventually("the mismatched key refused", || refusals(&server) > before);
    assert_eq!(served_leaf(&server.grpc), b_der);
}
