//! `meshca serve --mesh-source kubernetes|postgres`: the Meshes Kuma already keeps, followed.
//!
//! Against the Kubernetes API test server with Kuma's Mesh CRD (`meshes.kuma.io`): a Mesh
//! created is served; `enabledBackend` switched starts a CA switch (both roots in the bundle); a
//! broken Mesh is refused, the previous one keeps serving, and one `MeshRefused` Event regards
//! it; a deleted Mesh is NotFound; the API server restarted, its history compacted (410, a new
//! list), or its Meshes lost (a list of nothing) drops no mesh. Without Kuma's CRD or without
//! RBAC, `serve` refuses to start, saying which.
//!
//! Against a real PostgreSQL: the same flows from Kuma's `Mesh` rows of `resources`, with a
//! database restart in between.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::future::Future;
use std::time::Duration;

use common::*;
use meshca_peers::postgres::{Postgres, PostgresOptions};
use meshca_peers::KubeApiServer;
use meshca_tests::certmanager::write_kubeconfig;
use serde_json::{json, Value};
use tonic::Code;

/// A Mesh spec (protobuf JSON, as Kuma keeps it) with builtin backends `names`.
fn spec(enabled: &str, names: &[&str]) -> Value {
    let backends: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({"name": n, "type": "builtin",
                "dpCert": {"rotation": {"expiration": "24h"}},
                "conf": {"caCert": {"RSAbits": 2048, "expiration": "10y"}}})
        })
        .collect();
    json!({"mtls": {"enabledBackend": enabled, "backends": backends}})
}

