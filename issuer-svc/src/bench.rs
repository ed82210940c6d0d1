//! `meshca bench-rotation` (hidden): the real rotation scheduler in-process, with N watched
//! identities of a builtin P-256 mesh, measuring initial issuance, idle memory, and how long and
//! how evenly one rotation of every identity takes.
//!
//! Watchers go through `IssuerService::watch_certificate` itself (no network, no TLS: the
//! service sees a plaintext caller, i.e. the admin), so the scheduler, the guarded issuer and
//! the per-watcher channel are exactly what `meshca serve` runs. Like a Kuma control plane, the
//! watchers send no CSR: meshca generates a P-256 key for every certificate.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_core::{DirectorySecretStore, SecretStore};
use clap::Args;
use tokio_stream::StreamExt as _;
use tonic::Request;

use crate::authz::Policy;
use crate::issuer::{Issuer, Limits};
use crate::metrics::Metrics;
use crate::proto::issuer_server::Issuer as _;
use crate::proto::{IssueCertificateRequest, Tag};
use crate::registry::{BuildContext, Registry};
use crate::rotation::RotationPolicy;
use crate::service::IssuerService;
use crate::state::{ConfigSource, Manager};
use crate::util::{AppError, Context};

/// `meshca bench-rotation`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Watched identities (`kuma.io/service=svc-<i>`), each its own WatchCertificate stream.
    #[arg(long, default_value_t = 100_000)]
    identities: usize,
    /// `dpCert.rotation.expiration` of the mesh (whole seconds, at least 1s).
    #[arg(long, default_value = "60s", value_parser = crate::cli::parse_duration)]
    lifetime: Duration,
    /// Fraction of the lifetime after which watchers rotate (as `serve --rotate-fraction`).
    #[arg(long, default_value_t = 0.8)]
    rotate_fraction: f64,
    /// As `serve --rotate-jitter`.
    #[arg(long, default_value_t = 0.1)]
    rotate_jitter: f64,
    /// As `serve --max-concurrent-issues`.
    #[arg(long, default_value_t = 32)]
    max_concurrent_issues: usize,
    /// WatchCertificate calls in flight while registering.
    #[arg(long, default_value_t = 256)]
    register_concurrency: usize,
    /// Write the figures as one JSON object to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// What a consumer saw; one slot per identity.
struct Seen {
    /// Milliseconds since the bench started at which identity i received its first rotation; 0
    /// while it has not.
    first_rotation_ms: Vec<AtomicU32>,
    /// Milliseconds since the bench started at which identity i got its initial certificate.
    registered_ms: Vec<AtomicU32>,
    rotated: AtomicUsize,
    pushes: AtomicUsize,
    stream_errors: AtomicUsize,
}

