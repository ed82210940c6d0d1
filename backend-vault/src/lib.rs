//! # backend-vault
//!
//! The `vault` backend of Kong Mesh: data plane certificates from HashiCorp Vault's PKI secrets
//! engine, as a thin client over `reqwest` with meshca's own rustls `ClientConfig` (aws-lc-rs).
//!
//! - Issues with `POST /v1/<pki>/issue/<role>` (Vault makes the key; the policy Kong Mesh's docs
//!   write allows exactly this path), or with `fromCp.mode: sign`, meshca's extension,
//!   `POST /v1/<pki>/sign/<role>` with the data plane's CSR (the key never leaves it).
//! - Authenticates with exactly one of a token (renewed with `auth/token/renew-self` at two thirds
//!   of its TTL), a client certificate (`auth/cert/login`), AWS IAM (`auth/aws/login`, a SigV4
//!   signed `sts:GetCallerIdentity` with credentials from the default AWS chain), or not at all
//!   behind a Vault agent (`agentAddress`).
//! - The trust bundle comes from the mount (`ca/pem` and `ca_chain`), fetched on every call:
//!   whoever holds the backend keeps it ([`ca_core::CachedBundle`]; the meshca manager does), so
//!   there is one Vault request per certificate.
//! - Vault's `{"errors": [...]}` becomes a message that says what to fix (the policy, the role's
//!   `allowed_uri_sans`, `require_cn`, a sealed Vault, a TLS failure).
//!
//! Why not `vaultrs`: a custom CA only as file paths merged with the system roots, no
//! `tls.serverName`, silent fallbacks to `VAULT_*` environment variables, and an AWS login that
//! signs only with static keys against a hard-coded STS host.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod aws;
mod client;
mod conf;
mod errors;
mod factory;
mod pki;
mod secret;
mod tls;

use ca_core::UpstreamError;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use ca_core::{
    BuildSpec, CertificateAuthority, Error, IssueRequest, TrustBundle, UncheckedCertificate,
    Violations,
};
use reqwest::Method;
use serde_json::Value;

use crate::auth::{Auth, Login};
use crate::client::{Answer, Client, Retry};
use crate::secret::Token;

pub use conf::{AwsAuthType, VaultAuth, VaultConf, VaultMode};
pub use factory::VaultFactory;

/// Timeouts and lifetime of one backend (a token that cannot live `lifetime` is a
/// [`health`](CertificateAuthority::health) problem).
pub use ca_core::config::Timing;

/// A mesh's vault backend.
pub struct VaultCa {
    name: String,
    conf: Settings,
    client: Client,
    auth: Arc<Auth>,
    timing: Timing,
    warnings: Vec<String>,
}

/// What of the config is used per request.
#[derive(Debug, Clone)]
struct Settings {
    pki: String,
    role: String,
    mode: VaultMode,
    address: String,
}

impl fmt::Debug for VaultCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultCa")
            .field("name", &self.name)
            .field("address", &self.conf.address)
            .field("pki", &self.conf.pki)
            .field("role", &self.conf.role)
            .field("mode", &self.conf.mode)
            .field("auth", &self.auth.method())
            .finish_non_exhaustive()
    }
}

