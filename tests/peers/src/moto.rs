//! A real AWS emulator for tests: `moto_server` (Python, from `$MESHCA_PYTHON`) with IAM
//! authentication enforced (`INITIAL_NO_AUTH_ACTION_COUNT`), an admin user made with the
//! unauthenticated budget, and SigV4-signed Query API calls after that.

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;

/// The moto account id (moto's default).
pub const ACCOUNT_ID: &str = "123456789012";

/// Unauthenticated calls moto allows before enforcing SigV4 + IAM policies: exactly the
/// admin setup (CreateUser, PutUserPolicy, CreateAccessKey).
const NO_AUTH_BUDGET: usize = 3;

/// An IAM access key. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct AwsKey {
    /// `AKIA…`.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// ARN of the owning principal (`arn:aws:iam::123456789012:user/<name>`).
    pub arn: String,
}

impl std::fmt::Debug for AwsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("arn", &self.arn)
            .finish()
    }
}

/// A SigV4-signed HTTP request, ready to send (headers include `authorization`).
#[derive(Debug, Clone)]
pub struct SignedRequest {
    /// Full URL.
    pub url: String,
    /// Body.
    pub body: String,
    /// Every header to send (all of them were signed, plus `authorization`).
    pub headers: Vec<(String, String)>,
}

/// Signs a form-encoded Query API POST (`service` is `sts`, `iam`…; region us-east-1)
/// the way the AWS SDKs do: `host`, `content-type`, `x-amz-date` and every `extra_headers`
/// entry are signed. `session_token` adds `x-amz-security-token`.
pub fn sign_query(
    key: &AwsKey,
    session_token: Option<&str>,
    service: &str,
    url: &str,
    body: &str,
    extra_headers: &[(&str, &str)],
) -> SignedRequest {
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .expect("url with a host")
        .to_string();
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), host),
        (
            "content-type".into(),
            "application/x-www-form-urlencoded; charset=utf-8".into(),
        ),
    ];
    for (k, v) in extra_headers {
        headers.push((k.to_ascii_lowercase(), v.to_string()));
    }
    let creds = aws_credential_types::Credentials::new(
        key.access_key_id.clone(),
        key.secret_access_key.clone(),
        session_token.map(str::to_string),
        None,
        "meshca-peers",
    );
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let signable = SignableRequest::new(
        "POST",
        url,
        headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        SignableBody::Bytes(body.as_bytes()),
    )
    .expect("signable request");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    for (k, v) in instructions.headers() {
        headers.push((k.to_string(), v.to_string()));
    }
    SignedRequest {
        url: url.to_string(),
        body: body.to_string(),
        headers,
    }
}

/// Percent-encodes a form value (RFC 3986 unreserved kept).
pub fn form_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Text of the first `<tag>…</tag>` in an XML answer.
pub fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].trim().to_string())
}

