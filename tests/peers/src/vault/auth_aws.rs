//! The `aws` auth method, IAM flavour: `config/client`, `role/<name>` and `login`, which
//! checks the signed `sts:GetCallerIdentity` request, replays it to the configured STS
//! endpoint (moto in tests) and binds the returned ARN to the role
//! (`builtin/credential/aws/path_login.go`: `pathLoginUpdateIam`,
//! `validateVaultHeaderValue`, `submitCallerIdentityRequest`, `parseIamArn`). The token is
//! the upstream's: [`Grant`] says what to mint.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::server::Op;
use super::server::{envelope, Reply};
use super::util;
use super::{bad, VaultError};

const SERVER_ID_HEADER: &str = "X-Vault-AWS-IAM-Server-ID";

/// An `aws` role (IAM auth).
#[derive(Debug, Clone)]
struct AwsRole {
    auth_type: String,
    bound_arns: Vec<String>,
    policies: Vec<String>,
    ttl: u64,
    max_ttl: u64,
    role_id: String,
}

/// One `aws` auth mount.
#[derive(Debug, Default)]
pub(crate) struct AwsMount {
    sts_endpoint: String,
    sts_region: String,
    server_id: String,
    roles: HashMap<String, AwsRole>,
}

/// Admin paths: `config/client`, `role/<name>`, `roles` (list).
pub(crate) fn admin(
    m: &mut AwsMount,
    sub: &str,
    op: Op,
    body: &Value,
) -> Result<Reply, VaultError> {
    if sub == "config/client" {
        return match op {
            Op::Write => {
                if body.get("sts_endpoint").is_some() {
                    m.sts_endpoint = util::string_field(body, "sts_endpoint");
                }
                if body.get("sts_region").is_some() {
                    m.sts_region = util::string_field(body, "sts_region");
                }
                if body.get("iam_server_id_header_value").is_some() {
                    m.server_id = util::string_field(body, "iam_server_id_header_value");
                }
                Ok(Reply::empty())
            }
            Op::Read => Ok(envelope(
                json!({ "sts_endpoint": m.sts_endpoint, "sts_region": m.sts_region,
                        "iam_server_id_header_value": m.server_id }),
            )),
            Op::Delete => {
                *m = AwsMount {
                    roles: std::mem::take(&mut m.roles),
                    ..Default::default()
                };
                Ok(Reply::empty())
            }
            Op::List => Err(VaultError::unsupported()),
        };
    }
    if (sub == "roles" || sub == "role") && op == Op::List {
        let mut keys: Vec<&String> = m.roles.keys().collect();
        keys.sort();
        return Ok(envelope(json!({ "keys": keys })));
    }
    let Some(name) = sub.strip_prefix("role/") else {
        return Err(VaultError::no_route(sub));
    };
    let name = name.to_lowercase();
    match op {
        Op::Write => {
            let auth_type = match util::string_field(body, "auth_type").as_str() {
                "" | "iam" => "iam".to_string(),
                "ec2" => return Err(bad("ec2 auth_type is not supported by this test server")),
                other => return Err(bad(format!("unrecognized auth_type: {other}"))),
            };
            let bound_arns = util::string_list(body.get("bound_iam_principal_arn"));
            if bound_arns.is_empty() {
                return Err(bad(
                    "at least one bound parameter should be specified on the role",
                ));
            }
            let mut policies = util::string_list(body.get("token_policies"));
            if policies.is_empty() {
                policies = util::string_list(body.get("policies"));
            }
            m.roles.insert(
                name,
                AwsRole {
                    auth_type,
                    bound_arns,
                    policies,
                    ttl: util::duration_alias(body, &["token_ttl", "ttl"]).map_err(bad)?,
                    max_ttl: util::duration_alias(body, &["token_max_ttl", "max_ttl"])
                        .map_err(bad)?,
                    role_id: util::uuid(),
                },
            );
            Ok(Reply::empty())
        }
        Op::Read => m
            .roles
            .get(&name)
            .map(|r| {
                envelope(
                    json!({ "auth_type": r.auth_type, "bound_iam_principal_arn": r.bound_arns,
                            "token_policies": r.policies, "policies": r.policies,
                            "token_ttl": r.ttl, "token_max_ttl": r.max_ttl, "role_id": r.role_id,
                            "resolve_aws_unique_ids": false }),
                )
            })
            .ok_or_else(|| VaultError {
                status: 404,
                errors: vec![],
            }),
        Op::Delete => {
            m.roles.remove(&name);
            Ok(Reply::empty())
        }
        Op::List => Err(VaultError::unsupported()),
    }
}

