//! `meshca-bench rotation`: the library's rotation scheduler in-process, with N watched
//! identities of a builtin P-256 mesh, measuring initial issuance, idle memory, and how long and
//! how evenly one rotation of every identity takes.
//!
//! Watchers go through `Manager::issue` and `Scheduler::watch`, the same path `meshca serve`'s
//! WatchCertificate takes below the gRPC edge, so the scheduler, the guarded issue path and the
//! per-watcher channel are exactly what the server runs. Like a Kuma control plane, the watchers
//! send no CSR: meshca generates a P-256 key for every certificate.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use meshca::config::Mesh;
use meshca::{
    Identity, Limits, Manager, MeshName, OverlaySecretStore, RotationPolicy, RotationReason,
    WatchReceiver,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `meshca-bench rotation`.
#[derive(Debug, Args)]
pub(crate) struct RotationArgs {
    /// Watched identities (`kuma.io/service=svc-<i>`), each its own watch.
    #[arg(long, default_value_t = 100_000)]
    identities: usize,
    /// `dpCert.rotation.expiration` of the mesh in whole seconds (at least 1).
    #[arg(long, default_value_t = 60)]
    lifetime_secs: u64,
    /// Fraction of the lifetime after which watchers rotate (as `serve --rotate-fraction`).
    #[arg(long, default_value_t = 0.8)]
    rotate_fraction: f64,
    /// As `serve --rotate-jitter`.
    #[arg(long, default_value_t = 0.1)]
    rotate_jitter: f64,
    /// As `serve --max-concurrent-issues`.
    #[arg(long, default_value_t = 32)]
    max_concurrent_issues: usize,
    /// Watches being registered at once.
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

pub(crate) fn run(a: RotationArgs) -> Result<(), BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(bench(a))
}

async fn bench(a: RotationArgs) -> Result<(), BoxError> {
    let n = a.identities.max(1);
    let lifetime_s = a.lifetime_secs.max(1);
    let lifetime = Duration::from_secs(lifetime_s);
    let yaml = format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: {lifetime_s}s\n      conf:\n        caCert:\n          keyType: ecdsa-p256\n"
    );
    // The builtin CA in memory: nothing to clean up.
    let manager = Arc::new(
        Manager::builder(meshca::registry(), Arc::new(OverlaySecretStore::new(None)))
            .limits(Limits::default().with_concurrency(a.max_concurrent_issues))
            .build(),
    );
    manager
        .apply("bench", vec![Mesh::from_yaml(&yaml, &meshca::registry())?])
        .await?;
    let scheduler = meshca::rotation::spawn(
        manager.clone(),
        RotationPolicy::new(a.rotate_fraction, a.rotate_jitter),
    );
    let mesh = MeshName::new("default")?;

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
            let (manager, scheduler, mesh, seen, next, errors) = (
                manager.clone(),
                scheduler.clone(),
                mesh.clone(),
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
                    let service = format!("svc-{i}");
                    let watched = async {
                        let identity =
                            Identity::new(mesh.clone(), [("kuma.io/service", service.as_str())])?;
                        let first = manager.issue(identity.clone(), None).await?;
                        scheduler.watch(identity, None, first)
                    };
                    match watched.await {
                        Ok(rx) => {
                            seen.registered_ms[i].store(ms_since(start), Ordering::Relaxed);
                            tokio::spawn(consume(rx, i, start, seen.clone()));
                        }
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) < 5 {
                                eprintln!("meshca-bench: watch svc-{i} refused: {e}");
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    let register_s = start.elapsed().as_secs_f64();
    let idle_rss = proc_status_kib("VmRSS:");
    let rotating_already = seen.rotated.load(Ordering::Relaxed) > 0;
    let registered = n - register_errors.load(Ordering::Relaxed);
    eprintln!(
        "meshca-bench: registered {registered} watchers in {register_s:.2}s; idle RSS {:.1} MiB{}",
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
        + lifetime.mul_f64(a.rotate_fraction.clamp(0.0, 1.0))
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

    println!("rotation: {n} identities, lifetime {lifetime_s}s, {cores} cores");
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
        std::fs::write(path, j)?;
    }
    if errors > 0 {
        return Err(format!("{errors} error(s) during the bench").into());
    }
    Ok(())
}

/// Reads every certificate of one watch, as a data plane would.
async fn consume(mut rx: WatchReceiver, i: usize, start: Instant, seen: Arc<Seen>) {
    while let Some(r) = rx.recv().await {
        let Ok(r) = r else {
            seen.stream_errors.fetch_add(1, Ordering::Relaxed);
            return;
        };
        seen.pushes.fetch_add(1, Ordering::Relaxed);
        if r.reason != RotationReason::Initial {
            let ms = ms_since(start);
            if seen.first_rotation_ms[i]
                .compare_exchange(0, ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                seen.rotated.fetch_add(1, Ordering::Relaxed);
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
