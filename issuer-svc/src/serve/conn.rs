//! Bounded connections for the gRPC listener (and the metrics listener's accept loop).
//!
//! Every accepted connection takes a slot in a [`Connections`] before its TLS handshake. A slot is
//! *anonymous* until the handshake shows a client certificate (a bootstrap token caller, or a
//! stranger), *certified* after. At most `max_anonymous` anonymous slots and `max_total` slots
//! in all are held: a newcomer past either cap closes the oldest idle anonymous connection (one
//! still in its handshake counts as idle), and at the total cap, failing that, the oldest idle
//! certified one; when every connection is busy the newcomer is closed at once. So strangers are
//! shed first and can never hold the descriptors a data plane or the admin needs.
//!
//! A connection with no request in flight for its idle timeout is closed: [`Conn`] counts
//! nothing itself; [`ConnLayer`] counts in-flight requests (a response body still streaming,
//! e.g. a `WatchCertificate`, is one) and caps them per connection, and [`Conn::poll_read`]
//! ends the connection (EOF) once it has been idle long enough, with a timer polled there.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

use crate::limits::{ACCEPT_BACKOFF_MAX, ACCEPT_BACKOFF_MIN, FD_RESERVE};

/// The caps and timeouts of one listener.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Connections held at once (handshakes included).
    pub(crate) max_total: usize,
    /// Of those, without a client certificate (handshakes included).
    pub(crate) max_anonymous: usize,
    /// Idle time after which a connection without a client certificate is closed.
    pub(crate) idle_anonymous: Duration,
    /// Idle time after which a connection with a client certificate is closed.
    pub(crate) idle_certified: Duration,
}

/// The connections of one listener.
#[derive(Debug)]
pub(crate) struct Connections {
    limits: ConnLimits,
    next_id: AtomicU64,
    slots: Mutex<BTreeMap<u64, Arc<ConnState>>>,
}

/// What the registry and the connection share.
#[derive(Debug)]
pub(crate) struct ConnState {
    id: u64,
    /// [`HANDSHAKE`], [`ANONYMOUS`] or [`CERTIFIED`].
    phase: AtomicU8,
    /// Requests (streams) in flight.
    active: AtomicUsize,
    /// When the last request ended (or the connection was accepted).
    idle_since: Mutex<Instant>,
    /// Set when the registry sheds this connection.
    evicted: AtomicBool,
    /// The reader's waker, woken on eviction and when the last request ends.
    waker: Mutex<Option<Waker>>,
    /// Wakes a handshake (or metrics request read) in progress on eviction.
    notify: tokio::sync::Notify,
}

/// A slot in a [`Connections`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot {
    registry: Arc<Connections>,
    state: Arc<ConnState>,
}

/// What a request learns of its connection (from the request extensions; see [`ConnLayer`]).
#[derive(Clone, Debug)]
pub(crate) struct ConnInfo {
    state: Arc<ConnState>,
    tcp: Option<TcpConnectInfo>,
    tls: Option<TlsConnectInfo<TcpConnectInfo>>,
}

/// An accepted connection (TLS or, on loopback, plaintext) holding its [`Slot`].
#[derive(Debug)]
pub(crate) struct Conn {
    io: Io,
    slot: Slot,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
}

#[derive(Debug)]
enum Io {
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// Exponential backoff for an accept loop: a failing `accept` (EMFILE, ENFILE, ENOBUFS) is
/// retried after 10 ms, doubling up to a second, instead of spinning a core.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    delay: Option<Duration>,
}

// === impl Connections ===

/// A connection's phase.
const HANDSHAKE: u8 = 0;
const ANONYMOUS: u8 = 1;
const CERTIFIED: u8 = 2;

