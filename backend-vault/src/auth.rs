//! Getting and keeping a Vault token: a configured token (looked up, then renewed with
//! `auth/token/renew-self` at two thirds of its TTL), a client-certificate login
//! (`auth/cert/login`) or an AWS IAM login (`auth/aws/login`), both repeated before their token
//! ends; or no token at all behind a Vault agent.

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use serde_json::{json, Value};

use crate::aws::AwsLogin;
use crate::client::{Answer, CallError, Client};
use crate::secret::Token;

/// How a backend authenticates.
#[derive(Debug)]
pub(crate) enum Login {
    /// `auth.token`.
    Token(Token),
    /// `auth.tls`: the client certificate is in the TLS config; log in with it.
    Cert,
    /// `auth.aws` (IAM).
    Aws(Box<AwsLogin>),
    /// `agentAddress` without auth: the Vault agent adds the token.
    Agent,
}

impl Login {
    fn describe(&self) -> &'static str {
        match self {
            Self::Token(_) => "auth.token",
            Self::Cert => "auth.tls (cert login)",
            Self::Aws(_) => "auth.aws (IAM login)",
            Self::Agent => "agentAddress",
        }
    }
}

/// A token and what Vault said about its life.
#[derive(Clone, Debug)]
struct Lease {
    token: Token,
    obtained: Instant,
    /// `None`: the token does not expire (Vault's TTL 0).
    ttl: Option<Duration>,
    renewable: bool,
}

