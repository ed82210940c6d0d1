//! Per-call gRPC metrics: a tower layer around every service of the gRPC server that records
//! `meshca_grpc_server_handling_seconds{service,method,code}`, from the request until the end of
//! the response (for a stream, its whole life). Its `_count` is the number of calls by code.
//!
//! The labels are bounded whatever a client sends: a service outside [`SERVICES`] is `unknown`,
//! and so is the method of a call answered `Unimplemented` (an unrouted path).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

/// The services the server routes; calls to any other are labelled `unknown`.
const SERVICES: [&str; 4] = [
    "meshca.v1.Issuer",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// `{service, method, code}` of one call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CallLabels {
    /// The gRPC service (package-qualified), or `unknown`.
    service: &'static str,
    /// The method, or `unknown`.
    method: String,
    /// The gRPC status code's name (`Ok`, `Unavailable`...), `Cancelled` when the client went
    /// away first.
    code: String,
}

/// The histogram family the layer records into.
pub(crate) type Calls = Family<CallLabels, Histogram, fn() -> Histogram>;

/// Records each call into a [`Calls`] family.
#[derive(Clone, Debug)]
pub(crate) struct GrpcMetricsLayer {
    /// Where calls are recorded.
    pub(crate) calls: Calls,
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone, Debug)]
pub(crate) struct GrpcMetrics<S> {
    /// The wrapped service.
    inner: S,
    /// Where calls are recorded.
    calls: Calls,
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics {
            inner,
            calls: self.calls.clone(),
        }
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// `(service, method)` of a request path `/service/method`, bounded to [`SERVICES`].
fn route(path: &str) -> (&'static str, String) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    match SERVICES.iter().find(|s| **s == service) {
        Some(s) => (s, method.to_owned()),
        None => ("unknown", "unknown".to_owned()),
    }
}

/// The `grpc-status` of a header map, if it has one.
fn status_of(headers: &http::HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// One call being timed; recorded once, at its status or when dropped without one.
#[derive(Debug)]
struct Recorder {
    /// Where the call is recorded.
    calls: Calls,
    /// Its service label.
    service: &'static str,
    /// Its method label (unless the answer is `Unimplemented`).
    method: String,
    /// When the request came in.
    start: Instant,
    /// Recorded already.
    done: bool,
}

impl Recorder {
    /// Records the call with `code`, the first time only.
    fn finish(&mut self, code: tonic::Code) {
        if self.done {
            return;
        }
        self.done = true;
        let method = if code == tonic::Code::Unimplemented {
            "unknown".to_owned()
        } else {
            std::mem::take(&mut self.method)
        };
        self.calls
            .get_or_create(&CallLabels {
                service: self.service,
                method,
                code: format!("{code:?}"),
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        // The response ended (or was dropped) without a status: the client went away.
        self.finish(tonic::Code::Cancelled);
    }
}

impl<S, B> tower_service::Service<http::Request<B>> for GrpcMetrics<S>
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

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = route(req.uri().path());
        let mut recorder = Recorder {
            calls: self.calls.clone(),
            service,
            method,
            start: Instant::now(),
            done: false,
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            // A trailers-only answer (most errors) has its status in the headers.
            if let Some(code) = status_of(resp.headers()) {
                recorder.finish(code);
            }
            Ok(resp.map(|body| tonic::body::Body::new(Timed { body, recorder })))
        })
    }
}

/// A response body that records its call when the trailers (with the status) go out.
#[derive(Debug)]
struct Timed {
    /// The response body.
    body: tonic::body::Body,
    /// Its call, recorded at the trailers or on drop.
    recorder: Recorder,
}

impl http_body::Body for Timed {
    type Data = bytes::Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let out = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &out {
            if let Some(code) = frame.trailers_ref().and_then(status_of) {
                self.recorder.finish(code);
            }
        }
        out
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

    #[test]
    fn labels_are_bounded_to_the_routed_services() {
        assert_eq!(
            route("/meshca.v1.Issuer/IssueCertificate"),
            ("meshca.v1.Issuer", "IssueCertificate".to_owned())
        );
        assert_eq!(route("/evil.Service/x"), ("unknown", "unknown".to_owned()));
        assert_eq!(route(""), ("unknown", "unknown".to_owned()));
    }

    #[test]
    fn a_call_is_recorded_once_with_its_code() {
        let calls: Calls = Family::new_with_constructor(|| Histogram::new([1.0]));
        let mut r = Recorder {
            calls: calls.clone(),
            service: "meshca.v1.Issuer",
            method: "Nope".to_owned(),
            start: Instant::now(),
            done: false,
        };
        r.finish(tonic::Code::Unimplemented);
        drop(r);
        let labels = CallLabels {
            service: "meshca.v1.Issuer",
            method: "unknown".to_owned(),
            code: "Unimplemented".to_owned(),
        };
        assert!(calls.get(&labels).is_some());
        // Not recorded again on drop.
        let cancelled = CallLabels {
            code: "Cancelled".to_owned(),
            ..labels
        };
        assert!(calls.get(&cancelled).is_none());
    }
}
