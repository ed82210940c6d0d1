//! The front: requests forwarded to OpenBao as they came (tokens, namespaces, errors), seal
//! state, fault injection, the request log, and aws auth administration guarded by a token
//! the upstream knows.

use meshca_peers::{FrontOptions, RequestLog};
use serde_json::json;

use crate::{err, fronted, Client};

#[tokio::test]
async fn requests_reach_openbao_as_they_came() {
    let vault = fronted(FrontOptions::default()).await;
    let c = Client::new(&vault, None);
    let root = vault.root_token();

    // A PKI mount made through the front is OpenBao's: its CA reads back, unauthenticated.
    vault
        .write("sys/mounts/pki", json!({ "type": "pki" }))
        .await;
    let root_ca = vault
        .write(
            "pki/root/generate/internal",
            json!({ "common_name": "front test root", "ttl": "2h", "key_type": "ec" }),
        )
        .await;
    let (s, pem) = c.raw("GET", "pki/ca/pem", None, None, None).await;
    assert_eq!(s, 200);
    assert_eq!(
        pem.trim(),
        root_ca["data"]["certificate"].as_str().unwrap().trim()
    );

    // Tokens are OpenBao's: a child token made with the root token looks itself up.
    let (s, v) = c
        .call(
            "POST",
            "auth/token/create",
            Some(&root),
            None,
            Some(json!({ "policies": ["issuer"], "ttl": "1h" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["policies"], json!(["default", "issuer"]));
    let tok = v["auth"]["client_token"].as_str().unwrap().to_owned();
    let (s, v) = c
        .call("GET", "auth/token/lookup-self", Some(&tok), None, None)
        .await;
    assert_eq!(
        (s, v["data"]["policies"].clone()),
        (200, json!(["default", "issuer"]))
    );
    // ... and OpenBao's ACLs hold: `issuer` grants nothing on pki/roles.
    let (s, v) = c.call("LIST", "pki/roles", Some(&tok), None, None).await;
    assert_eq!(
        (s, err(&v).as_str()),
        (403, "1 error occurred:\n\t* permission denied\n\n")
    );

    // Namespaces pass through (X-Vault-Namespace).
    let (s, v) = c
        .call(
            "POST",
            "sys/namespaces/team-a",
            Some(&root),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c
        .call(
            "POST",
            "sys/mounts/pki-ns",
            Some(&root),
            Some("team-a"),
            Some(json!({ "type": "pki" })),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = c
        .call("GET", "sys/mounts", Some(&root), Some("team-a"), None)
        .await;
    assert_eq!(s, 200);
    assert!(v["data"].get("pki-ns/").is_some(), "{v}");
    let (s, v) = c.call("GET", "sys/mounts", Some(&root), None, None).await;
    assert_eq!(s, 200);
    assert!(
        v["data"].get("pki-ns/").is_none(),
        "the root namespace has no pki-ns"
    );

    // The audit device of OpenBao saw what the front forwarded.
    assert!(vault
        .bao
        .request_paths()
        .iter()
        .any(|p| p == "auth/token/lookup-self"));
}

#[tokio::test]
async fn aws_auth_administration_needs_a_known_token() {
    let vault = fronted(FrontOptions::default()).await;
    let c = Client::new(&vault, None);
    vault.write("sys/auth/aws", json!({ "type": "aws" })).await;
    let role = json!({ "auth_type": "iam", "bound_iam_principal_arn": ["arn:aws:iam::123456789012:user/a"] });
    let (s, _) = c
        .call("POST", "auth/aws/role/r", None, None, Some(role.clone()))
        .await;
    assert_eq!(s, 403, "no token");
    let (s, _) = c
        .call(
            "POST",
            "auth/aws/role/r",
            Some("hvs.unknown"),
            None,
            Some(role.clone()),
        )
        .await;
    assert_eq!(s, 403, "a token OpenBao does not know");
    let root = vault.root_token();
    let (s, _) = c
        .call("POST", "auth/aws/role/r", Some(&root), None, Some(role))
        .await;
    assert_eq!(s, 204);
    let (s, v) = c
        .call("GET", "auth/aws/role/r", Some(&root), None, None)
        .await;
    assert_eq!((s, v["data"]["auth_type"].as_str()), (200, Some("iam")));
    // Mounting aws twice is refused, as Vault does; other auth types are OpenBao's.
    let (s, v) = c
        .call(
            "POST",
            "sys/auth/aws",
            Some(&root),
            None,
            Some(json!({ "type": "aws" })),
        )
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (400, "path is already in use at auth/aws/")
    );
    let (s, v) = c
        .call(
            "POST",
            "sys/auth/cert",
            Some(&root),
            None,
            Some(json!({ "type": "cert" })),
        )
        .await;
    assert_eq!(s, 204, "{v}");
    let (s, v) = c.call("GET", "sys/auth", Some(&root), None, None).await;
    assert_eq!(s, 200);
    assert!(v["data"].get("cert/").is_some(), "{v}");
}

#[tokio::test]
async fn sealed_faults_and_request_log() {
    let vault = fronted(FrontOptions::default()).await;
    vault
        .write("sys/mounts/pki", json!({ "type": "pki" }))
        .await;
    vault
        .write(
            "pki/root/generate/internal",
            json!({ "common_name": "front test root", "ttl": "2h", "key_type": "ec" }),
        )
        .await;
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

    // Stopped: nothing answers; started again: the same OpenBao state behind it.
    vault.stop().await;
    assert!(c.http_get_err("sys/health").await, "stopped");
    vault.start_again().await;
    let again = Client::new(&vault, None);
    let (s, _) = again
        .call("GET", "pki/ca_chain", Some(&root), None, None)
        .await;
    assert_eq!(s, 200);

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
