//! `meshca serve --store postgres`: real issuer processes (replicas) sharing one real
//! PostgreSQL through Kuma's `resources` table. Replicas started at once end with one builtin
//! CA and one bootstrap TLS CA and look like one service; replicas killed with SIGKILL while
//! they start (and create the CAs) leave no second CA behind; without a usable URL `serve` refuses to start,
//! saying why and never showing the password.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use common::*;
use meshca_peers::postgres::{Postgres, PostgresOptions};

fn url(pg: &Postgres) -> String {
    format!("{}?sslmode=disable", pg.url())
}

/// A replica: its own data directory, the database's URL from the environment.
fn replica(url: &str) -> Server {
    let yaml = builtin_mesh("default", &["ca-1"], "ca-1", "24h");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Server::start_with_env(
        dir,
        data,
        &[("default.yaml", yaml.as_str())],
        &[
            "--store",
            "postgres",
            "--server-name",
            "issuer.example.internal",
        ],
        &[("MESHCA_POSTGRES_URL", url)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_database_serve_one_ca_even_after_a_kill() {
    bounded(240, async {
        let pg = Postgres::start(PostgresOptions::default()).await;
        let url = url(&pg);

        // Replicas killed with SIGKILL at several points of their start (schema, bootstrap CA,
        // mesh CA creation), one after another.
        for delay_ms in [30, 120, 250, 500] {
            let yaml = builtin_mesh("default", &["ca-1"], "ca-1", "24h");
            let dir = tempfile::tempdir().unwrap();
            let mesh_dir = dir.path().join("meshes");
            std::fs::create_dir_all(&mesh_dir).unwrap();
            std::fs::write(mesh_dir.join("default.yaml"), yaml).unwrap();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshca"))
                .args(["serve", "--store", "postgres", "--listen", "127.0.0.1:0"])
                .args(["--metrics-listen", "127.0.0.1:0", "--mesh-config"])
                .arg(&mesh_dir)
                .arg("--data-dir")
                .arg(dir.path().join("data"))
                .env("MESHCA_POSTGRES_URL", &url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            child.kill().unwrap();
            child.wait().unwrap();
        }

        let u = url.clone();
        let servers = tokio::task::spawn_blocking(move || {
            std::thread::scope(|s| {
                let started: Vec<_> = (0..3).map(|_| s.spawn(|| replica(&u))).collect();
                started
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .await
        .unwrap();

        // Exactly one row of each secret, in Kuma's types, however they raced.
        let rows = pg
            .execute("SELECT name, mesh, type FROM resources ORDER BY name")
            .await;
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
            .collect();
        assert_eq!(
            rows,
            [
                ["default.ca-builtin-cert-ca-1", "default", "Secret"],
                ["default.ca-builtin-key-ca-1", "default", "Secret"],
                ["meshca-bootstrap-tls", "", "GlobalSecret"],
                ["meshca-token-signing-key", "", "GlobalSecret"],
            ]
            .map(|r| r.map(str::to_owned).to_vec())
        );

        // One bootstrap CA, one builtin CA; each replica accepts another's admin certificate.
        let ca0 = std::fs::read(servers[0].tls_dir().join("ca.pem")).unwrap();
        for s in &servers {
            assert_eq!(std::fs::read(s.tls_dir().join("ca.pem")).unwrap(), ca0);
        }
        let mut bundles = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            bundles.push(bundle_of(s, &servers[(i + 1) % servers.len()]).await);
        }
        assert!(bundles.iter().all(|b| *b == bundles[0]), "{bundles:?}");

        // Issuance from one replica verifies against another's bundle (openssl).
        let dir = tempfile::tempdir().unwrap();
        issue_across_replicas(&servers, &bundles[1], dir.path()).await;
        for s in &servers {
            assert!(!s.log().contains(pg.password()), "the password in a log");
        }
    })
    .await;
}

#[test]
fn without_a_usable_url_serve_says_why_and_hides_the_password() {
    let (ok, _, err) = run_cli(&["serve", "--store", "postgres", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(err.contains("needs --postgres-url"), "{err}");
    let (ok, _, err) = run_cli(&[
        "serve",
        "--store",
        "postgres",
        "--postgres-url",
        "postgres://meshca:hunter2-secret@127.0.0.1:1/x?sslmode=require",
    ]);
    assert!(!ok);
    assert!(err.contains("no sslrootcert"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let (ok, _, err) = run_cli(&[
        "serve",
        "--postgres-url",
        "postgres://meshca:pw@127.0.0.1:1/x?sslmode=disable",
    ]);
    assert!(!ok);
    assert!(err.contains("applies to --store postgres only"), "{err}");
}
