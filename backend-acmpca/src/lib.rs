//! # backend-acmpca
//!
//! The `acmpca` backend of Kong Mesh: data plane certificates from AWS Private CA (ACM PCA),
//! with `aws-sdk-acmpca` over rustls on aws-lc-rs.
//!
//! - One certificate is exactly one `IssueCertificate` (the data plane's CSR, the end-entity
//!   template, `Validity` = the requested window, the signing algorithm of the CA's key, the
//!   request's idempotency key as `IdempotencyToken`) and the `GetCertificate` polls that wait
//!   for it, bounded by `dpCert.requestTimeout`. `DescribeCertificateAuthority` is cached.
//! - Calls are paced by a token bucket per CA ([`DEFAULT_RATE_LIMIT`]); throttling, 5xx and
//!   dropped connections are retried with jittered backoff, at most [`MAX_ATTEMPTS`] times.
//! - Credentials: `auth.awsCredentials` (static keys from data sources), else the default AWS
//!   chain (environment, profile, web identity, EKS Pod Identity / container credentials, IMDS).
//!   The region is the ARN's; the endpoint the SDKs' `AWS_ENDPOINT_URL_ACM_PCA` /
//!   `AWS_ENDPOINT_URL`.
//! - The trust bundle is `caCert`, or, without it, the root of
//!   `GetCertificateAuthorityCertificate`, fetched on every call: whoever holds the backend keeps
//!   it ([`ca_core::CachedBundle`]; the meshca manager does).
//! - AWS errors become messages that say what to fix (the IAM action a policy lacks, a CA that is
//!   not `ACTIVE`, an ARN of another region).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod errors;
mod limit;

use ca_core::UpstreamError;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_sdk_acmpca::config::retry::RetryConfig;
use aws_sdk_acmpca::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_acmpca::primitives::Blob;
use aws_sdk_acmpca::types::{SigningAlgorithm, Validity, ValidityPeriodType};
use ca_core::x509::{anchors_of, is_self_issued, parse_pem_certs};
use ca_core::{
    BuildSpec, CertificateAuthority, Error, IssueRequest, TrustBundle, UncheckedCertificate,
    Violations,
};
use meshca_aws::behavior_version;
use rustls_pki_types::CertificateDer;

mod conf;
mod factory;

pub use conf::{AcmpcaConf, AwsCredentials};
pub use factory::AcmpcaFactory;

pub use crate::errors::ACTIONS;
use crate::errors::{Ctx, Kind, Op};
use crate::limit::TokenBucket;
pub use crate::limit::{RateLimit, DEFAULT_RATE_LIMIT, MAX_ATTEMPTS};

/// The template of data plane certificates: end entity, key usage digitalSignature +
/// keyEncipherment, extended key usage serverAuth + clientAuth, subject and SANs from the CSR.
pub const END_ENTITY_TEMPLATE: &str = "arn:aws:acm-pca:::template/EndEntityCertificate/V1";

/// How long `DescribeCertificateAuthority` (the CA's key algorithm and status) is reused.
pub const DESCRIBE_TTL: Duration = Duration::from_secs(300);

/// ACM PCA's longest `IdempotencyToken`.
const MAX_IDEMPOTENCY_TOKEN: usize = 36;

/// Timeouts and lifetime of one backend.
pub use ca_core::config::Timing;

/// The parts of a CA ARN: `arn:<partition>:acm-pca:<region>:<account>:certificate-authority/<id>`.
#[derive(Debug, Clone)]
struct Arn {
    text: String,
    region: String,
    account: String,
}

impl Arn {
    fn parse(arn: &str) -> Result<Self, String> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        match parts.as_slice() {
            ["arn", _, "acm-pca", region, account, resource]
                if resource.starts_with("certificate-authority/") =>
            {
                if region.is_empty() {
                    return Err(format!("\"{arn}\" names no region"));
                }
                Ok(Self {
                    text: arn.to_owned(),
                    region: (*region).to_owned(),
                    account: (*account).to_owned(),
                })
            }
            _ => Err(format!(
                "\"{arn}\" is not an ACM PCA certificate authority ARN \
                 (arn:aws:acm-pca:<region>:<account>:certificate-authority/<id>)"
            )),
        }
    }
}

/// What `DescribeCertificateAuthority` told us.
#[derive(Debug, Clone)]
struct CaInfo {
    signing: &'static str,
}

