//! The HTTPS listener (rustls), fault injection, request log, token checks and routing of
//! `/v1/…` paths.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

use super::{auth_aws, pki, tokens, util, Core, Shared, VaultError};

/// A request's operation (Vault's `logical.Operation`, `create` and `update` as one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// GET.
    Read,
    /// POST/PUT/PATCH.
    Write,
    /// DELETE.
    Delete,
    /// LIST, or GET with `list=true`.
    List,
}

/// The DNS name in the server certificate.
pub(crate) const SERVER_NAME: &str = "vault.test";

/// One API request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// HTTP method (`GET`, `POST`, `LIST`…).
    pub method: String,
    /// Path without the leading `/v1/` (`pki/issue/kuma-dp`).
    pub path: String,
}

/// A request after parsing.
#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) token: Option<String>,
    pub(crate) body: Value,
    pub(crate) list: bool,
}

/// A successful answer.
#[derive(Debug)]
pub(crate) enum Reply {
    /// JSON with a status.
    Json(u16, Value),
    /// Raw bytes with a content type.
    Raw(u16, &'static str, Vec<u8>),
    /// 204.
    Empty,
}

/// Vault's response envelope around `data` (with optional warnings).
pub(crate) fn envelope(data: Value, warnings: Vec<String>) -> Reply {
    Reply::Json(
        200,
        json!({
            "request_id": util::uuid(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
            "auth": null,
            "mount_type": "",
        }),
    )
}

/// Envelope for an `auth` block.
pub(crate) fn auth_envelope(auth: Value, warnings: Vec<String>) -> Reply {
    Reply::Json(
        200,
        json!({
            "request_id": util::uuid(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": null,
            "wrap_info": null,
            "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
            "auth": auth,
            "mount_type": "",
        }),
    )
}

/// Test CA + server certificate (SAN DNS `vault.test`, IP 127.0.0.1) and the rustls config.
fn tls_config() -> (rustls::ServerConfig, String) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Vault Test Server CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params =
        rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).expect("server params");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::V4(
            std::net::Ipv4Addr::LOCALHOST,
        )));
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, SERVER_NAME);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).expect("server cert");

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server tls config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (config, ca_cert.pem())
}

/// Binds 127.0.0.1:0 and serves until aborted.
/// The TLS configuration of a new server (its own CA) and the CA's PEM.
pub(crate) fn new_tls() -> (Arc<rustls::ServerConfig>, String) {
    let (config, ca_pem) = tls_config();
    (Arc::new(config), ca_pem)
}

/// Serves on `listener` with `config`; the task owns every connection, so aborting it is like
/// killing the server process.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    config: Arc<rustls::ServerConfig>,
    listener: tokio::net::TcpListener,
) -> (SocketAddr, crate::ServerTask) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let addr = listener.local_addr().expect("local addr");
    let task = crate::ServerTask::accept(listener, move |tcp| {
        // A reset asked for: drop the connection before the handshake.
        if shared
            .resets
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return None;
        }
        let acceptor = acceptor.clone();
        let shared = shared.clone();
        Some(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(serve(shared, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        })
    });
    (addr, task)
}

fn error_response(e: &VaultError) -> Response<Full<Bytes>> {
    json_response(e.status, &json!({ "errors": e.errors }))
}

fn json_response(status: u16, v: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("response")
}

async fn serve(shared: Arc<Shared>, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let token = header("x-vault-token").or_else(|| {
        header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
    });
    let Some(path) = uri.path().strip_prefix("/v1/") else {
        return error_response(&VaultError::new(404, "404 page not found"));
    };
    let path = path.trim_end_matches('/').to_string();
    shared
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(RequestLog {
            method: method.to_string(),
            path: path.clone(),
        });
    {
        let mut fail = shared.fail.lock().unwrap_or_else(|e| e.into_inner());
        if fail.0 > 0 {
            fail.0 -= 1;
            return error_response(&VaultError::new(fail.1, "injected"));
        }
    }
    let list = method.as_str() == "LIST"
        || uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "list=true"));
    let body = match Limited::new(req.into_body(), 4 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error_response(&VaultError::bad_request("failed to read request body")),
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error_response(&VaultError::bad_request(format!(
                    "failed to parse JSON input: {e}"
                )))
            }
        }
    };
    let req = Req {
        method,
        path,
        token,
        body,
        list,
    };
    match handle(&shared, req).await {
        Ok(Reply::Json(status, v)) => json_response(status, &v),
        Ok(Reply::Raw(status, ct, bytes)) => Response::builder()
            .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
            .header("content-type", ct)
            .body(Full::new(Bytes::from(bytes)))
            .expect("response"),
        Ok(Reply::Empty) => Response::builder()
            .status(StatusCode::NO_CONTENT)
            .body(Full::new(Bytes::new()))
            .expect("response"),
        Err(e) => error_response(&e),
    }
}