/// A running `moto_server` on 127.0.0.1 (killed on drop) with IAM auth enforced.
#[derive(Debug)]
pub struct Moto {
    child: tokio::process::Child,
    port: u16,
    admin: AwsKey,
    http: reqwest::Client,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

impl Moto {
    /// Starts moto (`$MESHCA_PYTHON -m moto.server`), waits for readiness (30 s deadline)
    /// and creates the `admin` user (inline policy `*`/`*`) within the unauthenticated budget.
    pub async fn start() -> Moto {
        let python = std::env::var("MESHCA_PYTHON").unwrap_or_else(|_| {
            panic!(
                "MESHCA_PYTHON is not set: point it at a Python with moto[server] installed \
                 (scripts/test creates target/py-venv; or python3 -m venv V && V/bin/pip install \
                 -r scripts/requirements-test.txt && export MESHCA_PYTHON=V/bin/python)"
            )
        });
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut last_err = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let mut child = tokio::process::Command::new(&python)
                .args([
                    "-m",
                    "moto.server",
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                ])
                .env("INITIAL_NO_AUTH_ACTION_COUNT", NO_AUTH_BUDGET.to_string())
                .env("MOTO_PORT", port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {python} -m moto.server: {e}"));
            let deadline = Instant::now() + Duration::from_secs(30);
            let url = format!("http://127.0.0.1:{port}/moto-api/");
            let ready = loop {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        use tokio::io::AsyncReadExt;
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            e.read_to_string(&mut err),
                        )
                        .await;
                    }
                    last_err = format!("moto exited with {status}: {err}");
                    break false;
                }
                if let Ok(r) = http.get(&url).send().await {
                    if r.status().is_success() {
                        break true;
                    }
                }
                if Instant::now() > deadline {
                    let _ = child.start_kill();
                    panic!("moto did not answer {url} within 30 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            if !ready {
                continue;
            }
            // Keep stderr drained so moto never blocks on a full pipe.
            if let Some(mut e) = child.stderr.take() {
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut e, &mut tokio::io::sink()).await;
                });
            }
            let admin = Self::bootstrap_admin(&http, port).await;
            return Moto {
                child,
                port,
                admin,
                http,
            };
        }
        panic!("moto failed to start 3 times: {last_err}");
    }

    /// The three unauthenticated setup calls (any Authorization header naming `iam`).
    async fn bootstrap_admin(http: &reqwest::Client, port: u16) -> AwsKey {
        let endpoint = format!("http://127.0.0.1:{port}/");
        let fake_auth = "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0";
        let call = |body: String| {
            let req = http
                .post(&endpoint)
                .header("authorization", fake_auth)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body);
            async move {
                let resp = req.send().await.expect("moto setup call");
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                assert!(status.is_success(), "moto setup call: {status}: {text}");
                text
            }
        };
        let user = call("Action=CreateUser&Version=2010-05-08&UserName=admin".into()).await;
        let arn = xml_value(&user, "Arn").expect("admin arn");
        let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;
        call(format!(
            "Action=PutUserPolicy&Version=2010-05-08&UserName=admin&PolicyName=admin&PolicyDocument={}",
            form_encode(policy)
        ))
        .await;
        let key = call("Action=CreateAccessKey&Version=2010-05-08&UserName=admin".into()).await;
        AwsKey {
            access_key_id: xml_value(&key, "AccessKeyId").expect("access key id"),
            secret_access_key: xml_value(&key, "SecretAccessKey").expect("secret"),
            arn,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The admin user's key (inline policy allowing everything).
    pub fn admin(&self) -> &AwsKey {
        &self.admin
    }

    /// Sends a signed Query API call (`service` `iam` or `sts`); returns (status, body).
    pub async fn query(&self, key: &AwsKey, service: &str, body: &str) -> (u16, String) {
        let signed = sign_query(
            key,
            None,
            service,
            &format!("{}/", self.endpoint()),
            body,
            &[],
        );
        self.send(&signed).await
    }

    /// Sends a pre-signed request exactly as given; returns (status, body).
    pub async fn send(&self, signed: &SignedRequest) -> (u16, String) {
        let mut req = self.http.post(&signed.url).body(signed.body.clone());
        for (k, v) in &signed.headers {
            if k != "host" {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        let resp = req.send().await.expect("moto request");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    async fn iam(&self, body: String) -> String {
        let (status, text) = self.query(&self.admin, "iam", &body).await;
        assert_eq!(status, 200, "moto IAM call {body}: {text}");
        text
    }

    /// Creates an IAM user with an optional inline policy and an access key.
    pub async fn create_user_with_key(&self, user: &str, policy_json: Option<&str>) -> AwsKey {
        let created = self
            .iam(format!(
                "Action=CreateUser&Version=2010-05-08&UserName={}",
                form_encode(user)
            ))
            .await;
        let arn = xml_value(&created, "Arn").expect("user arn");
        if let Some(policy) = policy_json {
            self.iam(format!(
                "Action=PutUserPolicy&Version=2010-05-08&UserName={}&PolicyName=inline&PolicyDocument={}",
                form_encode(user),
                form_encode(policy)
            ))
            .await;
        }
        let key = self
            .iam(format!(
                "Action=CreateAccessKey&Version=2010-05-08&UserName={}",
                form_encode(user)
            ))
            .await;
        AwsKey {
            access_key_id: xml_value(&key, "AccessKeyId").expect("access key id"),
            secret_access_key: xml_value(&key, "SecretAccessKey").expect("secret"),
            arn,
        }
    }

    /// Creates IAM role `role` (trusted by EKS Pod Identity's `pods.eks.amazonaws.com`) with
    /// the inline `policy_json`, and assumes it as the admin: the temporary key and session
    /// token a Pod Identity agent hands a pod.
    pub async fn assume_role_with_policy(&self, role: &str, policy_json: &str) -> (AwsKey, String) {
        let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"pods.eks.amazonaws.com","AWS":"*"},"Action":["sts:AssumeRole","sts:TagSession"]}]}"#;
        self.iam(format!(
            "Action=CreateRole&Version=2010-05-08&RoleName={}&AssumeRolePolicyDocument={}",
            form_encode(role),
            form_encode(trust)
        ))
        .await;
        self.iam(format!(
            "Action=PutRolePolicy&Version=2010-05-08&RoleName={}&PolicyName=inline&PolicyDocument={}",
            form_encode(role),
            form_encode(policy_json)
        ))
        .await;
        let role_arn = format!("arn:aws:iam::{ACCOUNT_ID}:role/{role}");
        let (status, body) = self
            .query(
                &self.admin,
                "sts",
                &format!(
                    "Action=AssumeRole&Version=2011-06-15&RoleArn={}&RoleSessionName=eks-pod",
                    form_encode(&role_arn)
                ),
            )
            .await;
        assert_eq!(status, 200, "moto AssumeRole: {body}");
        let key = AwsKey {
            access_key_id: xml_value(&body, "AccessKeyId").expect("access key id"),
            secret_access_key: xml_value(&body, "SecretAccessKey").expect("secret"),
            arn: role_arn,
        };
        (
            key,
            xml_value(&body, "SessionToken").expect("session token"),
        )
    }
}
