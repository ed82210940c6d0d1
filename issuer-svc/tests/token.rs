//! Bootstrap tokens against the real `meshca serve`: `meshca token create` mints a token for one
//! identity; a caller without a client certificate gets exactly that identity with it and nothing
//! else; expired, tampered, foreign, mis-scoped and replayed-for-another-identity tokens are
//! refused with PermissionDenied and never logged; rotating the signing key revokes them all. The
//! agent bootstraps with a token, then renews with its own mesh certificate, also after a restart
//! with the token revoked.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use common::*;
use issuer_svc::proto::issuer_client::IssuerClient;
use issuer_svc::proto::{CreateTokenRequest, GetTrustBundleRequest, Tag};
use tonic::transport::Channel;
use tonic::Code;

/// `meshca token create` as the bootstrap admin; the token (stdout).
fn mint(server: &Server, mesh: &str, tags: &[&str], valid_for: &str) -> String {
    let mut args = vec![
        "token",
        "create",
        "--server",
        &server.grpc,
        "--mesh",
        mesh,
        "--valid-for",
        valid_for,
    ];
    for t in tags {
        args.extend(["--tag", t]);
    }
    let data_dir = server.data_dir.to_str().unwrap();
    args.extend(["--data-dir", data_dir]);
    let (ok, stdout, stderr) = run_cli(&args);
    assert!(ok, "token create failed: {stderr}");
    assert!(stderr.contains("valid until"), "{stderr}");
    stdout.trim().to_owned()
}

