//! A local imitation of the EKS Pod Identity agent / ECS container credentials endpoint:
//! `GET /v1/credentials` with the `Authorization` header equal to the token answers the
//! container-credentials JSON that aws-config's `ecs` provider parses
//! (`AccessKeyId`, `SecretAccessKey`, `Token`, `Expiration`, `AccountId`).

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::json;

use crate::moto::AwsKey;

/// The credentials endpoint (server task aborted on drop).
#[derive(Debug)]
pub struct PodIdentityEndpoint {
    addr: SocketAddr,
    token_file: tempfile::NamedTempFile,
    requests: Arc<AtomicUsize>,
    lifetime_secs: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PodIdentityEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PodIdentityEndpoint {
    /// Serves `key` to callers presenting `token` (no session token in the answer).
    pub async fn start(key: AwsKey, token: &str) -> PodIdentityEndpoint {
        Self::start_with_session(key, None, token).await
    }

    /// Like [`PodIdentityEndpoint::start`], also answering `Token` (a session token).
    /// aws-config's provider requires `Token`; with moto, an `AKIA` user key must not carry
    /// one, so pair this with temporary credentials when aws-config is the client.
    pub async fn start_with_session(
        key: AwsKey,
        session_token: Option<String>,
        token: &str,
    ) -> PodIdentityEndpoint {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let mut token_file = tempfile::Builder::new()
            .prefix("pod-identity-token")
            .tempfile()
            .expect("token file");
        token_file
            .write_all(token.as_bytes())
            .expect("write token file");
        token_file.flush().expect("flush token file");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(token_file.path(), std::fs::Permissions::from_mode(0o600))
                .expect("chmod 0600");
        }
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = requests.clone();
        let lifetime_secs = Arc::new(AtomicU64::new(3600));
        let lifetime = lifetime_secs.clone();
        let expected = token.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let key = key.clone();
                let session_token = session_token.clone();
                let expected = expected.clone();
                let counter = counter.clone();
                let lifetime = lifetime.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let resp = if req.uri().path() != "/v1/credentials" {
                                (
                                    StatusCode::NOT_FOUND,
                                    json!({"Code": "NotFound", "Message": "not found"}),
                                )
                            } else if req.method() != http::Method::GET {
                                (
                                    StatusCode::METHOD_NOT_ALLOWED,
                                    json!({"Code": "MethodNotAllowed", "Message": "GET only"}),
                                )
                            } else {
                                match auth {
                                    None => (
                                        StatusCode::UNAUTHORIZED,
                                        json!({"Code": "Unauthorized", "Message": "missing authorization token"}),
                                    ),
                                    Some(a) if a != expected => (
                                        StatusCode::FORBIDDEN,
                                        json!({"Code": "AccessDenied", "Message": "invalid authorization token"}),
                                    ),
                                    Some(_) => {
                                        let secs = lifetime.load(Ordering::SeqCst);
                                        let expiration = time::OffsetDateTime::now_utc()
                                            + time::Duration::seconds(
                                                i64::try_from(secs).unwrap_or(3600),
                                            );
                                        let account = key
                                            .arn
                                            .split(':')
                                            .nth(4)
                                            .unwrap_or_default()
                                            .to_string();
                                        let mut body = json!({
                                            "AccessKeyId": key.access_key_id,
                                            "SecretAccessKey": key.secret_access_key,
                                            "Expiration": expiration
                                                .replace_nanosecond(0)
                                                .unwrap_or(expiration)
                                                .format(&time::format_description::well_known::Rfc3339)
                                                .unwrap_or_default(),
                                            "AccountId": account,
                                        });
                                        if let Some(t) = &session_token {
                                            body["Token"] = json!(t);
                                        }
                                        (StatusCode::OK, body)
                                    }
                                }
                            };
                            async move {
                                Ok::<_, Infallible>(
                                    Response::builder()
                                        .status(resp.0)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(resp.1.to_string())))
                                        .expect("response"),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        PodIdentityEndpoint {
            addr,
            token_file,
            requests,
            lifetime_secs,
            task,
        }
    }

    /// Credentials handed out from now on expire `lifetime` after they are served (1 h until
    /// this is called).
    pub fn set_credential_lifetime(&self, lifetime: std::time::Duration) {
        self.lifetime_secs
            .store(lifetime.as_secs(), Ordering::SeqCst);
    }

    /// `http://127.0.0.1:PORT/v1/credentials` (`AWS_CONTAINER_CREDENTIALS_FULL_URI`).
    pub fn url(&self) -> String {
        format!("http://{}/v1/credentials", self.addr)
    }

    /// A 0600 file holding the token (`AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
    pub fn token_file(&self) -> &Path {
        self.token_file.path()
    }

    /// Requests received so far (any path, any outcome).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Makes the process environment a pod's with nothing but `region`: every AWS credential and
/// endpoint variable removed, shared config files pointed at nothing, instance metadata off.
/// For single-test binaries that exercise the default AWS credential chain.
pub fn isolate_aws_env(region: &str) {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_STS",
        "AWS_ENDPOINT_URL_ACM_PCA",
        "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    ] {
        std::env::remove_var(var);
    }
    std::env::set_var("AWS_CONFIG_FILE", "/nonexistent/meshca-test-aws-config");
    std::env::set_var(
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/meshca-test-aws-credentials",
    );
    std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    std::env::set_var("AWS_REGION", region);
}