impl Connections {
    pub(crate) fn new(limits: ConnLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            next_id: AtomicU64::new(0),
            slots: Mutex::new(BTreeMap::new()),
        })
    }

    pub(crate) fn limits(&self) -> ConnLimits {
        self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<ConnState>>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a connection just accepted (in its handshake until [`Slot::established`]),
    /// shedding another if a cap is reached; `None` when every connection is busy.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut slots = self.lock();
        let (total, handshakes) = count(&slots, HANDSHAKE);
        let victim = if total >= self.limits.max_total {
            // Strangers first: an idle anonymous connection, then a handshake, then an idle
            // certified connection (its client reconnects at once, with its certificate).
            Some(
                oldest(&slots, ANONYMOUS)
                    .or_else(|| oldest(&slots, HANDSHAKE))
                    .or_else(|| oldest(&slots, CERTIFIED)),
            )
        } else if handshakes >= self.limits.max_anonymous {
            // A flood of handshakes that never finish cannot keep anyone out: the oldest goes.
            Some(oldest(&slots, HANDSHAKE))
        } else {
            None
        };
        match victim {
            None => {}
            Some(Some(v)) => {
                tracing::debug!(
                    total,
                    handshakes,
                    phase = v.phase(),
                    "connection cap reached; closing the oldest idle connection"
                );
                v.evict();
            }
            Some(None) => return None,
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            id,
            phase: AtomicU8::new(HANDSHAKE),
            active: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
            evicted: AtomicBool::new(false),
            waker: Mutex::new(None),
            notify: tokio::sync::Notify::new(),
        });
        slots.insert(id, state.clone());
        Some(Slot {
            registry: self.clone(),
            state,
        })
    }

    /// Connections held (not yet shed), and of those in their handshake and anonymous.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize, usize) {
        let slots = self.lock();
        let (total, handshakes) = count(&slots, HANDSHAKE);
        let (_, anonymous) = count(&slots, ANONYMOUS);
        (total, handshakes, anonymous)
    }
}

/// Connections not shed, and of those in `phase`.
fn count(slots: &BTreeMap<u64, Arc<ConnState>>, phase: u8) -> (usize, usize) {
    slots
        .values()
        .filter(|s| !s.is_evicted())
        .fold((0, 0), |(all, of), s| {
            (all + 1, of + usize::from(s.phase() == phase))
        })
}

/// The oldest idle connection in `phase` not yet shed.
fn oldest(slots: &BTreeMap<u64, Arc<ConnState>>, phase: u8) -> Option<Arc<ConnState>> {
    slots
        .values()
        .find(|s| !s.is_evicted() && s.phase() == phase && s.is_idle())
        .cloned()
}

// === impl ConnState ===

impl ConnState {
    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Relaxed)
    }

    fn is_anonymous(&self) -> bool {
        self.phase() != CERTIFIED
    }

    fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::Relaxed)
    }

    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0
    }

    fn idle_since(&self) -> Instant {
        *self
            .idle_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn wake(&self) {
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Relaxed);
        self.notify.notify_one();
        self.wake();
    }

    /// Counts a request in, unless `max` are in flight already.
    fn begin(self: &Arc<Self>, max: usize) -> Option<Active> {
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Active(self.clone()))
    }
}

/// One request in flight on a connection; counted out on drop.
#[derive(Debug)]
pub(crate) struct Active(Arc<ConnState>);

impl Drop for Active {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self
                .0
                .idle_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
            // The reader arms the idle timer again.
            self.0.wake();
        }
    }
}

// === impl Slot ===

impl Slot {
    /// The handshake is done, with a client certificate or without (`anonymous`). An anonymous
    /// connection past `max_anonymous` sheds the oldest idle anonymous one, or is refused
    /// (`false`) when all are busy.
    pub(crate) fn established(&self, anonymous: bool) -> bool {
        let slots = self.registry.lock();
        if anonymous {
            let (_, held) = count(&slots, ANONYMOUS);
            if held >= self.registry.limits.max_anonymous {
                match oldest(&slots, ANONYMOUS) {
                    Some(v) => v.evict(),
                    None => return false,
                }
            }
        }
        let phase = if anonymous { ANONYMOUS } else { CERTIFIED };
        self.state.phase.store(phase, Ordering::Relaxed);
        drop(slots);
        true
    }

    /// Resolves when the registry sheds this connection.
    pub(crate) async fn evicted(&self) {
        while !self.state.is_evicted() {
            self.state.notify.notified().await;
        }
    }

    /// Marks the connection busy (e.g. a metrics request read in full): it is no longer shed.
    pub(crate) fn busy(&self) -> Option<Active> {
        self.state.begin(usize::MAX)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.state.id);
    }
}

// === impl Conn ===

