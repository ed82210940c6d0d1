//! Tokens (expiry, renew-self, non-renewable), ACL policies, namespaces, seal state,
//! fault injection and `cert` login over real TLS client authentication.

use std::time::Duration;

use meshca_peers::{RequestLog, VaultOptions, VaultServer};
use serde_json::json;

use crate::{err, eventually, vault_with_pki, Client};

#[tokio::test]
async fn tokens_expire_renew_and_revoke() {
    let vault = VaultServer::start(VaultOptions::default()).await;
    let c = Client::new(&vault, None);
    let created = vault
        .write(
            None,
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
            None,
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
            None,
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

    // Revoke.
    let (s, _) = c
        .call("POST", "auth/token/revoke-self", Some(&tok), None, None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = c
        .call("GET", "auth/token/lookup-self", Some(&tok), None, None)
        .await;
    assert_eq!(s, 403);
    let (s, v) = c
        .call("GET", "auth/token/lookup-self", None, None, None)
        .await;
    assert_eq!((s, err(&v).as_str()), (403, "permission denied"));
}

#[tokio::test]
async fn policies_deny_paths() {
    let vault = vault_with_pki("24h").await;
    for role in ["kuma-dp", "other"] {
        vault
            .write(None, &format!("pki/roles/{role}"), json!({ "allowed_uri_sans": "spiffe://*", "require_cn": false, "key_type": "ec", "ttl": "1h" }))
            .await;
    }
    vault
        .write(None, "sys/policies/acl/issuer", json!({ "policy": "path \"pki/issue/kuma-dp\" {\n  capabilities = [\"create\", \"update\"]\n}\npath \"pki/cert/*\" { capabilities = [\"read\"] }\n" }))
        .await;
    let created = vault
        .write(None, "auth/token/create", json!({ "policies": "issuer" }))
        .await;
    let tok = created["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let c = Client::new(&vault, None);
    let body = Some(json!({ "uri_sans": "spiffe://default/a" }));
    let (s, _) = c
        .call("POST", "pki/issue/kuma-dp", Some(&tok), None, body.clone())
        .await;
    assert_eq!(s, 200);
    let (s, v) = c
        .call("POST", "pki/issue/other", Some(&tok), None, body.clone())
        .await;
    assert_eq!(s, 403);
    assert!(err(&v).contains("permission denied"));
    let (s, _) = c
        .call("GET", "pki/roles/kuma-dp", Some(&tok), None, None)
        .await;
    assert_eq!(s, 403);
    let (s, _) = c.call("GET", "pki/cert/ca", Some(&tok), None, None).await;
    assert_eq!(s, 200);
    // The default policy grants the token self-service paths.
    let (s, v) = c
        .call("GET", "auth/token/lookup-self", Some(&tok), None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["policies"], json!(["default", "issuer"]));
    let (s, _) = c
        .call(
            "POST",
            "auth/token/create",
            Some(&tok),
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 403);
}

#[tokio::test]
async fn namespaces_are_isolated() {
    let vault = VaultServer::start(VaultOptions::default()).await;
    vault.write(None, "sys/namespaces/team-a", json!({})).await;
    vault.write(None, "sys/namespaces/team-b", json!({})).await;
    vault
        .write(Some("team-a"), "sys/mounts/pki", json!({ "type": "pki" }))
        .await;
    vault
        .write(
            Some("team-a"),
            "pki/root/generate/internal",
            json!({ "common_name": "a", "key_type": "ec", "ttl": "2h" }),
        )
        .await;
    vault
        .write(
            Some("team-a"),
            "sys/policies/acl/reader",
            json!({ "policy": "path \"pki/*\" { capabilities = [\"read\"] }" }),
        )
        .await;
    let created = vault
        .write(
            Some("team-a"),
            "auth/token/create",
            json!({ "policies": ["reader"] }),
        )
        .await;
    let tok = created["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let c = Client::new(&vault, None);
    let (s, _) = c
        .call("GET", "pki/cert/ca", Some(&tok), Some("team-a"), None)
        .await;
    assert_eq!(s, 200);
    let (s, v) = c
        .call(
            "GET",
            "auth/token/lookup-self",
            Some(&tok),
            Some("team-a"),
            None,
        )
        .await;
    assert_eq!(
        (s, v["data"]["namespace_path"].as_str().unwrap()),
        (200, "team-a/")
    );
    let (s, _) = c
        .call("GET", "pki/cert/ca", Some(&tok), Some("team-b"), None)
        .await;
    assert_eq!(s, 403, "a token only works in its namespace");
    let (s, _) = c
        .call("GET", "auth/token/lookup-self", Some(&tok), None, None)
        .await;
    assert_eq!(s, 403);
    let root = vault.root_token();
    let (s, v) = c
        .call("GET", "pki/cert/ca", Some(&root), Some("team-b"), None)
        .await;
    assert_eq!(s, 404, "team-b has no pki mount: {v}");
    let (s, _) = c.call("GET", "pki/cert/ca", Some(&root), None, None).await;
    assert_eq!(s, 404, "nor does the root namespace");
    let (s, _) = c
        .call("GET", "pki/cert/ca", Some(&root), Some("team-a"), None)
        .await;
    assert_eq!(s, 200);
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
    let (s, v) = c.call("GET", "pki/cert/ca", Some(&root), None, None).await;
    assert_eq!((s, err(&v).as_str()), (503, "Vault is sealed"));
    vault.set_sealed(false);
    let (s, v) = c.call("GET", "sys/health", None, None, None).await;
    assert_eq!((s, v["sealed"].as_bool()), (200, Some(false)));

    vault.fail_next(2, 500);
    for _ in 0..2 {
        let (s, v) = c.call("GET", "pki/cert/ca", Some(&root), None, None).await;
        assert_eq!((s, err(&v).as_str()), (500, "injected"));
    }
    let (s, _) = c.call("GET", "pki/cert/ca", Some(&root), None, None).await;
    assert_eq!(s, 200);

    vault.clear_requests();
    vault.reset_next(1);
    let fresh = Client::new(&vault, None);
    let r = fresh.http_get_err("sys/health").await;
    assert!(r, "the reset connection fails");
    let (s, _) = fresh.call("GET", "sys/health", None, None, None).await;
    assert_eq!(s, 200);
    let (s, _) = c
        .call("LIST", "pki/roles", Some(&root), Some("team-x"), None)
        .await;
    assert_eq!(s, 404, "unknown namespace");
    assert_eq!(
        vault.requests(),
        vec![
            RequestLog {
                method: "GET".into(),
                path: "sys/health".into(),
                namespace: None,
                client_cert: false
            },
            RequestLog {
                method: "LIST".into(),
                path: "pki/roles".into(),
                namespace: Some("team-x".into()),
                client_cert: false
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

fn client_ca() -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "clients");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let cert = params.self_signed(&key).unwrap();
    (rcgen::Issuer::new(params, key), cert.pem())
}

fn client_leaf(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, cn: &str) -> crate::ClientCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca).unwrap();
    (vec![cert.der().to_vec()], key.serialize_der())
}

#[tokio::test]
async fn cert_login_over_tls_client_auth() {
    let vault = VaultServer::start(VaultOptions::default()).await;
    let (ca, ca_pem) = client_ca();
    vault
        .write(None, "sys/auth/cert", json!({ "type": "cert" }))
        .await;
    vault
        .write(None, "auth/cert/certs/zone", json!({ "certificate": ca_pem, "token_policies": "issuer,reader", "token_ttl": "1h", "token_max_ttl": "2h" }))
        .await;
    let with_cert = Client::new(&vault, Some(client_leaf(&ca, "zone-1")));
    vault.clear_requests();
    let (s, v) = with_cert
        .call(
            "POST",
            "auth/cert/login",
            None,
            None,
            Some(json!({ "name": "zone" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let auth = &v["auth"];
    assert_eq!(auth["policies"], json!(["default", "issuer", "reader"]));
    assert_eq!(auth["lease_duration"], 3600);
    assert_eq!(auth["renewable"], true);
    assert_eq!(auth["metadata"]["cert_name"], "zone");
    assert_eq!(auth["metadata"]["common_name"], "zone-1");
    assert!(vault.requests()[0].client_cert);
    let tok = auth["client_token"].as_str().unwrap();
    let (s, v) = with_cert
        .call("GET", "auth/token/lookup-self", Some(tok), None, None)
        .await;
    assert_eq!(
        (s, v["data"]["path"].as_str().unwrap()),
        (200, "auth/cert/login")
    );

    let (s, v) = Client::new(&vault, None)
        .call("POST", "auth/cert/login", None, None, Some(json!({})))
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (400, "client certificate must be supplied")
    );
    let (other, _) = client_ca();
    let stranger = Client::new(&vault, Some(client_leaf(&other, "zone-1")));
    let (s, v) = stranger
        .call("POST", "auth/cert/login", None, None, Some(json!({})))
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (400, "invalid certificate or no client certificate supplied")
    );
}