/// A mesh's acmpca backend.
pub struct AcmpcaCa {
    name: String,
    arn: Arn,
    /// `caCert`, when configured.
    configured: Option<TrustBundle>,
    /// Else the CA's chain as fetched.
    credentials: Option<Credentials>,
    sdk: Option<SdkConfig>,
    client: tokio::sync::OnceCell<aws_sdk_acmpca::Client>,
    bucket: Arc<TokenBucket>,
    timing: Timing,
    info: Mutex<Option<(CaInfo, Instant)>>,
}

impl fmt::Debug for AcmpcaCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcmpcaCa")
            .field("name", &self.name)
            .field("arn", &self.arn.text)
            .field("credentials", &self.credentials_source())
            .field(
                "trust_bundle",
                &if self.configured.is_some() {
                    "caCert"
                } else {
                    "GetCertificateAuthorityCertificate"
                },
            )
            .field("rate_limit", &self.bucket.limit())
            .finish_non_exhaustive()
    }
}

impl AcmpcaCa {
    /// Builds the backend `spec` describes from its `conf`; violations are reported under
    /// [`BuildSpec::conf_path`]. `caCert` and `auth.awsCredentials` are read once here, as the
    /// spec's sources allow. ACM PCA is not contacted: the first request is.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] naming each unusable field; data source errors.
    pub async fn load_at(spec: &BuildSpec<'_>, conf: &AcmpcaConf) -> Result<Self, Error> {
        let (mesh, store, sources) = (spec.mesh(), spec.store(), spec.sources());
        let field = |f: &str| spec.field(f);
        let mut v = Violations::default();
        let arn = match Arn::parse(&conf.arn) {
            Ok(a) => Some(a),
            Err(e) => {
                v.add(field("arn"), e);
                None
            }
        };
        let mut configured = None;
        if let Some(source) = &conf.ca_cert {
            let ca_pem = source.resolve(mesh, store, sources).await?;
            match anchors_of(ca_pem.expose())
                .and_then(|a| TrustBundle::new(a).map_err(|e| e.to_string()))
            {
                Ok(b) => configured = Some(b),
                Err(e) => v.add(field("caCert"), format!("{} {e}", source.describe())),
            }
        }
        let mut credentials = None;
        if let Some(c) = &conf.credentials {
            let key = c.access_key.resolve(mesh, store, sources).await?;
            let secret = c.access_key_secret.resolve(mesh, store, sources).await?;
            let text = |b: &[u8]| {
                std::str::from_utf8(b)
                    .ok()
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && !s.contains(char::is_whitespace))
                    .map(str::to_owned)
            };
            match (text(key.expose()), text(secret.expose())) {
                (Some(k), Some(s)) => {
                    credentials = Some(Credentials::new(k, s, None, None, "meshca-acmpca"));
                }
                (k, s) => {
                    if k.is_none() {
                        v.add(
                            field("auth.awsCredentials.accessKey"),
                            format!("{} is not an AWS access key id", c.access_key.describe()),
                        );
                    }
                    if s.is_none() {
                        v.add(
                            field("auth.awsCredentials.accessKeySecret"),
                            format!(
                                "{} is not an AWS secret access key",
                                c.access_key_secret.describe()
                            ),
                        );
                    }
                }
            }
        }
        let Some(arn) = arn.filter(|_| v.is_empty()) else {
            return Err(Error::InvalidConfig(v));
        };
        let bucket = limit::shared_bucket(&arn.text, DEFAULT_RATE_LIMIT);
        Ok(Self {
            name: spec.name().to_string(),
            arn,
            configured,
            credentials,
            sdk: None,
            client: tokio::sync::OnceCell::new(),
            bucket,
            timing: spec.timing(),
            info: Mutex::new(None),
        })
    }

    /// Uses `sdk` (its credentials unless `auth.awsCredentials` is set, its endpoint, HTTP
    /// client and sleep) instead of loading the default AWS config on first use; the region is
    /// still the ARN's. For control planes that already hold an AWS config, and for tests.
    #[must_use]
    pub fn with_aws_sdk_config(mut self, sdk: SdkConfig) -> Self {
        self.sdk = Some(sdk);
        self.client = tokio::sync::OnceCell::new();
        self
    }

    /// Paces `IssueCertificate` with `limit` instead of [`DEFAULT_RATE_LIMIT`] (shared by the
    /// backends on this CA that use the same limit).
    #[must_use]
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Self {
        self.bucket = limit::shared_bucket(&self.arn.text, limit);
        self
    }

    /// The CA's ARN.
    pub fn arn(&self) -> &str {
        &self.arn.text
    }

    /// The region calls go to (the ARN's).
    pub fn region(&self) -> &str {
        &self.arn.region
    }

    fn credentials_source(&self) -> &'static str {
        if self.credentials.is_some() {
            "auth.awsCredentials"
        } else {
            "the default AWS credential chain"
        }
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            backend: &self.name,
            arn: &self.arn.text,
            region: &self.arn.region,
            account: &self.arn.account,
            credentials: self.credentials_source(),
        }
    }

    async fn client(&self) -> &aws_sdk_acmpca::Client {
        self.client
            .get_or_init(|| async {
                let region = Region::new(self.arn.region.clone());
                let sdk = match &self.sdk {
                    Some(s) => s.clone(),
                    None => {
                        aws_config::defaults(behavior_version())
                            .region(region.clone())
                            .load()
                            .await
                    }
                };
                // meshca retries itself: throttling is paced by the bucket, and every attempt
                // counts against dpCert.requestTimeout.
                let mut b = aws_sdk_acmpca::config::Builder::from(&sdk)
                    .behavior_version(behavior_version())
                    .region(region)
                    .retry_config(RetryConfig::disabled());
                if let Some(c) = &self.credentials {
                    b = b.credentials_provider(c.clone());
                }
                aws_sdk_acmpca::Client::from_conf(b.build())
            })
            .await
    }

    /// One operation with bounded retries of transient failures; `limited` takes a token of the
    /// bucket before each attempt; `wait_in_progress` asks again (without counting attempts)
    /// while ACM PCA answers `RequestInProgressException`.
    async fn call<T, E, F, Fut>(
        &self,
        op: Op,
        limited: bool,
        wait_in_progress: bool,
        mut attempt_fn: F,
    ) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let mut attempts = 0;
        let mut polls = 0;
        loop {
            if limited {
                self.bucket.acquire().await;
            }
            let e = match attempt_fn().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match errors::classify(&e) {
                Kind::InProgress if wait_in_progress => {
                    tokio::time::sleep(limit::poll_delay(polls)).await;
                    polls += 1;
                }
                Kind::Transient if attempts + 1 < MAX_ATTEMPTS => {
                    attempts += 1;
                    let delay = limit::retry_delay(attempts);
                    tracing::debug!(
                        backend = %self.name, op = op.name(), attempt = attempts, ?delay,
                        "ACM PCA: {}; retrying", ca_core::error_chain(&e)
                    );
                    tokio::time::sleep(delay).await;
                }
                _ => return Err(errors::to_error(&self.ctx(), op, e)),
            }
        }
    }

    /// The CA's signing algorithm, from `DescribeCertificateAuthority` (cached for
    /// [`DESCRIBE_TTL`] while the CA is `ACTIVE`; a CA in another state is an error).
    async fn ca_info(&self, fresh: bool) -> Result<CaInfo, Error> {
        if !fresh {
            if let Ok(g) = self.info.lock() {
                if let Some((i, at)) = g.as_ref() {
                    if at.elapsed() < DESCRIBE_TTL {
                        return Ok(i.clone());
                    }
                }
            }
        }
        let client = self.client().await;
        let out = self
            .call(Op::Describe, false, false, || {
                client
                    .describe_certificate_authority()
                    .certificate_authority_arn(&self.arn.text)
                    .send()
            })
            .await?;
        let ctx = self.ctx();
        let Some(ca) = out.certificate_authority() else {
            return Err(ctx.refused(format!(
                "DescribeCertificateAuthority of {} answered no certificate authority",
                self.arn.text
            )));
        };
        let status = ca.status().map_or("UNKNOWN", |s| s.as_str());
        if status != "ACTIVE" {
            if let Ok(mut g) = self.info.lock() {
                *g = None;
            }
            return Err(ctx.refused(not_active(&self.arn.text, status)));
        }
        let conf = ca.certificate_authority_configuration();
        let key = conf.map(|c| c.key_algorithm().as_str()).unwrap_or("");
        let configured = conf.map(|c| c.signing_algorithm().as_str()).unwrap_or("");
        let Some(signing) = signing_algorithm(key, configured) else {
            return Err(ctx.refused(format!(
                "certificate authority {} has key algorithm {key:?}, which meshca cannot pick a \
                 signing algorithm for",
                self.arn.text
            )));
        };
        let info = CaInfo { signing };
        if let Ok(mut g) = self.info.lock() {
            *g = Some((info.clone(), Instant::now()));
        }
        Ok(info)
    }

    async fn issue_inner(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        let csr = request.csr_pem().ok_or_else(|| {
            Error::Inconsistent("the acmpca backend needs the data plane's CSR".into())
        })?;
        check_csr_names(request)?;
        let info = self.ca_info(false).await?;
        let client = self.client().await;
        let not_after = epoch_secs(request.not_after());
        let not_before = epoch_secs(request.not_before());
        let validity = Validity::builder()
            .r#type(ValidityPeriodType::Absolute)
            .value(not_after)
            .build()
            .map_err(|e| Error::Inconsistent(format!("Validity: {e}")))?;
        let validity_not_before = Validity::builder()
            .r#type(ValidityPeriodType::Absolute)
            .value(not_before)
            .build()
            .map_err(|e| Error::Inconsistent(format!("ValidityNotBefore: {e}")))?;
        let token = idempotency_token(request.idempotency_key().as_str());
        let issued = self
            .call(Op::Issue, true, false, || {
                client
                    .issue_certificate()
                    .certificate_authority_arn(&self.arn.text)
                    .csr(Blob::new(csr.as_bytes()))
                    .signing_algorithm(SigningAlgorithm::from(info.signing))
                    .template_arn(END_ENTITY_TEMPLATE)
                    .validity(validity.clone())
                    .validity_not_before(validity_not_before.clone())
                    .idempotency_token(&token)
                    .send()
            })
            .await?;
        let Some(cert_arn) = issued.certificate_arn().map(str::to_owned) else {
            return Err(self
                .ctx()
                .refused("IssueCertificate answered no CertificateArn".into()));
        };
        let got = self
            .call(Op::Get, false, true, || {
                client
                    .get_certificate()
                    .certificate_authority_arn(&self.arn.text)
                    .certificate_arn(&cert_arn)
                    .send()
            })
            .await?;
        let chain = issued_chain(got.certificate(), got.certificate_chain()).map_err(|e| {
            Error::from(UpstreamError::bad_answer(
                self.name.clone(),
                format!("reading GetCertificate of {cert_arn}"),
                e,
            ))
        })?;
        Ok(UncheckedCertificate::new(chain))
    }

    /// The roots of the CA's chain (`GetCertificateAuthorityCertificate`: its certificate and
    /// chain), bounded by `rootChain.requestTimeout`.
    async fn ca_anchors(&self) -> Result<Vec<CertificateDer<'static>>, Error> {
        let fetch = async {
            let client = self.client().await;
            self.call(Op::GetCaCertificate, false, false, || {
                client
                    .get_certificate_authority_certificate()
                    .certificate_authority_arn(&self.arn.text)
                    .send()
            })
            .await
        };
        let out = self
            .bounded(Op::GetCaCertificate, self.timing.root_chain_timeout, fetch)
            .await?;
        let mut pem = out.certificate().unwrap_or_default().to_owned();
        pem.push('\n');
        pem.push_str(out.certificate_chain().unwrap_or_default());
        anchors_of(pem.as_bytes()).map_err(|e| {
            self.ctx()
                .refused(format!("the certificate of CA {}: {e}", self.arn.text))
        })
    }

    /// `work` (calls of `op`) within `timeout`.
    async fn bounded<T>(
        &self,
        op: Op,
        timeout: Duration,
        work: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        tokio::time::timeout(timeout, work).await.map_err(|_| {
            Error::from(UpstreamError::timeout(
                &self.name,
                format!("{} of {}", op.name(), self.arn.text),
                timeout,
            ))
        })?
    }

    /// `caCert` must be the root of the CA's chain.
    async fn check_ca_cert(&self, configured: &TrustBundle) -> Result<(), Error> {
        let top = self.ca_anchors().await?;
        if top.iter().any(|c| configured.certs().contains(c)) {
            Ok(())
        } else {
            Err(self.ctx().refused(format!(
                "caCert is not the root of certificate authority {}: set it to the last \
                 certificate of `aws acm-pca get-certificate-authority-certificate \
                 --certificate-authority-arn {} --region {}` (the root), or leave caCert out to \
                 take it from there",
                self.arn.text, self.arn.text, self.arn.region
            )))
        }
    }
}

