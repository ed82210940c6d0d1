//! A fault-injecting HTTP/1.1 reverse proxy for AWS JSON-protocol APIs, on 127.0.0.1, in front of
//! moto: what moto never does (throttle, answer `RequestInProgressException`, answer slowly),
//! on demand, per operation.
//!
//! Point the SDK's endpoint at [`FaultProxy::endpoint`]. Every request is forwarded to the
//! upstream unchanged — method, path, body and every header, `Host` included: SigV4 signs
//! `Host`, so the upstream must see the one the client signed (moto checks signatures against
//! the `Host` it receives and routes by the credential scope and `X-Amz-Target`, not by `Host`).
//! Only hop-by-hop headers (`Connection`, `Transfer-Encoding`, …) are not passed on; the body is
//! forwarded with its `Content-Length`.
//!
//! An operation is the request's `X-Amz-Target` (`ACMPrivateCA.IssueCertificate`,
//! `ACMPrivateCA.GetCertificate`, …; requests without one are counted under `""`). For each, the
//! proxy can be told to answer the next N requests with a [`Fault`], to answer all of them with
//! one, or to enforce a quota the way AWS does (a token bucket; requests over it are throttled).
//! Faults are answered exactly as the AWS JSON 1.1 protocol does: HTTP 400,
//! `content-type: application/x-amz-json-1.1`, an `x-amzn-RequestId`, and a body
//! `{"__type":"ThrottlingException","message":"Rate exceeded"}`; such requests never reach the
//! upstream. [`FaultProxy::counts`] tells forwarded and injected requests apart, so a test can
//! assert "exactly one `IssueCertificate` reached moto".
//!
//! Bounded: bodies of at most [`MAX_BODY`] bytes each way (a larger request is answered 413, a
//! larger upstream answer 502), at most [`MAX_CONNECTIONS`] client connections at once (more
//! wait to be accepted), one upstream connection per client connection, and at most
//! [`MAX_ARRIVALS`] arrival times kept.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

/// Largest request or upstream answer body passed through, in bytes.
pub const MAX_BODY: usize = 1 << 20;

/// Client connections served at once; further ones wait to be accepted.
pub const MAX_CONNECTIONS: usize = 256;

/// Arrival times kept (all operations together); later arrivals are counted, not timed.
pub const MAX_ARRIVALS: usize = 1_000_000;

/// How long one forwarded request may take upstream before the proxy answers 504.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// `X-Amz-Target` of ACM PCA's `IssueCertificate`.
pub const ISSUE_CERTIFICATE: &str = "ACMPrivateCA.IssueCertificate";
/// `X-Amz-Target` of ACM PCA's `GetCertificate`.
pub const GET_CERTIFICATE: &str = "ACMPrivateCA.GetCertificate";
/// `X-Amz-Target` of ACM PCA's `DescribeCertificateAuthority`.
pub const DESCRIBE_CERTIFICATE_AUTHORITY: &str = "ACMPrivateCA.DescribeCertificateAuthority";

/// An error answer, as an AWS JSON 1.1 service gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// HTTP 400 `ThrottlingException`, "Rate exceeded" (a request over the account's quota).
    Throttling,
    /// HTTP 400 `RequestInProgressException`, "The request is already in progress for the
    /// certificate" (`GetCertificate` of a certificate ACM PCA is still making).
    RequestInProgress,
    /// Any other error: HTTP `status`, `__type` `code`, `message`.
    Error {
        /// HTTP status (400 for client errors, 500 / 503 for the service's).
        status: u16,
        /// The `__type`, e.g. `ServiceUnavailable`.
        code: String,
        /// The `message`.
        message: String,
    },
}

impl Fault {
    /// The HTTP status answered.
    pub fn status(&self) -> u16 {
        match self {
            Self::Throttling | Self::RequestInProgress => 400,
            Self::Error { status, .. } => *status,
        }
    }

    /// The error code (`__type`).
    pub fn code(&self) -> &str {
        match self {
            Self::Throttling => "ThrottlingException",
            Self::RequestInProgress => "RequestInProgressException",
            Self::Error { code, .. } => code,
        }
    }

