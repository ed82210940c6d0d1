//! Vault's AWS IAM login: an `sts:GetCallerIdentity` request signed with SigV4 (`aws-sigv4`)
//! with credentials from the default AWS credential chain (`aws-config`: environment, web
//! identity / IRSA, container credentials as EKS Pod Identity provides them, IMDS), handed to
//! Vault, which replays it to STS to learn who we are.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};

/// The body of the signed request, as Vault's own client sends it.
pub(crate) const GET_CALLER_IDENTITY: &str = "Action=GetCallerIdentity&Version=2011-06-15";
/// The header Vault's `iam_server_id_header_value` is checked against.
pub(crate) const SERVER_ID_HEADER: &str = "X-Vault-AWS-IAM-Server-ID";

/// `auth.aws` of a vault backend.
pub(crate) struct AwsLogin {
    /// `role`: the Vault role (Vault defaults to the IAM principal's name).
    role: Option<String>,
    /// `iamServerIdHeader`.
    server_id: Option<String>,
    sdk: tokio::sync::OnceCell<SdkConfig>,
}

impl fmt::Debug for AwsLogin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsLogin")
            .field("role", &self.role)
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

impl AwsLogin {
    pub(crate) fn new(role: Option<String>, server_id: Option<String>) -> Self {
        Self {
            role,
            server_id,
            sdk: tokio::sync::OnceCell::new(),
        }
    }

    /// Uses `sdk` instead of loading the default chain on first use (no effect once loaded).
    pub(crate) fn set_sdk_config(&self, sdk: SdkConfig) {
        let _ = self.sdk.set(sdk);
    }

    /// The body of `POST auth/aws/login`.
    pub(crate) async fn payload(&self) -> Result<Value, String> {
        let sdk = self
            .sdk
            // Pinned, as meshca-aws pins it: a newer one may change credential defaults.
            .get_or_init(|| aws_config::defaults(BehaviorVersion::v2026_01_12()).load())
            .await;
        let provider = sdk
            .credentials_provider()
            .ok_or("no AWS credential provider is configured")?;
        let creds = provider.provide_credentials().await.map_err(|e| {
            format!(
                "no AWS credentials from the default chain: {}",
                ca_core::error_chain(&e)
            )
        })?;
        let region = sdk
            .region()
            .map_or_else(|| "us-east-1".to_owned(), |r| r.as_ref().to_owned());
        let endpoint = sts_endpoint(sdk, &region);
        let url = format!("{}/", endpoint.trim_end_matches('/'));
        let host = host_of(&url).ok_or_else(|| format!("STS endpoint {url} has no host"))?;

        let mut headers: Vec<(&str, String)> = vec![
            ("host", host),
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8".to_owned(),
            ),
        ];
        if let Some(id) = &self.server_id {
            headers.push((SERVER_ID_HEADER, id.clone()));
        }
        let identity: Identity = creds.into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&region)
            .name("sts")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| format!("cannot sign: {e}"))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().map(|(k, v)| (*k, v.as_str())),
            SignableBody::Bytes(GET_CALLER_IDENTITY.as_bytes()),
        )
        .map_err(|e| format!("cannot sign: {e}"))?;
        let (instructions, _signature) = sign(signable, &params)
            .map_err(|e| format!("cannot sign: {e}"))?
            .into_parts();
        let mut all: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &headers {
            all.entry(canonical(k)).or_default().push(v.clone());
        }
        for (k, v) in instructions.headers() {
            all.entry(canonical(k)).or_default().push(v.to_owned());
        }
        let headers_json =
            serde_json::to_vec(&all).map_err(|e| format!("cannot encode headers: {e}"))?;
        let mut body = json!({
            "iam_http_request_method": "POST",
            "iam_request_url": B64.encode(url.as_bytes()),
            "iam_request_body": B64.encode(GET_CALLER_IDENTITY.as_bytes()),
            "iam_request_headers": B64.encode(headers_json),
        });
        if let Some(role) = &self.role {
            body["role"] = Value::String(role.clone());
        }
        Ok(body)
    }
}

/// Where the signed request is meant to go: `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL` (the
/// AWS SDKs' endpoint overrides, read from the process environment, never from a Mesh), else the
/// global endpoint for us-east-1 (Vault's default `sts_endpoint`) and the regional one elsewhere
/// (configure Vault's `sts_endpoint`/`sts_region` to match).
fn sts_endpoint(sdk: &SdkConfig, region: &str) -> String {
    if let Ok(url) = std::env::var("AWS_ENDPOINT_URL_STS") {
        if !url.is_empty() {
            return url;
        }
    }
    if let Some(url) = sdk.endpoint_url() {
        return url.to_owned();
    }
    if region == "us-east-1" {
        "https://sts.amazonaws.com".to_owned()
    } else {
        format!("https://sts.{region}.amazonaws.com")
    }
}

fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let host = rest.split('/').next()?;
    (!host.is_empty()).then(|| host.to_owned())
}

/// `x-amz-date` → `X-Amz-Date`, as Go's `http.Header` spells names (Vault's client sends those).
fn canonical(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(first) => {
                    first.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase()
                }
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_and_hosts() {
        assert_eq!(canonical("x-amz-date"), "X-Amz-Date");
        assert_eq!(
            canonical("X-Vault-AWS-IAM-Server-ID"),
            "X-Vault-Aws-Iam-Server-Id"
        );
        assert_eq!(canonical("host"), "Host");
        assert_eq!(
            host_of("http://127.0.0.1:5000/").as_deref(),
            Some("127.0.0.1:5000")
        );
        assert_eq!(
            host_of("https://sts.amazonaws.com/").as_deref(),
            Some("sts.amazonaws.com")
        );
        assert_eq!(host_of("nope"), None);
    }
}
