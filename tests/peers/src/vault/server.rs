//! The front's HTTPS listener (rustls), fault injection, request log, and routing: `aws`
//! auth paths are answered here, everything else is forwarded to the upstream.

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

use super::{auth_aws, util, Shared, VaultError};

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

/// The DNS name in the front's certificate.
pub(crate) const SERVER_NAME: &str = "vault.test";

/// One API request as the front saw it.
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
    /// Without `/v1/` and trailing `/`.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Req {
    /// The operation (`list=true` on a GET is a list).
    fn op(&self) -> Result<Op, VaultError> {
        let list = self
            .query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|kv| kv == "list=true"));
        Ok(match self.method.as_str() {
            "GET" | "HEAD" if list => Op::List,
            "GET" | "HEAD" => Op::Read,
            "LIST" => Op::List,
            "POST" | "PUT" | "PATCH" => Op::Write,
            "DELETE" => Op::Delete,
            _ => return Err(VaultError::unsupported()),
        })
    }

    /// The body as JSON (`{}` when empty).
    fn json(&self) -> Result<Value, VaultError> {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return Ok(json!({}));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| VaultError::bad_request(format!("failed to parse JSON input: {e}")))
    }
}

/// An answer: status, content type and body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    /// JSON with a status.
    pub(crate) fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: Some("application/json".into()),
            body: v.to_string().into_bytes(),
        }
    }
    /// 204.
    pub(crate) fn empty() -> Reply {
        Reply {
            status: 204,
            content_type: None,
            body: Vec::new(),
        }
    }
}

impl From<VaultError> for Reply {
    fn from(e: VaultError) -> Reply {
        Reply::json(e.status, &json!({ "errors": e.errors }))
    }
}

/// Vault's response envelope around `data`.
pub(crate) fn envelope(data: Value) -> Reply {
    Reply::json(
        200,
        &json!({
            "request_id": util::uuid(),
            "lease_id": "",
            "renewable": false,
            "lease_duration": 0,
            "data": data,
            "wrap_info": null,
            "warnings": null,
            "auth": null,
            "mount_type": "",
        }),
    )
}

/// Test CA + server certificate (SAN DNS `vault.test`, IP 127.0.0.1) and the rustls config.
fn tls_config() -> (rustls::ServerConfig, String) {
    let crate::test_ca::ServerCert {
        ca: ca_cert,
        cert,
        key,
    } = crate::test_ca::server_cert("Vault Test Server CA", SERVER_NAME);

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

async fn serve(shared: Arc<Shared>, req: http::Request<Incoming>) -> Response<Full<Bytes>> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let token = header("x-vault-token").or_else(|| {
        header("authorization").and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
    });
    let namespace = header("x-vault-namespace");
    let method = req.method().clone();
    let uri = req.uri().clone();
    let reply = match uri.path().strip_prefix("/v1/") {
        None => VaultError::new(404, "404 page not found").into(),
        Some(path) => {
            let path = path.trim_end_matches('/').to_string();
            match Limited::new(req.into_body(), 4 << 20).collect().await {
                Err(_) => VaultError::bad_request("failed to read request body").into(),
                Ok(body) => {
                    let req = Req {
                        method,
                        path,
                        query: uri.query().map(str::to_string),
                        token,
                        namespace,
                        body: body.to_bytes().to_vec(),
                    };
                    logged(&shared, req).await
                }
            }
        }
    };
    let mut resp = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_GATEWAY))
        .header("cache-control", "no-store");
    if let Some(ct) = &reply.content_type {
        resp = resp.header("content-type", ct.as_str());
    }
    resp.body(Full::new(Bytes::from(reply.body)))
        .expect("response")
}

/// A request over the wire: logged, then failed if a failure was injected, then handled.
async fn logged(shared: &Shared, req: Req) -> Reply {
    shared
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(RequestLog {
            method: req.method.to_string(),
            path: req.path.clone(),
        });
    {
        let mut fail = shared.fail.lock().unwrap_or_else(|e| e.into_inner());
        if fail.0 > 0 {
            fail.0 -= 1;
            return VaultError::new(fail.1, "injected").into();
        }
    }
    handle(shared, req).await
}

