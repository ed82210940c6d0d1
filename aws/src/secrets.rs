//! AWS Secrets Manager behind ca-core's `awsSecretsManager` data source.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::{Region, SdkConfig};
use aws_sdk_secretsmanager::error::SdkError;
use ca_core::{AwsSecretsManager, FetchError, SecretBytes};

use crate::answer::Answer;
use crate::behavior_version;

/// The IAM action a secret read needs.
pub const GET_SECRET_VALUE: &str = "secretsmanager:GetSecretValue";

/// How long a value read is reused before Secrets Manager is asked again.
pub const VALUE_TTL: Duration = Duration::from_secs(60);

/// Values kept at most (the oldest half is dropped beyond it).
const MAX_CACHED: usize = 1024;

/// AWS Secrets Manager for `awsSecretsManager` data sources: `GetSecretValue` with the default
/// AWS credential chain (environment, profile, web identity, EKS Pod Identity / container
/// credentials, IMDS), in the region of the secret's ARN or, for a name, the configured region.
/// Values are cached for [`VALUE_TTL`] and never logged; `Debug` shows no value.
pub struct SecretsManager {
    sdk: Option<SdkConfig>,
    loaded: tokio::sync::OnceCell<SdkConfig>,
    clients: Mutex<HashMap<String, aws_sdk_secretsmanager::Client>>,
    cache: Mutex<HashMap<String, (SecretBytes, Instant)>>,
    ttl: Duration,
}

impl fmt::Debug for SecretsManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsManager")
            .field("ttl", &self.ttl)
            .field(
                "cached",
                &self.cache.lock().map(|c| c.len()).unwrap_or_default(),
            )
            .finish_non_exhaustive()
    }
}

impl Default for SecretsManager {
    fn default() -> Self {
        Self::new()
    }
}

impl SecretsManager {
    /// Reads with the default AWS config (loaded on first use): its credential chain, region
    /// and endpoint (`AWS_ENDPOINT_URL_SECRETS_MANAGER` / `AWS_ENDPOINT_URL`).
    pub fn new() -> Self {
        Self {
            sdk: None,
            loaded: tokio::sync::OnceCell::new(),
            clients: Mutex::new(HashMap::new()),
            cache: Mutex::new(HashMap::new()),
            ttl: VALUE_TTL,
        }
    }

    /// Reads with `sdk` (credentials, region, endpoint) instead of the default config; an ARN's
    /// region still wins. For control planes that hold an AWS config, and tests.
    #[must_use]
    pub fn with_aws_sdk_config(mut self, sdk: SdkConfig) -> Self {
        self.sdk = Some(sdk);
        self
    }

    /// Reuses values for `ttl` instead of [`VALUE_TTL`] (zero: always ask).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    async fn config(&self) -> &SdkConfig {
        match &self.sdk {
            Some(s) => s,
            None => {
                self.loaded
                    .get_or_init(|| aws_config::defaults(behavior_version()).load())
                    .await
            }
        }
    }

    pub(crate) async fn client(&self, region: &str) -> aws_sdk_secretsmanager::Client {
        if let Some(c) = self
            .clients
            .lock()
            .ok()
            .and_then(|m| m.get(region).cloned())
        {
            return c;
        }
        let conf = aws_sdk_secretsmanager::config::Builder::from(self.config().await)
            .behavior_version(behavior_version())
            .region(Region::new(region.to_owned()))
            .build();
        let client = aws_sdk_secretsmanager::Client::from_conf(conf);
        if let Ok(mut m) = self.clients.lock() {
            m.insert(region.to_owned(), client.clone());
        }
        client
    }

    fn cached(&self, id: &str) -> Option<SecretBytes> {
        let cache = self.cache.lock().ok()?;
        let (v, at) = cache.get(id)?;
        (at.elapsed() < self.ttl).then(|| v.clone())
    }

    fn remember(&self, id: &str, value: &SecretBytes) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= MAX_CACHED {
                let mut ages: Vec<(String, Instant)> =
                    cache.iter().map(|(k, (_, at))| (k.clone(), *at)).collect();
                ages.sort_by_key(|(_, at)| *at);
                for (k, _) in ages.into_iter().take(MAX_CACHED / 2) {
                    cache.remove(&k);
                }
            }
            cache.insert(id.to_owned(), (value.clone(), Instant::now()));
        }
    }

    /// The region of secret `id`: its ARN's, else the configured one.
    pub(crate) async fn region_of(&self, id: &str) -> Result<String, String> {
        match arn_region(id) {
            Some(r) => Ok(r.to_owned()),
            None => match self.config().await.region() {
                Some(r) => Ok(r.to_string()),
                None => Err(
                    "is a secret name and no AWS region is configured: set AWS_REGION, \
                     or use the secret's ARN (it names the region)"
                        .into(),
                ),
            },
        }
    }

    async fn fetch(&self, id: &str, max_bytes: usize) -> Result<SecretBytes, FetchError> {
        let region = self.region_of(id).await.map_err(refused)?;
        let client = self.client(&region).await;
        let out = client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| to_fetch_error(&e, id, &region))?;
        let value = if let Some(s) = out.secret_string() {
            SecretBytes::new(s.as_bytes().to_vec())
        } else if let Some(b) = out.secret_binary() {
            SecretBytes::new(b.as_ref().to_vec())
        } else {
            return Err(refused(format!(
                "has no current value in region {region} (neither SecretString nor SecretBinary)"
            )));
        };
        if value.len() > max_bytes {
            return Err(refused(format!("is larger than {max_bytes} bytes")));
        }
        Ok(value)
    }
}

