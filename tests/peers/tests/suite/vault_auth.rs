//! Tokens (expiry, renew-self, non-renewable), seal state, fault injection and the request
//! log.

use std::time::Duration;

use meshca_peers::{RequestLog, VaultOptions, VaultServer};
use serde_json::json;

use crate::{err, eventually, vault_with_pki, Client};

#[tokio::test]
async fn tokens_expire_and_renew() {
    let vault = VaultServer::start(VaultOptions::default()).await;
    let c = Client::new(&vault, None);
    let created = vault
        .write(
            "auth/token/create",
            json!({ "policies": ["issuer"], "ttl": "2s" }),
        )
        .await;
    let tok = created["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created["auth"]["lease_duration"], 2);
    assert_eq!(created["auth"]["renewable"], true);
    assert_eq!(created["auth"]["policies"], json!(["default", "issuer"]));
    let (s, v) = c
        .call("GET", "auth/token/lookup-self", Some(&tok), None, None)
        .await;
    assert_eq!(s, 200);
    assert!(v["data"]["ttl"].as_u64().unwrap() <= 2);
    assert_eq!(v["data"]["creation_ttl"], 2);
    eventually(Duration::from_secs(10), || async {
        c.call("GET", "auth/token/lookup-self", Some(&tok), None, None)
            .await
            .0
            == 403
    })
    .await;
    let (s, v) = c
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&tok),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (403, "permission denied"),
        "expired tokens cannot renew"
    );

    // Renewal extends from now; explicit_max_ttl caps it with a warning.
    let created = vault
        .write(
            "auth/token/create",
            json!({ "ttl": "60s", "explicit_max_ttl": "120s" }),
        )
        .await;
    let tok = created["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = c
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&tok),
            None,
            Some(json!({ "increment": "90s" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["lease_duration"], 90);
    assert_eq!(v["auth"]["renewable"], true);
    let (s, v) = c
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&tok),
            None,
            Some(json!({ "increment": "1h" })),
        )
        .await;
    assert_eq!(s, 200);
    assert!(v["auth"]["lease_duration"].as_u64().unwrap() <= 120);
    assert!(v["warnings"][0]
        .as_str()
        .unwrap()
        .contains("exceeded the effective max_ttl"));

    // Non-renewable.
    let created = vault
        .write(
            "auth/token/create",
            json!({ "ttl": "1h", "renewable": false }),
        )
        .await;
    let tok = created["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, v) = c
        .call(
            "POST",
            "auth/token/renew-self",
            Some(&tok),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!((s, err(&v).as_str()), (400, "lease is not renewable"));

    let (s, v) = c
        .call("GET", "auth/token/lookup-self", None, None, None)
        .await;
    assert_eq!((s, err(&v).as_str()), (403, "permission denied"));
}

#[tokio::test]
async fn sealed_faults_and_request_log() {
    let vault = vault_with_pki("2h").await;
    let c = Client::new(&vault, None);
    let root = vault.root_token();
    vault.set_sealed(true);
    let (s, v) = c.call("GET", "sys/health", None, None, None).await;
    assert_eq!((s, v["sealed"].as_bool()), (503, Some(true)));
    let (s, v) = c.call("GET", "sys/seal-status", None, None, None).await;
    assert_eq!((s, v["sealed"].as_bool()), (200, Some(true)));
    let (s, v) = c.call("GET", "pki/ca_chain", Some(&root), None, None).await;
    assert_eq!((s, err(&v).as_str()), (503, "Vault is sealed"));
    vault.set_sealed(false);
    let (s, v) = c.call("GET", "sys/health", None, None, None).await;
    assert_eq!((s, v["sealed"].as_bool()), (200, Some(false)));

    vault.fail_next(2, 500);
    for _ in 0..2 {
        let (s, v) = c.call("GET", "pki/ca_chain", Some(&root), None, None).await;
        assert_eq!((s, err(&v).as_str()), (500, "injected"));
    }
    let (s, _) = c.call("GET", "pki/ca_chain", Some(&root), None, None).await;
    assert_eq!(s, 200);

    vault.clear_requests();
    vault.reset_next(1);
    let fresh = Client::new(&vault, None);
    let r = fresh.http_get_err("sys/health").await;
    assert!(r, "the reset connection fails");
    let (s, _) = fresh.call("GET", "sys/health", None, None, None).await;
    assert_eq!(s, 200);
    let (s, _) = c
        .call("GET", "auth/token/lookup-self", Some(&root), None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        vault.requests(),
        vec![
            RequestLog {
                method: "GET".into(),
                path: "sys/health".into(),
            },
            RequestLog {
                method: "GET".into(),
                path: "auth/token/lookup-self".into(),
            },
        ]
    );

    // The certificate names only vault.test and 127.0.0.1.
    let port = vault.address().rsplit(':').next().unwrap().to_string();
    assert_eq!(vault.server_name(), "vault.test");
    let by_name = Client::with_base(&vault, None, format!("https://localhost:{port}"));
    assert!(
        by_name.http_get_err("sys/health").await,
        "localhost is not in the certificate"
    );
}

impl Client {
    /// Whether a GET fails at the connection/TLS level.
    pub(crate) async fn http_get_err(&self, path: &str) -> bool {
        self.try_get(path).await.is_err()
    }
}