#[async_trait]
impl CertificateAuthority for AcmpcaCa {
    fn name(&self) -> &str {
        &self.name
    }

    /// `caCert`, else fetched every time: the caller keeps it ([`ca_core::CachedBundle`]).
    async fn trust_bundle(&self) -> Result<TrustBundle, Error> {
        if let Some(b) = &self.configured {
            return Ok(b.clone());
        }
        let bundle = TrustBundle::new(self.ca_anchors().await?).map_err(|e| {
            self.ctx().refused(format!(
                "the chain of certificate authority {}: {e}",
                self.arn.text
            ))
        })?;
        Ok(bundle)
    }

    /// Not bounded here: the holder's request timeout (meshca's `Deadline`) cancels it; the
    /// rate limiter gives a cancelled caller's turn back.
    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, Error> {
        self.issue_inner(request).await
    }

    fn timeout_hint(&self) -> Option<String> {
        Some(format!(
            "with ACM PCA {} at a rate limit of {}/s, retries and GetCertificate polls included",
            self.arn.text,
            self.bucket.limit().per_second
        ))
    }

    /// The CA is `ACTIVE` now and `caCert` is its root (or, without `caCert`, its chain can be
    /// fetched).
    async fn health(&self) -> Result<(), Error> {
        self.bounded(
            Op::Describe,
            self.timing.root_chain_timeout,
            self.ca_info(true),
        )
        .await?;
        match &self.configured {
            Some(b) => self.check_ca_cert(b).await,
            None => self.trust_bundle().await.map(|_| ()),
        }
    }
}