/// Handles one request (over the wire or from [`super::VaultFront::write`]): the seal state,
/// then `aws` auth here, everything else upstream.
pub(crate) async fn handle(shared: &Shared, req: Req) -> Reply {
    let sealed = shared.sealed.load(Ordering::SeqCst);
    match req.path.as_str() {
        "sys/health" if sealed => {
            return Reply::json(
                503,
                &json!({ "initialized": true, "sealed": true, "standby": false }),
            )
        }
        "sys/seal-status" if sealed => {
            return Reply::json(
                200,
                &json!({ "type": "shamir", "initialized": true, "sealed": true, "t": 1, "n": 1, "progress": 0 }),
            )
        }
        _ if sealed => return VaultError::new(503, "Vault is sealed").into(),
        _ => {}
    }
    match aws_route(shared, &req).await {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => e.into(),
        None => shared.upstream.forward(&req).await,
    }
}

/// The `aws` auth paths (root namespace only), or `None` for the upstream's.
async fn aws_route(shared: &Shared, req: &Req) -> Option<Result<Reply, VaultError>> {
    if req.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
        return None;
    }
    if let Some(mount) = req.path.strip_prefix("sys/auth/") {
        let aws = req.json().ok().is_some_and(|b| b["type"] == "aws");
        let known = shared.aws().contains_key(mount);
        if !aws && !known {
            return None;
        }
        return Some(enable(shared, req, mount));
    }
    let rest = req.path.strip_prefix("auth/")?;
    let (mount, sub) = {
        let aws = shared.aws();
        let mount = aws
            .keys()
            .filter(|m| rest.starts_with(&format!("{m}/")))
            .max_by_key(|m| m.len())?
            .clone();
        let sub = rest[mount.len() + 1..].to_string();
        (mount, sub)
    };
    Some(aws_call(shared, req, &mount, &sub).await)
}

/// `sys/auth/<mount>` with `type: aws`: enables (or disables) an aws mount here.
fn enable(shared: &Shared, req: &Req, mount: &str) -> Result<Reply, VaultError> {
    let mut aws = shared.aws();
    match req.op()? {
        Op::Write if aws.contains_key(mount) => Err(VaultError::bad_request(format!(
            "path is already in use at auth/{mount}/"
        ))),
        Op::Write => {
            aws.insert(mount.to_string(), auth_aws::AwsMount::default());
            Ok(Reply::empty())
        }
        Op::Delete => {
            aws.remove(mount);
            Ok(Reply::empty())
        }
        _ => Err(VaultError::unsupported()),
    }
}

/// A call on an aws mount: `login` (STS, then a token minted upstream) or an admin path.
async fn aws_call(shared: &Shared, req: &Req, mount: &str, sub: &str) -> Result<Reply, VaultError> {
    let op = req.op()?;
    let body = req.json()?;
    if sub != "login" {
        // Admin paths need a token the upstream knows (the front asks it).
        shared.upstream.check_token(req.token.as_deref()).await?;
        let mut aws = shared.aws();
        let m = aws
            .get_mut(mount)
            .ok_or_else(|| VaultError::no_route(&req.path))?;
        return auth_aws::admin(m, sub, op, &body);
    }
    if op != Op::Write {
        return Err(VaultError::unsupported());
    }
    let prepared = {
        let aws = shared.aws();
        let m = aws
            .get(mount)
            .ok_or_else(|| VaultError::no_route(&req.path))?;
        auth_aws::prepare(m, &body, shared.sts_endpoint.as_deref())?
    };
    let identity = auth_aws::call_sts(&prepared).await?;
    let grant = {
        let aws = shared.aws();
        let m = aws
            .get(mount)
            .ok_or_else(|| VaultError::no_route(&req.path))?;
        auth_aws::finish(m, &prepared, &identity)?
    };
    shared.upstream.mint(&grant).await
}
