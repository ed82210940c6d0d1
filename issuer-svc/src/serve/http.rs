//! The plain-HTTP listener for `/metrics`, `/healthz` and `/readyz`: an axum router on hyper's
//! HTTP/1.1 server, behind the same bounded accept loop as before (see [`serve`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use meshca::Manager;

use crate::limits::{
    MAX_METRICS_CONNECTIONS, MAX_METRICS_HEAD_BYTES, METRICS_READ_TIMEOUT, METRICS_RESPONSE_TIMEOUT,
};
use crate::serve::conn::{unless_evicted, AcceptBackoff, ConnLimits, Connections};
use crate::serve::metrics::Metrics;

/// The `Content-Type` of the OpenMetrics text format.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the handlers read.
#[derive(Debug)]
struct Exposed {
    /// Everything `/metrics` writes.
    registry: Registry,
    /// For `/readyz`'s flag.
    metrics: Arc<Metrics>,
}

/// The router of the metrics port.
fn router(exposed: Arc<Exposed>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(exposed)
}

/// `/metrics`: OpenMetrics when the scraper asks for it (Prometheus does), else the Prometheus
/// text format 0.0.4 (curl, `promtool check metrics`).
async fn metrics(State(exposed): State<Arc<Exposed>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (encoded, ctype) = if openmetrics {
        (text::encode(&mut body, &exposed.registry), OPENMETRICS)
    } else {
        (
            prometheus_text::encode(&mut body, &exposed.registry),
            prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, ctype)], body).into_response(),
        Err(std::fmt::Error) => {
            tracing::warn!("metrics could not be encoded");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics could not be encoded\n",
            )
                .into_response()
        }
    }
}

/// `/healthz`: the process answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// `/readyz`: 200 once the first config is loaded and the gRPC server listens, 503 before and
/// while shutting down.
async fn readyz(State(exposed): State<Arc<Exposed>>) -> Response {
    if exposed.metrics.ready.load(Ordering::Relaxed) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

/// Any other path.
async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n")
}

/// Serves `/metrics`, `/healthz` and `/readyz`: HTTP/1.1, one request per connection (no
/// keep-alive; `Connection: close`). The bounds of the edge:
/// - at most [`MAX_METRICS_CONNECTIONS`] connections are held: a newcomer closes the oldest one
///   still sending its request, so a probe gets through however many idle connections are open;
/// - a failing accept (EMFILE) backs off instead of spinning;
/// - the request head must arrive within [`METRICS_READ_TIMEOUT`] (hyper's header read timeout)
///   and fit in [`MAX_METRICS_HEAD_BYTES`] (hyper's read buffer; a larger head gets 431);
/// - the whole exchange, answer written included, ends within [`METRICS_RESPONSE_TIMEOUT`];
/// - request bodies are never read.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, manager: Arc<Manager>) {
    let registry = metrics.registry(manager);
    let app = router(Arc::new(Exposed { registry, metrics }));
    let connections = Connections::new(ConnLimits {
        max_total: MAX_METRICS_CONNECTIONS,
        max_anonymous: MAX_METRICS_CONNECTIONS,
        idle_anonymous: METRICS_READ_TIMEOUT,
        idle_certified: METRICS_READ_TIMEOUT,
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.keep_alive(false)
        .max_buf_size(MAX_METRICS_HEAD_BYTES)
        .timer(TokioTimer::new())
        .header_read_timeout(METRICS_READ_TIMEOUT);
    let mut backoff = AcceptBackoff::default();
    loop {
        let sock = match listener.accept().await {
            Ok((sock, _)) => {
                backoff.succeeded();
                sock
            }
            Err(e) => {
                backoff.failed("metrics", &e).await;
                continue;
            }
        };
        let Some(slot) = connections.admit() else {
            continue;
        };
        let slot = Arc::new(slot);
        let app = app.clone();
        let http = http.clone();
        tokio::spawn(async move {
            // A request read in full marks the connection busy: it is no longer shed.
            let in_request = slot.clone();
            let service = hyper::service::service_fn(move |req| {
                let busy = in_request.busy();
                let mut app = app.clone();
                async move {
                    // `Router` is always ready (its `poll_ready` returns `Ready`).
                    let out = tower_service::Service::call(&mut app, req).await;
                    drop(busy);
                    out
                }
            });
            let conn = http.serve_connection(TokioIo::new(sock), service);
            let bounded = tokio::time::timeout(METRICS_RESPONSE_TIMEOUT, conn);
            if let Some(Ok(Err(e))) = unless_evicted(&slot, bounded).await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}
