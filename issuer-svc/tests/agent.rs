//! `meshca agent` against the real `meshca serve`: `--once` writes cert.pem / key.pem (0600) /
//! bundle.pem with a key that never left the agent, verified by `openssl verify`; the watching
//! agent re-delivers on every rotation (atomically, then `--on-change`) and keeps the current
//! files while the issuer is gone.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ca_core::SecretStore as _;
use common::*;

fn agent_cmd(server: &Server, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["agent", "--server", &server.grpc, "--data-dir"])
        .arg(&server.data_dir)
        .args([
            "--mesh",
            "default",
            "--tag",
            "kuma.io/service=web",
            "--out-dir",
        ])
        .arg(out)
        .args(extra);
    cmd
}

/// The leaf's SPIFFE ID and serial, and whether its public key is the one in `key.pem`.
fn leaf_of(out: &Path) -> (String, String, bool) {
    let chain = std::fs::read(out.join("cert.pem")).unwrap();
    let leaf = pem::parse_many(&chain).unwrap().remove(0);
    let (_, c) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
    let san = format!("{:?}", c.subject_alternative_name().unwrap().unwrap().value);
    let key_pem = std::fs::read_to_string(out.join("key.pem")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).unwrap();
    let matches = key.public_key_raw() == &*c.public_key().subject_public_key.data;
    (san, c.raw_serial_as_string(), matches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_a_verified_certificate_for_a_key_that_stays_local() {
    let server = tokio::task::spawn_blocking(|| Server::start(&[], &[]))
        .await
        .unwrap();
    let out = server.dir.path().join("certs");
    let status = agent_cmd(&server, &out, &["--once"])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (san, _, matches) = leaf_of(&out);
    assert!(san.contains("spiffe://default/web"), "{san}");
    assert!(matches, "cert.pem is for the agent's own key");
    assert_eq!(
        std::fs::metadata(out.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    openssl_verify(
        server.dir.path(),
        &std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        &std::fs::read_to_string(out.join("bundle.pem")).unwrap(),
    );
    // A tag that is not KEY=VALUE: a usage error naming it, nothing written elsewhere.
    let out2 = server.dir.path().join("certs2");
    let o = Command::new(BIN)
        .args(["agent", "--once", "--tag", "web", "--out-dir"])
        .arg(&out2)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tag web"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_follows_rotations_and_survives_the_issuer() {
    let mesh = builtin_mesh("default", &["ca-1"], "ca-1", "3s");
    let server =
        tokio::task::spawn_blocking(move || Server::start(&[("default.yaml", &mesh)], &[]))
            .await
            .unwrap();
    // Outside the server's directory, which goes with it.
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("certs");
    let changes = work.path().join("changes.log");
    let on_change = format!(
        "test -s \"$MESHCA_CERT_DIR/cert.pem\" && echo changed >> {}",
        changes.display()
    );
    let mut agent = agent_cmd(&server, &out, &["--on-change", &on_change])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    // The first certificate, then at least two rotations (3 s certificates rotate at ~80%).
    bounded(30, async {
        while lines(&changes) < 3 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let (_, _, matches) = leaf_of(&out);
    assert!(matches, "every rotation is for the agent's key");
    openssl_verify(
        work.path(),
        &std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        &std::fs::read_to_string(out.join("bundle.pem")).unwrap(),
    );

    // The issuer goes away: the agent keeps running and the files keep the last certificate.
    let before = std::fs::read(out.join("cert.pem")).unwrap();
    drop(server);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
    assert_eq!(std::fs::read(out.join("cert.pem")).unwrap(), before);
    let _ = agent.kill();
    let _ = agent.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_sink_writes_a_tls_secret_and_updates_it() {
    use base64::Engine as _;
    let api = meshca_peers::KubeApiServer::start().await;
    let kdir = tempfile::tempdir().unwrap();
    let kubeconfig = meshca_tests::certmanager::write_kubeconfig(kdir.path(), &api.url());
    let server = tokio::task::spawn_blocking(|| Server::start(&[], &[]))
        .await
        .unwrap();
    let run = |server: &Server| {
        let o = Command::new(BIN)
            .args(["agent", "--once", "--server", &server.grpc, "--data-dir"])
            .arg(&server.data_dir)
            .args(["--mesh", "default", "--tag", "kuma.io/service=web"])
            .args(["--k8s-secret", "web-tls", "--k8s-namespace", "proxies"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let s = &server;
    tokio::task::block_in_place(|| run(s));
    let first = api.object("secrets", "proxies", "web-tls").unwrap();
    assert_eq!(first["type"], "kubernetes.io/tls");
    let field = |o: &serde_json::Value, k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(o["data"][k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let work = tempfile::tempdir().unwrap();
    openssl_verify(
        work.path(),
        &field(&first, "tls.crt"),
        &field(&first, "ca.crt"),
    );
    let key = rcgen::KeyPair::from_pem(&field(&first, "tls.key")).unwrap();
    let leaf = pem::parse_many(field(&first, "tls.crt")).unwrap().remove(0);
    let (_, c) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
    assert_eq!(
        key.public_key_raw(),
        &*c.public_key().subject_public_key.data
    );

    // Again: the Secret is replaced (with the version read), not duplicated.
    tokio::task::block_in_place(|| run(s));
    let second = api.object("secrets", "proxies", "web-tls").unwrap();
    assert_ne!(field(&first, "tls.crt"), field(&second, "tls.crt"));
    assert_eq!(api.names("secrets", "proxies"), ["web-tls"]);
    let writes = api.writes();
    assert!(writes.iter().all(|w| w.problems.is_empty()), "{writes:?}");
    assert!(writes
        .iter()
        .any(|w| w.method == "PUT" && w.body["metadata"]["resourceVersion"].is_string()));

    // A Secret of another type with that name is left alone, and the agent says why.
    let store = store_kubernetes::KubernetesSecretStore::new(
        meshca_tests::certmanager::client_of(&api.url()),
        "proxies",
    );
    let mesh = ca_core::MeshName::new("default").unwrap();
    let taken = ca_core::SecretName::new("db-creds").unwrap();
    store
        .create_if_absent(ca_core::Scope::Mesh(&mesh), &taken, b"keep me")
        .await
        .unwrap();
    let o = Command::new(BIN)
        .args(["agent", "--once", "--server", &server.grpc, "--data-dir"])
        .arg(&server.data_dir)
        .args(["--mesh", "default", "--tag", "kuma.io/service=web"])
        .args(["--k8s-secret", "db-creds", "--k8s-namespace", "proxies"])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is of type system.kuma.io/secret, not kubernetes.io/tls"),
        "{err}"
    );
    assert_eq!(
        store
            .get(ca_core::Scope::Mesh(&mesh), &taken)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"keep me"
    );
}

/// `meshca agent --once` delivering to AWS Secrets Manager (moto) as `key`.
fn aws_once(
    server: &Server,
    moto: &meshca_peers::Moto,
    key: &meshca_peers::AwsKey,
) -> std::process::Output {
    Command::new(BIN)
        .args(["agent", "--once", "--server", &server.grpc, "--data-dir"])
        .arg(&server.data_dir)
        .args(["--mesh", "default", "--tag", "kuma.io/service=kong"])
        .args([
            "--aws-cert-secret",
            "kongcp1-crt",
            "--aws-key-secret",
            "kongcp1-key",
        ])
        .env("AWS_ACCESS_KEY_ID", &key.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &key.secret_access_key)
        .env("AWS_REGION", meshca_tests::acmpca::REGION)
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto.endpoint())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/aws-credentials",
        )
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secrets_manager_sink_writes_kongs_layout_with_only_its_iam_actions() {
    let peer = meshca_tests::acmpca::Peer::start().await;
    let moto = &peer.moto;
    let allowed = moto
        .create_user_with_key(
            "agent",
            Some(&meshca_tests::acmpca::policy(&meshca_aws::SINK_ACTIONS)),
        )
        .await;
    let server = tokio::task::spawn_blocking(|| Server::start(&[], &[]))
        .await
        .unwrap();
    let read = meshca_aws::SecretsManager::new()
        .with_aws_sdk_config(meshca_tests::acmpca::moto_sdk(
            moto,
            Some(moto.admin()),
            meshca_tests::acmpca::REGION,
        ))
        .with_ttl(Duration::ZERO);
    let value = |id: &'static str, field: &'static str| {
        let read = &read;
        async move {
            use ca_core::AwsSecretsManager as _;
            let v = read
                .secret_value(id, 1 << 20, Duration::from_secs(10))
                .await
                .unwrap();
            let json: serde_json::Value = serde_json::from_slice(v.expose()).unwrap();
            json[field].as_str().unwrap().to_owned()
        }
    };

    // First delivery: CreateSecret for both, in Kong's layout.
    let o = tokio::task::block_in_place(|| aws_once(&server, moto, &allowed));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cert = value("kongcp1-crt", "cert").await;
    let key = value("kongcp1-key", "key").await;
    let work = tempfile::tempdir().unwrap();
    let mut admin = server.admin().await;
    let b = admin
        .get_trust_bundle(issuer_svc::proto::GetTrustBundleRequest {
            mesh: "default".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .trust_bundle_pem;
    openssl_verify(work.path(), &cert, &b);
    let leaf = pem::parse_many(&cert).unwrap().remove(0);
    let (_, c) = x509_parser::parse_x509_certificate(leaf.contents()).unwrap();
    let k = rcgen::KeyPair::from_pem(&key).unwrap();
    assert_eq!(k.public_key_raw(), &*c.public_key().subject_public_key.data);

    // Second: PutSecretValue, a new version with a new certificate.
    let o = tokio::task::block_in_place(|| aws_once(&server, moto, &allowed));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(value("kongcp1-crt", "cert").await, cert);

    // Without PutSecretValue: refused, and the message names the action.
    let no_put = moto
        .create_user_with_key(
            "agent-no-put",
            Some(&meshca_tests::acmpca::policy(&[
                "secretsmanager:DescribeSecret",
                "secretsmanager:CreateSecret",
            ])),
        )
        .await;
    let o = tokio::task::block_in_place(|| aws_once(&server, moto, &no_put));
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("secretsmanager:PutSecretValue"), "{err}");
    assert!(err.contains("kongcp1-key"), "{err}");
    // The key never shows in what the agent printed.
    for line in pem_body_lines(&key) {
        assert!(!err.contains(&line) && !String::from_utf8_lossy(&o.stdout).contains(&line));
    }
}

fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 32)
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_signals_the_process_of_a_pid_file() {
    let server = tokio::task::spawn_blocking(|| Server::start(&[], &[]))
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let got = work.path().join("got");
    let pid_file = work.path().join("proxy.pid");
    // A stand-in proxy: writes its pid, records every SIGHUP.
    let script = format!(
        "trap 'echo hup >> {got}' HUP; echo $$ > {pid}.tmp; mv {pid}.tmp {pid}; \
         while :; do sleep 0.05; done",
        got = got.display(),
        pid = pid_file.display()
    );
    let mut proxy = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    bounded(10, async {
        while !pid_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let out = work.path().join("certs");
    let s = &server;
    let status = tokio::task::block_in_place(|| {
        agent_cmd(s, &out, &["--once", "--signal-pid-file"])
            .arg(&pid_file)
            .stdout(Stdio::null())
            .status()
            .unwrap()
    });
    assert!(status.success());
    bounded(10, async {
        while std::fs::read_to_string(&got).unwrap_or_default().trim() != "hup" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = proxy.kill();
    let _ = proxy.wait();

    // A pid file that names no process: the certificate is still delivered, the failure logged.
    std::fs::write(&pid_file, "not a pid\n").unwrap();
    let o = tokio::task::block_in_place(|| {
        agent_cmd(s, &out, &["--once", "--signal-pid-file"])
            .arg(&pid_file)
            .output()
            .unwrap()
    });
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("does not hold a process id"), "{err}");
}