fn health(shared: &Shared) -> Value {
    let sealed = shared.sealed.load(Ordering::SeqCst);
    json!({
        "initialized": true,
        "sealed": sealed,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": util::now_unix(),
        "version": "1.17.0",
        "enterprise": false,
        "cluster_name": "vault-cluster-meshca-peers",
        "cluster_id": "00000000-0000-0000-0000-000000000000",
    })
}

fn op_of(req: &Req) -> Result<Op, VaultError> {
    Ok(match req.method.as_str() {
        "GET" | "HEAD" if req.list => Op::List,
        "GET" | "HEAD" => Op::Read,
        "LIST" => Op::List,
        "POST" | "PUT" | "PATCH" => Op::Write,
        "DELETE" => Op::Delete,
        _ => return Err(VaultError::unsupported()),
    })
}

/// Whether the path is a login endpoint (no token needed).
fn is_login(path: &str) -> bool {
    path.starts_with("auth/") && path.ends_with("/login") && !path.starts_with("auth/token/")
}

/// The token of a request: known and not expired (every token may call every path).
fn authenticate(shared: &Shared, req: &Req) -> Result<tokens::Token, VaultError> {
    let token_id = req
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(VaultError::permission_denied)?;
    shared
        .core()
        .tokens
        .get(token_id)
        .filter(|t| !t.expired())
        .cloned()
        .ok_or_else(VaultError::permission_denied)
}

/// Handles one request (over the wire or from [`super::VaultServer::write`]).
pub(crate) async fn handle(shared: &Shared, req: Req) -> Result<Reply, VaultError> {
    let path = req.path.as_str();
    if path == "sys/health" {
        let body = health(shared);
        let status = if shared.sealed.load(Ordering::SeqCst) {
            503
        } else {
            200
        };
        return Ok(Reply::Json(status, body));
    }
    if path == "sys/seal-status" {
        let sealed = shared.sealed.load(Ordering::SeqCst);
        return Ok(Reply::Json(
            200,
            json!({
                "type": "shamir", "initialized": true, "sealed": sealed, "t": 1, "n": 1,
                "progress": 0, "nonce": "", "version": "1.17.0", "build_date": "2024-06-10T10:11:34Z",
                "migration": false, "recovery_seal": false, "storage_type": "inmem",
            }),
        ));
    }
    if shared.sealed.load(Ordering::SeqCst) {
        return Err(VaultError::new(503, "Vault is sealed"));
    }
    let op = op_of(&req)?;
    if is_login(path) {
        return login(shared, &req).await;
    }
    let caller = if op == Op::Read && unauthenticated_pki(shared, &req) {
        None
    } else {
        Some(authenticate(shared, &req)?)
    };
    let mut core = shared.core();
    route(&mut core, &req, op, caller.as_ref())
}

/// PKI paths Vault serves without a token (`PathsSpecial.Unauthenticated` of the pki
/// backend): the CA and chain reads and `cert/<serial>`.
fn unauthenticated_pki(shared: &Shared, req: &Req) -> bool {
    let core = shared.core();
    let Some((_, sub)) = split_mount(&req.path, core.mounts.keys().map(String::as_str)) else {
        return false;
    };
    matches!(
        sub.as_str(),
        "ca" | "ca/pem" | "ca_chain" | "crl" | "crl/pem"
    ) || sub.starts_with("cert/")
}