/// A validated login request, ready to replay to STS.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    role: String,
    endpoint: String,
    host: String,
    request_uri: String,
    body: String,
    headers: Vec<(String, String)>,
}

/// The caller identity STS returned.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    arn: String,
    user_id: String,
    account: String,
}

fn b64(field: &str, v: &str) -> Result<Vec<u8>, VaultError> {
    base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .map_err(|_| VaultError::bad_request(format!("failed to base64 decode {field}")))
}

fn parse_headers(v: Option<&Value>) -> Result<Vec<(String, String)>, VaultError> {
    let bad = || VaultError::bad_request("missing iam_request_headers");
    let obj = match v {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        Some(Value::String(s)) if !s.is_empty() => {
            let raw = b64("iam_request_headers", s)?;
            serde_json::from_slice(&raw).map_err(|e| {
                VaultError::bad_request(format!("error parsing iam_request_headers: {e}"))
            })?
        }
        _ => return Err(bad()),
    };
    let Value::Object(o) = obj else {
        return Err(VaultError::bad_request("error parsing iam_request_headers"));
    };
    let mut out = Vec::new();
    for (k, v) in o {
        match v {
            Value::String(s) => out.push((k, s)),
            Value::Array(items) => {
                for i in items {
                    match i {
                        Value::String(s) => out.push((k.clone(), s)),
                        _ => {
                            return Err(VaultError::bad_request(
                                "error parsing iam_request_headers: header values must be strings",
                            ))
                        }
                    }
                }
            }
            _ => {
                return Err(VaultError::bad_request(
                    "error parsing iam_request_headers: header values must be strings",
                ))
            }
        }
    }
    if out.is_empty() {
        return Err(bad());
    }
    Ok(out)
}

/// `validateVaultHeaderValue`.
fn validate_server_id(headers: &[(String, String)], required: &str) -> Result<(), String> {
    let provided: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(SERVER_ID_HEADER))
        .map(|(_, v)| v.as_str())
        .collect();
    let provided = provided.join(",");
    if provided.is_empty() {
        return Err(format!("missing header {SERVER_ID_HEADER:?}"));
    }
    if provided != required {
        return Err(format!("expected {required:?} but got {provided:?}"));
    }
    let authz: Vec<&str> = headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .collect();
    if authz.is_empty() {
        return Err("missing Authorization header".into());
    }
    let authz = authz.join(",");
    let Some(i) = authz.rfind("SignedHeaders=") else {
        return Err("vault header wasn't signed".into());
    };
    let signed = authz[i + "SignedHeaders=".len()..]
        .split(',')
        .next()
        .unwrap_or("");
    if signed
        .split(';')
        .any(|h| h == SERVER_ID_HEADER.to_ascii_lowercase())
    {
        Ok(())
    } else {
        Err("vault header wasn't signed".into())
    }
}