#[async_trait]
impl AwsSecretsManager for SecretsManager {
    async fn secret_value(
        &self,
        secret_id: &str,
        max_bytes: usize,
        timeout: Duration,
    ) -> Result<SecretBytes, FetchError> {
        if let Some(v) = self.cached(secret_id) {
            return Ok(v);
        }
        let value = tokio::time::timeout(timeout, self.fetch(secret_id, max_bytes))
            .await
            .map_err(|_| {
                refused(format!(
                    "Secrets Manager did not answer within {timeout:?} (check the network, a VPC \
                     endpoint, or AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL)"
                ))
            })??;
        self.remember(secret_id, &value);
        Ok(value)
    }
}

/// The region of `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>`.
fn arn_region(id: &str) -> Option<&str> {
    let mut parts = id.splitn(5, ':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("arn"), Some(_), Some("secretsmanager"), Some(region)) if !region.is_empty() => {
            Some(region)
        }
        _ => None,
    }
}

fn refused(reason: String) -> FetchError {
    FetchError {
        reason,
        source: None,
    }
}

fn to_fetch_error<E>(e: &SdkError<E>, id: &str, region: &str) -> FetchError
where
    E: aws_sdk_secretsmanager::error::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    let chain = ca_core::error_chain(e);
    let reason = match e {
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            let a = Answer::of(e);
            let says = a.says();
            match a.code.as_str() {
                "ResourceNotFoundException" => format!(
                    "there is no such secret in region {region} (a name is looked up in the \
                     configured region; an ARN names its own) ({says})"
                ),
                "DecryptionFailure" => format!(
                    "Secrets Manager could not decrypt it: the principal meshca runs as needs \
                     kms:Decrypt on the secret's KMS key ({says})"
                ),
                "InvalidRequestException" => format!(
                    "Secrets Manager refused to read it (deleted or scheduled for deletion?) \
                     ({says})"
                ),
                _ if a.is_access_denied() => format!(
                    "AWS denied {GET_SECRET_VALUE} on {id}: the IAM policy of the principal \
                     meshca runs as must allow {GET_SECRET_VALUE} on this secret (and kms:Decrypt \
                     when it uses a customer managed key) ({says})"
                ),
                _ if a.is_bad_credentials() => format!(
                    "AWS rejected the credentials of the default AWS credential chain: check the \
                     keys or the role it finds, and that they are not expired ({says})"
                ),
                _ => format!("Secrets Manager GetSecretValue in {region} failed ({says})"),
            }
        }
        SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => format!(
            "Secrets Manager in {region} cannot be reached (check the network, a VPC endpoint, or \
             AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL) ({chain})"
        ),
        SdkError::DispatchFailure(_) if chain.to_ascii_lowercase().contains("credential") => {
            format!("no AWS credentials from the default AWS credential chain: {chain}")
        }
        _ => format!("Secrets Manager GetSecretValue in {region}: {chain}"),
    };
    refused(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_come_from_arns() {
        assert_eq!(
            arn_region("arn:aws:secretsmanager:eu-west-1:123456789012:secret:kongcp1-crt-AbCdEf"),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("kongcp1-crt"), None);
        assert_eq!(arn_region("arn:aws:s3:::bucket"), None);
    }
}