/// What to do about a CA in `status`.
fn not_active(arn: &str, status: &str) -> String {
    let what = match status {
        "PENDING_CERTIFICATE" => {
            "has no CA certificate yet: get its CSR (get-certificate-authority-csr), have it \
             signed (by itself with the RootCACertificate/V1 template for a root, or by a \
             parent CA) and install it with import-certificate-authority-certificate"
        }
        "DISABLED" => {
            "is disabled: enable it (aws acm-pca update-certificate-authority --status ACTIVE)"
        }
        "EXPIRED" => {
            "has expired: install a renewed CA certificate (import-certificate-authority-certificate)"
        }
        "CREATING" => "is still being created: wait for it",
        "DELETED" => "is deleted: restore it (restore-certificate-authority) or use another CA",
        "FAILED" => "failed to be created: create another one",
        _ => "is not ACTIVE",
    };
    format!("certificate authority {arn} is {status} and cannot issue: it {what}")
}

/// The signing algorithm of a CA key (ACM PCA's `KeyAlgorithm` names); the CA's configured one
/// for keys not listed.
fn signing_algorithm(key: &str, configured: &str) -> Option<&'static str> {
    Some(match key {
        "EC_prime256v1" => "SHA256WITHECDSA",
        "EC_secp384r1" => "SHA384WITHECDSA",
        "EC_secp521r1" => "SHA512WITHECDSA",
        k if k.starts_with("RSA_") => "SHA256WITHRSA",
        "SM2" => "SM3WITHSM2",
        "ML_DSA_44" => "ML_DSA_44",
        "ML_DSA_65" => "ML_DSA_65",
        "ML_DSA_87" => "ML_DSA_87",
        _ => {
            return [
                "SHA256WITHECDSA",
                "SHA384WITHECDSA",
                "SHA512WITHECDSA",
                "SHA256WITHRSA",
                "SHA384WITHRSA",
                "SHA512WITHRSA",
            ]
            .into_iter()
            .find(|a| *a == configured)
        }
    })
}

