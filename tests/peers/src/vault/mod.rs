//! [`VaultFront`]: a hand-written front for a real Vault API server (OpenBao in the suites,
//! [`crate::openbao::OpenBao`]) that adds only what OpenBao cannot do here:
//!
//! - `aws` (IAM) auth, which is not among OpenBao's built-in auth methods: `sys/auth/<path>`
//!   with `type: aws`, its `config/client` and `role/<name>`, and `login`, which checks the
//!   signed `sts:GetCallerIdentity` request as Vault does, replays it to STS (moto) and mints
//!   an OpenBao token of the role's policies (`auth/token/create` with the root token);
//! - injected faults: sealed answers, the next n requests failing with a status, connections
//!   reset before the handshake, and the server stopped and started again;
//! - a log of every request that reached it.
//!
//! Every other request (PKI, tokens, ACL policies, namespaces) is forwarded to the upstream
//! as it came, and its answer returned as it went: the front has no PKI or tokens of its own.
//! It serves TLS (rustls on aws-lc-rs) with its own test CA.

mod auth_aws;
mod forward;
mod server;
mod util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;

pub use server::RequestLog;

/// The Vault API server behind a [`VaultFront`].
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `https://127.0.0.1:PORT`.
    pub address: String,
    /// PEM of the CA of its TLS certificate.
    pub ca_pem: String,
    /// A root token (the front's own writes and the tokens aws logins mint).
    pub root_token: String,
}

/// Options for [`VaultFront::start`].
#[derive(Debug, Default, Clone)]
pub struct FrontOptions {
    /// STS endpoint (a [`crate::moto::Moto`] endpoint) that `auth/aws/login` replays
    /// signed `GetCallerIdentity` requests to, unless `auth/aws/config/client` sets one.
    pub sts_endpoint: Option<String>,
}

/// An error answered as `{"errors": [message]}` with a status code.
#[derive(Debug, Clone)]
pub(crate) struct VaultError {
    /// HTTP status.
    pub(crate) status: u16,
    /// Messages.
    pub(crate) errors: Vec<String>,
}

impl VaultError {
    /// One message with a status.
    pub(crate) fn new(status: u16, msg: impl Into<String>) -> Self {
        Self {
            status,
            errors: vec![msg.into()],
        }
    }
    /// 400 (Vault's `logical.ErrorResponse`).
    pub(crate) fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(400, msg)
    }
    /// 404 for unknown routes (`no handler for route`).
    pub(crate) fn no_route(path: &str) -> Self {
        Self::new(
            404,
            format!("no handler for route \"{path}\". route entry not found."),
        )
    }
    /// 405 for a known path without that operation.
    pub(crate) fn unsupported() -> Self {
        Self::new(405, "1 error occurred:\n\t* unsupported operation\n\n")
    }
}

/// Shorthand for [`VaultError::bad_request`] (a generic fn item, usable in `map_err`).
pub(crate) fn bad<S: Into<String>>(msg: S) -> VaultError {
    VaultError::bad_request(msg)
}

/// State shared by the server task and the test-side handle.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `aws` auth mounts by path.
    aws: Mutex<HashMap<String, auth_aws::AwsMount>>,
    upstream: forward::Upstream,
    sealed: AtomicBool,
    fail: Mutex<(usize, u16)>,
    resets: AtomicUsize,
    log: Mutex<Vec<RequestLog>>,
    sts_endpoint: Option<String>,
}

impl Shared {
    /// Locks the aws mounts (a poisoned lock is recovered: tests panic elsewhere).
    pub(crate) fn aws(&self) -> MutexGuard<'_, HashMap<String, auth_aws::AwsMount>> {
        self.aws.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running front; the server task is aborted on drop (the upstream is not the front's).
#[derive(Debug)]
pub struct VaultFront {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    tls: Arc<rustls::ServerConfig>,
    task: Mutex<Option<crate::ServerTask>>,
}

impl Drop for VaultFront {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

impl VaultFront {
    /// Starts the front on `127.0.0.1:<free port>`, with a fresh TLS CA, before `upstream`.
    pub async fn start(upstream: Upstream, opts: FrontOptions) -> VaultFront {
        let shared = Arc::new(Shared {
            aws: Mutex::new(HashMap::new()),
            upstream: forward::Upstream::new(upstream),
            sealed: AtomicBool::new(false),
            fail: Mutex::new((0, 500)),
            resets: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            sts_endpoint: opts.sts_endpoint,
        });
        let (tls, ca_pem) = server::new_tls();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let (addr, task) = server::spawn(shared.clone(), tls.clone(), listener);
        VaultFront {
            shared,
            addr,
            ca_pem,
            tls,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops serving, as if the process were killed: the listener and every open connection
    /// close. The upstream and the aws mounts are kept for [`start_again`](Self::start_again).
    pub async fn stop(&self) {
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            t.stop().await;
        }
    }

    /// Serves again on the same address with the same TLS certificate and state, as a restarted
    /// Vault with persistent storage (unsealed) would.
    pub async fn start_again(&self) {
        self.stop().await;
        let listener = crate::listen_again(self.addr).await;
        let (_, task) = server::spawn(self.shared.clone(), self.tls.clone(), listener);
        *self.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    }

    /// `https://127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The only DNS name in the front's certificate (`vault.test`); its only IP SAN is
    /// 127.0.0.1.
    pub fn server_name(&self) -> &'static str {
        server::SERVER_NAME
    }

    /// PEM of the CA that signed the front's TLS certificate.
    pub fn tls_ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The upstream's root token.
    pub fn root_token(&self) -> String {
        self.shared.upstream.root_token().to_owned()
    }

    /// Like `vault write` with the root token (in-process, not logged, no faults
    /// injected): returns the response JSON and panics on non-2xx with Vault's errors.
    pub async fn write(&self, path: &str, body: Value) -> Value {
        let req = server::Req {
            method: http::Method::POST,
            path: path.trim_matches('/').to_string(),
            query: None,
            token: Some(self.root_token()),
            namespace: None,
            body: body.to_string().into_bytes(),
        };
        let reply = server::handle(&self.shared, req).await;
        assert!(
            (200..300).contains(&reply.status),
            "vault write {path} failed with {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        serde_json::from_slice(&reply.body).unwrap_or(Value::Null)
    }

    /// Seals or unseals: sealed answers 503 `Vault is sealed` except `sys/health`
    /// (503 with `sealed: true`) and `sys/seal-status`.
    pub fn set_sealed(&self, sealed: bool) {
        self.shared.sealed.store(sealed, Ordering::SeqCst);
    }

    /// The next `n` API requests answer `status` with `{"errors":["injected"]}`.
    pub fn fail_next(&self, n: usize, status: u16) {
        *self.shared.fail.lock().unwrap_or_else(|e| e.into_inner()) = (n, status);
    }

    /// The next `n` accepted connections are closed before the TLS handshake.
    pub fn reset_next(&self, n: usize) {
        self.shared.resets.store(n, Ordering::SeqCst);
    }

    /// Every API request seen over the wire, in order.
    pub fn requests(&self) -> Vec<RequestLog> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the request log.
    pub fn clear_requests(&self) {
        self.shared
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}
