//! A Kubernetes API test server for cert-manager `CertificateRequest`s, speaking the REST shapes
//! the `kube` client uses, on plain HTTP at 127.0.0.1:
//!
//! - `/apis/cert-manager.io/v1/namespaces/{ns}/certificaterequests`: `POST` (create, honours
//!   `metadata.generateName`, assigns name, uid, resourceVersion, creationTimestamp, drops
//!   `status` like a status subresource), `GET` (list, `labelSelector` with `=`, `==`, `!=`,
//!   `fieldSelector` on `metadata.name` / `metadata.namespace`; `limit` is accepted and every item
//!   fits one page) and `GET ?watch=true` (`resourceVersion`, `allowWatchBookmarks`,
//!   `timeoutSeconds`, `sendInitialEvents`; newline-delimited `{"type","object"}` events);
//! - `…/certificaterequests/{name}`: `GET`, `DELETE`; `…/{name}/status`: `PUT`, `PATCH`
//!   (merge patch);
//! - `/apis/cert-manager.io/v1/namespaces/{ns}/issuers/{name}` and
//!   `/apis/cert-manager.io/v1/clusterissuers/{name}`: `GET`.
//!
//! Errors are `Status` objects as Kubernetes writes them (404 `NotFound`, 409 `AlreadyExists`,
//! 422 `Invalid` with causes, 403 `Forbidden`). Every CertificateRequest written through the API
//! is validated against cert-manager's CRD schema ([`schema`]).
//!
//! Core `v1` Secrets (create, get, replace with `resourceVersion`, delete) are served too, for
//! the Kubernetes secret store (module `secrets`).
//!
//! A signer task plays cert-manager with a CA issuer and its default approver: each new request
//! is approved (or denied, or left unapproved, per [`Behaviour`]) and signed by a test CA
//! (rcgen): the CSR's subject and SANs, `spec.duration`, `spec.usages`.

mod meshes;
pub mod schema;
mod secrets;

use std::collections::{BTreeMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;
use rand::RngExt;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde_json::{json, Value};
use time::OffsetDateTime;

const GROUP: &str = "cert-manager.io";
const API_VERSION: &str = "cert-manager.io/v1";
const CRS: &str = "certificaterequests";

/// What the signer does with new CertificateRequests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Behaviour {
    /// Approve and issue (cert-manager's default approver and a CA issuer).
    #[default]
    Issue,
    /// Deny (`Denied=True`, then `Ready=False/Denied`), as approver-policy does without a policy.
    Deny,
    /// Approve, then fail to sign (`Ready=False/Failed`, `failureTime`).
    Fail,
    /// Approve, then find the request invalid (`InvalidRequest=True`, `Ready=False/Failed`).
    Invalid,
    /// Never approve: the request stays `Ready=False/Pending`.
    NeverApprove,
    /// Hold new requests without any status until [`KubeApiServer::release`] issues them.
    Hold,
}

/// One object-writing call the server got.
#[derive(Debug, Clone)]
pub struct Write {
    /// `POST`, `PUT`, `PATCH`.
    pub method: String,
    /// The path.
    pub path: String,
    /// The body as sent.
    pub body: Value,
    /// Schema problems (`field: message`); non-empty means it was refused with 422.
    pub problems: Vec<String>,
}

/// An object and where it lives.
#[derive(Debug, Clone)]
struct Stored {
    plural: String,
    namespace: String,
    object: Value,
}

#[derive(Debug, Clone)]
struct WatchEvent {
    rv: u64,
    plural: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Debug, Default)]
