//! `meshca-bench replicas`: N real `meshca serve` processes started at once on one shared store,
//! for several rounds (a fresh store each): `--store kubernetes` against the Kubernetes API test
//! server, or `--store postgres` against a real PostgreSQL (an empty database each round). Per
//! round: how many builtin CAs and bootstrap TLS CAs exist afterwards (must be one each), how
//! many distinct trust bundles the replicas serve (must be one), for Kubernetes how many Secret
//! creations lost the race (`409 AlreadyExists`, read the winner's), and how long until every
//! replica was ready. Exits non-zero when any round ends with more than one CA or bundle.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use issuer_svc::proto::issuer_client::IssuerClient;
use issuer_svc::proto::GetTrustBundleRequest;
use meshca_peers::postgres::{Postgres, PostgresOptions};
use meshca_peers::KubeApiServer;
use meshca_tests::certmanager::write_kubeconfig;
use tonic::transport::Endpoint;

use crate::load::tls_config;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const NS: &str = "kuma-system";
const MESH: &str = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n";

/// The store the replicas share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Store {
    /// Kubernetes Secrets (the API test server).
    Kubernetes,
    /// Kuma's `resources` table in a real PostgreSQL.
    Postgres,
}

/// `meshca-bench replicas`.
#[derive(Debug, clap::Args)]
pub(crate) struct ReplicasArgs {
    /// The store the replicas share.
    #[arg(long, value_enum, default_value_t = Store::Kubernetes)]
    store: Store,
    /// Issuer processes started at once per round.
    #[arg(long, default_value_t = 10)]
    replicas: usize,
    /// Rounds, each against a fresh API server.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Round trip added by the API server to every call, in milliseconds (a real one is a
    /// network hop away; 0 on loopback makes races rare). Kubernetes only.
    #[arg(long, default_value_t = 5)]
    api_latency_ms: u64,
    /// The `meshca` binary (default: next to this one).
    #[arg(long)]
    meshca: Option<PathBuf>,
}