pub(crate) async fn bench_rotation(a: BenchArgs) -> Result<(), AppError> {
    let n = a.identities.max(1);
    let lifetime_s = a.lifetime.as_secs().max(1);
    let dir = TempDir::new()?;
    let mesh_dir = dir.0.join("meshes");
    std::fs::create_dir_all(&mesh_dir).ctx(|| format!("cannot create {}", mesh_dir.display()))?;
    let yaml = format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: {lifetime_s}s\n      conf:\n        caCert:\n          keyType: ecdsa-p256\n"
    );
    std::fs::write(mesh_dir.join("default.yaml"), yaml).ctx(|| "cannot write the mesh".into())?;

    let store: Arc<dyn SecretStore> = Arc::new(DirectorySecretStore::new(dir.0.join("secrets"))?);
    let metrics = Arc::new(Metrics::default());
    let issuer = Arc::new(Issuer::new(
        Limits {
            concurrency: a.max_concurrent_issues,
            ..Limits::default()
        },
        metrics.clone(),
    ));
    let registry = Registry::new();
    let manager = Arc::new(Manager::new(
        registry.clone(),
        BuildContext {
            store: store.clone(),
            sources: ca_core::SourcePolicy::local(),
        },
        ConfigSource::Dir(mesh_dir),
        metrics.clone(),
    ));
    if manager.reload().await > 0 {
        return Err(AppError("the bench mesh was refused (see the log)".into()));
    }
    let rotation = RotationPolicy {
        fraction: a.rotate_fraction,
        jitter: a.rotate_jitter,
    };
    let scheduler = crate::rotation::spawn(manager.clone(), issuer.clone(), rotation);
    let service = Arc::new(IssuerService {
        manager,
        issuer,
        scheduler,
        policy: Policy::default(),
        rotation,
        registry,
        store,
        operator_roots: None,
        callers: Default::default(),
        remote_sources: ca_core::SourcePolicy::remote(None, Vec::new()).map_err(AppError)?,
        validations: Arc::new(tokio::sync::Semaphore::new(1)),
    });

    let seen = Arc::new(Seen {
        first_rotation_ms: (0..n).map(|_| AtomicU32::new(0)).collect(),
        registered_ms: (0..n).map(|_| AtomicU32::new(0)).collect(),
        rotated: AtomicUsize::new(0),
        pushes: AtomicUsize::new(0),
        stream_errors: AtomicUsize::new(0),
    });
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let register_errors = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..a.register_concurrency.clamp(1, n))
        .map(|_| {
            let (service, seen, next, errors) = (
                service.clone(),
                seen.clone(),
                next.clone(),
                register_errors.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let req = IssueCertificateRequest {
                        mesh: "default".into(),
                        tags: vec![Tag {
                            name: "kuma.io/service".into(),
                            value: format!("svc-{i}"),
                        }],
                        csr: Vec::new(),
                    };
                    match service.watch_certificate(Request::new(req)).await {
                        Ok(resp) => {
                            seen.registered_ms[i].store(ms_since(start), Ordering::Relaxed);
                            tokio::spawn(consume(resp.into_inner(), i, start, seen.clone()));
                        }
                        Err(status) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("meshca: watch svc-{i} refused: {status}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await.ctx(|| "registration task".into())?;
    }
    let register_s = start.elapsed().as_secs_f64();
    let idle_rss = proc_status_kib("VmRSS:");
    let rotating_already = seen.rotated.load(Ordering::Relaxed) > 0;
    let registered = n - register_errors.load(Ordering::Relaxed);
    eprintln!(
        "meshca: registered {registered} watchers in {register_s:.2}s; idle RSS {:.1} MiB{}",
        mib(idle_rss),
        if rotating_already {
            " (rotations had already started: use a longer --lifetime)"
        } else {
            ""
        }
    );

    // Every registered identity rotates by ~fraction × lifetime after its issuance; allow for a
    // slow issuer, then give up and count the rest as errors.
    let deadline = start
        + Duration::from_secs_f64(register_s)
        + a.lifetime.mul_f64(a.rotate_fraction.clamp(0.0, 1.0))
        + Duration::from_secs(60);
    while seen.rotated.load(Ordering::Relaxed) < registered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let peak_rss = proc_status_kib("VmHWM:");

    let times = sorted(&seen.first_rotation_ms);
    let rotated = times.len();
    let (t0, t1) = (
        times.first().copied().unwrap_or(0),
        times.last().copied().unwrap_or(0),
    );
    let rotation_wall_s = f64::from(t1 - t0) / 1000.0;
    let per_second = per_second(&times);
    let max_second = per_second.iter().copied().max().unwrap_or(0);
    // Over at least a second, so a wave shorter than a second has a ratio of 1, not less.
    let mean = rotated as f64 / rotation_wall_s.max(1.0);
    let ratio = if mean > 0.0 {
        max_second as f64 / mean
    } else {
        0.0
    };
    let errors = register_errors.load(Ordering::Relaxed)
        + seen.stream_errors.load(Ordering::Relaxed)
        + (registered - rotated.min(registered));
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);

    println!("bench-rotation: {n} identities, lifetime {lifetime_s}s, {cores} cores");
    println!("  register (initial issuance): {register_s:.2}s");
    println!("  idle RSS: {:.1} MiB", mib(idle_rss));
    println!(
        "  rotation wave: {rotated} rotated once in {rotation_wall_s:.2}s (first to last); {} pushes in all",
        seen.pushes.load(Ordering::Relaxed)
    );
    println!("  rotations/s: mean {mean:.0}, busiest second {max_second} (ratio {ratio:.2})");
    println!("  rotations per second: {per_second:?}");
    println!(
        "  registrations per second: {:?}",
        self::per_second(&sorted(&seen.registered_ms))
    );
    println!("  peak RSS: {:.1} MiB", mib(peak_rss));
    println!("  errors: {errors}");

    if let Some(path) = &a.json_out {
        let mut j = String::from("{");
        let _ = write!(
            j,
            "\"identities\":{n},\"lifetime_s\":{lifetime_s},\"register_s\":{register_s:.3},\"idle_rss_mib\":{:.1},\"rotation_wall_s\":{rotation_wall_s:.3},\"rotations_per_s_mean\":{mean:.1},\"rotations_per_s_max_second\":{max_second},\"max_to_mean_ratio\":{ratio:.3},\"peak_rss_mib\":{:.1},\"errors\":{errors},\"cores\":{cores}",
            mib(idle_rss),
            mib(peak_rss)
        );
        j.push_str("}\n");
        std::fs::write(path, j).ctx(|| format!("cannot write {}", path.display()))?;
    }
    if errors > 0 {
        return Err(AppError(format!("{errors} error(s) during the bench")));
    }
    Ok(())
}

/// Reads every message of one watcher's stream, as a data plane would.
async fn consume(
    mut stream: crate::rotation::WatchStream,
    i: usize,
    start: Instant,
    seen: Arc<Seen>,
) {
    while let Some(msg) = stream.next().await {
        match msg {
            Ok(m) => {
                seen.pushes.fetch_add(1, Ordering::Relaxed);
                if m.reason != "initial" {
                    let ms = ms_since(start);
                    if seen.first_rotation_ms[i]
                        .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed)
                        .is_ok()
                    {
                        seen.rotated.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Err(_) => {
                seen.stream_errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Milliseconds since `start`, at least 1 (0 means "not yet").
fn ms_since(start: Instant) -> u32 {
    u32::try_from(start.elapsed().as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

/// How many of `times` (milliseconds, sorted, 0s left out) fall in each second from the first.
fn per_second(times: &[u32]) -> Vec<u64> {
    let (Some(t0), Some(t1)) = (times.first(), times.last()) else {
        return Vec::new();
    };
    let mut out = vec![0u64; ((t1 - t0) / 1000) as usize + 1];
    for t in times {
        out[((t - t0) / 1000) as usize] += 1;
    }
    out
}

fn sorted(slots: &[AtomicU32]) -> Vec<u32> {
    let mut v: Vec<u32> = slots
        .iter()
        .map(|t| t.load(Ordering::Relaxed))
        .filter(|t| *t > 0)
        .collect();
    v.sort_unstable();
    v
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A `/proc/self/status` field in KiB (0 where there is no procfs).
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, AppError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!("meshca-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).ctx(|| format!("cannot create {}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
