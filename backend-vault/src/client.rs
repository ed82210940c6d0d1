//! One HTTP call to Vault: headers (`X-Vault-Token`, `X-Vault-Namespace`), a deadline over all
//! attempts, jittered retries of transient failures (connection errors, 429, 5xx), Vault's
//! `{"errors": [...]}` envelope decoded, and bodies capped.

use std::fmt;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::secret::Token;

/// The largest Vault answer read (a certificate, its chain and a key are a few KiB).
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The most Vault error strings kept in a message.
const MAX_ERRORS: usize = 8;
/// The longest Vault error string kept.
const MAX_ERROR_LEN: usize = 512;

/// How transient failures are retried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Retry {
    /// Attempts in all (the first included).
    pub(crate) attempts: u32,
    /// The first backoff; each next one doubles, with full jitter.
    pub(crate) base: Duration,
    /// The largest backoff.
    pub(crate) max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
        }
    }
}

/// A Vault server (or agent) and how to reach it.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    /// `address` without a trailing `/`.
    base: String,
    namespace: Option<String>,
    retry: Retry,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Vault answered with an error status.
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// Vault's `errors` (cut to a few, each cut to a length).
        errors: Vec<String>,
    },
    /// No answer: connection refused or reset, TLS failure, DNS.
    Transport(String),
    /// The deadline passed.
    Timeout(Duration),
    /// An answer that is not what the API documents.
    Decode(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { status, errors } if errors.is_empty() => {
                write!(f, "Vault answered {status}")
            }
            Self::Status { status, errors } => {
                write!(f, "Vault answered {status}: {}", errors.join("; "))
            }
            Self::Transport(e) => f.write_str(e),
            Self::Timeout(d) => write!(f, "no answer from Vault within {d:?}"),
            Self::Decode(e) => write!(f, "unexpected answer from Vault: {e}"),
        }
    }
}

impl std::error::Error for CallError {}

impl CallError {
    /// Whether trying again may help.
    fn transient(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                *status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
            }
            Self::Transport(_) => true,
            Self::Timeout(_) | Self::Decode(_) => false,
        }
    }

    /// Vault's errors, lower-cased and joined, for matching.
    pub(crate) fn text(&self) -> String {
        match self {
            Self::Status { errors, .. } => errors.join("; ").to_lowercase(),
            other => other.to_string().to_lowercase(),
        }
    }
}

/// What a successful call returned.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A JSON body (or none: `Value::Null`).
    Json(Value),
    /// A raw body (`ca/pem`, `ca_chain`).
    Raw(Vec<u8>),
}

impl Client {
    /// A client for `base` (`https://vault:8200`), sending `namespace` on every request.
    pub(crate) fn new(
        tls: rustls::ClientConfig,
        base: &str,
        namespace: Option<String>,
        retry: Retry,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // Vault's address is what the Mesh says; no proxies from the environment.
            .no_proxy()
            .http1_only()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            namespace,
            retry,
        })
    }

    /// `method /v1/<path>` with `body`, retried until `timeout` passes.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
        timeout: Duration,
        raw: bool,
    ) -> Result<Answer, CallError> {
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CallError::Timeout(timeout));
            }
            let result =
                match tokio::time::timeout(left, self.once(method.clone(), path, token, body, raw))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(CallError::Timeout(timeout)),
                };
            match result {
                Err(e) if e.transient() && attempt < self.retry.attempts => {
                    let cap = self
                        .retry
                        .base
                        .saturating_mul(1 << (attempt - 1).min(16))
                        .min(self.retry.max);
                    let pause = cap.mul_f64(rand::random::<f64>());
                    let left = deadline.saturating_duration_since(Instant::now());
                    if pause >= left {
                        return Err(e);
                    }
                    tracing::debug!(path, attempt, error = %e, "retrying a Vault call");
                    tokio::time::sleep(pause).await;
                }
                other => return other,
            }
        }
    }

    async fn once(
        &self,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
        raw: bool,
    ) -> Result<Answer, CallError> {
        let url = format!("{}/v1/{}", self.base, path.trim_start_matches('/'));
        let mut req = self.http.request(method, &url);
        if let Some(t) = token {
            req = req.header(
                "X-Vault-Token",
                t.header_value().map_err(|e| CallError::Decode(e.into()))?,
            );
        }
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        // Vault answers browsers differently; this says we are an API client.
        req = req.header("X-Vault-Request", "true");
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(serde_json::to_vec(b).map_err(|e| CallError::Decode(e.to_string()))?);
        }
        let mut resp = req.send().await.map_err(|e| transport(&e, &self.base))?;
        let status = resp.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| transport(&e, &self.base))? {
            if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(CallError::Decode(format!(
                    "answer larger than {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        if !status.is_success() {
            return Err(CallError::Status {
                status,
                errors: errors_of(&bytes),
            });
        }
        if raw {
            return Ok(Answer::Raw(bytes));
        }
        if bytes.is_empty() {
            return Ok(Answer::Json(Value::Null));
        }
        serde_json::from_slice(&bytes)
            .map(Answer::Json)
            .map_err(|e| CallError::Decode(format!("not JSON: {e}")))
    }
}

/// Vault's `errors` array, bounded.
fn errors_of(body: &[u8]) -> Vec<String> {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    v.get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .take(MAX_ERRORS)
                .map(|s| s.chars().take(MAX_ERROR_LEN).collect())
                .collect()
        })
        .unwrap_or_default()
}

/// A transport error with its causes (the TLS verifier's reason is a few levels down).
fn transport(e: &reqwest::Error, base: &str) -> CallError {
    let what = if e.is_connect() {
        format!("cannot connect to {base}")
    } else {
        format!("request to {base} failed")
    };
    let causes = std::error::Error::source(e).map(ca_core::error_chain);
    CallError::Transport(match causes {
        Some(c) => format!("{what}: {c}"),
        None => what,
    })
}