impl Conn {
    pub(crate) fn tls(stream: tokio_rustls::server::TlsStream<TcpStream>, slot: Slot) -> Self {
        Self::new(Io::Tls(Box::new(stream)), slot)
    }

    pub(crate) fn plain(stream: TcpStream, slot: Slot) -> Self {
        Self::new(Io::Plain(stream), slot)
    }

    fn new(io: Io, slot: Slot) -> Self {
        let limits = slot.registry.limits();
        let idle_timeout = if slot.state.is_anonymous() {
            limits.idle_anonymous
        } else {
            limits.idle_certified
        };
        let deadline = slot.state.idle_since() + idle_timeout;
        Self {
            io,
            slot,
            idle_timeout,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    /// Whether the connection should end now; otherwise arms the idle timer (or, while a
    /// request is in flight, relies on its end to wake the reader).
    fn should_close(&mut self, cx: &mut Context<'_>) -> bool {
        let state = &self.slot.state;
        {
            let mut w = state
                .waker
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        if state.is_evicted() {
            return true;
        }
        if !state.is_idle() {
            return false;
        }
        let deadline = state.idle_since() + self.idle_timeout;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_ready() && state.is_idle() {
            tracing::debug!(
                anonymous = state.is_anonymous(),
                "closing a connection idle for {:?}",
                self.idle_timeout
            );
            state.evict();
            return true;
        }
        false
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.should_close(cx) {
            // EOF: the HTTP/2 server ends the connection and drops it (closing the socket).
            return Poll::Ready(Ok(()));
        }
        match &mut self.io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.io {
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Tls(s) => s.is_write_vectored(),
            Io::Plain(s) => s.is_write_vectored(),
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        let (tcp, tls) = match &self.io {
            Io::Tls(s) => (None, Some(s.as_ref().connect_info())),
            Io::Plain(s) => (Some(s.connect_info()), None),
        };
        ConnInfo {
            state: self.slot.state.clone(),
            tcp,
            tls,
        }
    }
}

// === impl AcceptBackoff ===

impl AcceptBackoff {
    /// `accept` succeeded: the next failure starts from the shortest delay.
    pub(crate) fn succeeded(&mut self) {
        self.delay = None;
    }

    /// `accept` failed: waits before the next try (logged once per run of failures).
    pub(crate) async fn failed(&mut self, listener: &'static str, e: &std::io::Error) {
        let delay = match self.delay {
            None => {
                tracing::warn!(%listener, error = %e, "accept failed; backing off");
                ACCEPT_BACKOFF_MIN
            }
            Some(d) => (d * 2).min(ACCEPT_BACKOFF_MAX),
        };
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }
}

/// Raises the soft limit on open files to the hard one; the soft limit after.
pub(crate) fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // "Unlimited" is not accepted for files on Linux: take a large finite number instead.
    let hard = limit.maximum.unwrap_or(1 << 20);
    let soft = limit.current.unwrap_or(hard);
    if soft < hard {
        match setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: limit.maximum,
            },
        ) {
            Ok(()) => return hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
            }
        }
    }
    soft
}

/// `wanted` connections, or fewer if the descriptor limit leaves less room (with
/// [`FD_RESERVE`] kept for files, upstream connections and the metrics listener).
pub(crate) fn fit_to_descriptors(wanted: usize, nofile: u64, flag: &str) -> usize {
    let room = usize::try_from(nofile.saturating_sub(FD_RESERVE))
        .unwrap_or(usize::MAX)
        .max(1);
    if wanted > room {
        tracing::warn!(
            "{flag} {wanted} is more than the open-file limit ({nofile}) allows; using {room}"
        );
        room
    } else {
        wanted
    }
}

/// Races `fut` against the slot's eviction: `None` if shed first.
pub(crate) async fn unless_evicted<F: Future>(slot: &Slot, fut: F) -> Option<F::Output> {
    tokio::select! {
        out = fut => Some(out),
        () = slot.evicted() => None,
    }
}

// === impl ConnLayer ===

/// Counts each request (and its response body) as in flight on its connection, and refuses
/// requests past the per-connection stream cap with `ResourceExhausted`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLayer {
    pub(crate) max_streams: usize,
}