/// Checks the login body and the mount config (under the state lock, no I/O).
pub(crate) fn prepare(
    m: &AwsMount,
    body: &Value,
    default_sts: Option<&str>,
) -> Result<Prepared, VaultError> {
    let method = util::string_field(body, "iam_http_request_method");
    if method.is_empty() {
        if body.get("pkcs7").is_some() || body.get("identity").is_some() {
            return Err(bad("ec2 login is not supported by this test server"));
        }
        return Err(bad("missing iam_http_request_method"));
    }
    if method != "POST" {
        return Err(bad(
            "invalid iam_http_request_method; currently only 'POST' is supported",
        ));
    }
    let raw_url = util::string_field(body, "iam_request_url");
    if raw_url.is_empty() {
        return Err(bad("missing iam_request_url"));
    }
    let url = String::from_utf8(b64("iam_request_url", &raw_url)?)
        .map_err(|_| bad("error parsing iam_request_url"))?;
    let after_scheme = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("error parsing iam_request_url"))?;
    let (host, request_uri) = match after_scheme.find('/') {
        Some(i) => (&after_scheme[..i], &after_scheme[i..]),
        None => (after_scheme, "/"),
    };
    let raw_body = util::string_field(body, "iam_request_body");
    if raw_body.is_empty() {
        return Err(bad("missing iam_request_body"));
    }
    let req_body = String::from_utf8(b64("iam_request_body", &raw_body)?)
        .map_err(|_| bad("failed to base64 decode iam_request_body"))?;
    let headers = parse_headers(body.get("iam_request_headers"))?;
    // Never act as an open proxy: only GetCallerIdentity is replayed.
    let action_ok = req_body
        .split('&')
        .any(|kv| kv == "Action=GetCallerIdentity");
    if !action_ok {
        return Err(bad(
            "iam_request_body must be a sts:GetCallerIdentity request (Action=GetCallerIdentity)",
        ));
    }
    if !m.server_id.is_empty() {
        validate_server_id(&headers, &m.server_id)
            .map_err(|e| bad(format!("error validating {SERVER_ID_HEADER} header: {e}")))?;
    }
    let endpoint = if !m.sts_endpoint.is_empty() {
        m.sts_endpoint.clone()
    } else {
        default_sts
            .unwrap_or("https://sts.amazonaws.com")
            .to_string()
    };
    Ok(Prepared {
        role: util::string_field(body, "role"),
        endpoint,
        host: host.to_string(),
        request_uri: request_uri.to_string(),
        body: req_body,
        headers,
    })
}

fn xml_tag<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(xml[start..end].trim())
}

/// `submitCallerIdentityRequest`: replays method, body and headers to the STS endpoint
/// (plain http only: the endpoint is moto on 127.0.0.1) and parses the XML answer.
pub(crate) async fn call_sts(p: &Prepared) -> Result<Identity, VaultError> {
    let upstream =
        |msg: String| VaultError::bad_request(format!("error making upstream request: {msg}"));
    let target = p
        .endpoint
        .strip_prefix("http://")
        .ok_or_else(|| upstream(format!("error making request: unsupported STS endpoint {:?} (this test server replays over plain http only)", p.endpoint)))?;
    let (authority, base_path) = match target.find('/') {
        Some(i) => (&target[..i], target[i..].trim_end_matches('/')),
        None => (target, ""),
    };
    let uri = format!("{base_path}{}", p.request_uri);
    let mut builder = http::Request::builder().method("POST").uri(uri);
    builder = builder.header("host", p.host.as_str());
    for (k, v) in &p.headers {
        if k.eq_ignore_ascii_case("host") {
            continue;
        }
        builder = builder.header(k.as_str(), v.as_str());
    }
    let request = builder
        .body(Full::new(Bytes::from(p.body.clone())))
        .map_err(|e| upstream(format!("error making request: {e}")))?;
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(authority)
            .await
            .map_err(|e| format!("error making request: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| format!("error making request: {e}"))?;
        let driver = tokio::spawn(conn);
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| format!("error making request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        driver.abort();
        Ok::<_, String>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    let (status, text) = tokio::time::timeout(Duration::from_secs(15), exchange)
        .await
        .map_err(|_| upstream("error making request: timeout".into()))?
        .map_err(upstream)?;
    if status != 200 {
        return Err(upstream(format!(
            "received error code {status} from STS: {text}"
        )));
    }
    let result = xml_tag(&text, "GetCallerIdentityResult")
        .ok_or_else(|| upstream("error parsing STS response".into()))?;
    Ok(Identity {
        arn: xml_tag(result, "Arn").unwrap_or_default().to_string(),
        user_id: xml_tag(result, "UserId").unwrap_or_default().to_string(),
        account: xml_tag(result, "Account").unwrap_or_default().to_string(),
    })
}

/// `parseIamArn`: (partition, account, type, friendly name).
fn parse_arn(arn: &str) -> Result<(String, String, String, String), String> {
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "unrecognized arn: contains {} colon-separated parts, expected 6",
            parts.len()
        ));
    }
    if parts[0] != "arn" {
        return Err("unrecognized arn: does not begin with \"arn:\"".into());
    }
    if parts[2] != "iam" && parts[2] != "sts" {
        return Err(format!(
            "unrecognized service: {}, not one of iam or sts",
            parts[2]
        ));
    }
    let segs: Vec<&str> = parts[5].split('/').collect();
    if segs.len() < 2 {
        return Err(format!(
            "unrecognized arn: {:?} contains fewer than 2 slash-separated parts",
            parts[5]
        ));
    }
    let kind = segs[0];
    let friendly = match kind {
        "assumed-role" => segs[1],
        "user" | "role" | "instance-profile" => segs[segs.len() - 1],
        other => return Err(format!("unrecognized principal type: {other:?}")),
    };
    Ok((
        parts[1].to_string(),
        parts[4].to_string(),
        kind.to_string(),
        friendly.to_string(),
    ))
}