/// Issues for `mesh`: Ok, or the gRPC code.
async fn issue(server: &Server, mesh: &str) -> Result<(), Code> {
    server
        .admin()
        .await
        .issue_certificate(request(mesh, &[("kuma.io/service", "web")]))
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

/// The roots of `mesh`'s trust bundle.
async fn roots(server: &Server, mesh: &str) -> usize {
    let bundle = server
        .admin()
        .await
        .get_trust_bundle(issuer_svc::proto::GetTrustBundleRequest { mesh: mesh.into() })
        .await
        .unwrap()
        .into_inner()
        .trust_bundle_pem;
    pem::parse_many(bundle).unwrap().len()
}

/// Waits until `check` holds (the caller's `bounded` ends a wait that never does).
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let mut tries = 0u64;
    while !check().await {
        tries += 1;
        if tries.is_multiple_of(100) {
            eprintln!("still waiting: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `meshca serve --mesh-source kubernetes` against `kubeconfig`, the CAs in Kuma's Secrets
/// (`--store kubernetes`), as `deploy/kubernetes/kuma-meshes/` runs it.
fn kube_server(kubeconfig: &std::path::Path) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Server::start_with_env(
        dir,
        data,
        &[],
        &[
            "--mesh-source",
            "kubernetes",
            "--store",
            "kubernetes",
            "--namespace",
            "kuma-system",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
}

fn refused_events(api: &KubeApiServer, mesh: &str) -> Vec<Value> {
    api.events("default")
        .into_iter()
        .filter(|e| e["reason"] == "MeshRefused" && e["regarding"]["name"] == mesh)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kumas_mesh_objects_are_followed_through_restarts() {
    bounded(240, async {
        let api = KubeApiServer::start().await;
        api.install_kuma_mesh_crd();
        api.apply_mesh("default", spec("ca-1", &["ca-1"])).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = write_kubeconfig(tmp.path(), &api.url());
        let k = kubeconfig.clone();
        let server = tokio::task::spawn_blocking(move || kube_server(&k))
            .await
            .unwrap();
        // Listed at start: served before `ready`.
        assert_eq!(issue(&server, "default").await, Ok(()));
        assert_eq!(roots(&server, "default").await, 1);

        // A Mesh created is served.
        api.apply_mesh("second", spec("ca-1", &["ca-1"])).unwrap();
        until("mesh second served", || async {
            issue(&server, "second").await.is_ok()
        })
        .await;

        // enabledBackend switched: a CA switch, both roots in the bundle.
        api.apply_mesh("default", spec("ca-2", &["ca-1", "ca-2"]))
            .unwrap();
        until("both roots in default's bundle", || async {
            roots(&server, "default").await == 2
        })
        .await;
        assert_eq!(issue(&server, "default").await, Ok(()));

        // A broken Mesh: refused, the previous one keeps serving, one Warning Event on it.
        api.apply_mesh("default", spec("nope", &["ca-1", "ca-2"]))
            .unwrap();
        until("a MeshRefused Event on default", || async {
            !refused_events(&api, "default").is_empty()
        })
        .await;
        let event = &refused_events(&api, "default")[0];
        assert_eq!(event["type"], "Warning");
        assert_eq!(event["regarding"]["kind"], "Mesh");
        assert_eq!(event["regarding"]["apiVersion"], "kuma.io/v1alpha1");
        let note = event["note"].as_str().unwrap();
        assert!(note.contains("mtls.enabledBackend"), "{note}");
        assert_eq!(
            server.metric("meshca_mesh_refused_total{source=\"kubernetes\"}"),
            Some(1.0)
        );
        assert_eq!(issue(&server, "default").await, Ok(()));
        assert_eq!(roots(&server, "default").await, 2);
        assert!(server.log().contains("mesh config refused"));

        // A Mesh deleted stops being served.
        assert!(api.delete_mesh("second"));
        until("mesh second gone", || async {
            issue(&server, "second").await == Err(Code::NotFound)
        })
        .await;

        // The API server restarted: the watch resumes (a Mesh created after is served) and
        // nothing was dropped in between.
        api.stop().await;
        api.start_again().await;
        api.apply_mesh("third", spec("ca-1", &["ca-1"])).unwrap();
        until("mesh third served after the restart", || async {
            issue(&server, "third").await.is_ok()
        })
        .await;
        assert_eq!(issue(&server, "default").await, Ok(()));

        // Restarted with its history compacted: the resumed watch gets 410 and lists again;
        // what changed meanwhile is seen (fourth added, third deleted), nothing else dropped.
        api.stop().await;
        api.compact();
        api.apply_mesh("fourth", spec("ca-1", &["ca-1"])).unwrap();
        assert!(api.delete_mesh("third"));
        api.start_again().await;
        until("mesh fourth served after the relist", || async {
            issue(&server, "fourth").await.is_ok()
        })
        .await;
        until("mesh third gone after the relist", || async {
            issue(&server, "third").await == Err(Code::NotFound)
        })
        .await;
        assert_eq!(issue(&server, "default").await, Ok(()));
        assert_eq!(roots(&server, "default").await, 2);

        // Restarted having lost every Mesh: a list of nothing drops nothing.
        api.stop().await;
        api.lose_meshes();
        api.start_again().await;
        until("the empty list seen", || async {
            server.log().contains("lists no Mesh at all")
        })
        .await;
        assert_eq!(issue(&server, "default").await, Ok(()));
        assert_eq!(issue(&server, "fourth").await, Ok(()));
        // The CAs are in Kuma's Secrets, both of default's among them.
        let secrets = api.names("secrets", "kuma-system");
        for want in [
            "default.ca-builtin-cert-ca-1",
            "default.ca-builtin-cert-ca-2",
        ] {
            assert!(
                secrets.iter().any(|s| s == want),
                "{want} not in {secrets:?}"
            );
        }

        // One Event for the one broken content, through every relist; every Event written
        // was one the API server accepts.
        assert_eq!(refused_events(&api, "default").len(), 1);
        let event_writes: Vec<_> = api
            .writes()
            .into_iter()
            .filter(|w| w.path.ends_with("/events"))
            .collect();
        assert!(!event_writes.is_empty());
        assert!(
            event_writes.iter().all(|w| w.problems.is_empty()),
            "{event_writes:?}"
        );
        assert!(
            event_writes
                .iter()
                .all(|w| w.path == "/apis/events.k8s.io/v1/namespaces/default/events"),
            "{event_writes:?}"
        );
        // meshca never writes to Kuma's objects.
        assert!(
            api.writes()
                .iter()
                .all(|w| !w.path.contains("/meshes") || w.body["metadata"]["name"] != "meshca"),
            "only the test wrote Meshes"
        );
    })
    .await;
}

/// `meshca serve --mesh-source kubernetes` that must fail: (success, stderr).
fn serve_fails(kubeconfig: &std::path::Path) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--mesh-source",
            "kubernetes",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert_eq!(
        files_under(&dir.path().join("data")),
        0,
        "nothing is written when the Meshes cannot be listed"
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Files (not directories) under `dir`, if it exists.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        files_under(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_kumas_crd_or_rbac_serve_says_which() {
    bounded(120, async {
        let api = KubeApiServer::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = write_kubeconfig(tmp.path(), &api.url());
        let k = kubeconfig.clone();
        let (ok, stderr) = tokio::task::spawn_blocking(move || serve_fails(&k))
            .await
            .unwrap();
        assert!(!ok);
        assert!(stderr.contains("--mesh-source kubernetes"), "{stderr}");
        assert!(stderr.contains("is Kuma installed"), "{stderr}");

        api.install_kuma_mesh_crd();
        api.forbid_on("meshes", "list");
        let (ok, stderr) = tokio::task::spawn_blocking(move || serve_fails(&kubeconfig))
            .await
            .unwrap();
        assert!(!ok);
        assert!(
            stderr.contains("get, list and watch on meshes.kuma.io"),
            "{stderr}"
        );
    })
    .await;
}

// === PostgreSQL ===

fn pg_url(pg: &Postgres) -> String {
    format!("{}?sslmode=disable", pg.url())
}

/// The SQL literal of `v`'s JSON.
fn literal(v: &Value) -> String {
    format!("'{}'", v.to_string().replace('\'', "''"))
}

/// Kuma's INSERT of a Mesh row (kuma-cp's `pgx_store.go`: version 0, mesh '').
fn insert_mesh(name: &str, spec: &Value) -> String {
    format!(
        "INSERT INTO resources (name, mesh, type, version, spec, creation_time, \
         modification_time) VALUES ('{name}', '', 'Mesh', 0, {}, now(), now())",
        literal(spec)
    )
}

/// Whether a session of the database LISTENs on Kuma's channel.
async fn listening(pg: &Postgres) -> bool {
    let rows = pg
        .execute(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE query = 'LISTEN \"resource_events\"'",
        )
        .await;
    rows[0][0].as_deref() != Some("0")
}

/// Kuma's UPDATE of a Mesh row (the version bumped).
fn update_mesh(name: &str, spec: &Value) -> String {
    format!(
        "UPDATE resources SET spec = {}, version = version + 1, modification_time = now() \
         WHERE name = '{name}' AND mesh = '' AND type = 'Mesh'",
        literal(spec)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kumas_mesh_rows_are_followed_through_a_database_restart() {
    bounded(240, async {
        let mut pg = Postgres::start(PostgresOptions::default()).await;
        let url = pg_url(&pg);
        let u = url.clone();
        // Started on an empty database: it creates Kuma's schema, and serves no mesh yet.
        let server = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            Server::start_with_env(
                dir,
                data,
                &[],
                &["--store", "postgres", "--mesh-source", "postgres"],
                &[("MESHCA_POSTGRES_URL", u.as_str())],
            )
        })
        .await
        .unwrap();
        assert_eq!(issue(&server, "default").await, Err(Code::NotFound));
        until("meshca LISTENs on resource_events", || listening(&pg)).await;

        // A Mesh row created is served (NOTIFY from Kuma's trigger).
        pg.execute(&insert_mesh("default", &spec("ca-1", &["ca-1"])))
            .await;
        pg.execute(&insert_mesh("second", &spec("ca-1", &["ca-1"])))
            .await;
        until("mesh default served", || async {
            issue(&server, "default").await.is_ok()
        })
        .await;
        until("mesh second served", || async {
            issue(&server, "second").await.is_ok()
        })
        .await;
        assert_eq!(roots(&server, "default").await, 1);

        // enabledBackend switched: both roots.
        pg.execute(&update_mesh("default", &spec("ca-2", &["ca-1", "ca-2"])))
            .await;
        until("both roots in default's bundle", || async {
            roots(&server, "default").await == 2
        })
        .await;

        // A broken row: refused, the previous one kept.
        pg.execute(&update_mesh("default", &spec("nope", &["ca-1", "ca-2"])))
            .await;
        until("the broken row refused", || async {
            server.metric("meshca_mesh_refused_total{source=\"postgres\"}") == Some(1.0)
        })
        .await;
        assert!(server.log().contains("postgres Mesh default"));
        assert_eq!(issue(&server, "default").await, Ok(()));
        assert_eq!(roots(&server, "default").await, 2);

        // A row deleted: NotFound.
        pg.execute("DELETE FROM resources WHERE name = 'second' AND mesh = '' AND type = 'Mesh'")
            .await;
        until("mesh second gone", || async {
            issue(&server, "second").await == Err(Code::NotFound)
        })
        .await;

        // The database restarted: the LISTEN connection ends, nothing is dropped, and a row
        // created afterwards is served.
        pg.stop().await;
        assert_eq!(issue(&server, "default").await, Ok(()));
        pg.start_again().await;
        until("meshca LISTENs again", || listening(&pg)).await;
        pg.execute(&insert_mesh("third", &spec("ca-1", &["ca-1"])))
            .await;
        until("mesh third served after the restart", || async {
            issue(&server, "third").await.is_ok()
        })
        .await;
        assert_eq!(issue(&server, "default").await, Ok(()));

        // Every Mesh row gone with no deletion announced (the trigger off, as a restore or a
        // copy made behind Kuma's back would do): a listing of nothing drops nothing.
        pg.execute(
            "ALTER TABLE resources DISABLE TRIGGER products_notify_event; \
             DELETE FROM resources WHERE type = 'Mesh'; \
             ALTER TABLE resources ENABLE TRIGGER products_notify_event",
        )
        .await;
        until("the empty listing seen", || async {
            server.log().contains("lists no Mesh at all")
        })
        .await;
        assert_eq!(issue(&server, "default").await, Ok(()));
        assert_eq!(issue(&server, "third").await, Ok(()));

        // A listing that names a Mesh again is the truth: `default`, no longer listed, goes.
        pg.execute(&insert_mesh("third", &spec("ca-1", &["ca-1"])))
            .await;
        until("mesh default gone once third is listed again", || async {
            issue(&server, "default").await == Err(Code::NotFound)
        })
        .await;
        // The last Mesh row deleted as kuma-cp deletes it (the trigger announces the DELETE):
        // honoured, though no Mesh is left, as a DELETED event on Kubernetes.
        pg.execute("DELETE FROM resources WHERE name = 'third' AND mesh = '' AND type = 'Mesh'")
            .await;
        until("the last mesh gone", || async {
            issue(&server, "third").await == Err(Code::NotFound)
        })
        .await;
    })
    .await;
}

#[test]
fn mesh_source_postgres_needs_the_postgres_store() {
    let (ok, _, stderr) = run_cli(&["serve", "--mesh-source", "postgres"]);
    assert!(!ok);
    assert!(stderr.contains("--mesh-source postgres"), "{stderr}");
    assert!(stderr.contains("needs --store postgres"), "{stderr}");
    let (ok, _, stderr) = run_cli(&[
        "serve",
        "--store",
        "postgres",
        "--postgres-url",
        "postgres://u:p@127.0.0.1:1/kuma?sslmode=disable",
        "--mesh-source",
        "postgres",
        "--reload-interval",
        "10ms",
    ]);
    assert!(!ok);
    assert!(stderr.contains("--reload-interval"), "{stderr}");
    assert!(stderr.contains("at least 100ms"), "{stderr}");
    let (ok, _, stderr) = run_cli(&[
        "serve",
        "--mesh-source",
        "kubernetes",
        "--mesh-config",
        "/tmp",
    ]);
    assert!(!ok);
    assert!(stderr.contains("--mesh-config"), "{stderr}");
}
