//! The peers' own suite: the Vault front (before real OpenBao) against Vault's documented
//! behaviour, moto's IAM enforcement, aws IAM login through moto, and the Pod Identity
//! endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod aws;
mod postgres;
mod vault_auth;

use std::sync::Arc;
use std::time::Duration;

use meshca_peers::{FrontOptions, OpenBao, VaultFront};
use serde_json::Value;

/// An HTTPS client for the front (trusting its CA, optional client cert).
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
}

/// A client certificate for TLS client auth: (chain DER, PKCS#8 key DER).
pub(crate) type ClientCert = (Vec<Vec<u8>>, Vec<u8>);

impl Client {
    pub(crate) fn new(vault: &VaultFront, client_cert: Option<ClientCert>) -> Client {
        Self::with_base(vault, client_cert, vault.address())
    }

    pub(crate) fn with_base(
        vault: &VaultFront,
        client_cert: Option<ClientCert>,
        base: String,
    ) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        let ca = pem::parse(vault.tls_ca_pem()).unwrap();
        roots
            .add(rustls_pki_types::CertificateDer::from(
                ca.contents().to_vec(),
            ))
            .unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match client_cert {
            Some((chain, key)) => builder
                .with_client_auth_cert(
                    chain
                        .into_iter()
                        .map(rustls_pki_types::CertificateDer::from)
                        .collect(),
                    rustls_pki_types::PrivateKeyDer::Pkcs8(key.into()),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(config)
            .no_proxy()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        Client { http, base }
    }

    /// Calls `/v1/<path>`; returns (status, JSON body or `null`).
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        namespace: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, text) = self.raw(method, path, token, namespace, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Like [`Client::call`], returning the raw body text.
    pub(crate) async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        namespace: Option<&str>,
        body: Option<Value>,
    ) -> (u16, String) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.base));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(ns) = namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }
}

/// The first error message of a Vault error body.
pub(crate) fn err(v: &Value) -> String {
    v["errors"][0].as_str().unwrap_or_default().to_string()
}

/// OpenBao and the front before it (dropped together).
pub(crate) struct Fronted {
    /// The front the tests call.
    pub(crate) front: VaultFront,
    /// The real server behind it.
    pub(crate) bao: OpenBao,
}

impl std::ops::Deref for Fronted {
    type Target = VaultFront;
    fn deref(&self) -> &VaultFront {
        &self.front
    }
}

/// Starts OpenBao and a front before it.
pub(crate) async fn fronted(opts: FrontOptions) -> Fronted {
    let bao = OpenBao::start().await;
    let front = VaultFront::start(bao.upstream(), opts).await;
    Fronted { front, bao }
}

impl Client {
    /// A bare GET (connection errors surface as `Err`).
    pub(crate) async fn try_get(&self, path: &str) -> Result<u16, reqwest::Error> {
        self.http
            .get(format!("{}/v1/{path}", self.base))
            .send()
            .await
            .map(|r| r.status().as_u16())
    }
}
