//! `meshca-bench vault`: the vault backend against real OpenBao on loopback, next
//! to the builtin backend, in-process through the library's issuance path (`issue_certificate`:
//! the request, Vault's answer, core's checks). Prints certificates/s and latency for each, and
//! the latency the Vault round trip adds over builtin. Then a burst: `--burst` issues for
//! distinct identities at once through the library's `Manager` (the issuer's path, with its
//! concurrency limit), zero errors required.
//!
//! OpenBao runs as a dev server (in-memory storage, one process on the same cores): the
//! figures say what meshca's client costs (HTTP/1.1 over rustls, JSON, PEM, core's checks)
//! plus OpenBao's own PKI engine, not what a production Vault cluster with durable storage
//! sustains. Vault requests are counted from OpenBao's audit log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::{issue_certificate, CertificateAuthority, IssueParams, KeySource, KeyType};
use meshca_tests::checks::{identity, mesh};
use meshca_tests::openbao::Peer;
use meshca_tests::vault::{Auth, Role};
use meshca_tests::Fixture;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `meshca-bench vault`.
#[derive(Debug, clap::Args)]
pub(crate) struct VaultArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent callers (comma-separated).
    #[arg(long, default_value = "1,16")]
    concurrency: String,
    /// Then this many issues for distinct identities at once through the library's `Manager`
    /// (the issuer's path: guard, concurrency limit, circuit), issue mode (0: none).
    #[arg(long, default_value_t = 10_000)]
    burst: usize,
    /// As `serve --max-concurrent-issues` for the burst.
    #[arg(long, default_value_t = 32)]
    max_concurrent_issues: usize,
}

/// Certificates/s and latency of one measurement.
pub(crate) struct Figures {
    pub(crate) per_second: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) count: usize,
}

/// `concurrency` callers issuing through `ca` for `seconds` (after 3 warm-up certificates).
pub(crate) async fn measure(
    ca: Arc<dyn CertificateAuthority>,
    key: KeyType,
    concurrency: usize,
    seconds: u64,
) -> Result<Figures, BoxError> {
    // Warm up: connections, login, trust bundle.
    for _ in 0..3 {
        issue_one(ca.as_ref(), key).await?;
    }
    let end = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let ca = ca.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                issue_one(ca.as_ref(), key).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, BoxError>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Figures {
        per_second: all.len() as f64 / wall,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        count: all.len(),
    })
}

async fn issue_one(ca: &dyn CertificateAuthority, key: KeyType) -> Result<(), BoxError> {
    issue_certificate(
        ca,
        IssueParams::new(
            identity("default", "web"),
            KeySource::Generate(key),
            DEFAULT_DP_CERT_EXPIRATION,
        ),
    )
    .await?;
    Ok(())
}

pub(crate) fn run(args: VaultArgs) -> Result<(), BoxError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let levels: Vec<usize> = args
            .concurrency
            .split(',')
            .map(|c| c.trim().parse())
            .collect::<Result<_, _>>()?;
        let builtin = meshca_tests::fixtures::Builtin::p256();
        let builtin = builtin
            .backend(&mesh("default"), DEFAULT_DP_CERT_EXPIRATION)
            .await;
        let peer = Peer::start(Auth::Token).await;
        let mut vault = Vec::new();
        for mode in ["issue", "sign"] {
            let name = format!("m{mode}");
            peer.mount(
                &name,
                Role {
                    mode,
                    key_type: if mode == "sign" { "any" } else { "ec" },
                    allowed_uri_sans: Some("spiffe://default/*,kuma://*"),
                },
            )
            .await;
            let yaml = peer
                .mesh_yaml(&name, mode, &peer.auth_yaml(Auth::Token).await, "")
                .replace(&format!("name: {name}\n"), "name: default\n");
            // Held as the manager holds every backend: its trust bundle kept.
            let ca: Arc<dyn CertificateAuthority> =
                Arc::new(peer.held(&yaml, DEFAULT_DP_CERT_EXPIRATION).await?);
            vault.push((mode, ca));
        }
        println!("meshca-bench vault: {}s per figure, P-256 keys, OpenBao dev server on 127.0.0.1 (TLS)", args.seconds);
        for &c in &levels {
            let b = measure(builtin.clone(), KeyType::EcdsaP256, c, args.seconds).await?;
            println!(
                "builtin        {c:>3} callers  {:>8.0} certs/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} certs)",
                b.per_second, b.p50_ms, b.p99_ms, b.count
            );
            for (mode, ca) in &vault {
                peer.bao.clear_requests();
                let v = measure(ca.clone(), KeyType::EcdsaP256, c, args.seconds).await?;
                let requests = peer.bao.requests().len();
                println!(
                    "vault ({mode:<5}) {c:>3} callers  {:>8.0} certs/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} certs, {:.2} Vault requests each; +{:.2} ms p50 over builtin)",
                    v.per_second,
                    v.p50_ms,
                    v.p99_ms,
                    v.count,
                    requests as f64 / (v.count + 3) as f64,
                    v.p50_ms - b.p50_ms
                );
            }
        }
        if args.burst > 0 {
            let yaml = peer
                .mesh_yaml("missue", "issue", &peer.auth_yaml(Auth::Token).await, "")
                .replace("name: missue\n", "name: default\n");
            burst(&peer, &yaml, args.burst, args.max_concurrent_issues).await?;
        }
        Ok(())
    })
}

/// `n` issues for distinct identities started at once through a `Manager` over the vault mesh
/// `yaml`, at most `max` in flight to Vault.
async fn burst(peer: &Peer, yaml: &str, n: usize, max: usize) -> Result<(), BoxError> {
    let manager = Arc::new(
        meshca::Manager::builder(
            meshca::registry(),
            Arc::new(meshca::OverlaySecretStore::new(None)),
        )
        .limits(meshca::Limits::default().with_concurrency(max))
        .build(),
    );
    manager
        .apply(
            "bench",
            vec![ca_core::config::Mesh::from_yaml(yaml, &meshca::registry())?],
        )
        .await?;
    peer.bao.clear_requests();
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..n {
        let manager = manager.clone();
        calls.spawn(async move {
            let t = Instant::now();
            let id = identity("default", &format!("svc-{i}"));
            manager.issue(id, None).await.map(|_| t.elapsed())
        });
    }
    let mut lat = Vec::with_capacity(n);
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    while let Some(r) = calls.join_next().await {
        match r? {
            Ok(d) => lat.push(d),
            Err(e) => *errors.entry(e.kind().label().to_owned()).or_default() += 1,
        }
    }
    let wall = started.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "vault burst: {n} issues for distinct identities at once through the Manager (at most {max} in flight to Vault): {wall:.1}s, {:.0} certs/s, p50 {:.0} ms, p99 {:.0} ms; {} certificates, {} Vault requests; errors: {}",
        lat.len() as f64 / wall,
        pct(0.5),
        pct(0.99),
        lat.len(),
        peer.bao.requests().len(),
        if errors.is_empty() { "0".to_owned() } else { format!("{errors:?}") }
    );
    if !errors.is_empty() {
        return Err(format!("{} of {n} issues failed", n - lat.len()).into());
    }
    Ok(())
}
