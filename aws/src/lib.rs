//! # meshca-aws
//!
//! What meshca's AWS integrations share:
//! - [`behavior_version`]: the AWS SDK behavior version meshca is written and tested against;
//! - [`answer`]: reading an AWS error answer (code, message, HTTP status), including the XML
//!   bodies some endpoints send for JSON APIs, and the error codes that mean "bad credentials";
//! - [`SecretsManager`]: AWS Secrets Manager behind ca-core's `awsSecretsManager` data source,
//!   with the default AWS credential chain (EKS Pod Identity included);
//! - [`SecretsManagerSink`]: certificates delivered to Secrets Manager in Kong's layout
//!   (`meshca agent`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
mod secrets;
mod sink;

pub use crate::secrets::{SecretsManager, GET_SECRET_VALUE, VALUE_TTL};
pub use crate::sink::{SecretTarget, SecretsManagerSink, SINK_ACTIONS};

/// The AWS SDK behavior version meshca is written and tested against (pinned: a newer one may
/// change defaults such as retries or timeouts).
pub fn behavior_version() -> aws_config::BehaviorVersion {
    aws_config::BehaviorVersion::v2026_01_12()
}
