//! The HTTPS listener (rustls, optional client certificates recorded per connection),
//! fault injection, request log, token/ACL checks and routing of `/v1/…` paths.

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
use rustls::client::danger::HandshakeSignatureValid;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use serde_json::{json, Value};

use super::policy::{self, Op};
use super::{auth_aws, auth_cert, pki, tokens, util, AuthMount, Namespace, Shared, VaultError};

/// The DNS name in the server certificate.
pub(crate) const SERVER_NAME: &str = "vault.test";

/// One API request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLog {
    /// HTTP method (`GET`, `POST`, `LIST`…).
    pub method: String,
    /// Path without the leading `/v1/` (`pki/issue/kuma-dp`).
    pub path: String,
    /// `X-Vault-Namespace` (without slashes), `None` for the root namespace.
    pub namespace: Option<String>,
    /// Whether the TLS connection presented a client certificate.
    pub client_cert: bool,
}

/// A request after parsing.
#[derive(Debug)]
pub(crate) struct Req {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) namespace: String,
    pub(crate) token: Option<String>,
    pub(crate) body: Value,
    pub(crate) list: bool,
    pub(crate) peer_chain: Arc<Vec<CertificateDer<'static>>>,
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

/// Accepts every client certificate (Go's `tls.RequestClientCert`): the chain is only
/// recorded for `auth/cert/login`, which does the trust decisions itself. Handshake
/// signatures are still verified, so the client proves it holds the key.
#[derive(Debug)]
struct AnyClientCert(Arc<rustls::crypto::CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
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
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_client_cert_verifier(Arc::new(AnyClientCert(provider)))
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
            let chain: Vec<CertificateDer<'static>> = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let chain = Arc::new(chain);
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                let chain = chain.clone();
                async move { Ok::<_, Infallible>(serve(shared, chain, req).await) }
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

async fn serve(
    shared: Arc<Shared>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    req: http::Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let namespace = header("x-vault-namespace")
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
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
            namespace: (!namespace.is_empty()).then(|| namespace.clone()),
            client_cert: !chain.is_empty(),
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
        namespace,
        token,
        body,
        list,
        peer_chain: chain,
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

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) token: tokens::Token,
    /// Namespace the token lives in.
    pub(crate) token_ns: String,
}

fn authenticate(shared: &Shared, req: &Req, op: Op) -> Result<Caller, VaultError> {
    let core = shared.core();
    let token_id = req
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(VaultError::permission_denied)?;
    // A token lives in one namespace; root-policy tokens of a parent also reach children.
    let mut ns = req.namespace.clone();
    loop {
        if let Some(tok) = core
            .namespaces
            .get(&ns)
            .and_then(|n| n.tokens.get(token_id))
        {
            let is_root = tok.policies.iter().any(|p| p == "root");
            if ns != req.namespace && !is_root {
                return Err(VaultError::permission_denied());
            }
            if tok.expired() {
                return Err(VaultError::permission_denied());
            }
            let caller = Caller {
                token: tok.clone(),
                token_ns: ns.clone(),
            };
            if is_root {
                return Ok(caller);
            }
            let nsd = core
                .namespaces
                .get(&ns)
                .ok_or_else(VaultError::permission_denied)?;
            let default = policy::default_policy();
            let mut pols: Vec<&policy::Policy> = Vec::new();
            for p in &tok.policies {
                if p == "default" {
                    pols.push(&default);
                } else if let Some(pol) = nsd.policies.get(p) {
                    pols.push(pol);
                }
            }
            if !policy::allowed(&pols, &req.path, op) {
                return Err(VaultError::acl_denied());
            }
            return Ok(caller);
        }
        if ns.is_empty() {
            return Err(VaultError::permission_denied());
        }
        ns = match ns.rfind('/') {
            Some(i) => ns[..i].to_string(),
            None => String::new(),
        };
    }
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
    if !shared.core().namespaces.contains_key(&req.namespace) {
        return Err(VaultError::no_route(path));
    }
    let op = op_of(&req)?;
    if is_login(path) {
        return login(shared, &req).await;
    }
    let caller = if op == Op::Read && unauthenticated_pki(shared, &req) {
        None
    } else {
        Some(authenticate(shared, &req, op)?)
    };
    let mut core = shared.core();
    if let Some(name) = path.strip_prefix("sys/namespaces/") {
        if op != Op::Write {
            return Err(VaultError::unsupported());
        }
        let full = if req.namespace.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", req.namespace)
        };
        core.namespaces.entry(full.clone()).or_default();
        return Ok(envelope(
            json!({ "id": util::random_id(5), "path": format!("{full}/"), "custom_metadata": {} }),
            vec![],
        ));
    }
    let ns = core
        .namespaces
        .get_mut(&req.namespace)
        .ok_or_else(|| VaultError::no_route(path))?;
    route(ns, &req, op, caller.as_ref())
}