impl VaultCa {
    /// Builds the backend `spec` describes from its `conf.fromCp`; violations are reported under
    /// [`BuildSpec::conf_path`]. Data sources (`tls.caCert`, `auth.token`, `auth.tls.*`) are
    /// read once here, as the spec's sources allow. Vault is not contacted: the first request
    /// logs in.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming each unusable field; data source errors.
    pub async fn load_at(spec: &BuildSpec<'_>, conf: &VaultConf) -> Result<Self, Error> {
        let (mesh, name, store, sources) = (spec.mesh(), spec.name(), spec.store(), spec.sources());
        let timing = spec.timing();
        let field = |f: &str| spec.field(&format!("fromCp.{f}"));
        let mut v = Violations::default();
        let mut settings = tls::TlsSettings {
            server_name: conf.tls_server_name.clone(),
            skip_verify: conf.tls_skip_verify,
            ..Default::default()
        };
        if let Some(ca) = &conf.tls_ca_cert {
            settings.ca_pem = Some(ca.resolve(mesh, store, sources).await?.expose().to_vec());
        }
        let mut warnings = Vec::new();
        if conf.tls_skip_verify {
            let w = format!(
                "{}: Vault's certificate is not verified (tls.skipVerify: true); anyone on the \
                 path to Vault can read the certificates and keys it issues",
                field("tls.skipVerify")
            );
            tracing::warn!(backend = %name, "{w}");
            warnings.push(w);
        }
        // agentAddress: requests go to the agent, which authenticates for us.
        let (address, login) = match (&conf.agent_address, &conf.auth) {
            (Some(agent), auth) => {
                if auth.is_some() {
                    let w = format!(
                        "{}: ignored, requests go to agentAddress and the agent authenticates",
                        field("auth")
                    );
                    tracing::warn!(backend = %name, "{w}");
                    warnings.push(w);
                }
                (agent.clone(), Login::Agent)
            }
            (None, Some(VaultAuth::Token(src))) => {
                let raw = src.resolve(mesh, store, sources).await?;
                match Token::parse(raw.expose()) {
                    Ok(t) => (conf.address.clone(), Login::Token(t)),
                    Err(e) => {
                        v.add(field("auth.token"), format!("{} {e}", src.describe()));
                        (conf.address.clone(), Login::Agent)
                    }
                }
            }
            (
                None,
                Some(VaultAuth::Tls {
                    client_key,
                    client_cert,
                }),
            ) => {
                let key = client_key.resolve(mesh, store, sources).await?;
                let cert = client_cert.resolve(mesh, store, sources).await?;
                settings.client = Some((
                    cert.expose().to_vec(),
                    zeroize::Zeroizing::new(key.expose().to_vec()),
                ));
                (conf.address.clone(), Login::Cert)
            }
            (
                None,
                Some(VaultAuth::Aws {
                    kind,
                    role,
                    iam_server_id_header,
                }),
            ) => {
                if *kind == AwsAuthType::Ec2 {
                    v.add(
                        field("auth.aws.type"),
                        "EC2 is not supported yet: use IAM (the default)",
                    );
                }
                (
                    conf.address.clone(),
                    Login::Aws(Box::new(aws::AwsLogin::new(
                        role.clone(),
                        iam_server_id_header.clone(),
                    ))),
                )
            }
            (None, _) => {
                v.add(field("auth"), "exactly one of token, tls, aws must be set");
                (conf.address.clone(), Login::Agent)
            }
        };
        let tls = match tls::client_config(&settings) {
            Ok(c) => Some(c),
            Err((f, reason)) => {
                v.add(field(f), reason);
                None
            }
        };
        if !v.is_empty() {
            return Err(Error::InvalidConfig(v));
        }
        let Some(tls) = tls else {
            return Err(Error::Inconsistent("TLS config missing".into()));
        };
        let client =
            Client::new(tls, &address, conf.namespace.clone(), Retry::default()).map_err(|e| {
                Error::from(
                    UpstreamError::unavailable(name.to_string(), "building the Vault client")
                        .with_source(e),
                )
            })?;
        let auth = Arc::new(Auth::new(
            name.to_string(),
            login,
            client.clone(),
            timing.request_timeout,
        ));
        Ok(Self {
            name: name.to_string(),
            conf: Settings {
                pki: conf.pki.trim_matches('/').to_owned(),
                role: conf.role.clone(),
                mode: conf.mode,
                address,
            },
            client,
            auth,
            timing,
            warnings,
        })
    }

    /// With `auth.aws`, signs the login with credentials and region of `sdk` (and for its
    /// `endpoint_url`) instead of loading the default AWS chain on first use. For control planes
    /// that already hold an AWS config, and for tests.
    #[must_use]
    pub fn with_aws_sdk_config(self, sdk: aws_config::SdkConfig) -> Self {
        self.auth.set_aws_sdk_config(sdk);
        self
    }

    /// What the constructor found worth saying (`tls.skipVerify`, ignored auth).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// When the backend's Vault token ends, if it does (after the first request).
    pub fn token_expires(&self) -> Option<SystemTime> {
        self.auth.expires()
    }