/// The service [`ConnLayer`] makes.
#[derive(Clone, Debug)]
pub(crate) struct ConnService<S> {
    inner: S,
    max_streams: usize,
}

impl<S> tower_layer::Layer<S> for ConnLayer {
    type Service = ConnService<S>;

    fn layer(&self, inner: S) -> ConnService<S> {
        ConnService {
            inner,
            max_streams: self.max_streams,
        }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for ConnService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        let Some(info) = req.extensions().get::<ConnInfo>().cloned() else {
            return Box::pin(self.inner.call(req));
        };
        let Some(active) = info.state.begin(self.max_streams) else {
            let status = tonic::Status::from(crate::api::status::ApiError::Busy {
                what: format!(
                    "this connection has {} requests or streams open, the most allowed (--max-streams-per-connection); use another connection or close some",
                    self.max_streams
                ),
            });
            return Box::pin(std::future::ready(Ok(status.into_http())));
        };
        // The connection's TLS (or TCP) details where tonic's `peer_certs` and `remote_addr`
        // look for them.
        if let Some(tls) = info.tls {
            req.extensions_mut().insert(tls);
        }
        if let Some(tcp) = info.tcp {
            req.extensions_mut().insert(tcp);
        }
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            Ok(resp.map(|body| {
                tonic::body::Body::new(Guarded {
                    body,
                    _active: active,
                })
            }))
        })
    }
}

/// A response body that keeps its request counted while it streams.
#[derive(Debug)]
struct Guarded {
    body: tonic::body::Body,
    _active: Active,
}

impl http_body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, anonymous: usize) -> ConnLimits {
        ConnLimits {
            max_total: total,
            max_anonymous: anonymous,
            idle_anonymous: Duration::from_secs(1),
            idle_certified: Duration::from_secs(1),
        }
    }

    #[test]
    fn anonymous_connections_are_shed_first_and_busy_ones_never() {
        let r = Connections::new(limits(4, 2));
        // Handshakes past the anonymous cap: the oldest is shed.
        let h1 = r.admit().unwrap();
        let h2 = r.admit().unwrap();
        let h3 = r.admit().unwrap();
        assert!(h1.state.is_evicted());
        assert_eq!(r.counts(), (2, 2, 0));
        drop(h1);
        // Established anonymous connections past their cap: the oldest idle one is shed; when
        // all are busy the newcomer is refused.
        assert!(h2.established(true));
        assert!(h3.established(true));
        let _b2 = h2.busy().unwrap();
        let h4 = r.admit().unwrap();
        assert!(h4.established(true));
        assert!(h3.state.is_evicted());
        let _b4 = h4.busy().unwrap();
        let h5 = r.admit().unwrap();
        assert!(!h5.established(true));
        drop(h5);
        // Certificate holders still get in while the anonymous ones are busy, up to the total.
        let c1 = r.admit().unwrap();
        assert!(c1.established(false));
        let c2 = r.admit().unwrap();
        assert!(c2.established(false));
        assert_eq!(r.counts(), (4, 0, 2));
        // At the total cap with busy anonymous ones, the oldest idle certified one goes.
        let c3 = r.admit().unwrap();
        assert!(c1.state.is_evicted());
        let _b3 = c3.busy();
        let _bc2 = c2.busy();
        // Every connection busy: refused.
        assert!(r.admit().is_none());
        drop((h2, h3, h4, c1, c2, c3));
        assert_eq!(r.counts(), (0, 0, 0));
    }

    #[test]
    fn the_stream_cap_counts_requests_in_flight() {
        let r = Connections::new(limits(4, 2));
        let s = r.admit().unwrap();
        let one = s.state.begin(2).unwrap();
        let two = s.state.begin(2).unwrap();
        assert!(s.state.begin(2).is_none());
        drop(one);
        assert!(s.state.begin(2).is_some());
        drop(two);
        assert!(s.state.is_idle());
    }

    #[test]
    fn the_connection_cap_fits_the_descriptor_limit() {
        assert_eq!(
            fit_to_descriptors(10_000, 256, "--max-connections"),
            256 - FD_RESERVE as usize
        );
        assert_eq!(fit_to_descriptors(100, 1 << 20, "--max-connections"), 100);
        assert_eq!(fit_to_descriptors(100, 10, "--max-connections"), 1);
    }
}