    /// The error message.
    pub fn message(&self) -> &str {
        match self {
            Self::Throttling => "Rate exceeded",
            Self::RequestInProgress => "The request is already in progress for the certificate",
            Self::Error { message, .. } => message,
        }
    }

    fn response(&self, request_id: &str) -> Response<Full<Bytes>> {
        let body = serde_json::json!({ "__type": self.code(), "message": self.message() });
        Response::builder()
            .status(StatusCode::from_u16(self.status()).unwrap_or(StatusCode::BAD_REQUEST))
            .header(CONTENT_TYPE, "application/x-amz-json-1.1")
            .header("x-amzn-requestid", request_id)
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("fault response")
    }
}

/// Requests of one operation so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Sent to the upstream (whatever it answered).
    pub forwarded: usize,
    /// Answered by the proxy with a [`Fault`] (never reached the upstream).
    pub injected: usize,
}

impl Counts {
    /// Every request the proxy received for the operation (the client's attempts).
    pub fn total(&self) -> usize {
        self.forwarded + self.injected
    }
}

/// One request of an operation: when it arrived (since the proxy started) and whether the proxy
/// answered it with a fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Time since [`FaultProxy::start`].
    pub at: Duration,
    /// Answered with a fault instead of forwarded.
    pub injected: bool,
}

/// What to do with an operation's requests.
#[derive(Debug)]
enum Rule {
    /// Answer the next `left` requests with the fault, then forward.
    Next { left: usize, fault: Fault },
    /// Answer every request with the fault.
    Always(Fault),
    /// AWS's quota: a token bucket of `burst` refilled at `per_second`; requests finding it
    /// empty are throttled.
    Quota {
        per_second: f64,
        burst: f64,
        tokens: f64,
        at: Instant,
    },
}

impl Rule {
    /// The fault for the request arriving now, if any.
    fn fault_now(&mut self, now: Instant) -> Option<Fault> {
        match self {
            Self::Next { left, fault } => {
                if *left == 0 {
                    return None;
                }
                *left -= 1;
                Some(fault.clone())
            }
            Self::Always(fault) => Some(fault.clone()),
            Self::Quota {
                per_second,
                burst,
                tokens,
                at,
            } => {
                let elapsed = now.duration_since(*at).as_secs_f64();
                *tokens = (*tokens + elapsed * *per_second).min(*burst);
                *at = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    None
                } else {
                    Some(Fault::Throttling)
                }
            }
        }
    }
}