fn route(
    ns: &mut Core,
    req: &Req,
    op: Op,
    caller: Option<&tokens::Token>,
) -> Result<Reply, VaultError> {
    let path = req.path.as_str();
    let body = &req.body;
    if let Some(mount) = path.strip_prefix("sys/mounts/") {
        return match op {
            Op::Write => {
                let kind = util::string_field(body, "type");
                if kind != "pki" {
                    return Err(VaultError::bad_request(format!(
                        "plugin not found in the catalog: {kind}"
                    )));
                }
                if ns.mounts.contains_key(mount) {
                    return Err(VaultError::bad_request(format!(
                        "path is already in use at {mount}/"
                    )));
                }
                ns.mounts.insert(mount.to_string(), pki::Pki::default());
                Ok(Reply::Empty)
            }
            Op::Delete => {
                ns.mounts.remove(mount);
                Ok(Reply::Empty)
            }
            _ => Err(VaultError::unsupported()),
        };
    }
    if let Some(mount) = path.strip_prefix("sys/auth/") {
        return match op {
            Op::Write => {
                let kind = util::string_field(body, "type");
                if kind != "aws" {
                    return Err(VaultError::bad_request(format!(
                        "plugin not found in the catalog: {kind}"
                    )));
                }
                if ns.auth.contains_key(mount) || mount == "token" {
                    return Err(VaultError::bad_request(format!(
                        "path is already in use at auth/{mount}/"
                    )));
                }
                ns.auth
                    .insert(mount.to_string(), auth_aws::AwsMount::default());
                Ok(Reply::Empty)
            }
            Op::Delete => {
                ns.auth.remove(mount);
                Ok(Reply::Empty)
            }
            _ => Err(VaultError::unsupported()),
        };
    }
    if let Some(rest) = path.strip_prefix("auth/token/") {
        let caller = caller.ok_or_else(VaultError::permission_denied)?;
        return token_route(ns, rest, op, body, caller);
    }
    if let Some(rest) = path.strip_prefix("auth/") {
        let (mount, sub) = split_mount(rest, ns.auth.keys().map(String::as_str))
            .ok_or_else(|| VaultError::no_route(path))?;
        return match ns.auth.get_mut(&mount) {
            Some(m) => auth_aws::admin(m, &sub, op, body),
            None => Err(VaultError::no_route(path)),
        };
    }
    let (mount, sub) = split_mount(path, ns.mounts.keys().map(String::as_str))
        .ok_or_else(|| VaultError::no_route(path))?;
    let pki = ns
        .mounts
        .get_mut(&mount)
        .ok_or_else(|| VaultError::no_route(path))?;
    pki::route(pki, &sub, op, body).map_err(|e| {
        if e.status == 404 && e.errors.first().is_some_and(|m| m.is_empty()) {
            VaultError::no_route(path)
        } else {
            e
        }
    })
}

/// Splits `path` into (longest mount that prefixes it, rest).
fn split_mount<'a>(path: &str, mounts: impl Iterator<Item = &'a str>) -> Option<(String, String)> {
    mounts
        .filter(|m| path == *m || path.starts_with(&format!("{m}/")))
        .max_by_key(|m| m.len())
        .map(|m| {
            (
                m.to_string(),
                path[m.len()..].trim_start_matches('/').to_string(),
            )
        })
}

fn token_route(
    ns: &mut Core,
    rest: &str,
    op: Op,
    body: &Value,
    caller: &tokens::Token,
) -> Result<Reply, VaultError> {
    match (rest, op) {
        ("create", Op::Write) => {
            let v = tokens::create(ns, caller, body)?;
            Ok(auth_envelope(v["auth"].clone(), vec![]))
        }
        ("lookup-self", Op::Read | Op::Write) => {
            let tok = ns.tokens.get(&caller.id).unwrap_or(caller).clone();
            Ok(envelope(tokens::lookup(&tok), vec![]))
        }
        ("renew-self", Op::Write) => {
            let tok = ns
                .tokens
                .get_mut(&caller.id)
                .ok_or_else(VaultError::permission_denied)?;
            let (ttl, warnings) = tokens::renew(tok, body)?;
            Ok(auth_envelope(tok.auth_block(ttl), warnings))
        }
        ("create" | "renew-self", _) => Err(VaultError::unsupported()),
        _ => Err(VaultError::no_route(&format!("auth/token/{rest}"))),
    }
}

async fn login(shared: &Shared, req: &Req) -> Result<Reply, VaultError> {
    if op_of(req)? != Op::Write {
        return Err(VaultError::unsupported());
    }
    let rest = req
        .path
        .strip_prefix("auth/")
        .and_then(|p| p.strip_suffix("/login"))
        .unwrap_or_default()
        .to_string();
    let prepared = {
        let core = shared.core();
        match core.auth.get(&rest) {
            Some(m) => auth_aws::prepare(m, &req.body, shared.sts_endpoint.as_deref())?,
            None => return Err(VaultError::no_route(&req.path)),
        }
    };
    let identity = auth_aws::call_sts(&prepared).await?;
    let mut core = shared.core();
    let (policies, ttl, max_ttl, meta, display) = match core.auth.get(&rest) {
        Some(m) => auth_aws::finish(m, &prepared, &identity)?,
        None => return Err(VaultError::no_route(&req.path)),
    };
    let tok = tokens::mint(
        &mut core,
        tokens::NewToken {
            policies,
            ttl,
            max_ttl,
            renewable: true,
            path: req.path.clone(),
            display_name: display,
            meta: Some(meta),
            orphan: true,
            ..Default::default()
        },
    );
    Ok(auth_envelope(tok.auth_block(tok.creation_ttl), vec![]))
}