struct State {
    /// By (plural, namespace, name); cluster-scoped objects have namespace "".
    objects: BTreeMap<(String, String, String), Stored>,
    history: Vec<WatchEvent>,
    /// Events up to this resourceVersion are compacted away (etcd compaction): a watch from an
    /// older version answers `410 Expired`.
    compacted: u64,
    writes: Vec<Write>,
    forbidden: HashSet<String>,
    deletes: Vec<String>,
    /// Whether Kuma's Mesh CRD is installed.
    meshes_installed: bool,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    rv: AtomicU64,
    events: tokio::sync::broadcast::Sender<WatchEvent>,
    behaviour: Mutex<Behaviour>,
    schema: Value,
    ca: Ca,
    held: Mutex<Vec<WatchEvent>>,
    watches: tokio::sync::watch::Sender<usize>,
    /// WATCH requests still to be answered 500 (an API server whose etcd changed leader).
    failing_watches: std::sync::atomic::AtomicUsize,
    /// Added before every answer (a real API server is a network hop away).
    latency: Mutex<Duration>,
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ca(<redacted>)")
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn next_rv(&self) -> u64 {
        self.rv.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Stores `object` (setting its resourceVersion) and publishes the event, under the lock so
    /// watchers that read history then subscribe miss nothing.
    fn put(&self, st: &mut State, plural: &str, ns: &str, mut object: Value, kind: &'static str) {
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (plural.to_owned(), ns.to_owned(), name);
        if kind == "DELETED" {
            st.objects.remove(&key);
        } else {
            st.objects.insert(
                key,
                Stored {
                    plural: plural.to_owned(),
                    namespace: ns.to_owned(),
                    object: object.clone(),
                },
            );
        }
        let ev = WatchEvent {
            rv,
            plural: plural.to_owned(),
            namespace: ns.to_owned(),
            kind,
            object,
        };
        st.history.push(ev.clone());
        let _ = self.events.send(ev);
    }
}

/// A running Kubernetes API test server; its tasks are aborted on drop.
#[derive(Debug)]
pub struct KubeApiServer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// The accept loop; it owns every connection.
    server: Mutex<Option<crate::ServerTask>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        if let Some(t) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Accepts on `listener`; the task owns every connection, so stopping it is like killing the
/// server process.
fn serve_on(shared: Arc<Shared>, listener: tokio::net::TcpListener) -> crate::ServerTask {
    crate::ServerTask::accept(listener, move |tcp| {
        let s = shared.clone();
        Some(async move {
            let service = hyper::service::service_fn(move |req| {
                let s = s.clone();
                async move { Ok::<_, Infallible>(serve(s, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        })
    })
}

impl KubeApiServer {
    /// Starts the server on `127.0.0.1:<free port>` with a fresh test CA and the signer.
    pub async fn start() -> KubeApiServer {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "cert-manager test CA");
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(3650);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA");
        let (events, _) = tokio::sync::broadcast::channel(1024);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            rv: AtomicU64::new(100),
            events,
            behaviour: Mutex::new(Behaviour::Issue),
            schema: schema::certificate_request_schema(),
            ca: Ca {
                issuer: Issuer::new(params, key),
                pem: cert.pem(),
            },
            held: Mutex::new(Vec::new()),
            watches: tokio::sync::watch::channel(0).0,
            latency: Mutex::new(Duration::ZERO),
            failing_watches: std::sync::atomic::AtomicUsize::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let server = serve_on(shared.clone(), listener);
        let signer = tokio::spawn(signer(shared.clone()));
        KubeApiServer {
            shared,
            addr,
            server: Mutex::new(Some(server)),
            tasks: vec![signer],
        }
    }

    /// Stops serving, as if the API server process were killed: the listener and every open
    /// connection (watches included) close. Objects are kept (etcd) for
    /// [`start_again`](Self::start_again).
    pub async fn stop(&self) {
        let task = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            t.stop().await;
        }
    }

    /// Serves again on the same address with the same objects.
    pub async fn start_again(&self) {
        self.stop().await;
        let listener = crate::listen_again(self.addr).await;
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(serve_on(self.shared.clone(), listener));
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// PEM of the test CA that signs the requests (what `status.ca` carries).
    pub fn ca_pem(&self) -> String {
        self.shared.ca.pem.clone()
    }

    /// What the signer does with requests created from now on.
    pub fn set_behaviour(&self, b: Behaviour) {
        *self
            .shared
            .behaviour
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = b;
    }

    /// Answers the next `n` WATCH requests on certificaterequests with `500 InternalError`, as an
    /// API server does while its etcd changes leader.
    pub fn fail_watches(&self, n: usize) {
        self.shared.failing_watches.store(n, Ordering::SeqCst);
    }

    /// How many of the WATCH failures [`fail_watches`](Self::fail_watches) asked for are left.
    pub fn watch_failures_left(&self) -> usize {
        self.shared.failing_watches.load(Ordering::SeqCst)
    }

    /// Delays every answer by `latency` from now on (default none): a real API server's
    /// round trip, which widens the windows in which replicas race.
    pub fn set_latency(&self, latency: Duration) {
        *self
            .shared
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = latency;
    }

    /// Issues the requests held under [`Behaviour::Hold`] (and issues new ones from now on).
    pub fn release(&self) {
        self.set_behaviour(Behaviour::Issue);
        let held = std::mem::take(&mut *self.shared.held.lock().unwrap_or_else(|e| e.into_inner()));
        for e in held {
            sign_and_store(&self.shared, &e, Behaviour::Issue);
        }
    }

    /// Waits until `n` WATCH requests have been received in all.
    pub async fn watches_reach(&self, n: usize) {
        let mut rx = self.shared.watches.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Answers 403 to `verb` (`create`, `get`, `list`, `watch`, `delete`) on certificaterequests;
    /// `approve` makes cert-manager's webhook refuse to let the client set `Approved`/`Denied`.
    pub fn forbid(&self, verb: &str) {
        self.shared.state().forbidden.insert(verb.to_owned());
    }

    /// Answers 403 to `verb` (`create`, `get`, `update`, `delete`) on `resource` (`secrets`).
    pub fn forbid_on(&self, resource: &str, verb: &str) {
        self.shared
            .state()
            .forbidden
            .insert(format!("{resource}/{verb}"));
    }

    /// Allows everything [`forbid`](Self::forbid) and [`forbid_on`](Self::forbid_on) refused.
    pub fn allow_all(&self) {
        self.shared.state().forbidden.clear();
    }

    /// The stored object `plural`/`namespace`/`name` (`""` namespace for cluster-scoped ones).
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        self.shared
            .state()
            .objects
            .get(&(plural.to_owned(), namespace.to_owned(), name.to_owned()))
            .map(|o| o.object.clone())
    }

    /// Names of the `plural` objects in `namespace` now.
    pub fn names(&self, plural: &str, namespace: &str) -> Vec<String> {
        self.shared
            .state()
            .objects
            .keys()
            .filter(|(p, ns, _)| p == plural && ns == namespace)
            .map(|(_, _, n)| n.clone())
            .collect()
    }

    /// Adds a cert-manager `Issuer` in `namespace`.
    pub fn add_issuer(&self, namespace: &str, name: &str) {
        self.add_issuer_of("issuers", "Issuer", namespace, name);
    }

    /// Adds a cert-manager `ClusterIssuer`.
    pub fn add_cluster_issuer(&self, name: &str) {
        self.add_issuer_of("clusterissuers", "ClusterIssuer", "", name);
    }

    fn add_issuer_of(&self, plural: &str, kind: &str, ns: &str, name: &str) {
        let mut meta = json!({"name": name, "uid": uuid(),
            "creationTimestamp": rfc3339(OffsetDateTime::now_utc())});
        if !ns.is_empty() {
            meta["namespace"] = json!(ns);
        }
        let obj = json!({"apiVersion": API_VERSION, "kind": kind, "metadata": meta,
            "spec": {"ca": {"secretName": "ca"}},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KeyPairVerified",
                "message": "Signing CA verified"}]}});
        let mut st = self.shared.state();
        self.shared.put(&mut st, plural, ns, obj, "ADDED");
    }

    /// Stores a CertificateRequest directly (no schema check, no signer), as an earlier run
    /// might have left it.
    pub fn insert_request(&self, namespace: &str, name: &str, labels: Value) {
        let obj = json!({"apiVersion": API_VERSION, "kind": "CertificateRequest",
            "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": uuid(),
                "creationTimestamp": rfc3339(OffsetDateTime::now_utc())},
            "spec": {"request": "", "issuerRef": {"name": "x"}}});
        let mut st = self.shared.state();
        self.shared.put(&mut st, CRS, namespace, obj, "ADDED");
    }

    /// Names of the CertificateRequests in `namespace` now.
    pub fn requests(&self, namespace: &str) -> Vec<String> {
        self.names(CRS, namespace)
    }

    /// Every object-writing call so far (create, status updates), with schema problems.
    pub fn writes(&self) -> Vec<Write> {
        self.shared.state().writes.clone()
    }

    /// Names of CertificateRequests deleted through the API.
    pub fn deleted(&self) -> Vec<String> {
        self.shared.state().deletes.clone()
    }
}

// === HTTP ===

type Resp = Response<BoxBody<Bytes, Infallible>>;

fn json_response(code: u16, v: &Value) -> Resp {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .expect("response")
}

/// A `Status` failure as the API server writes it.
/// The name a created object gets, as the API server names it: `metadata.name`, else
/// `metadata.generateName` plus a random suffix; empty when it has neither (refused as invalid).
fn new_name(obj: &Value) -> String {
    match (
        obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()),
        obj["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) => n.to_owned(),
        (None, Some(g)) => format!("{g}{}", random_suffix()),
        (None, None) => String::new(),
    }
}

/// `405 MethodNotAllowed`, as the API server answers a verb a resource does not have.
fn not_allowed() -> Resp {
    status(
        405,
        "MethodNotAllowed",
        "method not allowed".into(),
        json!({}),
    )
}

fn status(code: u16, reason: &str, message: String, details: Value) -> Resp {
    json_response(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details, "code": code}),
    )
}

