//! The PostgreSQL harness: a real server keeps its data across a stop and recovers it after a
//! crash; with TLS on, a plain login is refused and logins go over TLS verified against its CA.

use meshca_peers::{Postgres, PostgresOptions};
use tokio_postgres::error::SqlState;

fn rows(values: &[&str]) -> Vec<Vec<Option<String>>> {
    values.iter().map(|v| vec![Some((*v).to_owned())]).collect()
}

#[tokio::test]
async fn postgres_keeps_data_across_stop_and_recovers_after_kill() {
    let mut pg = Postgres::start(PostgresOptions::default()).await;
    assert!(!format!("{pg:?}").contains(pg.password()), "{pg:?}");
    assert_eq!(
        pg.url(),
        format!(
            "postgres://meshca:{}@127.0.0.1:{}/meshca",
            pg.password(),
            pg.port()
        )
    );
    assert_eq!(pg.ca_pem(), None);
    assert_eq!(
        pg.execute("SELECT current_database(), current_user").await,
        vec![vec![Some("meshca".to_owned()), Some("meshca".to_owned())]]
    );
    pg.execute("CREATE TABLE t (v text NOT NULL); INSERT INTO t VALUES ('before stop')")
        .await;

    pg.stop().await;
    assert!(
        pg.try_execute("SELECT 1").await.is_err(),
        "stopped, yet answers"
    );
    let port = pg.port();
    pg.start_again().await;
    assert_eq!(pg.port(), port);
    assert_eq!(pg.execute("SELECT v FROM t").await, rows(&["before stop"]));

    // Committed before the crash: recovered from the WAL.
    pg.execute("INSERT INTO t VALUES ('before kill')").await;
    pg.kill().await;
    assert!(
        pg.try_execute("SELECT 1").await.is_err(),
        "killed, yet answers"
    );
    pg.start_again().await;
    assert_eq!(
        pg.execute("SELECT v FROM t ORDER BY v").await,
        rows(&["before kill", "before stop"])
    );
    // A wrong password is refused (the server really authenticates).
    let wrong = pg.url().replace(pg.password(), "not-the-password");
    let err = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password logs in");
    assert_eq!(err.code(), Some(&SqlState::INVALID_PASSWORD), "{err:?}");
}

#[tokio::test]
async fn postgres_with_tls_refuses_plain_logins() {
    let pg = Postgres::start(PostgresOptions { tls: true }).await;
    let ca = pem::parse(pg.ca_pem().expect("a CA with tls on")).unwrap();
    assert_eq!(ca.tag(), "CERTIFICATE");
    let (_, cert) = x509_parser::parse_x509_certificate(ca.contents()).unwrap();
    assert!(cert.is_ca(), "the CA pem is no CA certificate");

    let err = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .err()
        .expect("a plain login was let in");
    assert_eq!(
        err.code(),
        Some(&SqlState::INVALID_AUTHORIZATION_SPECIFICATION),
        "{err:?}"
    );
    // The harness's own sessions are TLS (verified against the CA) and work.
    assert_eq!(
        pg.execute("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .await,
        rows(&["true"])
    );
}