#[derive(Debug)]
struct State {
    upstream: SocketAddr,
    started: Instant,
    rules: Mutex<HashMap<String, Rule>>,
    delay: Mutex<Duration>,
    counts: Mutex<HashMap<String, Counts>>,
    arrivals: Mutex<(usize, HashMap<String, Vec<Arrival>>)>,
    request_ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl State {
    /// Counts the request of `target` and decides: `Some(fault)` to answer it, `None` to
    /// forward it.
    fn admit(&self, target: &str) -> Option<Fault> {
        let now = Instant::now();
        let fault = lock(&self.rules)
            .get_mut(target)
            .and_then(|r| r.fault_now(now));
        {
            let mut counts = lock(&self.counts);
            let c = counts.entry(target.to_owned()).or_default();
            if fault.is_some() {
                c.injected += 1;
            } else {
                c.forwarded += 1;
            }
        }
        let mut arrivals = lock(&self.arrivals);
        if arrivals.0 < MAX_ARRIVALS {
            arrivals.0 += 1;
            arrivals
                .1
                .entry(target.to_owned())
                .or_default()
                .push(Arrival {
                    at: now.duration_since(self.started),
                    injected: fault.is_some(),
                });
        }
        fault
    }

    fn request_id(&self) -> String {
        let n = self.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("00000000-0000-4000-8000-{n:012x}")
    }
}

/// The proxy (its tasks end when it is dropped).
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `upstream` (`http://127.0.0.1:PORT`, as
    /// [`Moto::endpoint`](crate::Moto::endpoint) gives it). Ready when this returns: the
    /// listener is bound.
    pub async fn start(upstream: &str) -> FaultProxy {
        let authority = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/');
        let upstream: SocketAddr = authority
            .parse()
            .unwrap_or_else(|e| panic!("upstream {authority:?} is not IP:PORT: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            upstream,
            started: Instant::now(),
            rules: Mutex::new(HashMap::new()),
            delay: Mutex::new(Duration::ZERO),
            counts: Mutex::new(HashMap::new()),
            arrivals: Mutex::new((0, HashMap::new())),
            request_ids: AtomicU64::new(1),
        });
        let task = tokio::spawn(serve(listener, state.clone()));
        FaultProxy { addr, state, task }
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give the SDK.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` requests of `target` with `fault` (replacing any rule of `target`),
    /// then forwards again.
    pub fn fail_next(&self, target: &str, n: usize, fault: Fault) {
        lock(&self.state.rules).insert(target.to_owned(), Rule::Next { left: n, fault });
    }

    /// Answers every request of `target` with `fault` until [`clear`](Self::clear).
    pub fn fail_always(&self, target: &str, fault: Fault) {
        lock(&self.state.rules).insert(target.to_owned(), Rule::Always(fault));
    }

    /// Enforces a request quota on `target` the way AWS does: a token bucket of `burst`
    /// requests refilled at `per_second`; requests over it are answered
    /// [`Fault::Throttling`].
    pub fn quota(&self, target: &str, per_second: f64, burst: u32) {
        let burst = f64::from(burst.max(1));
        lock(&self.state.rules).insert(
            target.to_owned(),
            Rule::Quota {
                per_second: per_second.max(0.001),
                burst,
                tokens: burst,
                at: Instant::now(),
            },
        );
    }

    /// Forwards every request of `target` again.
    pub fn clear(&self, target: &str) {
        lock(&self.state.rules).remove(target);
    }

    /// How many of the faults set by [`fail_next`](Self::fail_next) on `target` are still to be
    /// answered (0 for other rules).
    pub fn pending_faults(&self, target: &str) -> usize {
        match lock(&self.state.rules).get(target) {
            Some(Rule::Next { left, .. }) => *left,
            _ => 0,
        }
    }

    /// Holds every request (of any operation, before it is forwarded or answered) for `delay`;
    /// `Duration::ZERO` stops delaying.
    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Requests of `target` so far.
    pub fn counts(&self, target: &str) -> Counts {
        lock(&self.state.counts)
            .get(target)
            .copied()
            .unwrap_or_default()
    }

    /// Requests of every operation so far, by `X-Amz-Target`.
    pub fn all_counts(&self) -> HashMap<String, Counts> {
        lock(&self.state.counts).clone()
    }

    /// When each request of `target` arrived, in order (at most [`MAX_ARRIVALS`] in all).
    pub fn arrivals(&self, target: &str) -> Vec<Arrival> {
        lock(&self.state.arrivals)
            .1
            .get(target)
            .cloned()
            .unwrap_or_default()
    }

    /// Time since [`start`](Self::start): the clock of [`Arrival::at`].
    pub fn uptime(&self) -> Duration {
        self.state.started.elapsed()
    }

    /// Forgets counts and arrival times (rules and delay stay).
    pub fn reset_counts(&self) {
        lock(&self.state.counts).clear();
        *lock(&self.state.arrivals) = (0, HashMap::new());
    }
}

/// Accepts up to [`MAX_CONNECTIONS`] connections at once.
async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors, say: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let upstream = Arc::new(tokio::sync::Mutex::new(None));
            let service = hyper::service::service_fn(move |req| {
                let (state, upstream) = (state.clone(), upstream.clone());
                async move { Ok::<_, Infallible>(handle(req, &state, &upstream).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

type Upstream = tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>;

/// Headers that describe one connection, not the message: never passed on.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_by_hop(name) && name != CONTENT_LENGTH {
            to.append(name.clone(), value.clone());
        }
    }
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain")
        .body(Full::new(Bytes::from(text)))
        .expect("plain response")
}

async fn handle(
    req: Request<Incoming>,
    state: &State,
    upstream: &Upstream,
) -> Response<Full<Bytes>> {
    let delay = *lock(&state.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let target = req
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (parts, body) = req.into_parts();
    // Read the whole body first: a request cut short is neither counted nor forwarded.
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("fault proxy: request body unreadable or over {MAX_BODY} bytes: {e}"),
            )
        }
    };
    if let Some(fault) = state.admit(&target) {
        return fault.response(&state.request_id());
    }
    let mut out = Request::builder()
        .method(parts.method.clone())
        .version(http::Version::HTTP_11)
        .uri(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_owned(),
        );
    if let Some(h) = out.headers_mut() {
        copy_headers(&parts.headers, h);
        h.insert(CONTENT_LENGTH, body.len().into());
    }
    let Ok(out) = out.body(Full::new(body)) else {
        return plain(StatusCode::BAD_REQUEST, "fault proxy: bad request".into());
    };
    match tokio::time::timeout(UPSTREAM_TIMEOUT, forward(state.upstream, upstream, out)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => plain(
            StatusCode::BAD_GATEWAY,
            format!("fault proxy: upstream {}: {e}", state.upstream),
        ),
        Err(_) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "fault proxy: upstream {} took over {UPSTREAM_TIMEOUT:?}",
                state.upstream
            ),
        ),
    }
}

async fn connect(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `req` on this client connection's upstream connection, opening a new one when there is
/// none or it was closed; a request the old connection could not send goes on a new one (never
/// twice: only one that was not written is sent again).
async fn forward(
    addr: SocketAddr,
    upstream: &Upstream,
    mut req: Request<Full<Bytes>>,
) -> Result<Response<Full<Bytes>>, String> {
    let mut conn = upstream.lock().await;
    let mut fresh = false;
    let response = loop {
        let sender = match conn.as_mut() {
            Some(s) if !s.is_closed() => s,
            _ => {
                fresh = true;
                conn.insert(connect(addr).await?)
            }
        };
        if sender.ready().await.is_err() {
            *conn = None;
            if fresh {
                return Err("connection closed before the request".into());
            }
            continue;
        }
        match sender.try_send_request(req).await {
            Ok(r) => break r,
            Err(mut e) => {
                *conn = None;
                match e.take_message() {
                    Some(r) if !fresh => req = r,
                    _ => return Err(e.into_error().to_string()),
                }
            }
        }
    };
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("answer body unreadable or over {MAX_BODY} bytes: {e}"))?
        .to_bytes();
    let mut out = Response::builder().status(parts.status);
    if let Some(h) = out.headers_mut() {
        copy_headers(&parts.headers, h);
        h.insert(CONTENT_LENGTH, body.len().into());
    }
    out.body(Full::new(body)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_answer_as_told() {
        let now = Instant::now();
        let mut next = Rule::Next {
            left: 2,
            fault: Fault::Throttling,
        };
        assert_eq!(next.fault_now(now), Some(Fault::Throttling));
        assert_eq!(next.fault_now(now), Some(Fault::Throttling));
        assert_eq!(next.fault_now(now), None);

        let mut quota = Rule::Quota {
            per_second: 10.0,
            burst: 2.0,
            tokens: 2.0,
            at: now,
        };
        assert_eq!(quota.fault_now(now), None);
        assert_eq!(quota.fault_now(now), None);
        assert_eq!(quota.fault_now(now), Some(Fault::Throttling));
        assert_eq!(quota.fault_now(now + Duration::from_millis(150)), None);
    }

    #[test]
    fn faults_are_aws_json_errors() {
        let r = Fault::RequestInProgress.response("id");
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.headers()[CONTENT_TYPE].to_str().unwrap(),
            "application/x-amz-json-1.1"
        );
        assert_eq!(Fault::Throttling.code(), "ThrottlingException");
        assert_eq!(Fault::Throttling.message(), "Rate exceeded");
    }
}
