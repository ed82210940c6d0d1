//! `meshca-bench acmpca`: the acmpca backend against moto_server (a real AWS emulator, IAM
//! authentication enforced) on loopback, in-process.
//!
//! - Throughput: certificates/s and p50/p99 latency through the library's issuance path
//!   (`issue_certificate`: key and CSR, `IssueCertificate`, `GetCertificate`, core's checks) at
//!   each concurrency, with the backend's rate limit lifted, nothing else running. moto signs
//!   in Python and checks IAM policies on every call, so this says what moto sustains here plus
//!   meshca's client cost, not what ACM PCA does.
//! - Rotation: N identities watched through the library's `Manager` and rotation scheduler
//!   (the path `meshca serve` runs) on a builtin CA, then the mesh's CA is switched to acmpca,
//!   so every watcher needs a certificate from ACM PCA at once. The backend's rate limit paces
//!   `IssueCertificate`; a [`FaultProxy`] between the backend and moto emulates AWS's quota
//!   (throttling requests over it, as AWS does) and counts every attempt. Reports wall time,
//!   the achieved `IssueCertificate`/s, the busiest 1 s window, throttled answers, retries and
//!   errors.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use backend_acmpca::{AcmpcaFactory, RateLimit};
use ca_core::config::{Backend, BackendConfig, Fields, Mesh, DEFAULT_DP_CERT_EXPIRATION};
use ca_core::{
    CertificateAuthority, IssueRequest, KeyType, SecretName, TrustBundle, UncheckedCertificate,
};
use meshca::{
    BackendFactory, BuildContext, BuildFuture, Built, Identity, Limits, Manager, MeshName,
    Observer, OverlaySecretStore, RotationPolicy, RotationReason, Violations, WatchReceiver,
};
use meshca_peers::fault_proxy::{GET_CERTIFICATE, ISSUE_CERTIFICATE};
use meshca_peers::FaultProxy;
use meshca_tests::acmpca::{Peer, REGION};
use meshca_tests::vault::indent;

use crate::vault::measure;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `meshca-bench acmpca`.
#[derive(Debug, clap::Args)]
pub(crate) struct AcmpcaArgs {
    /// Seconds per throughput figure (0: no throughput figures).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent callers of the throughput figures (comma-separated).
    #[arg(long, default_value = "1,16")]
    concurrency: String,
    /// Watched identities rotated at once (0: no rotation run).
    #[arg(long, default_value_t = 10_000)]
    identities: usize,
    /// The backend's `IssueCertificate` rate limit in the rotation run (calls/s).
    #[arg(long, default_value_t = 25.0)]
    rate: f64,
    /// Its burst (default: one second's worth).
    #[arg(long)]
    burst: Option<u32>,
    /// AWS's `IssueCertificate` quota, emulated by the proxy: requests/s, with a burst of one
    /// second's worth; requests over it are answered `ThrottlingException` (0: no quota).
    #[arg(long, default_value_t = 25.0)]
    aws_quota: f64,
    /// As `serve --max-concurrent-issues`.
    #[arg(long, default_value_t = 32)]
    max_concurrent_issues: usize,
}

pub(crate) fn run(args: AcmpcaArgs) -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

async fn bench(args: AcmpcaArgs) -> Result<(), BoxError> {
    let levels: Vec<usize> = args
        .concurrency
        .split(',')
        .map(|c| c.trim().parse())
        .collect::<Result<_, _>>()?;
    let peer = Peer::start().await;
    let ca = peer.ca_for("default").await;
    if args.seconds > 0 {
        println!(
            "meshca-bench acmpca: moto_server {} (IAM enforced) on 127.0.0.1, P-256 keys, {}s per \
             figure, rate limit lifted",
            moto_version(),
            args.seconds
        );
        let yaml = Peer::mesh_yaml("default", &ca.arn, &ca.root_pem, "");
        let backend: Arc<dyn CertificateAuthority> = Arc::new(
            Peer::build(
                &yaml,
                DEFAULT_DP_CERT_EXPIRATION,
                peer.sdk(Some(&peer.user), REGION),
            )
            .await?
            .with_rate_limit(RateLimit::new(1e6, 1_000_000)),
        );
        for &c in &levels {
            let f = measure(backend.clone(), KeyType::EcdsaP256, c, args.seconds).await?;
            println!(
                "acmpca (moto) {c:>3} callers  {:>8.1} certs/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} certs)",
                f.per_second, f.p50_ms, f.p99_ms, f.count
            );
        }
    }
    if args.identities > 0 {
        rotation(&args, &peer, &ca).await?;
    }
    Ok(())
}