/// The request's idempotency key as an `IdempotencyToken` (at most 36 characters): as is when it
/// fits, else the first 32 hex digits of its SHA-256 (the same key always gives the same token).
fn idempotency_token(key: &str) -> String {
    if key.len() <= MAX_IDEMPOTENCY_TOKEN {
        return key.to_owned();
    }
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn epoch_secs(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The leaf of `GetCertificate` and the intermediates of its `CertificateChain` (roots belong in
/// the trust bundle only).
fn issued_chain(
    certificate: Option<&str>,
    chain: Option<&str>,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let leaf = parse_pem_certs(certificate.unwrap_or_default().as_bytes())
        .map_err(|e| format!("Certificate {e}"))?
        .into_iter()
        .next()
        .ok_or("Certificate is empty")?;
    let mut out = vec![leaf];
    if let Some(chain) = chain.filter(|c| !c.trim().is_empty()) {
        for c in parse_pem_certs(chain.as_bytes()).map_err(|e| format!("CertificateChain {e}"))? {
            if !is_self_issued(&c) && !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// ACM PCA's end-entity template copies the CSR's subject and SANs into the certificate, so the
/// CSR must carry exactly the certificate's names. core's CSRs for keys it generates do; a
/// caller's CSR that does not is refused here, before a billed `IssueCertificate` whose
/// certificate core would refuse anyway.
fn check_csr_names(request: &IssueRequest) -> Result<(), Error> {
    let problems = request.csr_name_problems();
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::invalid_argument(
        "csr",
        format!(
            "ACM PCA copies the CSR's subject and SANs into the certificate (template \
             EndEntityCertificate/V1), so the CSR must carry exactly the identity's SANs and \
             the backend's common name, and {}; send such a CSR, or let meshca generate the key",
            problems.join(", and ")
        ),
    ))
}

/// Entry points for meshca's fuzz targets (the `meshca-fuzz-targets` crate): thin wrappers over
/// this crate's private readers of ACM PCA's answers, so that they can be fuzzed as they are. Not
/// part of the API; nothing else may use them.
#[doc(hidden)]
pub mod fuzzing {
    /// The chain of a `GetCertificate` answer (`Certificate`, `CertificateChain`) as the backend
    /// keeps it: its length.
    ///
    /// # Errors
    /// The reader's message.
    pub fn issued_chain(certificate: Option<&str>, chain: Option<&str>) -> Result<usize, String> {
        super::issued_chain(certificate, chain).map(|c| c.len())
    }

    /// The signing algorithm picked for a `DescribeCertificateAuthority` answer's key algorithm
    /// and configured signing algorithm, if any.
    pub fn signing_algorithm(key: &str, configured: &str) -> Option<&'static str> {
        super::signing_algorithm(key, configured)
    }

    /// The message for a CA whose `DescribeCertificateAuthority` status is `status`.
    pub fn not_active(arn: &str, status: &str) -> String {
        super::not_active(arn, status)
    }

    /// Whether `arn` is a CA ARN the backend accepts.
    pub fn arn(arn: &str) -> bool {
        super::Arn::parse(arn).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arns() {
        let a = Arn::parse(
            "arn:aws:acm-pca:eu-west-1:123456789012:certificate-authority/0a1b2c3d-4e5f",
        )
        .unwrap();
        assert_eq!(a.region, "eu-west-1");
        assert_eq!(a.account, "123456789012");
        assert!(Arn::parse("arn:aws:acm-pca::123:certificate-authority/x")
            .unwrap_err()
            .contains("names no region"));
        assert!(Arn::parse("arn:aws:s3:::b").is_err());
    }

    #[test]
    fn signing_algorithms_follow_the_key() {
        assert_eq!(
            signing_algorithm("EC_prime256v1", ""),
            Some("SHA256WITHECDSA")
        );
        assert_eq!(
            signing_algorithm("EC_secp384r1", ""),
            Some("SHA384WITHECDSA")
        );
        assert_eq!(signing_algorithm("RSA_4096", ""), Some("SHA256WITHRSA"));
        assert_eq!(
            signing_algorithm("NEW_KEY", "SHA384WITHRSA"),
            Some("SHA384WITHRSA")
        );
        assert_eq!(signing_algorithm("NEW_KEY", "NEW_ALG"), None);
    }

    #[test]
    fn idempotency_tokens_fit() {
        assert_eq!(idempotency_token("abc"), "abc");
        let long = "k".repeat(64);
        let t = idempotency_token(&long);
        assert_eq!(t.len(), 32);
        assert_eq!(t, idempotency_token(&long));
        assert_ne!(t, idempotency_token(&"j".repeat(64)));
    }

    #[test]
    fn states_say_what_to_do() {
        assert!(not_active("a", "PENDING_CERTIFICATE").contains("import-certificate-authority"));
        assert!(not_active("a", "DISABLED").contains("--status ACTIVE"));
        assert!(not_active("a", "EXPIRED").contains("renewed"));
    }
}