/// `key` of a Vault answer object in seconds (0 when absent).
fn secs(fields: &Value, key: &str) -> u64 {
    fields.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `renewable` of a Vault answer object, `default` when absent.
fn renewable(fields: &Value, default: bool) -> bool {
    fields
        .get("renewable")
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

impl Lease {
    /// A lease of `token` obtained now, living `ttl` seconds as Vault reports them (0: never
    /// expires).
    fn new(token: Token, ttl: u64, renewable: bool) -> Self {
        Self {
            token,
            obtained: Instant::now(),
            ttl: (ttl > 0).then(|| counted(ttl)),
            renewable,
        }
    }

    fn expires(&self) -> Option<Instant> {
        self.ttl.map(|t| self.obtained + t)
    }

    /// When to renew (or log in again): at two thirds of the TTL.
    fn renew_at(&self) -> Option<Instant> {
        self.ttl.map(|t| self.obtained + t.mul_f64(2.0 / 3.0))
    }

    fn usable(&self, now: Instant) -> bool {
        self.expires()
            .is_none_or(|e| e > now + Duration::from_secs(1))
    }
}

/// A token's state, for logs and [`crate::VaultCa::health`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Problem {
    /// What is wrong, and what to do.
    pub(crate) message: String,
    /// When the token stops working, if it will.
    pub(crate) expires: Option<SystemTime>,
}

/// The token keeper of one backend.
#[derive(Debug)]
pub(crate) struct Auth {
    backend: String,
    login: Login,
    client: Client,
    timeout: Duration,
    current: Mutex<Option<Lease>>,
    /// Serializes logins, lookups and renewals.
    gate: tokio::sync::Mutex<()>,
    problem: Mutex<Option<Problem>>,
    renewer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Auth {
    fn drop(&mut self) {
        if let Ok(mut r) = self.renewer.lock() {
            if let Some(h) = r.take() {
                h.abort();
            }
        }
    }
}

/// Why no token could be had.
#[derive(Debug)]
pub(crate) struct AuthError {
    /// What was being done (`logging in with auth.aws`, ...).
    pub(crate) doing: String,
    /// The call's failure.
    pub(crate) error: CallError,
}

impl Auth {
    pub(crate) fn new(backend: String, login: Login, client: Client, timeout: Duration) -> Self {
        Self {
            backend,
            login,
            client,
            timeout,
            current: Mutex::new(None),
            gate: tokio::sync::Mutex::new(()),
            problem: Mutex::new(None),
            renewer: Mutex::new(None),
        }
    }

    /// Gives an AWS IAM login `sdk` instead of the default chain's config.
    pub(crate) fn set_aws_sdk_config(&self, sdk: aws_config::SdkConfig) {
        if let Login::Aws(aws) = &self.login {
            aws.set_sdk_config(sdk);
        }
    }

    /// The config field that authenticates.
    pub(crate) fn method(&self) -> &'static str {
        self.login.describe()
    }

    /// The token to send, logging in first when there is none (or it ended). `None` behind a
    /// Vault agent.
    pub(crate) async fn token(self: &Arc<Self>) -> Result<Option<Token>, AuthError> {
        if matches!(self.login, Login::Agent) {
            return Ok(None);
        }
        if let Some(t) = self.usable() {
            return Ok(Some(t));
        }
        let _gate = self.gate.lock().await;
        if let Some(t) = self.usable() {
            return Ok(Some(t));
        }
        let lease = self.establish().await?;
        let token = lease.token.clone();
        self.install(lease);
        self.start_renewer();
        Ok(Some(token))
    }

    /// Drops the current lease (Vault refused its token): the next call logs in again, or, for
    /// a configured token, looks it up again, which tells a token that has ended from a policy
    /// that refuses the path.
    pub(crate) fn forget(&self) {
        if let Ok(mut c) = self.current.lock() {
            *c = None;
        }
    }

    /// Whether a refused call is worth one more try after [`forget`](Self::forget): a new
    /// login, or a configured token looked up again (an agent's token is not ours to check).
    pub(crate) fn retry_after_refusal(&self) -> bool {
        !matches!(self.login, Login::Agent)
    }

    /// Whether the token will stop working, and when.
    pub(crate) fn problem(&self) -> Option<Problem> {
        self.problem.lock().ok().and_then(|p| p.clone())
    }

    /// When the current token ends, if it does.
    pub(crate) fn expires(&self) -> Option<SystemTime> {
        let lease = self.current.lock().ok()?.clone()?;
        let left = lease.expires()?.saturating_duration_since(Instant::now());
        Some(SystemTime::now() + left)
    }

    fn usable(&self) -> Option<Token> {
        let c = self.current.lock().ok()?;
        c.as_ref()
            .filter(|l| l.usable(Instant::now()))
            .map(|l| l.token.clone())
    }

    fn install(&self, lease: Lease) {
        if let Ok(mut c) = self.current.lock() {
            *c = Some(lease);
        }
    }

    fn set_problem(&self, problem: Option<Problem>) {
        if let Ok(mut p) = self.problem.lock() {
            *p = problem;
        }
    }

    /// A fresh lease: the configured token looked up, or a login.
    async fn establish(&self) -> Result<Lease, AuthError> {
        match &self.login {
            Login::Token(token) => {
                let answer = self
                    .call(Method::GET, "auth/token/lookup-self", Some(token), None)
                    .await
                    .map_err(|error| AuthError {
                        doing: "looking up the token of auth.token (auth/token/lookup-self)".into(),
                        error,
                    })?;
                let data = answer.get("data").unwrap_or(&Value::Null);
                let mut lease =
                    Lease::new(token.clone(), secs(data, "ttl"), renewable(data, false));
                if lease.ttl.is_none() && secs(data, "creation_ttl") > 0 {
                    // TTL 0 of a token made with one: under a second left (Vault and OpenBao
                    // round down), not a token that never expires. Look it up again next time.
                    lease.ttl = Some(Duration::ZERO);
                }
                self.note_lease(&lease, false);
                Ok(lease)
            }
            Login::Cert => {
                let answer = self
                    .call(Method::POST, "auth/cert/login", None, Some(&json!({})))
                    .await
                    .map_err(|error| AuthError {
                        doing: "logging in with auth.tls (auth/cert/login)".into(),
                        error,
                    })?;
                self.lease_of_login(&answer, "auth/cert/login")
            }
            Login::Aws(aws) => {
                let payload = aws.payload().await.map_err(|e| AuthError {
                    doing: "signing the AWS IAM login (sts:GetCallerIdentity)".into(),
                    error: CallError::Transport(e),
                })?;
                let answer = self
                    .call(Method::POST, "auth/aws/login", None, Some(&payload))
                    .await
                    .map_err(|error| AuthError {
                        doing: "logging in with auth.aws (auth/aws/login)".into(),
                        error,
                    })?;
                self.lease_of_login(&answer, "auth/aws/login")
            }
            Login::Agent => Err(AuthError {
                doing: "logging in".into(),
                error: CallError::Decode("a Vault agent logs in, not meshca".into()),
            }),
        }
    }

    fn lease_of_login(&self, answer: &Value, path: &str) -> Result<Lease, AuthError> {
        let auth = answer.get("auth").unwrap_or(&Value::Null);
        let token = auth
            .get("client_token")
            .and_then(Value::as_str)
            .ok_or_else(|| AuthError {
                doing: format!("reading the answer of {path}"),
                error: CallError::Decode("no auth.client_token".into()),
            })
            .and_then(|t| {
                Token::parse(t.as_bytes()).map_err(|e| AuthError {
                    doing: format!("reading the answer of {path}"),
                    error: CallError::Decode(format!("auth.client_token {e}")),
                })
            })?;
        let lease = Lease::new(token, secs(auth, "lease_duration"), renewable(auth, false));
        self.set_problem(None);
        Ok(lease)
    }

    /// Records whether a configured token can live on: a token that cannot be renewed is a
    /// problem from the moment it is known, logged with its end.
    fn note_lease(&self, lease: &Lease, capped: bool) {
        let Some(expires) = lease.expires() else {
            self.set_problem(None);
            return;
        };
        let at = SystemTime::now() + expires.saturating_duration_since(Instant::now());
        let short = capped;
        let message = if !lease.renewable {
            Some(format!(
                "the Vault token of auth.token is not renewable and expires in {}s; meshca \
                 cannot keep it alive: give the backend a renewable (or periodic) token",
                lease.ttl.unwrap_or_default().as_secs()
            ))
        } else if short {
            Some(format!(
                "the Vault token of auth.token reached its maximum TTL and expires in {}s; \
                 renewing cannot extend it: give the backend a new token",
                lease.ttl.unwrap_or_default().as_secs()
            ))
        } else {
            None
        };
        match message {
            Some(message) => {
                tracing::warn!(backend = %self.backend, "{message}");
                self.set_problem(Some(Problem {
                    message,
                    expires: Some(at),
                }));
            }
            None => self.set_problem(None),
        }
    }

    /// Renews the configured token, or logs in again.
    async fn refresh(&self) -> Result<(), AuthError> {
        let _gate = self.gate.lock().await;
        let Some(lease) = self.current.lock().ok().and_then(|c| c.clone()) else {
            return Ok(());
        };
        match &self.login {
            Login::Token(_) => {
                if !lease.renewable {
                    self.note_lease(&lease, false);
                    return Ok(());
                }
                let answer = self
                    .call(
                        Method::POST,
                        "auth/token/renew-self",
                        Some(&lease.token),
                        Some(&json!({})),
                    )
                    .await
                    .map_err(|error| AuthError {
                        doing: "renewing the token of auth.token (auth/token/renew-self)".into(),
                        error,
                    })?;
                let auth = answer.get("auth").unwrap_or(&Value::Null);
                let ttl = secs(auth, "lease_duration");
                // Vault caps a renewal at the token's max TTL and says so in `warnings`; a
                // renewal of an expiring token to 0 s means the same.
                let capped = ttl == 0
                    || answer
                        .get("warnings")
                        .and_then(Value::as_array)
                        .is_some_and(|w| {
                            w.iter()
                                .filter_map(Value::as_str)
                                .any(|w| w.contains("max_ttl") || w.contains("capped"))
                        });
                let renewed = Lease {
                    token: lease.token.clone(),
                    obtained: Instant::now(),
                    // An expiring token renewed to 0 s ends now.
                    ttl: Some(counted(ttl)),
                    renewable: renewable(auth, lease.renewable),
                };
                tracing::debug!(backend = %self.backend, ttl, "renewed the Vault token");
                self.note_lease(&renewed, capped);
                self.install(renewed);
                Ok(())
            }
            Login::Cert | Login::Aws(_) => {
                let fresh = self.establish().await?;
                tracing::debug!(backend = %self.backend, method = self.method(), "logged in to Vault again");
                self.install(fresh);
                Ok(())
            }
            Login::Agent => Ok(()),
        }
    }

    /// Keeps the token alive in the background: at two thirds of its TTL, renew (or log in);
    /// on failure retry with backoff until the token ends, logging each failure.
    fn start_renewer(self: &Arc<Self>) {
        let Ok(mut slot) = self.renewer.lock() else {
            return;
        };
        if slot.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let weak = Arc::downgrade(self);
        *slot = Some(tokio::spawn(renew_loop(weak)));
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&Token>,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        match self
            .client
            .call(method, path, token, body, self.timeout, false)
            .await?
        {
            Answer::Json(v) => Ok(v),
            Answer::Raw(_) => Err(CallError::Decode("not JSON".into())),
        }
    }
}

async fn renew_loop(weak: Weak<Auth>) {
    let mut failures: u32 = 0;
    loop {
        let (at, expires) = {
            let Some(auth) = weak.upgrade() else { return };
            let Some(lease) = auth.current.lock().ok().and_then(|c| c.clone()) else {
                return;
            };
            let Some(renew_at) = lease.renew_at() else {
                return;
            };
            if matches!(auth.login, Login::Token(_)) && !lease.renewable {
                // Nothing to do but say so (done when it was looked up).
                return;
            }
            let at = if failures == 0 {
                renew_at
            } else {
                let backoff = Duration::from_millis(200)
                    .saturating_mul(1 << failures.min(10))
                    .min(Duration::from_secs(30));
                Instant::now() + backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0)
            };
            (at, lease.expires())
        };
        tokio::time::sleep_until(at.into()).await;
        let Some(auth) = weak.upgrade() else { return };
        match auth.refresh().await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                let left = expires.map(|x| x.saturating_duration_since(Instant::now()));
                tracing::warn!(
                    backend = %auth.backend,
                    error = %e.error,
                    seconds_left = left.map(|l| l.as_secs()),
                    "{} failed; retrying until the token ends", e.doing
                );
                if left.is_some_and(|l| l.is_zero()) {
                    tracing::error!(backend = %auth.backend, "the Vault token has expired; the next request logs in again if it can");
                    auth.set_problem(Some(Problem {
                        message: format!("the Vault token expired: {}: {}", e.doing, e.error),
                        expires: Some(SystemTime::now()),
                    }));
                    auth.forget();
                    return;
                }
            }
        }
    }
}

/// A TTL as Vault reports it (whole seconds, rounded down from a clock that may run a little
/// ahead of ours), counted a second shorter so that renewals never come late.
fn counted(ttl_secs: u64) -> Duration {
    if ttl_secs >= 2 {
        Duration::from_secs(ttl_secs - 1)
    } else {
        Duration::from_millis(ttl_secs * 500)
    }
}