fn moto_version() -> String {
    let Ok(python) = std::env::var("MESHCA_PYTHON") else {
        return String::new();
    };
    std::process::Command::new(python)
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// The acmpca factory with the bench's settings (the SDK config: endpoint the proxy, the
/// least-privilege user's key; the rate limit), whose backends count their certificates.
#[derive(Debug)]
struct CountingAcmpca {
    inner: AcmpcaFactory,
    issued: Arc<AtomicUsize>,
}

impl BackendFactory for CountingAcmpca {
    fn backend_type(&self) -> &str {
        self.inner.backend_type()
    }

    fn decode(&self, conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>> {
        self.inner.decode(conf, v)
    }

    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let built = self.inner.build(ctx, mesh, index, backend).await?;
            let counted = Counted {
                ca: built.ca,
                issued: self.issued.clone(),
            };
            Ok(Built::new(Arc::new(counted), built.warnings))
        })
    }
}

/// An acmpca backend that counts the certificates it issued (the watchers' and the switch's
/// test certificates, dry run included).
#[derive(Debug)]
struct Counted {
    ca: Arc<dyn CertificateAuthority>,
    issued: Arc<AtomicUsize>,
}

#[async_trait]
impl CertificateAuthority for Counted {
    fn name(&self) -> &str {
        self.ca.name()
    }
    async fn ensure(&self) -> Result<(), ca_core::Error> {
        self.ca.ensure().await
    }
    async fn trust_bundle(&self) -> Result<TrustBundle, ca_core::Error> {
        self.ca.trust_bundle().await
    }
    async fn refresh_trust_bundle(&self) -> Result<TrustBundle, ca_core::Error> {
        self.ca.refresh_trust_bundle().await
    }
    async fn issue(&self, request: &IssueRequest) -> Result<UncheckedCertificate, ca_core::Error> {
        let c = self.ca.issue(request).await?;
        self.issued.fetch_add(1, Ordering::Relaxed);
        Ok(c)
    }
    fn used_secrets(&self) -> Vec<SecretName> {
        self.ca.used_secrets()
    }
    fn needs_csr(&self) -> bool {
        self.ca.needs_csr()
    }
    async fn health(&self) -> Result<(), ca_core::Error> {
        self.ca.health().await
    }
    fn generates_keys(&self) -> bool {
        self.ca.generates_keys()
    }
}

/// Certificates issued and issues failed, per backend, as the manager's guard reports them.
#[derive(Debug, Default)]
struct Counter {
    issued: Mutex<BTreeMap<String, usize>>,
    failed: Mutex<BTreeMap<&'static str, usize>>,
}

impl Observer for Counter {
    fn issued(&self, _mesh: &str, backend: &str, _seconds: f64) {
        if let Ok(mut m) = self.issued.lock() {
            *m.entry(backend.to_owned()).or_default() += 1;
        }
    }
    fn failed(&self, _mesh: &str, reason: &'static str) {
        if let Ok(mut m) = self.failed.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }
}

