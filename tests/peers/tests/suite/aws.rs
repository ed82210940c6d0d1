//! moto with IAM auth enforced, `auth/aws/login` replayed to moto, and the Pod Identity
//! credentials endpoint.

use base64::Engine;
use meshca_peers::moto::{sign_query, xml_value, SignedRequest, ACCOUNT_ID};
use meshca_peers::{AwsKey, FrontOptions, Moto, PodIdentityEndpoint};
use serde_json::{json, Value};

use crate::{err, fronted, Client};

const GCI: &str = "Action=GetCallerIdentity&Version=2011-06-15";

/// The login body a Vault client builds from a signed GetCallerIdentity.
fn login_body(role: &str, signed: &SignedRequest) -> Value {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut headers = serde_json::Map::new();
    for (k, v) in &signed.headers {
        headers.insert(k.clone(), json!([v]));
    }
    json!({
        "role": role,
        "iam_http_request_method": "POST",
        "iam_request_url": b64(signed.url.as_bytes()),
        "iam_request_body": b64(signed.body.as_bytes()),
        "iam_request_headers": b64(Value::Object(headers).to_string().as_bytes()),
    })
}

#[tokio::test]
async fn moto_enforces_iam_and_vault_aws_login_replays_to_it() {
    let moto = Moto::start().await;
    let sts = format!("{}/", moto.endpoint());
    assert_eq!(
        moto.admin().arn,
        format!("arn:aws:iam::{ACCOUNT_ID}:user/admin")
    );
    let alice = moto.create_user_with_key("alice", None).await;
    assert!(
        !format!("{alice:?}").contains(&alice.secret_access_key),
        "Debug hides the secret"
    );

    // Enforcement: right key → ARN; wrong secret → SignatureDoesNotMatch; unknown id → InvalidClientTokenId.
    let (s, body) = moto.query(&alice, "sts", GCI).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(xml_value(&body, "Arn").unwrap(), alice.arn);
    let wrong = AwsKey {
        secret_access_key: "not-the-secret".into(),
        ..alice.clone()
    };
    let (s, body) = moto.query(&wrong, "sts", GCI).await;
    assert_eq!(s, 403);
    assert_eq!(xml_value(&body, "Code").unwrap(), "SignatureDoesNotMatch");
    let unknown = AwsKey {
        access_key_id: "AKIAUNKNOWNUNKNOWN00".into(),
        ..alice.clone()
    };
    let (s, body) = moto.query(&unknown, "sts", GCI).await;
    assert_eq!(s, 403);
    assert_eq!(xml_value(&body, "Code").unwrap(), "InvalidClientTokenId");
    // IAM policies are enforced too: alice has none.
    let (s, body) = moto
        .query(&alice, "iam", "Action=ListUsers&Version=2010-05-08")
        .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(xml_value(&body, "Code").unwrap(), "AccessDenied");

    // Vault aws auth (the front's, before OpenBao) pointed at moto.
    let vault = fronted(FrontOptions {
        sts_endpoint: Some(moto.endpoint()),
    })
    .await;
    vault.write("sys/auth/aws", json!({ "type": "aws" })).await;
    vault
        .write(
            "auth/aws/config/client",
            json!({ "iam_server_id_header_value": "vault.test", "sts_region": "us-east-1" }),
        )
        .await;
    vault
        .write("auth/aws/role/cp", json!({ "auth_type": "iam", "bound_iam_principal_arn": [alice.arn], "token_policies": "issuer", "token_ttl": "15m" }))
        .await;
    vault
        .write("auth/aws/role/any-user", json!({ "bound_iam_principal_arn": format!("arn:aws:iam::{ACCOUNT_ID}:user/*"), "token_policies": ["reader"] }))
        .await;
    let c = Client::new(&vault, None);
    let server_id = [("x-vault-aws-iam-server-id", "vault.test")];

    let signed = sign_query(&alice, None, "sts", &sts, GCI, &server_id);
    let (s, v) = c
        .call(
            "POST",
            "auth/aws/login",
            None,
            None,
            Some(login_body("cp", &signed)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["metadata"]["client_arn"], alice.arn.as_str());
    assert_eq!(v["auth"]["metadata"]["account_id"], ACCOUNT_ID);
    assert_eq!(v["auth"]["policies"], json!(["default", "issuer"]));
    assert_eq!(v["auth"]["lease_duration"], 900);
    let tok = v["auth"]["client_token"].as_str().unwrap();
    let (s, _) = c
        .call("GET", "auth/token/lookup-self", Some(tok), None, None)
        .await;
    assert_eq!(s, 200);

    // Badly signed: STS rejects, Vault reports the upstream answer.
    let signed = sign_query(&wrong, None, "sts", &sts, GCI, &server_id);
    let (s, v) = c
        .call(
            "POST",
            "auth/aws/login",
            None,
            None,
            Some(login_body("cp", &signed)),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        err(&v).starts_with("error making upstream request: received error code 403 from STS: "),
        "{v}"
    );
    assert!(err(&v).contains("SignatureDoesNotMatch"));

    // The server-id header must be present and signed.
    let signed = sign_query(&alice, None, "sts", &sts, GCI, &[]);
    let (s, v) = c
        .call(
            "POST",
            "auth/aws/login",
            None,
            None,
            Some(login_body("cp", &signed)),
        )
        .await;
    assert_eq!((s, err(&v).as_str()), (400, "error validating X-Vault-AWS-IAM-Server-ID header: missing header \"X-Vault-AWS-IAM-Server-ID\""));
    let mut signed = sign_query(&alice, None, "sts", &sts, GCI, &[]);
    signed
        .headers
        .push(("x-vault-aws-iam-server-id".into(), "vault.test".into()));
    let (s, v) = c
        .call(
            "POST",
            "auth/aws/login",
            None,
            None,
            Some(login_body("cp", &signed)),
        )
        .await;
    assert_eq!(
        (s, err(&v).as_str()),
        (
            400,
            "error validating X-Vault-AWS-IAM-Server-ID header: vault header wasn't signed"
        )
    );

    // Only GetCallerIdentity is replayed.
    let signed = sign_query(
        &alice,
        None,
        "sts",
        &sts,
        "Action=GetSessionToken&Version=2011-06-15",
        &server_id,
    );
    let (s, _) = c
        .call(
            "POST",
            "auth/aws/login",
            None,
            None,
            Some(login_body("cp", &signed)),
        )
        .await;
    assert_eq!(s, 400);

    // Principal binding: bob is not bound to `cp`, but matches the `user/*` glob.
    let bob = moto.create_user_with_key("bob", None).await;
    let signed = sign_query(&bob, None, "sts", &sts, GCI, &server_id);
    let (s, v) = c
        .call(
            "POST",
            "auth/aws/login",
            None,
            None,
            Some(login_body("cp", &signed)),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        err(&v),
        format!(
            "IAM Principal \"{}\" does not belong to the role \"cp\"",
            bob.arn
        )
    );
    let signed = sign_query(&bob, None, "sts", &sts, GCI, &server_id);
    let (s, v) = c
        .call(
            "POST",
            "auth/aws/login",
            None,
            None,
            Some(login_body("any-user", &signed)),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["auth"]["policies"], json!(["default", "reader"]));
}

#[tokio::test]
async fn pod_identity_endpoint_needs_the_token() {
    let key = AwsKey {
        access_key_id: "AKIAEXAMPLE000000000".into(),
        secret_access_key: "secret".into(),
        arn: format!("arn:aws:iam::{ACCOUNT_ID}:user/pod"),
    };
    let ep = PodIdentityEndpoint::start(key.clone(), "pod-token-1").await;
    assert!(ep.url().starts_with("http://127.0.0.1:") && ep.url().ends_with("/v1/credentials"));
    assert_eq!(
        std::fs::read_to_string(ep.token_file()).unwrap(),
        "pod-token-1"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(ep.token_file())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let s = http.get(ep.url()).send().await.unwrap().status().as_u16();
    assert_eq!(s, 401);
    let s = http
        .get(ep.url())
        .header("authorization", "nope")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(s, 403);
    let resp = http
        .get(ep.url())
        .header("authorization", "pod-token-1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["AccessKeyId"], key.access_key_id.as_str());
    assert_eq!(v["SecretAccessKey"], "secret");
    assert_eq!(v["AccountId"], ACCOUNT_ID);
    assert!(v["Expiration"].as_str().unwrap().ends_with('Z'));
    assert!(v.get("Token").is_none());
    assert_eq!(ep.requests(), 3);

    let with_session =
        PodIdentityEndpoint::start_with_session(key, Some("session".into()), "t").await;
    let resp = http
        .get(with_session.url())
        .header("authorization", "t")
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["Token"], "session");
}
