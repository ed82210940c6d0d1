//! The upstream behind the front: requests forwarded as they came (method, path, query, the
//! token and namespace headers, body) and answers returned as they went; and the two calls the
//! front makes itself with the root token: checking a caller's token, and minting the token of
//! an aws login.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::auth_aws::Grant;
use super::server::{Reply, Req};
use super::VaultError;

/// An HTTPS client for the upstream (trusting its CA only).
#[derive(Debug)]
pub(crate) struct Upstream {
    http: reqwest::Client,
    up: super::Upstream,
}

impl Upstream {
    /// A client for `up`.
    pub(crate) fn new(up: super::Upstream) -> Upstream {
        let mut roots = rustls::RootCertStore::empty();
        for ca in pem::parse_many(&up.ca_pem).expect("upstream CA PEM") {
            roots
                .add(rustls_pki_types::CertificateDer::from(
                    ca.contents().to_vec(),
                ))
                .expect("upstream CA");
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("upstream client");
        Upstream { http, up }
    }

    /// The upstream's root token.
    pub(crate) fn root_token(&self) -> &str {
        &self.up.root_token
    }

    /// `req` sent upstream; its answer, or 502 when the upstream cannot be reached.
    pub(crate) async fn forward(&self, req: &Req) -> Reply {
        let method = reqwest::Method::from_bytes(req.method.as_str().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut url = format!("{}/v1/{}", self.up.address, req.path);
        if let Some(q) = &req.query {
            url.push('?');
            url.push_str(q);
        }
        let mut call = self.http.request(method, url);
        if let Some(t) = &req.token {
            call = call.header("x-vault-token", t);
        }
        if let Some(ns) = &req.namespace {
            call = call.header("x-vault-namespace", ns);
        }
        if !req.body.is_empty() {
            call = call
                .header("content-type", "application/json")
                .body(req.body.clone());
        }
        let answer = async {
            let resp = call.send().await?;
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp.bytes().await?.to_vec();
            Ok::<_, reqwest::Error>(Reply {
                status,
                content_type,
                body,
            })
        };
        answer.await.unwrap_or_else(|e| {
            VaultError::new(502, format!("the front cannot reach the upstream: {e}")).into()
        })
    }

    /// Whether `token` is one the upstream knows (`auth/token/lookup-self`): 403 otherwise,
    /// as Vault answers a missing or unknown token.
    pub(crate) async fn check_token(&self, token: Option<&str>) -> Result<(), VaultError> {
        let token = token
            .filter(|t| !t.is_empty())
            .ok_or_else(|| VaultError::new(403, "permission denied"))?;
        let reply = self
            .forward(&Req {
                method: http::Method::GET,
                path: "auth/token/lookup-self".into(),
                query: None,
                token: Some(token.to_owned()),
                namespace: None,
                body: Vec::new(),
            })
            .await;
        if reply.status == 200 {
            Ok(())
        } else {
            Err(VaultError::new(403, "permission denied"))
        }
    }

    /// The token an aws login grants, minted upstream as an orphan with the root token
    /// (`auth/token/create` with `no_parent`); the upstream's answer is the login's.
    pub(crate) async fn mint(&self, grant: &Grant) -> Result<Reply, VaultError> {
        let mut body = json!({
            "policies": grant.policies,
            "renewable": true,
            "display_name": grant.display,
            "meta": grant.meta,
            "no_parent": true,
        });
        if grant.ttl > 0 {
            body["ttl"] = Value::from(format!("{}s", grant.ttl));
        }
        if grant.max_ttl > 0 {
            body["explicit_max_ttl"] = Value::from(format!("{}s", grant.max_ttl));
        }
        let reply = self
            .forward(&Req {
                method: http::Method::POST,
                path: "auth/token/create".into(),
                query: None,
                token: Some(self.up.root_token.clone()),
                namespace: None,
                body: body.to_string().into_bytes(),
            })
            .await;
        if (200..300).contains(&reply.status) {
            Ok(reply)
        } else {
            Err(VaultError::new(
                500,
                format!(
                    "minting the login's token upstream failed with {}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                ),
            ))
        }
    }
}