impl Counter {
    fn issued(&self, backend: &str) -> usize {
        self.issued
            .lock()
            .map(|m| m.get(backend).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    fn failed(&self) -> BTreeMap<&'static str, usize> {
        self.failed.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// Per identity: milliseconds after the switch at which its certificate from acmpca arrived
/// (0: not yet).
struct Seen {
    rotated_ms: Vec<AtomicU32>,
    rotated: AtomicUsize,
    stream_errors: AtomicUsize,
}

fn mesh_yaml(enabled: &str, arn: &str, root_pem: &str) -> String {
    format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: {enabled}\n  backends:\n  - name: ca-1\n    type: builtin\n    dpCert:\n      rotation:\n        expiration: 24h\n    conf:\n      caCert:\n        keyType: ecdsa-p256\n  - name: acmpca-1\n    type: acmpca\n    dpCert:\n      rotation:\n        expiration: 24h\n      requestTimeout: 10s\n    conf:\n      arn: {arn}\n      caCert:\n        inlineString: |\n{}",
        indent(root_pem, 10)
    )
}

async fn rotation(
    args: &AcmpcaArgs,
    peer: &Peer,
    ca: &meshca_tests::acmpca::Ca,
) -> Result<(), BoxError> {
    let n = args.identities;
    let limit = RateLimit::new(
        args.rate,
        args.burst
            .unwrap_or_else(|| args.rate.ceil().clamp(1.0, f64::from(u32::MAX)) as u32),
    );
    let proxy = FaultProxy::start(&peer.moto.endpoint()).await;
    if args.aws_quota > 0.0 {
        proxy.quota(
            ISSUE_CERTIFICATE,
            args.aws_quota,
            args.aws_quota.ceil().clamp(1.0, f64::from(u32::MAX)) as u32,
        );
    }
    let sdk = Peer::sdk_at(&proxy.endpoint(), Some(&peer.user), REGION);
    let issued = Arc::new(AtomicUsize::new(0));
    let registry = meshca::registry().with(CountingAcmpca {
        inner: AcmpcaFactory::new()
            .with_aws_sdk_config(sdk)
            .with_rate_limit(limit),
        issued: issued.clone(),
    });
    let counter = Arc::new(Counter::default());
    let manager = Arc::new(
        Manager::builder(registry.clone(), Arc::new(OverlaySecretStore::new(None)))
            .limits(Limits::default().with_concurrency(args.max_concurrent_issues))
            .observer(counter.clone())
            .build(),
    );
    manager
        .apply(
            "bench",
            vec![Mesh::from_yaml(
                &mesh_yaml("ca-1", &ca.arn, &ca.root_pem),
                &registry,
            )?],
        )
        .await?;
    let scheduler = meshca::rotation::spawn(manager.clone(), RotationPolicy::new(0.8, 0.1));
    let mesh = MeshName::new("default")?;

    // Watch n identities on the builtin CA.
    let registering = Instant::now();
    let seen = Arc::new(Seen {
        rotated_ms: (0..n).map(|_| AtomicU32::new(0)).collect(),
        rotated: AtomicUsize::new(0),
        stream_errors: AtomicUsize::new(0),
    });
    let switched_at = Arc::new(OnceLock::<Instant>::new());
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..64.min(n) {
        let (manager, scheduler, mesh, seen, next, switched_at) = (
            manager.clone(),
            scheduler.clone(),
            mesh.clone(),
            seen.clone(),
            next.clone(),
            switched_at.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, BoxError>(());
                }
                let service = format!("svc-{i}");
                let identity =
                    Identity::new(mesh.clone(), [("kuma.io/service", service.as_str())])?;
                let first = manager.issue(identity.clone(), None).await?;
                let rx = scheduler.watch(identity, None, first)?;
                tokio::spawn(consume(rx, i, seen.clone(), switched_at.clone()));
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    eprintln!(
        "meshca-bench acmpca: {n} identities watched on the builtin CA in {:.1}s; switching the mesh to acmpca",
        registering.elapsed().as_secs_f64()
    );

    // Switch: every watcher needs a certificate from ACM PCA now.
    proxy.reset_counts();
    let issued_before = issued.load(Ordering::Relaxed);
    let switch_at = proxy.uptime();
    let started = Instant::now();
    let _ = switched_at.set(started);
    manager
        .apply(
            "bench",
            vec![Mesh::from_yaml(
                &mesh_yaml("acmpca-1", &ca.arn, &ca.root_pem),
                &registry,
            )?],
        )
        .await?;
    let applied_s = started.elapsed().as_secs_f64();
    // Paced at the limit it takes n / rate; allow three times that (a slow moto), plus a minute.
    let deadline = started + Duration::from_secs_f64(3.0 * n as f64 / limit.per_second + 60.0);
    let mut report_at = Instant::now() + Duration::from_secs(30);
    while seen.rotated.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= report_at {
            report_at += Duration::from_secs(30);
            let c = proxy.counts(ISSUE_CERTIFICATE);
            eprintln!(
                "meshca-bench acmpca: {:>4.0}s: {} of {n} rotated; IssueCertificate {} forwarded, {} throttled",
                started.elapsed().as_secs_f64(),
                seen.rotated.load(Ordering::Relaxed),
                c.forwarded,
                c.injected
            );
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let rotated = seen.rotated.load(Ordering::Relaxed);
    let last_ms = seen
        .rotated_ms
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);

    let issue = proxy.counts(ISSUE_CERTIFICATE);
    let get = proxy.counts(GET_CERTIFICATE);
    let arrivals: Vec<Duration> = proxy
        .arrivals(ISSUE_CERTIFICATE)
        .into_iter()
        .filter(|a| !a.injected)
        .map(|a| a.at)
        .collect();
    // From the switch to the last IssueCertificate that reached moto.
    let span = arrivals
        .last()
        .map_or(0.0, |t| t.saturating_sub(switch_at).as_secs_f64());
    let achieved = if span > 0.0 {
        arrivals.len() as f64 / span
    } else {
        0.0
    };
    let busiest = busiest_window(&arrivals, Duration::from_secs(1));
    // Certificates from acmpca: the watchers' plus the switch's test certificates.
    let certificates = issued.load(Ordering::Relaxed) - issued_before;
    let watchers = counter.issued("acmpca-1");
    let retries = issue.total().saturating_sub(certificates);
    let failed = counter.failed();
    // Watchers left without a certificate from the new CA, or whose stream failed. A failed
    // issue the scheduler retried successfully is counted apart.
    let errors = seen.stream_errors.load(Ordering::Relaxed) + (n - rotated.min(n));
    let failed_issues = failed.values().sum::<usize>();

    println!(
        "acmpca rotation: {n} watched identities switch CA (builtin -> acmpca) at once; rate limit {}/s burst {}; \
         AWS quota emulated by the proxy: {}; up to {} issues in flight",
        limit.per_second,
        limit.burst,
        if args.aws_quota > 0.0 {
            format!("{}/s", args.aws_quota)
        } else {
            "none".into()
        },
        args.max_concurrent_issues
    );
    println!(
        "  wall time: {:.1}s from the switch to the last watcher's new certificate (switch applied in {applied_s:.1}s; ideal at the limit {:.1}s)",
        f64::from(last_ms) / 1000.0,
        n as f64 / limit.per_second
    );
    println!("  rotated: {rotated} of {n} (waited {wall:.1}s)");
    println!(
        "  IssueCertificate reaching moto: {} ({certificates} certificates: {watchers} watchers', {} the switch's test certificates); achieved {achieved:.1}/s (switch to last); busiest 1 s window {busiest}",
        issue.forwarded,
        certificates.saturating_sub(watchers)
    );
    println!(
        "  attempts {}; throttled answers {}; retries (attempts - certificates) {retries}; GetCertificate {} ({:.2} per certificate)",
        issue.total(),
        issue.injected,
        get.total(),
        get.total() as f64 / certificates.max(1) as f64
    );
    println!(
        "  errors: {errors} (watchers without a new certificate); failed issues retried by the scheduler: {failed_issues}{}",
        if failed.is_empty() {
            String::new()
        } else {
            format!(" {failed:?}")
        }
    );
    let quota_binds = args.aws_quota > 0.0 && args.aws_quota < limit.per_second;
    if quota_binds {
        println!(
            "  NOTE: the rate limit ({}/s) is above the emulated AWS quota ({}/s): the excess is throttled and retried",
            limit.per_second, args.aws_quota
        );
    } else if rotated == n && achieved < 0.9 * limit.per_second {
        println!(
            "  NOTE: moto sustained only {achieved:.1} IssueCertificate/s on this machine, below the {}/s limit: this wave is bound by moto, not paced by the limit",
            limit.per_second
        );
    }
    if errors > 0 {
        return Err(format!("{errors} error(s) during the rotation run").into());
    }
    Ok(())
}

/// Reads every certificate of one watch; records when the one from the new CA arrived.
async fn consume(
    mut rx: WatchReceiver,
    i: usize,
    seen: Arc<Seen>,
    switched_at: Arc<OnceLock<Instant>>,
) {
    while let Some(r) = rx.recv().await {
        let Ok(r) = r else {
            seen.stream_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if r.reason == RotationReason::CaChange && r.backend == "acmpca-1" {
            let ms = switched_at.get().map_or(1, |t| {
                u32::try_from(t.elapsed().as_millis())
                    .unwrap_or(u32::MAX)
                    .max(1)
            });
            if seen.rotated_ms[i]
                .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                seen.rotated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The most of `times` (sorted) within any `window`.
fn busiest_window(times: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for (end, t) in times.iter().enumerate() {
        while *t - times[start] >= window {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busiest_window_slides() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|m| Duration::from_millis(*m))
                .collect::<Vec<_>>()
        };
        assert_eq!(busiest_window(&[], Duration::from_secs(1)), 0);
        assert_eq!(
            busiest_window(&ms(&[0, 100, 900, 999, 1500, 1999]), Duration::from_secs(1)),
            4
        );
    }
}