/// What a successful login grants: the token to mint upstream.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    /// The role's policies.
    pub(crate) policies: Vec<String>,
    /// The role's `token_ttl` in seconds (0: the upstream's default).
    pub(crate) ttl: u64,
    /// The role's `token_max_ttl` in seconds (0: none).
    pub(crate) max_ttl: u64,
    /// Vault's login metadata (`client_arn`, `account_id`…), all strings.
    pub(crate) meta: Value,
    /// The principal's friendly name.
    pub(crate) display: String,
}

/// Binds the STS identity to the role.
pub(crate) fn finish(m: &AwsMount, p: &Prepared, id: &Identity) -> Result<Grant, VaultError> {
    let (partition, account, kind, friendly) =
        parse_arn(&id.arn).map_err(|e| bad(format!("error parsing arn {:?}: {e}", id.arn)))?;
    let role_name = if p.role.is_empty() {
        friendly.clone()
    } else {
        p.role.clone()
    };
    let role = m
        .roles
        .get(&role_name.to_lowercase())
        .ok_or_else(|| bad(format!("entry for role {role_name} not found")))?;
    if role.auth_type != "iam" {
        return Err(bad(format!(
            "auth method iam not allowed for role {role_name}"
        )));
    }
    let canonical_kind = if kind == "assumed-role" {
        "role"
    } else {
        kind.as_str()
    };
    let canonical = format!("arn:{partition}:iam::{account}:{canonical_kind}/{friendly}");
    let unique_id = id.user_id.split(':').next().unwrap_or("").to_string();
    let bound = role.bound_arns.iter().any(|b| {
        *b == canonical
            || (b.ends_with('*') && util::glob_match(b, &id.arn))
            || (b.ends_with('*') && util::glob_match(b, &canonical))
    });
    if !bound {
        return Err(bad(format!(
            "IAM Principal {:?} does not belong to the role {role_name:?}",
            id.arn
        )));
    }
    let meta = json!({
        "client_arn": id.arn,
        "canonical_arn": canonical,
        "client_user_id": unique_id,
        "auth_type": "iam",
        "inferred_entity_type": "",
        "inferred_entity_id": "",
        "inferred_aws_region": "",
        "account_id": if account.is_empty() { id.account.clone() } else { account },
        "role_id": role.role_id,
    });
    Ok(Grant {
        policies: role.policies.clone(),
        ttl: role.ttl,
        max_ttl: role.max_ttl,
        meta,
        display: friendly,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_id_checks() {
        let h = |auth: &str| {
            vec![
                (
                    "X-Vault-AWS-IAM-Server-ID".to_string(),
                    "vault.test".to_string(),
                ),
                ("Authorization".to_string(), auth.to_string()),
            ]
        };
        let signed = "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date;x-vault-aws-iam-server-id, Signature=abc";
        assert!(validate_server_id(&h(signed), "vault.test").is_ok());
        let unsigned = "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-date, Signature=abc";
        assert_eq!(
            validate_server_id(&h(unsigned), "vault.test").unwrap_err(),
            "vault header wasn't signed"
        );
        assert_eq!(
            validate_server_id(&h(signed), "other").unwrap_err(),
            "expected \"other\" but got \"vault.test\""
        );
        assert!(
            parse_arn("arn:aws:iam::123456789012:user/path/alice")
                .unwrap()
                .3
                == "alice"
        );
    }
}
