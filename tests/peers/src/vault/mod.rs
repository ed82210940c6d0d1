//! A Vault HTTP API test server (`/v1/…`) for what real OpenBao cannot do in the tests: `aws`
//! (IAM) auth, which is not among OpenBao's built-in auth methods, and injected faults (sealed,
//! 5xx/429 answers, connection resets, a stopped server). Everything else (token and cert
//! auth, ACL policies, namespaces, PKI role rules) is tested against OpenBao itself
//! (`meshca-tests`' `openbao` module). It follows the Vault API field by field for what meshca
//! uses: PKI (`issue`, `sign`, CA reads), token create/lookup-self/renew-self, aws login, seal
//! state; every valid token may call every path (no ACL). It serves real TLS (rustls on
//! aws-lc-rs) with its own test CA.

mod auth_aws;
mod pki;
mod server;
mod tokens;
mod util;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};

pub use server::RequestLog;

/// Options for [`VaultServer::start`].
#[derive(Debug, Default, Clone)]
pub struct VaultOptions {
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
    /// 403 for missing/invalid/expired tokens (`logical.ErrPermissionDenied`).
    pub(crate) fn permission_denied() -> Self {
        Self::new(403, "permission denied")
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

/// The server's state.
#[derive(Debug, Default)]
pub(crate) struct Core {
    /// Secret mounts by path (only `pki`).
    pub(crate) mounts: HashMap<String, pki::Pki>,
    /// `aws` auth mounts by path (`token` is implicit).
    pub(crate) auth: HashMap<String, auth_aws::AwsMount>,
    /// Tokens by id.
    pub(crate) tokens: HashMap<String, tokens::Token>,
}

/// State shared by the server task and the test-side handle.
#[derive(Debug)]
pub(crate) struct Shared {
    core: Mutex<Core>,
    sealed: AtomicBool,
    fail: Mutex<(usize, u16)>,
    resets: AtomicUsize,
    log: Mutex<Vec<RequestLog>>,
    root_token: String,
    sts_endpoint: Option<String>,
}

impl Shared {
    /// Locks the core state (a poisoned lock is recovered: tests panic elsewhere).
    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running Vault test server; the server task is aborted on drop.
#[derive(Debug)]
pub struct VaultServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca_pem: String,
    tls: Arc<rustls::ServerConfig>,
    task: Mutex<Option<crate::ServerTask>>,
}

impl Drop for VaultServer {
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

impl VaultServer {
    /// Starts the server on `127.0.0.1:<free port>` with a fresh TLS CA and a root token.
    pub async fn start(opts: VaultOptions) -> VaultServer {
        let root_token = format!("hvs.{}", util::random_id(24));
        let mut core = Core::default();
        core.tokens.insert(
            root_token.clone(),
            tokens::Token {
                id: root_token.clone(),
                accessor: util::random_id(24),
                policies: vec!["root".into()],
                creation_ttl: 0,
                explicit_max_ttl: 0,
                max_ttl: 0,
                period: 0,
                renewable: false,
                issue_time: util::now_unix(),
                expire_time: None,
                path: "auth/token/root".into(),
                display_name: "root".into(),
                meta: None,
                orphan: true,
            },
        );
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            sealed: AtomicBool::new(false),
            fail: Mutex::new((0, 500)),
            resets: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            root_token,
            sts_endpoint: opts.sts_endpoint,
        });
        let (tls, ca_pem) = server::new_tls();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let (addr, task) = server::spawn(shared.clone(), tls.clone(), listener);
        VaultServer {
            shared,
            addr,
            ca_pem,
            tls,
            task: Mutex::new(Some(task)),
        }
    }

    /// Stops serving, as if the process were killed: the listener and every open connection
    /// close. The state (mounts, tokens, keys) is kept for [`start_again`](Self::start_again).
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

    /// The only DNS name in the server certificate (`vault.test`); its only IP SAN is 127.0.0.1.
    pub fn server_name(&self) -> &'static str {
        server::SERVER_NAME
    }

    /// PEM of the CA that signed the server's TLS certificate.
    pub fn tls_ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// The root token (root namespace, policy `root`, never expires).
    pub fn root_token(&self) -> String {
        self.shared.root_token.clone()
    }

    /// Like `vault write` with the root token (in-process, not logged, no faults
    /// injected): returns the response JSON and panics on non-2xx with Vault's errors.
    pub async fn write(&self, path: &str, body: Value) -> Value {
        let req = server::Req {
            method: http::Method::POST,
            path: path.trim_matches('/').to_string(),
            token: Some(self.shared.root_token.clone()),
            body,
            list: false,
        };
        match server::handle(&self.shared, req).await {
            Ok(server::Reply::Json(_, v)) => v,
            Ok(server::Reply::Empty) => json!({}),
            Ok(server::Reply::Raw(_, _, bytes)) => {
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(e) => panic!(
                "vault write {path} failed with {}: {:?}",
                e.status, e.errors
            ),
        }
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