    /// One authenticated call; a token Vault refuses is dropped and, for logins, obtained once
    /// more.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
        raw: bool,
    ) -> Result<Answer, Error> {
        let mut relogged = false;
        loop {
            let token =
                self.auth.token().await.map_err(|e| {
                    errors::auth_error(&self.name, &self.conf, self.auth.method(), e)
                })?;
            match self
                .client
                .call(method.clone(), path, token.as_ref(), body, timeout, raw)
                .await
            {
                // Refused: log in again, or look a configured token up again (a token that
                // ended is then reported as such, not as a policy that denies the path).
                Err(e)
                    if errors::is_forbidden(&e) && !relogged && self.auth.retry_after_refusal() =>
                {
                    self.auth.forget();
                    relogged = true;
                }
                Err(e) => {
                    return Err(errors::call_error(
                        &self.name,
                        &self.conf,
                        self.auth.method(),
                        &method,
                        path,
                        e,
                    ))
                }
                Ok(a) => return Ok(a),
            }
        }
    }

    async fn fetch_bundle(&self) -> Result<TrustBundle, Error> {
        let t = self.timing.root_chain_timeout;
        let ca = self.raw(&format!("{}/ca/pem", self.conf.pki), t).await?;
        let chain = self.raw(&format!("{}/ca_chain", self.conf.pki), t).await?;
        let anchors = pki::anchors(&ca, &chain).map_err(|reason| {
            Error::from(UpstreamError::refused(
                self.name.clone(),
                format!("PKI mount `{}`: {reason}", self.conf.pki),
            ))
        })?;
        TrustBundle::new(anchors)
    }

    async fn raw(&self, path: &str, timeout: Duration) -> Result<Vec<u8>, Error> {
        match self.call(Method::GET, path, None, timeout, true).await? {
            Answer::Raw(b) => Ok(b),
            Answer::Json(_) => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl CertificateAuthority for VaultCa {
    fn name(&self) -> &str {
        &self.name
    }

    /// Fetched from the mount every time: the caller keeps it ([`ca_core::CachedBundle`]).
    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        self.fetch_bundle().await
    }

    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        let (endpoint, csr) = match self.conf.mode {
            VaultMode::Issue => ("issue", None),
            VaultMode::Sign => (
                "sign",
                Some(request.csr_pem().ok_or_else(|| {
                    Error::Inconsistent("fromCp.mode: sign needs the data plane's CSR".into())
                })?),
            ),
        };
        let path = format!("{}/{endpoint}/{}", self.conf.pki, self.conf.role);
        let body = pki::request_body(request, csr);
        let answer = match self
            .call(
                Method::POST,
                &path,
                Some(&body),
                self.timing.request_timeout,
                false,
            )
            .await?
        {
            Answer::Json(v) => v,
            Answer::Raw(_) => Value::Null,
        };
        let issued = pki::parse_issued(&answer).map_err(|e| {
            Error::from(UpstreamError::bad_answer(
                self.name.clone(),
                format!("reading the answer of POST {path}"),
                e,
            ))
        })?;
        for w in &issued.warnings {
            tracing::warn!(backend = %self.name, path, "Vault: {w}");
        }
        errors::check_sans(&self.name, &self.conf, request, &issued)?;
        match (self.conf.mode, &issued.private_key) {
            (VaultMode::Issue, Some(key)) => {
                UncheckedCertificate::with_upstream_key(issued.chain, key.as_bytes())
            }
            (VaultMode::Issue, None) => Err(Error::from(UpstreamError::bad_answer(
                self.name.clone(),
                format!("reading the answer of POST {path}"),
                "no data.private_key",
            ))),
            (VaultMode::Sign, _) => Ok(UncheckedCertificate::new(issued.chain)),
        }
    }

    fn needs_csr(&self) -> bool {
        self.conf.mode == VaultMode::Sign
    }

    fn generates_keys(&self) -> bool {
        self.conf.mode == VaultMode::Issue
    }

    async fn health(&self) -> Result<(), Error> {
        let Some(problem) = self.auth.problem() else {
            return Ok(());
        };
        let soon = problem
            .expires
            .is_none_or(|e| e <= SystemTime::now() + self.timing.lifetime);
        if soon {
            Err(Error::from(UpstreamError::refused(
                self.name.clone(),
                format!(
                    "{} (certificates of this backend live {}s)",
                    problem.message,
                    self.timing.lifetime.as_secs()
                ),
            )))
        } else {
            Ok(())
        }
    }
}

impl VaultCa {}

/// Entry points for meshca's fuzz targets (the `meshca-fuzz-targets` crate): thin wrappers over
/// this crate's private readers of Vault's answers, so that they can be fuzzed as they are. Not
/// part of the API; nothing else may use them.
#[doc(hidden)]
pub mod fuzzing {
    use serde_json::Value;

    /// Reads an `issue`/`sign` answer as [`crate::VaultCa`] does (`data.certificate`,
    /// `data.ca_chain`, `data.issuing_ca`, `data.private_key`, `warnings`), and a private key
    /// Vault sent as `issue` mode takes it. The length of the chain kept.
    ///
    /// # Errors
    /// The reader's message.
    pub fn parse_issued(answer: &Value) -> Result<usize, String> {
        let issued = crate::pki::parse_issued(answer)?;
        if let Some(key) = &issued.private_key {
            ca_core::UncheckedCertificate::with_upstream_key(issued.chain.clone(), key.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        Ok(issued.chain.len())
    }

    /// The trust anchors of a PKI mount from its `ca/pem` and `ca_chain` answers, made into a
    /// trust bundle as the backend does. The number of anchors.
    ///
    /// # Errors
    /// The reader's or the bundle's message.
    pub fn anchors(ca_pem: &[u8], chain_pem: &[u8]) -> Result<usize, String> {
        let anchors = crate::pki::anchors(ca_pem, chain_pem)?;
        let n = anchors.len();
        ca_core::TrustBundle::new(anchors).map_err(|e| e.to_string())?;
        Ok(n)
    }

    /// Whether `raw` is a token as read from a data source or a login answer's
    /// `auth.client_token`.
    pub fn token(raw: &[u8]) -> bool {
        crate::secret::Token::parse(raw).is_ok()
    }
}
