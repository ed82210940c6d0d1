//! ACM PCA's answers turned into errors that say what to fix: the IAM action a policy lacks, a CA
//! that is not `ACTIVE`, an ARN of another region or account, credentials AWS does not accept.
//! Misconfiguration is [`UpstreamKind::Refused`](ca_core::UpstreamKind::Refused); throttling,
//! 5xx and an unreachable endpoint (after the retries) are
//! [`UpstreamKind::Unavailable`](ca_core::UpstreamKind::Unavailable).

use aws_sdk_acmpca::error::{ProvideErrorMetadata, SdkError};
use ca_core::Error;
use ca_core::UpstreamError;
use meshca_aws::answer::Answer;

use crate::limit::MAX_ATTEMPTS;

/// The ACM PCA operations meshca calls, and the IAM action each needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Describe,
    Issue,
    Get,
    GetCaCertificate,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Describe => "DescribeCertificateAuthority",
            Self::Issue => "IssueCertificate",
            Self::Get => "GetCertificate",
            Self::GetCaCertificate => "GetCertificateAuthorityCertificate",
        }
    }

    pub(crate) fn action(self) -> String {
        format!("acm-pca:{}", self.name())
    }
}

/// Every IAM action the backend needs, as a policy lists them.
pub const ACTIONS: [&str; 4] = [
    "acm-pca:IssueCertificate",
    "acm-pca:GetCertificate",
    "acm-pca:DescribeCertificateAuthority",
    "acm-pca:GetCertificateAuthorityCertificate",
];

/// What to do about a failed call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `RequestInProgressException`: the certificate is not ready yet; ask again.
    InProgress,
    /// Throttling, 5xx, a dropped connection: retry with backoff, a bounded number of times.
    Transient,
    /// Anything else: report.
    Fatal,
}

pub(crate) fn classify<E: ProvideErrorMetadata>(e: &SdkError<E>) -> Kind {
    match e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let a = Answer::of(e);
            match a.code.as_str() {
                "RequestInProgressException" => Kind::InProgress,
                _ if a.is_throttling() || a.status >= 500 => Kind::Transient,
                _ => Kind::Fatal,
            }
        }
        SdkError::TimeoutError(_) => Kind::Transient,
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => Kind::Transient,
        _ => Kind::Fatal,
    }
}

/// Where the backend points, for messages.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub(crate) backend: &'a str,
    pub(crate) arn: &'a str,
    pub(crate) region: &'a str,
    pub(crate) account: &'a str,
    /// `auth.awsCredentials` or the default chain.
    pub(crate) credentials: &'static str,
}

impl Ctx<'_> {
    pub(crate) fn refused(&self, reason: String) -> Error {
        Error::from(UpstreamError::refused(self.backend.to_owned(), reason))
    }

    pub(crate) fn unavailable(&self, reason: String) -> Error {
        Error::from(UpstreamError::unavailable(self.backend.to_owned(), reason))
    }
}

/// The error of `op` that failed with `e` (after any retries). When no answer came, `e` stays
/// the error's `source()`.
pub(crate) fn to_error<E>(ctx: &Ctx<'_>, op: Op, e: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    SdkError<E>: std::error::Error + Send + Sync + 'static,
{
    let doing = format!("ACM PCA {} in {}", op.name(), ctx.region);
    let unavailable = |what: String, e: SdkError<E>| -> Error {
        UpstreamError::unavailable(ctx.backend, what)
            .with_source(e)
            .into()
    };
    match &e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {}
        SdkError::TimeoutError(_) => return unavailable(format!("{doing}: timed out"), e),
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
            return unavailable(
                format!(
                    "{doing}: the endpoint cannot be reached (check the network, a VPC \
                     endpoint, or AWS_ENDPOINT_URL_ACM_PCA / AWS_ENDPOINT_URL)"
                ),
                e,
            );
        }
        SdkError::DispatchFailure(_)
            if ca_core::error_chain(&e)
                .to_ascii_lowercase()
                .contains("credential") =>
        {
            return ctx.refused(format!(
                "{doing}: no AWS credentials from {}: {}",
                ctx.credentials,
                ca_core::error_chain(&e)
            ));
        }
        _ => return unavailable(doing, e),
    }
    let a = Answer::of(&e);
    let says = a.says();
    let arn = ctx.arn;
    match a.code.as_str() {
        _ if a.is_access_denied() => ctx.refused(format!(
            "AWS denied {action} on {arn}: the IAM policy of the principal meshca runs as ({}) \
             must allow {action} on the CA (meshca needs {}) ({says})",
            ctx.credentials,
            ACTIONS.join(", "),
            action = op.action()
        )),
        _ if a.is_bad_credentials() => ctx.refused(format!(
            "AWS rejected the credentials of {} for {doing}: check the access key and its \
             secret (or the role the default chain finds), and that they are not expired ({says})",
            ctx.credentials
        )),
        "ResourceNotFoundException" => ctx.refused(format!(
            "there is no certificate authority {arn} in region {} of account {}: a private CA \
             lives in one region and account, and the ARN names both — check the ARN (copy it \
             from `aws acm-pca list-certificate-authorities --region <its region>`) and that \
             the credentials are of account {} or the CA is shared with it ({says})",
            ctx.region, ctx.account, ctx.account
        )),
        "InvalidStateException" => ctx.refused(format!(
            "certificate authority {arn} cannot issue in its state: it must be ACTIVE (see \
             `aws acm-pca describe-certificate-authority`; install its certificate, enable or \
             renew it) ({says})"
        )),
        "InvalidArnException" => ctx.refused(format!(
            "AWS does not accept {arn} as a certificate authority ARN ({says})"
        )),
        "LimitExceededException" => ctx.refused(format!(
            "{doing}: an ACM PCA quota is reached (certificates per CA, or requests): raise it \
             in Service Quotas ({says})"
        )),
        "MalformedCSRException" | "InvalidArgsException" | "InvalidRequestException" => {
            ctx.refused(format!("ACM PCA refused the request of {doing} ({says})"))
        }
        _ if a.is_throttling() => ctx.unavailable(format!(
            "{doing} for certificate authority {arn}: still throttled by AWS after \
             {MAX_ATTEMPTS} attempts with backoff: the account's ACM PCA request rate quota is \
             reached — lower the backend's rate limit, move other callers of this CA's account \
             and region off it, or raise the quota in Service Quotas ({says})"
        )),
        _ if a.status >= 500 => ctx.unavailable(format!("{doing} ({says})")),
        _ => ctx.refused(format!("ACM PCA refused {doing} ({says})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named() {
        assert_eq!(Op::Get.action(), "acm-pca:GetCertificate");
        assert!(ACTIONS.contains(&Op::Describe.action().as_str()));
    }
}
