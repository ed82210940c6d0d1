//! The peers' own suite: the Vault test server against Vault's documented behaviour,
//! moto's IAM enforcement, aws IAM login through moto, and the Pod Identity endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod aws;
mod vault_auth;
mod vault_pki;

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshca_peers::{VaultOptions, VaultServer};
use serde_json::{json, Value};

/// An HTTPS client for the Vault test server (trusting its CA, optional client cert).
pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
}

/// A client certificate for TLS client auth: (chain DER, PKCS#8 key DER).
pub(crate) type ClientCert = (Vec<Vec<u8>>, Vec<u8>);

impl Client {
    pub(crate) fn new(vault: &VaultServer, client_cert: Option<ClientCert>) -> Client {
        Self::with_base(vault, client_cert, vault.address())
    }

    pub(crate) fn with_base(
        vault: &VaultServer,
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

/// Starts a Vault with a `pki` mount, an EC root (CA TTL `ca_ttl`) and returns it.
pub(crate) async fn vault_with_pki(ca_ttl: &str) -> VaultServer {
    let vault = VaultServer::start(VaultOptions::default()).await;
    vault
        .write("sys/mounts/pki", json!({ "type": "pki" }))
        .await;
    vault
        .write(
            "pki/root/generate/internal",
            json!({ "common_name": "meshca test root", "ttl": ca_ttl, "key_type": "ec" }),
        )
        .await;
    vault
}

/// Polls `f` until it returns true (bounded by `deadline`).
pub(crate) async fn eventually<F, Fut>(deadline: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    loop {
        if f().await {
            return;
        }
        assert!(
            Instant::now() < end,
            "condition not met within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
