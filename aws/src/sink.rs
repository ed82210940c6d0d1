//! AWS Secrets Manager as a place certificates are delivered to (`meshca agent`), in the layout
//! Kong data planes read: one secret `{"cert": "<PEM>"}`, one `{"key": "<PEM>"}` (names and JSON
//! fields configurable), referenced as `{vault://aws/<name>/<field>}`.

use ca_core::UpstreamError;
use std::fmt;

use ca_core::Error;

use crate::answer::Answer;
use crate::secrets::SecretsManager;

/// The IAM actions a delivery needs, on the two secrets' ARNs only.
pub const SINK_ACTIONS: [&str; 3] = [
    "secretsmanager:DescribeSecret",
    "secretsmanager:CreateSecret",
    "secretsmanager:PutSecretValue",
];

/// One secret and the JSON field holding the PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretTarget {
    /// The secret's name (created when missing) or ARN (must exist).
    pub secret_id: String,
    /// The JSON field.
    pub field: String,
}

impl SecretTarget {
    /// `NAME` or `NAME:FIELD` (`field` when no field is given). An ARN contains `:`, so the field
    /// of an ARN is given after `#`: `arn:...:secret:x#cert`.
    ///
    /// # Errors
    /// A message naming what is wrong: empty parts, an id longer than 2048 characters or a field
    /// longer than 256.
    pub fn parse(s: &str, field: &str) -> Result<Self, String> {
        let (id, f) = if s.starts_with("arn:") {
            s.split_once('#').unwrap_or((s, field))
        } else {
            s.split_once(':').unwrap_or((s, field))
        };
        if id.is_empty() || id.len() > 2048 {
            return Err(format!("`{s}`: the secret id must be 1 to 2048 characters"));
        }
        if f.is_empty() || f.len() > 256 {
            return Err(format!("`{s}`: the JSON field must be 1 to 256 characters"));
        }
        Ok(Self {
            secret_id: id.to_owned(),
            field: f.to_owned(),
        })
    }
}

/// Writes a certificate chain and its key to two Secrets Manager secrets: `CreateSecret` the
/// first time, `PutSecretValue` after (a new version each rotation). Values are never logged.
pub struct SecretsManagerSink {
    client: SecretsManager,
    cert: SecretTarget,
    key: SecretTarget,
}

impl fmt::Debug for SecretsManagerSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretsManagerSink")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SecretsManagerSink {
    /// Through `client` (its AWS config: the default chain, or one given for tests).
    pub fn new(client: SecretsManager, cert: SecretTarget, key: SecretTarget) -> Self {
        Self { client, cert, key }
    }

    /// Writes the key first (a reader of the cert then finds its key), then the chain.
    ///
    /// # Errors
    /// [`UpstreamKind::Unavailable`](ca_core::UpstreamKind::Unavailable) naming the secret, the
    /// action and AWS's answer.
    pub async fn write(&self, chain_pem: &str, key_pem: &str) -> Result<(), Error> {
        self.put(&self.key, key_pem).await?;
        self.put(&self.cert, chain_pem).await
    }

    async fn put(&self, target: &SecretTarget, pem: &str) -> Result<(), Error> {
        let fail = |action: &str, why: String| {
            Error::from(UpstreamError::unavailable(
                "aws secrets manager",
                format!(
                    "secretsmanager:{action} on secret `{}`: {why}",
                    target.secret_id
                ),
            ))
        };
        let region = self
            .client
            .region_of(&target.secret_id)
            .await
            .map_err(|e| fail("DescribeSecret", format!("the secret {e}")))?;
        let client = self.client.client(&region).await;
        let value = serde_json::json!({ target.field.as_str(): pem }).to_string();
        let exists = match client
            .describe_secret()
            .secret_id(&target.secret_id)
            .send()
            .await
        {
            Ok(_) => true,
            Err(e) => {
                let a = Answer::of(&e);
                if a.code == "ResourceNotFoundException" {
                    false
                } else {
                    return Err(fail("DescribeSecret", explain(&a, "DescribeSecret")));
                }
            }
        };
        if exists {
            client
                .put_secret_value()
                .secret_id(&target.secret_id)
                .secret_string(value)
                .send()
                .await
                .map_err(|e| fail("PutSecretValue", explain(&Answer::of(&e), "PutSecretValue")))?;
        } else {
            client
                .create_secret()
                .name(&target.secret_id)
                .description("certificate delivered by meshca agent")
                .secret_string(value)
                .send()
                .await
                .map_err(|e| fail("CreateSecret", explain(&Answer::of(&e), "CreateSecret")))?;
        }
        Ok(())
    }
}

fn explain(a: &Answer, action: &str) -> String {
    if a.code == "AccessDeniedException" || a.status == 403 {
        format!(
            "access denied: the credentials need secretsmanager:{action} on this secret ({} {})",
            a.code, a.message
        )
    } else if a.status == 0 {
        format!(
            "Secrets Manager cannot be reached (check the network, a VPC endpoint, or \
             AWS_ENDPOINT_URL_SECRETS_MANAGER): {}",
            a.message
        )
    } else {
        format!("{} ({}): {}", a.code, a.status, a.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            SecretTarget::parse("kongcp1-crt", "cert").unwrap(),
            SecretTarget {
                secret_id: "kongcp1-crt".into(),
                field: "cert".into()
            }
        );
        assert_eq!(
            SecretTarget::parse("kongcp1-key:pem", "key").unwrap().field,
            "pem"
        );
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:kongcp1-crt";
        assert_eq!(SecretTarget::parse(arn, "cert").unwrap().secret_id, arn);
        assert_eq!(
            SecretTarget::parse(&format!("{arn}#c"), "cert")
                .unwrap()
                .field,
            "c"
        );
        assert!(SecretTarget::parse(":x", "cert").is_err());
        assert!(SecretTarget::parse("x:", "cert").is_err());
    }
}