/// PKI paths Vault serves without a token (`PathsSpecial.Unauthenticated` of the pki
/// backend): the CA and chain reads and `cert/<serial>`.
fn unauthenticated_pki(shared: &Shared, req: &Req) -> bool {
    let core = shared.core();
    let Some(ns) = core.namespaces.get(&req.namespace) else {
        return false;
    };
    let Some((_, sub)) = split_mount(&req.path, ns.mounts.keys().map(String::as_str)) else {
        return false;
    };
    matches!(
        sub.as_str(),
        "ca" | "ca/pem" | "ca_chain" | "crl" | "crl/pem"
    ) || sub.starts_with("cert/")
}

fn route(
    ns: &mut Namespace,
    req: &Req,
    op: Op,
    caller: Option<&Caller>,
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
                let m = match kind.as_str() {
                    "cert" => AuthMount::Cert(auth_cert::CertMount::default()),
                    "aws" => AuthMount::Aws(auth_aws::AwsMount::default()),
                    other => {
                        return Err(VaultError::bad_request(format!(
                            "plugin not found in the catalog: {other}"
                        )))
                    }
                };
                if ns.auth.contains_key(mount) || mount == "token" {
                    return Err(VaultError::bad_request(format!(
                        "path is already in use at auth/{mount}/"
                    )));
                }
                ns.auth.insert(mount.to_string(), m);
                Ok(Reply::Empty)
            }
            Op::Delete => {
                ns.auth.remove(mount);
                Ok(Reply::Empty)
            }
            _ => Err(VaultError::unsupported()),
        };
    }
    if let Some(name) = path
        .strip_prefix("sys/policies/acl/")
        .or_else(|| path.strip_prefix("sys/policy/"))
    {
        return match op {
            Op::Write => {
                if name == "root" {
                    return Err(VaultError::bad_request("cannot update \"root\" policy"));
                }
                let mut src = util::string_field(body, "policy");
                if src.is_empty() {
                    src = util::string_field(body, "rules");
                }
                let parsed = policy::parse(&src).map_err(VaultError::bad_request)?;
                ns.policies.insert(name.to_string(), parsed);
                Ok(Reply::Empty)
            }
            Op::Read => ns
                .policies
                .get(name)
                .map(|p| {
                    envelope(
                        json!({ "name": name, "policy": p.raw, "rules": p.raw }),
                        vec![],
                    )
                })
                .ok_or_else(|| VaultError::new(404, format!("No policy named: {name}"))),
            Op::Delete => {
                ns.policies.remove(name);
                Ok(Reply::Empty)
            }
            Op::List => Err(VaultError::unsupported()),
        };
    }
    if let Some(rest) = path.strip_prefix("auth/token/") {
        let caller = caller.ok_or_else(VaultError::permission_denied)?;
        return token_route(ns, rest, op, body, caller, &req.namespace);
    }
    if let Some(rest) = path.strip_prefix("auth/") {
        let (mount, sub) = split_mount(rest, ns.auth.keys().map(String::as_str))
            .ok_or_else(|| VaultError::no_route(path))?;
        return match ns.auth.get_mut(&mount) {
            Some(AuthMount::Cert(m)) => auth_cert::admin(m, &sub, op, body),
            Some(AuthMount::Aws(m)) => auth_aws::admin(m, &sub, op, body),
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
    ns: &mut Namespace,
    rest: &str,
    op: Op,
    body: &Value,
    caller: &Caller,
    namespace: &str,
) -> Result<Reply, VaultError> {
    match (rest, op) {
        ("create" | "create-orphan", Op::Write) => {
            let mut body = body.clone();
            if rest == "create-orphan" {
                body["no_parent"] = json!(true);
            }
            let v = tokens::create(ns, &caller.token, &body)?;
            Ok(auth_envelope(v["auth"].clone(), vec![]))
        }
        ("lookup-self", Op::Read | Op::Write) => {
            let tok = ns
                .tokens
                .get(&caller.token.id)
                .unwrap_or(&caller.token)
                .clone();
            Ok(envelope(tokens::lookup(&tok, &caller.token_ns), vec![]))
        }
        ("renew-self", Op::Write) => {
            let tok = ns
                .tokens
                .get_mut(&caller.token.id)
                .ok_or_else(VaultError::permission_denied)?;
            let (ttl, warnings) = tokens::renew(tok, body)?;
            Ok(auth_envelope(tok.auth_block(ttl), warnings))
        }
        ("revoke-self", Op::Write) => {
            ns.tokens.remove(&caller.token.id);
            Ok(Reply::Empty)
        }
        ("lookup", Op::Write) => {
            let id = util::string_field(body, "token");
            let tok = ns
                .tokens
                .get(&id)
                .filter(|t| !t.expired())
                .ok_or_else(|| VaultError::bad_request("bad token"))?;
            Ok(envelope(tokens::lookup(tok, namespace), vec![]))
        }
        ("create" | "create-orphan" | "renew-self" | "revoke-self" | "lookup", _) => {
            Err(VaultError::unsupported())
        }
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
    enum Kind {
        Cert,
        Aws(auth_aws::Prepared),
    }
    let kind = {
        let core = shared.core();
        let ns = core
            .namespaces
            .get(&req.namespace)
            .ok_or_else(|| VaultError::no_route(&req.path))?;
        match ns.auth.get(&rest) {
            Some(AuthMount::Cert(_)) => Kind::Cert,
            Some(AuthMount::Aws(m)) => Kind::Aws(auth_aws::prepare(
                m,
                &req.body,
                shared.sts_endpoint.as_deref(),
            )?),
            None => return Err(VaultError::no_route(&req.path)),
        }
    };
    match kind {
        Kind::Cert => {
            let mut core = shared.core();
            let ns = core
                .namespaces
                .get_mut(&req.namespace)
                .ok_or_else(|| VaultError::no_route(&req.path))?;
            let (policies, ttl, max_ttl, meta, display) = match ns.auth.get(&rest) {
                Some(AuthMount::Cert(m)) => auth_cert::login(m, &req.body, &req.peer_chain)?,
                _ => return Err(VaultError::no_route(&req.path)),
            };
            let tok = tokens::mint(
                ns,
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
        Kind::Aws(prepared) => {
            let identity = auth_aws::call_sts(&prepared).await?;
            let mut core = shared.core();
            let ns = core
                .namespaces
                .get_mut(&req.namespace)
                .ok_or_else(|| VaultError::no_route(&req.path))?;
            let (policies, ttl, max_ttl, meta, display) = match ns.auth.get(&rest) {
                Some(AuthMount::Aws(m)) => auth_aws::finish(m, &prepared, &identity)?,
                _ => return Err(VaultError::no_route(&req.path)),
            };
            let tok = tokens::mint(
                ns,
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
    }
}
