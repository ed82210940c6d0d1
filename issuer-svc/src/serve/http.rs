//! Prometheus metrics in text format, and the small HTTP server for `/metrics`, `/healthz` and
//! `/readyz` on a separate port.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use meshca::{Guard, Observer};

use crate::limits::{MAX_METRICS_CONNECTIONS, METRICS_READ_TIMEOUT};
use crate::serve::conn::{unless_evicted, AcceptBackoff, ConnLimits, Connections};

type BackendKey = (String, String);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Every metric the issuer exports.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    issued: Mutex<BTreeMap<BackendKey, Histogram>>,
    failures: Mutex<BTreeMap<(String, String), u64>>,
    watched: AtomicI64,
    earliest_expiry: Mutex<BTreeMap<String, i64>>,
    reloads: Mutex<BTreeMap<&'static str, u64>>,
    authz_reloads: Mutex<BTreeMap<&'static str, u64>>,
    health: Mutex<BTreeMap<(String, String), bool>>,
    /// Set once the first config is loaded and the gRPC server listens.
    pub(crate) ready: AtomicBool,
}

impl Metrics {
    pub(crate) fn observe_issue(&self, key: &BackendKey, seconds: f64) {
        let mut m = lock(&self.issued);
        let h = m.entry(key.clone()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    pub(crate) fn failure(&self, mesh: &str, reason: &str) {
        *lock(&self.failures)
            .entry((mesh.to_owned(), reason.to_owned()))
            .or_default() += 1;
    }

    pub(crate) fn set_watched(&self, n: usize) {
        self.watched
            .store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn set_earliest_expiry(&self, by_mesh: BTreeMap<String, i64>) {
        *lock(&self.earliest_expiry) = by_mesh;
    }

    /// `result` is `applied` or `refused`.
    pub(crate) fn config_reload(&self, result: &'static str) {
        *lock(&self.reloads).entry(result).or_default() += 1;
    }

    /// The `--authz` file was reloaded (`applied`) or refused (`refused`, the previous policy
    /// stays).
    pub(crate) fn authz_reload(&self, result: &'static str) {
        *lock(&self.authz_reloads).entry(result).or_default() += 1;
    }

    fn render(&self, guard: &Guard) -> String {
        let mut out = String::new();
        out.push_str("# HELP meshca_certificates_issued_total Certificates issued, by mesh and backend.\n# TYPE meshca_certificates_issued_total counter\n");
        let issued = lock(&self.issued).clone();
        for ((mesh, backend), h) in &issued {
            let _ = writeln!(
                out,
                "meshca_certificates_issued_total{{mesh=\"{}\",backend=\"{}\"}} {}",
                esc(mesh),
                esc(backend),
                h.count
            );
        }
        out.push_str("# HELP meshca_issue_duration_seconds Time to issue one certificate.\n# TYPE meshca_issue_duration_seconds histogram\n");
        for ((mesh, backend), h) in &issued {
            let labels = format!("mesh=\"{}\",backend=\"{}\"", esc(mesh), esc(backend));
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "meshca_issue_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "meshca_issue_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "meshca_issue_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "meshca_issue_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        out.push_str("# HELP meshca_issue_failures_total Failed issuances, by mesh and reason.\n# TYPE meshca_issue_failures_total counter\n");
        for ((mesh, reason), n) in lock(&self.failures).iter() {
            let _ = writeln!(
                out,
                "meshca_issue_failures_total{{mesh=\"{}\",reason=\"{reason}\"}} {n}",
                esc(mesh)
            );
        }
        out.push_str("# HELP meshca_watched_identities Identities with an open WatchCertificate stream.\n# TYPE meshca_watched_identities gauge\n");
        let _ = writeln!(
            out,
            "meshca_watched_identities {}",
            self.watched.load(Ordering::Relaxed)
        );
        out.push_str("# HELP meshca_earliest_expiry_timestamp_seconds Earliest not-after of a watched certificate, by mesh.\n# TYPE meshca_earliest_expiry_timestamp_seconds gauge\n");
        for (mesh, t) in lock(&self.earliest_expiry).iter() {
            let _ = writeln!(
                out,
                "meshca_earliest_expiry_timestamp_seconds{{mesh=\"{}\"}} {t}",
                esc(mesh)
            );
        }
        out.push_str("# HELP meshca_backend_healthy Whether an enabled backend will keep working (0: e.g. a Vault token that cannot be renewed; see the log).\n# TYPE meshca_backend_healthy gauge\n");
        for ((mesh, backend), ok) in lock(&self.health).iter() {
            let _ = writeln!(
                out,
                "meshca_backend_healthy{{mesh=\"{}\",backend=\"{}\"}} {}",
                esc(mesh),
                esc(backend),
                u8::from(*ok)
            );
        }
        out.push_str("# HELP meshca_backend_circuit_state Circuit of a backend: 0 closed, 1 open, 2 half-open.\n# TYPE meshca_backend_circuit_state gauge\n");
        for ((mesh, backend), state) in guard.circuit_states() {
            let _ = writeln!(
                out,
                "meshca_backend_circuit_state{{mesh=\"{}\",backend=\"{}\"}} {}",
                esc(&mesh),
                esc(&backend),
                state.as_gauge()
            );
        }
        out.push_str("# HELP meshca_config_reloads_total Mesh config files applied or refused.\n# TYPE meshca_config_reloads_total counter\n");
        for (result, n) in lock(&self.reloads).iter() {
            let _ = writeln!(
                out,
                "meshca_config_reloads_total{{result=\"{result}\"}} {n}"
            );
        }
        out.push_str("# HELP meshca_authz_reloads_total Changes of the --authz file applied or refused.\n# TYPE meshca_authz_reloads_total counter\n");
        for (result, n) in lock(&self.authz_reloads).iter() {
            let _ = writeln!(out, "meshca_authz_reloads_total{{result=\"{result}\"}} {n}");
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The library reports here.
impl Observer for Metrics {
    fn issued(&self, mesh: &str, backend: &str, seconds: f64) {
        self.observe_issue(&(mesh.to_owned(), backend.to_owned()), seconds);
    }

    fn failed(&self, mesh: &str, reason: &'static str) {
        self.failure(mesh, reason);
    }

    fn watched(&self, count: usize) {
        self.set_watched(count);
    }

    fn earliest_expiry(&self, by_mesh: BTreeMap<String, std::time::SystemTime>) {
        self.set_earliest_expiry(
            by_mesh
                .into_iter()
                .map(|(m, t)| (m, crate::api::wire::unix(t)))
                .collect(),
        );
    }

    fn config(&self, result: &'static str) {
        self.config_reload(result);
    }

    fn backend_health(&self, by_backend: meshca::HealthReport) {
        *lock(&self.health) = by_backend
            .into_iter()
            .map(|(k, problem)| (k, problem.is_none()))
            .collect();
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` (HTTP/1.1, one request per connection). At most
/// [`MAX_METRICS_CONNECTIONS`] are held: a newcomer closes the oldest one still sending its
/// request, so a probe gets through however many idle connections are open; a failing accept
/// (EMFILE) backs off instead of spinning.
pub(crate) async fn serve(listener: TcpListener, metrics: Arc<Metrics>, guard: Arc<Guard>) {
    let registry = Connections::new(ConnLimits {
        max_total: MAX_METRICS_CONNECTIONS,
        max_anonymous: MAX_METRICS_CONNECTIONS,
        idle_anonymous: METRICS_READ_TIMEOUT,
        idle_certified: METRICS_READ_TIMEOUT,
    });
    let mut backoff = AcceptBackoff::default();
    loop {
        let mut sock = match listener.accept().await {
            Ok((sock, _)) => {
                backoff.succeeded();
                sock
            }
            Err(e) => {
                backoff.failed("metrics", &e).await;
                continue;
            }
        };
        let Some(slot) = registry.admit() else {
            continue;
        };
        let metrics = metrics.clone();
        let guard = guard.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let read = tokio::time::timeout(METRICS_READ_TIMEOUT, async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
            let Some(Ok(())) = unless_evicted(&slot, read).await else {
                return;
            };
            let _busy = slot.busy();
            let text = String::from_utf8_lossy(&buf);
            let path = text.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "text/plain; version=0.0.4",
                    metrics.render(&guard),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "text/plain", "ready\n".to_owned())
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".to_owned(),
                ),
                _ => (
                    "404 Not Found",
                    "text/plain",
                    "try /metrics, /healthz or /readyz\n".to_owned(),
                ),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}
