//! The PostgreSQL SecretStore against a real PostgreSQL (Debian's, started by the test as an
//! unprivileged user): the store suite every SecretStore runs (`meshca_tests::stores`), Kuma's
//! schema created once and never altered, Kuma's rows (`Secret`,
//! `GlobalSecret`, `{"data":"<base64>"}`, Kuma's version column), create-if-absent under a
//! race of ten replicas, a CA written by kuma-cp before meshca starts being the one served,
//! the database stopped and started under a running store, and TLS with verify-full.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use ca_core::{CertificateAuthority, Scope, SecretName, SecretStore};
use meshca_peers::postgres::{Postgres, PostgresOptions};
use meshca_tests::checks::mesh;
use meshca_tests::stores::{builtin_ca, replicas_share_one_ca};
use store_postgres::{PostgresSecretStore, PostgresUrl};

const TIMEOUT: Duration = Duration::from_secs(5);

fn plain(pg: &Postgres) -> PostgresUrl {
    PostgresUrl::parse(&format!("{}?sslmode=disable", pg.url())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_kuma_rows_created_once_and_updated_with_kumas_version() {
    let pg = Postgres::start(PostgresOptions::default()).await;
    let store = PostgresSecretStore::connect(&plain(&pg), TIMEOUT)
        .await
        .unwrap();
    // Kuma's schema, recorded as its last migration so kuma-cp migrates nothing.
    let rows = pg
        .execute("SELECT version::text, dirty::text FROM schema_migrations")
        .await;
    assert_eq!(
        rows,
        vec![vec![Some("1710856785".into()), Some("false".into())]]
    );
    let rows = pg
        .execute("SELECT tgname FROM pg_trigger WHERE tgname = 'products_notify_event'")
        .await;
    assert_eq!(rows.len(), 1, "Kuma's notify trigger");

    // The store suite every SecretStore runs, then what it left, as Kuma's rows.
    let store = Arc::new(store);
    meshca_tests::stores::conformance(store.clone(), &mesh("default")).await;
    let rows = pg
        .execute("SELECT name, mesh, type, version::text, owner_name FROM resources ORDER BY name")
        .await;
    let row = |n: &str, m: &str, t: &str, v: &str| {
        vec![
            Some(n.into()),
            Some(m.into()),
            Some(t.into()),
            Some(v.into()),
            None,
        ]
    };
    assert_eq!(
        rows,
        vec![
            // created (0), put (1), four concurrent puts: none lost.
            row("default.conformance-1", "default", "Secret", "5"),
            row("meshca-conformance-global", "", "GlobalSecret", "0"),
        ]
    );

    // The spec is Kuma's jsonpb of a Secret, and another mesh's row is another row.
    let (m, other) = (mesh("default"), mesh("other"));
    let name = SecretName::new("default.token-1").unwrap();
    store
        .create_if_absent(Scope::Mesh(&m), &name, b"first")
        .await
        .unwrap();
    let rows = pg
        .execute("SELECT spec FROM resources WHERE name = 'default.token-1'")
        .await;
    assert_eq!(rows, vec![vec![Some(r#"{"data":"Zmlyc3Q="}"#.into())]]);
    assert!(store
        .get(Scope::Mesh(&other), &name)
        .await
        .unwrap()
        .is_none());
    store
        .create_if_absent(Scope::Mesh(&other), &name, b"other")
        .await
        .unwrap();
    assert_eq!(
        store
            .get(Scope::Mesh(&m), &name)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"first"
    );

    // Debug and errors never show the password.
    assert!(!format!("{store:?}").contains(pg.password()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_kuma_schema_is_used_as_it_is_and_its_mesh_owns_the_secrets() {
    let pg = Postgres::start(PostgresOptions::default()).await;
    // kuma-cp's schema and a Mesh row, as kuma-cp universal leaves them (a column of Kuma's
    // own added later stands for a newer Kuma: meshca must not touch it).
    pg.execute(
        "CREATE TABLE resources (name varchar(253) NOT NULL, mesh varchar(100) NOT NULL, \
         type varchar(100) NOT NULL, version integer NOT NULL, spec text, \
         creation_time TIMESTAMP NOT NULL DEFAULT now(), modification_time TIMESTAMP NOT NULL DEFAULT now(), \
         owner_name varchar(100), owner_mesh varchar(100), owner_type varchar(100), \
         labels JSONB DEFAULT '{}'::jsonb, status JSONB NOT NULL DEFAULT '{}'::jsonb, \
         zone_extra text, \
         PRIMARY KEY (name, mesh, type), \
         CONSTRAINT owner_fk FOREIGN KEY (owner_name, owner_mesh, owner_type) REFERENCES resources (name, mesh, type) ON DELETE CASCADE)",
    )
    .await;
    pg.execute(
        "INSERT INTO resources (name, mesh, type, version, spec) VALUES ('default', '', 'Mesh', 0, '{}')",
    )
    .await;
    let store = PostgresSecretStore::connect(&plain(&pg), TIMEOUT)
        .await
        .unwrap();
    assert!(
        pg.execute("SELECT 1 FROM pg_tables WHERE tablename = 'schema_migrations'")
            .await
            .is_empty(),
        "an existing schema is not altered"
    );
    let m = mesh("default");
    let name = SecretName::new("default.ca-builtin-cert-ca-1").unwrap();
    store
        .create_if_absent(Scope::Mesh(&m), &name, b"pem")
        .await
        .unwrap();
    let rows = pg
        .execute("SELECT owner_name, owner_mesh, owner_type FROM resources WHERE type = 'Secret'")
        .await;
    assert_eq!(
        rows,
        vec![vec![
            Some("default".into()),
            Some(String::new()),
            Some("Mesh".into())
        ]],
        "owned by its Mesh, as kuma-cp's CA secrets are"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_kuma_cp_wrote_is_served_and_ten_replicas_make_one() {
    let pg = Postgres::start(PostgresOptions::default()).await;
    // Ten replicas at once on an empty database (no schema yet): one CA, all serve it.
    let url = plain(&pg);
    let stores = (0..10)
        .map(|_| Arc::new(PostgresSecretStore::new(&url, TIMEOUT).unwrap()) as Arc<dyn SecretStore>)
        .collect();
    let served = replicas_share_one_ca(stores).await;
    let rows = pg
        .execute("SELECT name FROM resources WHERE name LIKE 'default.ca-builtin-%' ORDER BY name")
        .await;
    assert_eq!(
        rows,
        vec![
            vec![Some("default.ca-builtin-cert-ca-1".into())],
            vec![Some("default.ca-builtin-key-ca-1".into())],
        ]
    );

    // A CA in Kuma's rows before meshca starts is the one served: replace both rows with a
    // CA made elsewhere, written as kuma-cp writes them (spec {"data":"<base64 PEM>"},
    // version 0), and a fresh store serves it.
    let made_store = Arc::new(ca_core::OverlaySecretStore::new(None));
    let made = builtin_ca(made_store.clone());
    made.ensure().await.unwrap();
    let kuma_pem = made.trust_bundle().await.unwrap().to_pem();
    assert_ne!(kuma_pem, served);
    pg.execute("DELETE FROM resources WHERE name LIKE 'default.ca-builtin-%'")
        .await;
    for n in ["cert", "key"] {
        let secret = SecretName::new(format!("default.ca-builtin-{n}-ca-1")).unwrap();
        let v = made_store
            .get(Scope::Mesh(&mesh("default")), &secret)
            .await
            .unwrap()
            .unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v.expose());
        pg.execute(&format!(
            "INSERT INTO resources (name, mesh, type, version, spec) VALUES \
             ('{secret}', 'default', 'Secret', 0, '{{\"data\":\"{b64}\"}}')"
        ))
        .await;
    }
    let fresh = builtin_ca(Arc::new(PostgresSecretStore::new(&url, TIMEOUT).unwrap()));
    fresh.ensure().await.unwrap();
    assert_eq!(fresh.trust_bundle().await.unwrap().to_pem(), kuma_pem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuance_resumes_after_the_database_restarts_and_tls_is_verified() {
    let mut pg = Postgres::start(PostgresOptions::default()).await;
    let store = Arc::new(
        PostgresSecretStore::connect(&plain(&pg), TIMEOUT)
            .await
            .unwrap(),
    );
    let m = mesh("default");
    let name = SecretName::new("default.s").unwrap();
    store.put(Scope::Mesh(&m), &name, b"before").await.unwrap();
    pg.stop().await;
    let e = store.get(Scope::Mesh(&m), &name).await.unwrap_err();
    assert_eq!(
        e.upstream_kind(),
        Some(ca_core::UpstreamKind::Unavailable),
        "{}",
        ca_core::error_chain(&e)
    );
    assert!(!ca_core::error_chain(&e).contains(pg.password()));
    pg.start_again().await;
    // The same store (its pool reconnects): no restart of meshca.
    assert_eq!(
        store
            .get(Scope::Mesh(&m), &name)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"before"
    );
    pg.kill().await;
    pg.start_again().await;
    store.put(Scope::Mesh(&m), &name, b"after").await.unwrap();

    // TLS: verify-full against the server's CA works; another CA and plain text are refused.
    let tls = Postgres::start(PostgresOptions { tls: true }).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, tls.ca_pem().unwrap()).unwrap();
    let full = PostgresUrl::parse(&format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        tls.url(),
        ca.display()
    ))
    .unwrap();
    let s = PostgresSecretStore::connect(&full, TIMEOUT).await.unwrap();
    s.put(Scope::Global, &name, b"over tls").await.unwrap();
    let wrong = dir.path().join("wrong.pem");
    std::fs::write(&wrong, pg_wrong_ca()).unwrap();
    let bad = PostgresUrl::parse(&format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        tls.url(),
        wrong.display()
    ))
    .unwrap();
    let e = PostgresSecretStore::connect(&bad, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(
        ca_core::error_chain(&e)
            .to_lowercase()
            .contains("certificate"),
        "{}",
        ca_core::error_chain(&e)
    );
    let e = PostgresSecretStore::connect(
        &PostgresUrl::parse(&format!("{}?sslmode=disable", tls.url())).unwrap(),
        Duration::from_secs(2),
    )
    .await
    .unwrap_err();
    assert!(
        ca_core::error_chain(&e).contains("pg_hba.conf")
            || ca_core::error_chain(&e).contains("no encryption"),
        "{}",
        ca_core::error_chain(&e)
    );
}

/// A CA that signed nothing the server holds.
fn pg_wrong_ca() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.self_signed(&key).unwrap().pem()
}

/// Kuma's Mesh rows, as `--mesh-source postgres` reads them: by name, bounded in number and spec
/// size, and announced by Kuma's trigger on `resource_events` (other types' notifications are
/// skipped), with no polling involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_rows_are_read_bounded_and_announced_by_kumas_trigger() {
    let pg = Postgres::start(PostgresOptions::default()).await;
    let store = PostgresSecretStore::connect(&plain(&pg), TIMEOUT)
        .await
        .unwrap();
    let mut notified = store.listen_meshes(TIMEOUT).await.unwrap();
    let insert = |name: &str, spec: &str| {
        format!(
            "INSERT INTO resources (name, mesh, type, version, spec) \
             VALUES ('{name}', '', 'Mesh', 0, '{spec}')"
        )
    };
    // Another type's change is not a Mesh change.
    pg.execute(
        "INSERT INTO resources (name, mesh, type, version, spec) \
         VALUES ('other', '', 'GlobalSecret', 0, '{}')",
    )
    .await;
    pg.execute(&insert("b", r#"{"mtls":{"enabledBackend":"ca-1"}}"#))
        .await;
    tokio::time::timeout(Duration::from_secs(30), notified.next())
        .await
        .expect("Kuma's trigger announced the Mesh row")
        .expect("the LISTEN connection is up");
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(2000));
    pg.execute(&insert("a", &big)).await;
    pg.execute(&insert("c", "{}")).await;
    let rows = store.mesh_rows(2, 1000).await.unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "the first by name, at most 2");
    assert_eq!(rows[0].spec, Err(i64::try_from(big.len()).unwrap()));
    assert_eq!(
        rows[1].spec,
        Ok(Some(r#"{"mtls":{"enabledBackend":"ca-1"}}"#.to_owned()))
    );
    assert_eq!(store.mesh_rows(10, 1000).await.unwrap().len(), 3);
}