/// Issues `mesh`/`tags` with `token`; the status code on refusal, with its message.
async fn issue_with(
    client: &mut IssuerClient<Channel>,
    token: &str,
    mesh: &str,
    tags: &[(&str, &str)],
) -> Result<String, (Code, String)> {
    client
        .issue_certificate(bearer(request(mesh, tags), token))
        .await
        .map(|r| r.into_inner().certificate.unwrap().uri_sans[0].clone())
        .map_err(|s| (s.code(), s.message().to_owned()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed by `key_pem` with `kid`, with the claims of a real one changed by `edit`.
fn forge(key_pem: &[u8], kid: &str, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let now = unix_now();
    let mut claims = serde_json::json!({
        "iss": "meshca", "aud": "meshca-bootstrap", "sub": "spiffe://default/web",
        "mesh": "default", "tags": {"kuma.io/service": ["web"]},
        "iat": now, "nbf": now, "exp": now + 3600, "jti": "forged",
    });
    edit(&mut claims);
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ec_pem(key_pem).unwrap(),
    )
    .unwrap()
}

/// The `kid` of a token.
fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token).unwrap().kid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_gets_exactly_its_identity_and_misuse_is_refused() {
    let default = builtin_mesh("default", &["ca-1"], "ca-1", "1h");
    let other = builtin_mesh("other", &["ca-1"], "ca-1", "1h");
    let server = tokio::task::spawn_blocking(move || {
        Server::start(
            &[("default.yaml", &default), ("other.yaml", &other)],
            &["--log-level", "trace"],
        )
    })
    .await
    .unwrap();
    let s = &server;
    let web = tokio::task::block_in_place(|| mint(s, "default", &["kuma.io/service=web"], "1h"));
    let tagged = tokio::task::block_in_place(|| {
        mint(s, "default", &["kuma.io/service=api", "version=v1"], "10m")
    });
    let mut tokens = vec![web.clone(), tagged.clone()];
    bounded(60, async {
        let mut anon = server.anonymous().await;
        // The token's own identity: a certificate for it.
        let san = issue_with(&mut anon, &web, "default", &[("kuma.io/service", "web")])
            .await
            .unwrap();
        assert_eq!(san, "spiffe://default/web");
        let san = issue_with(
            &mut anon,
            &tagged,
            "default",
            &[("kuma.io/service", "api"), ("version", "v1")],
        )
        .await
        .unwrap();
        assert_eq!(san, "spiffe://default/api");

        let denied = |r: Result<String, (Code, String)>, why: &str| {
            let (code, msg) = r.expect_err(why);
            assert_eq!(code, Code::PermissionDenied, "{why}: {msg}");
            msg
        };
        // Replayed for another identity, another mesh, other tags.
        denied(
            issue_with(&mut anon, &web, "default", &[("kuma.io/service", "db")]).await,
            "another service",
        );
        denied(
            issue_with(&mut anon, &web, "other", &[("kuma.io/service", "web")]).await,
            "another mesh",
        );
        denied(
            issue_with(
                &mut anon,
                &web,
                "default",
                &[("kuma.io/service", "web"), ("version", "v2")],
            )
            .await,
            "extra tags",
        );
        denied(
            issue_with(&mut anon, &tagged, "default", &[("kuma.io/service", "api")]).await,
            "fewer tags",
        );
        // Tampered: the payload changed, the signature kept.
        let mut parts: Vec<&str> = web.split('.').collect();
        let forged_payload = {
            use base64::Engine as _;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let mut claims: serde_json::Value =
                serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
            claims["tags"]["kuma.io/service"] = serde_json::json!(["db"]);
            b64.encode(serde_json::to_vec(&claims).unwrap())
        };
        parts[1] = &forged_payload;
        let tampered = parts.join(".");
        let msg = denied(
            issue_with(
                &mut anon,
                &tampered,
                "default",
                &[("kuma.io/service", "db")],
            )
            .await,
            "tampered",
        );
        assert!(msg.contains("signature"), "{msg}");
        // Expired (signed with the real key, so only the expiry is wrong).
        let key = std::fs::read(
            server
                .data_dir
                .join("secrets/_global/meshca-token-signing-key"),
        )
        .unwrap();
        let kid = kid_of(&web);
        let expired = forge(&key, &kid, |c| {
            c["iat"] = (unix_now() - 7200).into();
            c["nbf"] = (unix_now() - 7200).into();
            c["exp"] = (unix_now() - 3600).into();
        });
        let msg = denied(
            issue_with(
                &mut anon,
                &expired,
                "default",
                &[("kuma.io/service", "web")],
            )
            .await,
            "expired",
        );
        assert!(msg.contains("expired"), "{msg}");
        // Not a bootstrap token (another audience), and one from another issuer's key.
        let other_aud = forge(&key, &kid, |c| c["aud"] = "someone-else".into());
        denied(
            issue_with(
                &mut anon,
                &other_aud,
                "default",
                &[("kuma.io/service", "web")],
            )
            .await,
            "audience",
        );
        let stranger = rcgen::KeyPair::generate().unwrap().serialize_pem();
        let foreign = forge(stranger.as_bytes(), &kid, |_| {});
        let msg = denied(
            issue_with(
                &mut anon,
                &foreign,
                "default",
                &[("kuma.io/service", "web")],
            )
            .await,
            "foreign key",
        );
        assert!(msg.contains("signature"), "{msg}");
        denied(
            issue_with(
                &mut anon,
                "not-a-token",
                "default",
                &[("kuma.io/service", "web")],
            )
            .await,
            "garbage",
        );
        tokens.extend([expired, other_aud, foreign]);
        // No token, no certificate: nothing.
        let err = anon
            .issue_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        // A token holder may do nothing else.
        let err = anon
            .get_trust_bundle(bearer(
                GetTrustBundleRequest {
                    mesh: "default".into(),
                },
                &web,
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let create = |mesh: &str, service: &str, secs: u64| CreateTokenRequest {
            mesh: mesh.into(),
            tags: vec![Tag {
                name: "kuma.io/service".into(),
                value: service.into(),
            }],
            valid_for_seconds: secs,
        };
        let err = anon
            .create_token(bearer(create("default", "web", 60), &web))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        // Operators mint only where the authz file lets them; the admin for served meshes only,
        // for at most 30 days.
        let (cert, key) = operator_cert(&server, "stranger");
        let err = server
            .client_with(&cert, &key)
            .await
            .create_token(create("default", "web", 60))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        let mut admin = server.admin().await;
        let err = admin
            .create_token(create("nowhere", "web", 60))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{}", err.message());
        let err = admin
            .create_token(create("default", "web", 31 * 24 * 3600))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    })
    .await;

    // Rotating the signing key revokes every token at once.
    let (ok, _, stderr) = run_cli(&[
        "token",
        "rotate-key",
        "--server",
        &server.grpc,
        "--data-dir",
        server.data_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    bounded(30, async {
        let mut anon = server.anonymous().await;
        let (code, msg) = issue_with(&mut anon, &web, "default", &[("kuma.io/service", "web")])
            .await
            .unwrap_err();
        assert_eq!(code, Code::PermissionDenied);
        assert!(msg.contains("signing key"), "{msg}");
    })
    .await;

    // Refusals are logged, tokens never.
    let log = server.log();
    assert!(log.contains("bootstrap token refused"), "{log}");
    for t in &tokens {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token is in the log");
    }
}

fn changes(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// `meshca agent` for `default`/web with only the server's CA and `token_file`; `extra` after.
fn agent_with_token(server: &Server, token_file: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--server", &server.grpc, "--token-file"])
        .arg(token_file)
        .arg("--ca-cert")
        .arg(server.tls_dir().join("ca.pem"))
        // No operator credentials anywhere near the agent.
        .args(["--data-dir", "/nonexistent/meshca-agent"])
        .args(["--mesh", "default", "--tag", "kuma.io/service=web"])
        .args(extra);
    cmd
}

/// The watching agent, writing to `out` and running `on_change`.
fn watching_agent(server: &Server, token_file: &Path, out: &Path, on_change: &str) -> Command {
    let out = out.to_str().unwrap();
    let mut cmd = agent_with_token(
        server,
        token_file,
        &["--out-dir", out, "--on-change", on_change],
    );
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_bootstraps_with_a_token_then_renews_with_its_own_certificate() {
    let mesh = builtin_mesh("default", &["ca-1"], "ca-1", "10s");
    let server =
        tokio::task::spawn_blocking(move || Server::start(&[("default.yaml", &mesh)], &[]))
            .await
            .unwrap();
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("web.token");
    common::token_file(&server, "web", &token_file);
    assert_eq!(
        std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // --once with the token alone.
    let once = work.path().join("once");
    let o = agent_with_token(&server, &token_file, &["--once", "--out-dir"])
        .arg(&once)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    openssl_verify(
        work.path(),
        &std::fs::read_to_string(once.join("cert.pem")).unwrap(),
        &std::fs::read_to_string(once.join("bundle.pem")).unwrap(),
    );

    // The watching agent: the token for the first certificate, then its own.
    let out = work.path().join("certs");
    let log = work.path().join("changes.log");
    let on_change = format!("echo changed >> {}", log.display());
    let mut agent = watching_agent(&server, &token_file, &out, &on_change)
        .spawn()
        .unwrap();
    bounded(30, async {
        while changes(&log) < 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Right after a delivery (the certificate has ~10 s left), stop it and revoke the token.
    let _ = agent.kill();
    let _ = agent.wait();
    let (ok, _, stderr) = run_cli(&[
        "token",
        "rotate-key",
        "--server",
        &server.grpc,
        "--data-dir",
        server.data_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let o = agent_with_token(&server, &token_file, &["--once", "--out-dir"])
        .arg(work.path().join("revoked"))
        .output()
        .unwrap();
    assert!(!o.status.success(), "a revoked token still works");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("PermissionDenied"), "{err}");

    // Restarted with the revoked token: it renews with the certificate it kept, and follows the
    // rotations after.
    let before = changes(&log);
    let mut agent = watching_agent(&server, &token_file, &out, &on_change)
        .spawn()
        .unwrap();
    bounded(30, async {
        while changes(&log) < before + 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let _ = agent.kill();
    let _ = agent.wait();
    let chain = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    openssl_verify(
        work.path(),
        &chain,
        &std::fs::read_to_string(out.join("bundle.pem")).unwrap(),
    );
    // The server saw a data plane renew, not a token.
    let log = server.log();
    assert!(
        log.contains("data plane spiffe://default/web"),
        "renewals are by certificate: {log}"
    );
}