fn not_found(plural: &str, name: &str) -> Resp {
    status(
        404,
        "NotFound",
        format!("{plural}.{GROUP} \"{name}\" not found"),
        json!({"name": name, "group": GROUP, "kind": plural}),
    )
}

fn forbidden(verb: &str, ns: &str) -> Resp {
    status(
        403,
        "Forbidden",
        format!(
            "{CRS}.{GROUP} is forbidden: User \"system:serviceaccount:{ns}:meshca\" cannot {verb} \
             resource \"{CRS}\" in API group \"{GROUP}\" in the namespace \"{ns}\""
        ),
        json!({"group": GROUP, "kind": CRS}),
    )
}

fn query(req: &Request<Incoming>) -> BTreeMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            url_decode_pairs(q)
                .into_iter()
                .collect::<BTreeMap<String, String>>()
        })
        .unwrap_or_default()
}

fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (pct_decode(k), pct_decode(v))
        })
        .collect()
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(h, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=b,c==d,e!=f` against `labels`.
fn labels_match(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v, eq) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = term.split_once('=') {
            (k, v, true)
        } else {
            // `key`: exists.
            return labels.get(term.trim()).is_some();
        };
        let got = labels.get(k.trim()).and_then(Value::as_str);
        (got == Some(v.trim())) == eq
    })
}

fn fields_match(selector: &str, obj: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v, eq) = if let Some((k, v)) = term.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = term.split_once("==") {
            (k, v, true)
        } else {
            let (k, v) = term.split_once('=').unwrap_or((term, ""));
            (k, v, true)
        };
        let got = match k.trim() {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            _ => None,
        };
        (got == Some(v.trim())) == eq
    })
}

fn selected(q: &BTreeMap<String, String>, obj: &Value) -> bool {
    q.get("labelSelector")
        .is_none_or(|s| labels_match(s, &obj["metadata"]["labels"]))
        && q.get("fieldSelector").is_none_or(|s| fields_match(s, obj))
}

async fn serve(s: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_owned();
    let q = query(&req);
    let method = req.method().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let latency = *s.latency.lock().unwrap_or_else(|e| e.into_inner());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    if let Some(resp) = secrets::route(&s, &method, &parts, &path, &body) {
        return resp;
    }
    if let Some(resp) = meshes::route(&s, &method, &parts, &q, &path, &body) {
        return resp;
    }
    match parts.as_slice() {
        ["apis", "cert-manager.io", "v1", "namespaces", ns, plural] if *plural == CRS => {
            match method {
                Method::POST => create(&s, ns, &path, &body),
                Method::GET if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
                    watch(&s, ns, &q)
                }
                Method::GET => list(&s, ns, &q),
                _ => status(
                    405,
                    "MethodNotAllowed",
                    "method not allowed".into(),
                    json!({}),
                ),
            }
        }
        ["apis", "cert-manager.io", "v1", "namespaces", ns, plural, name] if *plural == CRS => {
            match method {
                Method::GET => get(&s, CRS, ns, name, Some("get")),
                Method::DELETE => delete(&s, ns, name),
                _ => status(
                    405,
                    "MethodNotAllowed",
                    "method not allowed".into(),
                    json!({}),
                ),
            }
        }
        ["apis", "cert-manager.io", "v1", "namespaces", ns, plural, name, "status"]
            if *plural == CRS =>
        {
            match method {
                Method::PUT | Method::PATCH => {
                    if let Some(refused) = approval_refused(&s, ns, name, &body) {
                        return refused;
                    }
                    update_status(&s, ns, name, &path, method.as_str(), &body)
                }
                Method::GET => get(&s, CRS, ns, name, Some("get")),
                _ => status(
                    405,
                    "MethodNotAllowed",
                    "method not allowed".into(),
                    json!({}),
                ),
            }
        }
        ["apis", "cert-manager.io", "v1", "namespaces", ns, "issuers", name]
            if method == Method::GET =>
        {
            get(&s, "issuers", ns, name, None)
        }
        ["apis", "cert-manager.io", "v1", "clusterissuers", name] if method == Method::GET => {
            get(&s, "clusterissuers", "", name, None)
        }
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            json!({}),
        ),
    }
}

fn create(s: &Shared, ns: &str, path: &str, body: &[u8]) -> Resp {
    let mut st = s.state();
    if st.forbidden.contains("create") {
        return forbidden("create", ns);
    }
    let Ok(mut obj) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not JSON".into(), json!({}));
    };
    let mut problems: Vec<(String, String)> = schema::validate(&obj, &s.schema);
    if obj["apiVersion"] != API_VERSION || obj["kind"] != "CertificateRequest" {
        problems.push((
            "kind".into(),
            "Invalid value: must be cert-manager.io/v1 CertificateRequest".into(),
        ));
    }
    if obj.get("spec").is_none() {
        problems.push(("spec".into(), "Required value".into()));
    }
    let name = match (
        obj["metadata"]["name"].as_str().filter(|n| !n.is_empty()),
        obj["metadata"]["generateName"].as_str(),
    ) {
        (Some(n), _) => n.to_owned(),
        (None, Some(g)) => format!("{g}{}", random_suffix()),
        (None, None) => {
            problems.push((
                "metadata.name".into(),
                "Required value: name or generateName is required".into(),
            ));
            String::new()
        }
    };
    st.writes.push(Write {
        method: "POST".into(),
        path: path.into(),
        body: obj.clone(),
        problems: problems.iter().map(|(f, m)| format!("{f}: {m}")).collect(),
    });
    if !problems.is_empty() {
        return invalid(&name, &problems);
    }
    if st
        .objects
        .contains_key(&(CRS.to_owned(), ns.to_owned(), name.clone()))
    {
        return status(
            409,
            "AlreadyExists",
            format!("{CRS}.{GROUP} \"{name}\" already exists"),
            json!({"name": name, "group": GROUP, "kind": CRS}),
        );
    }
    let meta = &mut obj["metadata"];
    meta["name"] = json!(name);
    meta["namespace"] = json!(ns);
    meta["uid"] = json!(uuid());
    meta["generation"] = json!(1);
    meta["creationTimestamp"] = json!(rfc3339(OffsetDateTime::now_utc()));
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    s.put(&mut st, CRS, ns, obj.clone(), "ADDED");
    let stored = st
        .objects
        .get(&(CRS.to_owned(), ns.to_owned(), name))
        .map(|o| o.object.clone())
        .unwrap_or(obj);
    json_response(201, &stored)
}

fn invalid(name: &str, problems: &[(String, String)]) -> Resp {
    let causes: Vec<Value> = problems
        .iter()
        .map(|(f, m)| {
            let reason = if m.starts_with("Required") {
                "FieldValueRequired"
            } else if m.starts_with("Unsupported") {
                "FieldValueNotSupported"
            } else if m.starts_with("Forbidden") {
                "FieldValueForbidden"
            } else {
                "FieldValueInvalid"
            };
            json!({"reason": reason, "message": format!("{m}"), "field": f})
        })
        .collect();
    let list: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    status(
        422,
        "Invalid",
        format!(
            "CertificateRequest.{GROUP} \"{name}\" is invalid: [{}]",
            list.join(", ")
        ),
        json!({"name": name, "group": GROUP, "kind": "CertificateRequest", "causes": causes}),
    )
}

fn get(s: &Shared, plural: &str, ns: &str, name: &str, verb: Option<&str>) -> Resp {
    let st = s.state();
    if verb.is_some_and(|v| st.forbidden.contains(v)) {
        return forbidden("get", ns);
    }
    match st
        .objects
        .get(&(plural.to_owned(), ns.to_owned(), name.to_owned()))
    {
        Some(o) => json_response(200, &o.object),
        None => not_found(plural, name),
    }
}

fn list(s: &Shared, ns: &str, q: &BTreeMap<String, String>) -> Resp {
    let st = s.state();
    if st.forbidden.contains("list") {
        return forbidden("list", ns);
    }
    let items: Vec<Value> = st
        .objects
        .values()
        .filter(|o| o.plural == CRS && o.namespace == ns && selected(q, &o.object))
        .map(|o| o.object.clone())
        .collect();
    let rv = s.rv.load(Ordering::SeqCst);
    json_response(
        200,
        &json!({"apiVersion": API_VERSION, "kind": "CertificateRequestList",
            "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}

fn delete(s: &Shared, ns: &str, name: &str) -> Resp {
    let mut st = s.state();
    if st.forbidden.contains("delete") {
        return forbidden("delete", ns);
    }
    let key = (CRS.to_owned(), ns.to_owned(), name.to_owned());
    let Some(o) = st.objects.get(&key).map(|o| o.object.clone()) else {
        return not_found(CRS, name);
    };
    st.deletes.push(name.to_owned());
    s.put(&mut st, CRS, ns, o.clone(), "DELETED");
    json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": GROUP, "kind": CRS, "uid": o["metadata"]["uid"]}}),
    )
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Has `condition` type `t`.
fn has_condition(status: &Value, t: &str) -> bool {
    status["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == t))
}

/// cert-manager's webhook: only identities with `approve` on the issuer's `signers` resource
/// may add `Approved` or `Denied` ([`KubeApiServer::forbid`] with `"approve"` takes it away).
fn approval_refused(s: &Shared, ns: &str, name: &str, body: &[u8]) -> Option<Resp> {
    let st = s.state();
    if !st.forbidden.contains("approve") {
        return None;
    }
    let sent: Value = serde_json::from_slice(body).ok()?;
    let current = st
        .objects
        .get(&(CRS.to_owned(), ns.to_owned(), name.to_owned()))?;
    let adds = ["Approved", "Denied"]
        .iter()
        .any(|t| has_condition(&sent["status"], t) && !has_condition(&current.object["status"], t));
    let issuer = &current.object["spec"]["issuerRef"];
    adds.then(|| {
        status(
            403,
            "Forbidden",
            format!(
                "admission webhook \"webhook.cert-manager.io\" denied the request: \
                 status.conditions: Forbidden: user \"system:serviceaccount:{ns}:meshca\" does not \
                 have permissions to set approved/denied conditions for issuer {{{} {} {}}}",
                issuer["name"].as_str().unwrap_or(""),
                issuer["kind"].as_str().unwrap_or("Issuer"),
                issuer["group"].as_str().unwrap_or(GROUP)
            ),
            json!({"group": GROUP, "kind": CRS, "name": name}),
        )
    })
}

fn update_status(s: &Shared, ns: &str, name: &str, path: &str, method: &str, body: &[u8]) -> Resp {
    let Ok(sent) = serde_json::from_slice::<Value>(body) else {
        return status(400, "BadRequest", "the body is not JSON".into(), json!({}));
    };
    let mut st = s.state();
    let key = (CRS.to_owned(), ns.to_owned(), name.to_owned());
    let Some(mut obj) = st.objects.get(&key).map(|o| o.object.clone()) else {
        return not_found(CRS, name);
    };
    let sent_rv = sent["metadata"]["resourceVersion"].as_str().unwrap_or("");
    if method == "PUT" && !sent_rv.is_empty() && obj["metadata"]["resourceVersion"] != sent_rv {
        return status(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {CRS}.{GROUP} \"{name}\": the object has been \
                 modified; please apply your changes to the latest version and try again"
            ),
            json!({"name": name, "group": GROUP, "kind": CRS}),
        );
    }
    let new_status = if method == "PUT" {
        sent["status"].clone()
    } else {
        let mut cur = obj.clone();
        merge_patch(&mut cur, &sent);
        cur["status"].clone()
    };
    obj["status"] = new_status;
    let problems = schema::validate(&obj, &s.schema);
    st.writes.push(Write {
        method: method.into(),
        path: path.into(),
        body: sent,
        problems: problems.iter().map(|(f, m)| format!("{f}: {m}")).collect(),
    });
    if !problems.is_empty() {
        return invalid(name, &problems);
    }
    s.put(&mut st, CRS, ns, obj, "MODIFIED");
    json_response(
        200,
        &st.objects
            .get(&key)
            .map(|o| o.object.clone())
            .unwrap_or_default(),
    )
}

/// A streaming body fed by a channel (one watch event per chunk).
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut v = json!({"type": kind, "object": object}).to_string();
    v.push('\n');
    Bytes::from(v)
}

fn watch(s: &Arc<Shared>, ns: &str, q: &BTreeMap<String, String>) -> Resp {
    let failing = s
        .failing_watches
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    if failing.is_ok() {
        return status(
            500,
            "InternalError",
            "Internal error occurred: etcdserver: leader changed".into(),
            json!({}),
        );
    }
    if s.state().forbidden.contains("watch") {
        return forbidden("watch", ns);
    }
    watch_of(s, CRS, ns, q, (API_VERSION, "CertificateRequest"))
}

/// A WATCH of `plural` in `ns` (`""`: cluster-scoped) as the API server streams it: from
/// `resourceVersion` (`0` or absent: the current objects as ADDED first), a `410 Expired` ERROR
/// event when that version is compacted away, a BOOKMARK closing the initial events when
/// `sendInitialEvents=true`, and periodic BOOKMARKs with `allowWatchBookmarks=true`; closed
/// after `timeoutSeconds`.
fn watch_of(
    s: &Arc<Shared>,
    plural: &'static str,
    ns: &str,
    q: &BTreeMap<String, String>,
    (api_version, kind): (&'static str, &'static str),
) -> Resp {
    let rv: u64 = q
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    let (initial, mut rx, since) = {
        let st = s.state();
        let initial: Vec<Bytes> = if rv == 0 {
            // "Any" / sendInitialEvents: the current objects as ADDED.
            st.objects
                .values()
                .filter(|o| o.plural == plural && o.namespace == ns && selected(q, &o.object))
                .map(|o| event_line("ADDED", &o.object))
                .collect()
        } else if rv < st.compacted {
            let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "reason": "Expired", "code": 410,
                "message": format!("too old resource version: {rv} ({})", st.compacted)});
            vec![event_line("ERROR", &gone)]
        } else {
            st.history
                .iter()
                .filter(|e| {
                    e.rv > rv && e.plural == plural && e.namespace == ns && selected(q, &e.object)
                })
                .map(|e| event_line(e.kind, &e.object))
                .collect()
        };
        let expired = rv != 0 && rv < st.compacted;
        let since = if rv == 0 || expired {
            s.rv.load(Ordering::SeqCst)
        } else {
            rv
        };
        if expired {
            // The API server closes such a watch after the error.
            let (tx, body_rx) = tokio::sync::mpsc::channel(1);
            let _ = tx.try_send(initial.into_iter().next().unwrap_or_default());
            return Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .body(ChannelBody(body_rx).boxed())
                .expect("response");
        }
        (initial, s.events.subscribe(), since)
    };
    s.watches.send_modify(|c| *c += 1);
    let bookmark_of = move |s: &Shared, initial_end: bool| {
        let mut meta = json!({"resourceVersion": s.rv.load(Ordering::SeqCst).to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        event_line(
            "BOOKMARK",
            &json!({"apiVersion": api_version, "kind": kind, "metadata": meta}),
        )
    };
    let bookmark = q
        .get("sendInitialEvents")
        .is_some_and(|v| v == "true")
        .then(|| bookmark_of(s, true));
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(290u64);
    let (tx, body_rx) = tokio::sync::mpsc::channel(64);
    let ns = ns.to_owned();
    let q = q.clone();
    let shared = s.clone();
    tokio::spawn(async move {
        let run = async {
            for line in initial.into_iter().chain(bookmark) {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            let mut tick = tokio::time::interval(BOOKMARK_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    got = rx.recv() => match got {
                        Ok(e) => {
                            if e.rv > since
                                && e.plural == plural
                                && e.namespace == ns
                                && selected(&q, &e.object)
                                && tx.send(event_line(e.kind, &e.object)).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    },
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(bookmark_of(&shared, false)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(timeout), run).await;
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(ChannelBody(body_rx).boxed())
        .expect("response")
}

/// How often a watch that allows bookmarks gets one (the API server: about every minute; here
/// sooner, so a resumed watch starts from a recent version in tests too).
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);

// === the signer (cert-manager's approver and CA issuer) ===

async fn signer(s: Arc<Shared>) {
    let mut rx = s.events.subscribe();
    loop {
        let e = match rx.recv().await {
            Ok(e) => e,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        if e.plural != CRS {
            continue;
        }
        if e.kind == "MODIFIED" {
            // Someone other than cert-manager's approver (meshca's autoApprove) approved a
            // request still waiting: the CA issuer signs it now.
            let st = &e.object["status"];
            let by_other = st["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == "Approved"
                        && c["status"] == "True"
                        && c["reason"] != "cert-manager.io"
                })
            });
            let waiting = st["certificate"].is_null()
                && !st["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["reason"] != "Pending")
                });
            if by_other && waiting {
                sign_approved(&s, &e);
            }
            continue;
        }
        if e.kind != "ADDED" {
            continue;
        }
        // Objects inserted directly (stale leftovers) have an empty request: leave them alone.
        if e.object["spec"]["request"]
            .as_str()
            .unwrap_or("")
            .is_empty()
        {
            continue;
        }
        let behaviour = *s.behaviour.lock().unwrap_or_else(|e| e.into_inner());
        if behaviour == Behaviour::Hold {
            s.held.lock().unwrap_or_else(|e| e.into_inner()).push(e);
            continue;
        }
        sign_and_store(&s, &e, behaviour);
    }
}

fn sign_and_store(s: &Shared, e: &WatchEvent, behaviour: Behaviour) {
    {
        let name = e.object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let status = sign(s, &e.object, behaviour);
        let path = format!(
            "/apis/cert-manager.io/v1/namespaces/{}/certificaterequests/{name}/status",
            e.namespace
        );
        let body = json!({"status": status}).to_string();
        // Through the same code as the /status endpoint (schema check included).
        let _ = update_status(s, &e.namespace, &name, &path, "PATCH", body.as_bytes());
    }
}

/// Issues a request someone else approved, keeping their `Approved` condition.
fn sign_approved(s: &Shared, e: &WatchEvent) {
    let name = e.object["metadata"]["name"].as_str().unwrap_or_default();
    let mut status = sign(s, &e.object, Behaviour::Issue);
    let theirs = e.object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Approved").cloned());
    if let (Some(theirs), Some(cs)) = (theirs, status["conditions"].as_array_mut()) {
        cs.retain(|c| c["type"] != "Approved");
        cs.insert(0, theirs);
    }
    let path = format!(
        "/apis/cert-manager.io/v1/namespaces/{}/certificaterequests/{name}/status",
        e.namespace
    );
    let body = json!({"status": status}).to_string();
    let _ = update_status(s, &e.namespace, name, &path, "PATCH", body.as_bytes());
}

fn condition(t: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": t, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": rfc3339(OffsetDateTime::now_utc())})
}

fn approved() -> Value {
    condition(
        "Approved",
        "True",
        "cert-manager.io",
        "Certificate request has been approved by cert-manager.io",
    )
}

/// The status cert-manager would end with for `cr` under `behaviour`.
fn sign(s: &Shared, cr: &Value, behaviour: Behaviour) -> Value {
    let now = rfc3339(OffsetDateTime::now_utc());
    match behaviour {
        Behaviour::Hold => json!({}),
        Behaviour::NeverApprove => json!({"conditions": [condition("Ready", "False", "Pending",
            "Waiting on certificate issuance from order; the request is not approved yet")]}),
        Behaviour::Deny => json!({"conditions": [
            condition("Denied", "True", "policy.cert-manager.io",
                "No policy approved this request"),
            condition("Ready", "False", "Denied",
                "The CertificateRequest was denied by an approval controller")],
            "failureTime": now}),
        Behaviour::Fail => json!({"conditions": [approved(),
            condition("Ready", "False", "Failed",
                "Failed to sign certificate request: the CA key pair is unusable")],
            "failureTime": now}),
        Behaviour::Invalid => json!({"conditions": [approved(),
            condition("InvalidRequest", "True", "RequestParsingError",
                "Failed to decode CSR in spec.request"),
            condition("Ready", "False", "Failed", "Failed to decode CSR in spec.request")],
            "failureTime": now}),
        Behaviour::Issue => match issue(s, cr) {
            Ok(pem) => {
                let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
                json!({"certificate": b64(&pem), "ca": b64(&s.ca.pem),
                    "conditions": [approved(), condition("Ready", "True", "Issued",
                        "Certificate fetched from issuer successfully")]})
            }
            Err(e) => json!({"conditions": [approved(),
                condition("InvalidRequest", "True", "RequestParsingError", &e),
                condition("Ready", "False", "Failed", &e)], "failureTime": now}),
        },
    }
}

fn issue(s: &Shared, cr: &Value) -> Result<String, String> {
    let csr_pem = base64::engine::general_purpose::STANDARD
        .decode(cr["spec"]["request"].as_str().unwrap_or(""))
        .map_err(|e| format!("Failed to decode CSR in spec.request: {e}"))?;
    let csr_pem = String::from_utf8(csr_pem).map_err(|_| "spec.request is not PEM".to_owned())?;
    let mut csr = CertificateSigningRequestParams::from_pem(&csr_pem)
        .map_err(|e| format!("Failed to decode CSR in spec.request: {e}"))?;
    let secs = cr["spec"]["duration"]
        .as_str()
        .map(parse_go_duration)
        .transpose()?
        .unwrap_or(90 * 24 * 3600);
    let now = OffsetDateTime::now_utc();
    let p = &mut csr.params;
    // cert-manager does not backdate: NotBefore is the signing time.
    p.not_before = now;
    p.not_after = now + time::Duration::seconds(secs as i64);
    p.is_ca = IsCa::ExplicitNoCa;
    p.serial_number = Some(SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
    p.use_authority_key_identifier_extension = true;
    p.key_usages.clear();
    p.extended_key_usages.clear();
    for u in cr["spec"]["usages"].as_array().into_iter().flatten() {
        match u.as_str().unwrap_or("") {
            "digital signature" => p.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => p.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "server auth" => p
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => p
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth),
            _ => {}
        }
    }
    let cert = csr
        .signed_by(&s.ca.issuer)
        .map_err(|e| format!("Failed to sign certificate request: {e}"))?;
    Ok(cert.pem())
}

/// Go's `time.ParseDuration` for `h`, `m`, `s` units (`24h0m0s`, `86400s`, `1h30m`).
fn parse_go_duration(s: &str) -> Result<u64, String> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.chars() {
        match c {
            '0'..='9' => num.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                num.clear();
            }
            _ => return Err(format!("invalid duration {s:?}")),
        }
    }
    if !num.is_empty() {
        return Err(format!("missing unit in duration {s:?}"));
    }
    Ok(total)
}

fn random_suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let l = json!({"a": "1", "b": "2"});
        assert!(labels_match("a=1,b==2", &l));
        assert!(!labels_match("a=1,b!=2", &l));
        assert!(labels_match("a", &l));
        assert!(fields_match(
            "metadata.name=x",
            &json!({"metadata": {"name": "x"}})
        ));
        assert_eq!(pct_decode("a%3Db%2Cc"), "a=b,c");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("24h0m0s").unwrap(), 86400);
        assert_eq!(parse_go_duration("86400s").unwrap(), 86400);
        assert!(parse_go_duration("1d").is_err());
    }
}