/// One started replica; killed on drop.
struct Replica {
    child: Child,
    grpc: String,
    data_dir: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Secrets one round must end with (see [`Round::secrets`]).
const SECRETS: usize = 4;

/// What one round found.
struct Round {
    ready_max: Duration,
    /// Secret creations sent and lost (Kubernetes only: PostgreSQL's `ON CONFLICT DO NOTHING`
    /// leaves no trace of a lost race).
    posts: Option<(usize, usize)>,
    /// Secrets in the namespace afterwards: the builtin CA's two, the bootstrap TLS CA and the
    /// token signing key, each made once however the replicas raced.
    secrets: usize,
    /// Distinct bootstrap TLS CAs (`tls/ca.pem`) among the replicas.
    bootstrap_cas: usize,
    /// Distinct trust bundles (builtin CAs) the replicas serve.
    bundles: usize,
}

pub(crate) fn run(args: ReplicasArgs) -> Result<(), BoxError> {
    if args.replicas == 0 || args.replicas > 64 || args.rounds == 0 {
        return Err("--replicas must be 1..=64 and --rounds at least 1".into());
    }
    let meshca = match &args.meshca {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .ok_or("no directory of this binary")?
            .join("meshca"),
    };
    if !meshca.is_file() {
        return Err(format!(
            "{} does not exist: build it (cargo build -p issuer-svc) or pass --meshca",
            meshca.display()
        )
        .into());
    }
    println!(
        "replicas: {} `meshca serve --store {}` processes started at once, {} rounds{}",
        args.replicas,
        match args.store {
            Store::Kubernetes => "kubernetes",
            Store::Postgres => "postgres",
        },
        args.rounds,
        if args.store == Store::Kubernetes {
            format!(", API round trip {} ms", args.api_latency_ms)
        } else {
            ", real PostgreSQL on loopback (an empty database each round)".to_owned()
        }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut rounds = Vec::new();
    for i in 1..=args.rounds {
        let latency = Duration::from_millis(args.api_latency_ms);
        let r = match args.store {
            Store::Kubernetes => rt.block_on(round_kubernetes(&meshca, args.replicas, latency))?,
            Store::Postgres => rt.block_on(round_postgres(&meshca, args.replicas))?,
        };
        let races = r.posts.map_or(String::new(), |(posts, lost)| {
            format!(
                "Secret creations {posts} ({lost} lost the race: 409 AlreadyExists, read the winner's), "
            )
        });
        println!(
            "round {i}: all ready in {:.2} s; {races}secrets stored {}; builtin CAs served {}, bootstrap TLS CAs {}",
            r.ready_max.as_secs_f64(),
            r.secrets,
            r.bundles,
            r.bootstrap_cas
        );
        rounds.push(r);
    }
    let one = |f: fn(&Round) -> usize| rounds.iter().filter(|r| f(r) == 1).count();
    let (cas, boots) = (one(|r| r.bundles), one(|r| r.bootstrap_cas));
    let slowest = rounds.iter().map(|r| r.ready_max).max().unwrap_or_default();
    println!(
        "summary: one builtin CA served by all replicas in {cas} of {n} rounds, one bootstrap TLS CA in {boots} of {n}; lost create races {lost} in all; slowest round ready in {:.2} s",
        slowest.as_secs_f64(),
        n = rounds.len(),
        lost = rounds.iter().filter_map(|r| r.posts).map(|p| p.1).sum::<usize>(),
    );
    if cas != rounds.len() || boots != rounds.len() || rounds.iter().any(|r| r.secrets != SECRETS) {
        return Err(
            "some round did not end with exactly one builtin CA, one bootstrap CA and one token signing key".into(),
        );
    }
    Ok(())
}

async fn round_kubernetes(meshca: &Path, n: usize, latency: Duration) -> Result<Round, BoxError> {
    let api = KubeApiServer::start().await;
    api.set_latency(latency);
    let tmp = tempfile::tempdir()?;
    let kubeconfig = write_kubeconfig(tmp.path(), &api.url());
    let (ready_max, bundles, bootstrap_cas) = start_replicas(meshca, n, tmp.path(), |c| {
        c.args(["--store", "kubernetes"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST");
    })
    .await?;
    let names = api.names("secrets", NS);
    let posts = api
        .writes()
        .iter()
        .filter(|w| w.method == "POST" && w.path.ends_with("/secrets"))
        .count();
    Ok(Round {
        ready_max,
        posts: Some((posts, posts.saturating_sub(names.len()))),
        secrets: names.len(),
        bootstrap_cas,
        bundles,
    })
}

async fn round_postgres(meshca: &Path, n: usize) -> Result<Round, BoxError> {
    let pg = Postgres::start(PostgresOptions::default()).await;
    let tmp = tempfile::tempdir()?;
    let url = format!("{}?sslmode=disable", pg.url());
    let (ready_max, bundles, bootstrap_cas) = start_replicas(meshca, n, tmp.path(), |c| {
        c.args(["--store", "postgres"])
            .env("MESHCA_POSTGRES_URL", &url);
    })
    .await?;
    let secrets = pg
        .execute("SELECT name FROM resources WHERE type IN ('Secret', 'GlobalSecret')")
        .await
        .len();
    Ok(Round {
        ready_max,
        posts: None,
        secrets,
        bootstrap_cas,
        bundles,
    })
}

/// Starts `n` replicas at once (`store` adds the store's flags and environment), waits until
/// all are ready, and returns how long that took, the distinct trust bundles they serve and
/// the distinct bootstrap CAs they hold.
async fn start_replicas(
    meshca: &Path,
    n: usize,
    tmp: &Path,
    store: impl Fn(&mut Command),
) -> Result<(Duration, usize, usize), BoxError> {
    let meshes = tmp.join("meshes");
    std::fs::create_dir_all(&meshes)?;
    std::fs::write(meshes.join("default.yaml"), MESH)?;

    let started = Instant::now();
    let mut pending = Vec::new();
    for i in 0..n {
        let data_dir = tmp.join(format!("replica-{i}"));
        let stderr = std::fs::File::create(tmp.join(format!("replica-{i}.log")))?;
        let mut command = Command::new(meshca);
        command
            .args(["serve", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--mesh-config")
            .arg(&meshes)
            .stdout(Stdio::piped())
            .stderr(stderr);
        store(&mut command);
        let mut child = command.spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut grpc = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("meshca: grpc listening on ") {
                    grpc = rest.split_whitespace().next().map(str::to_owned);
                }
                if line == "meshca: ready" {
                    let _ = tx.send((grpc.take(), Instant::now()));
                }
            }
        });
        pending.push((child, rx, data_dir, i));
    }
    let mut replicas = Vec::new();
    let mut ready_max = Duration::ZERO;
    for (child, rx, data_dir, i) in pending {
        let mut replica = Replica {
            child,
            grpc: String::new(),
            data_dir,
        };
        let (grpc, at) =
            tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(60)))
                .await?
                .map_err(|_| {
                    let log = std::fs::read_to_string(tmp.join(format!("replica-{i}.log")))
                        .unwrap_or_default();
                    format!("replica {i} did not become ready within 60 s:\n{log}")
                })?;
        replica.grpc = grpc.ok_or("no gRPC address printed")?;
        ready_max = ready_max.max(at.duration_since(started));
        replicas.push(replica);
    }

    // Every replica's bundle, asked with the next replica's admin certificate (one bootstrap CA
    // makes that work).
    let mut bundles = std::collections::BTreeSet::new();
    let mut bootstrap = std::collections::BTreeSet::new();
    for (i, r) in replicas.iter().enumerate() {
        bootstrap.insert(std::fs::read(r.data_dir.join("tls").join("ca.pem"))?);
        let admin_of = &replicas[(i + 1) % replicas.len()];
        let tls = tls_config(&admin_of.data_dir.join("tls"))?;
        let channel = Endpoint::from_shared(format!("https://{}", r.grpc))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let bundle = IssuerClient::new(channel)
            .get_trust_bundle(GetTrustBundleRequest {
                mesh: "default".into(),
            })
            .await?
            .into_inner()
            .trust_bundle_pem;
        bundles.insert(bundle);
    }
    drop(replicas);
    Ok((ready_max, bundles.len(), bootstrap.len()))
}
