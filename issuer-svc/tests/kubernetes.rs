//! `meshca serve --store kubernetes`: real issuer processes (replicas) sharing one Kubernetes
//! API (the test server) through its Secrets. Replicas started at once end up with one builtin
//! CA and one bootstrap TLS CA, look like one service to callers (an admin certificate of one
//! works on all, every server certificate verifies with the same `ca.pem`), and a replica that
//! starts later finds what exists. Without the API or without RBAC, `serve` refuses to start
//! with a message naming what is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::path::Path;

use base64::Engine as _;

use common::*;
use issuer_svc::proto::{CreateTokenRequest, RotateTokenKeyRequest, Tag};
use meshca_peers::KubeApiServer;
use meshca_tests::certmanager::write_kubeconfig;

const NS: &str = "kuma-system";

fn mesh_yaml() -> String {
    builtin_mesh("default", &["ca-1"], "ca-1", "24h")
}

/// Starts a replica: its own data directory, the shared kubeconfig.
fn replica(kubeconfig: &Path) -> Server {
    let yaml = mesh_yaml();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Server::start_with_env(
        dir,
        data,
        &[("default.yaml", yaml.as_str())],
        &[
            "--store",
            "kubernetes",
            "--server-name",
            "meshca.kuma-system.svc",
        ],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    )
}

/// Starts `n` replicas at once.
fn replicas(n: usize, kubeconfig: &Path) -> Vec<Server> {
    std::thread::scope(|s| {
        let started: Vec<_> = (0..n).map(|_| s.spawn(|| replica(kubeconfig))).collect();
        started.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_started_at_once_serve_one_ca() {
    bounded(180, async {
        let api = KubeApiServer::start().await;
        // A round trip like a real API server's widens the windows in which the three race.
        api.set_latency(std::time::Duration::from_millis(20));
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = write_kubeconfig(tmp.path(), &api.url());
        let k = kubeconfig.clone();
        let servers = tokio::task::spawn_blocking(move || replicas(3, &k))
            .await
            .unwrap();

        // Exactly one of each Secret, however the three raced.
        let mut names = api.names("secrets", NS);
        names.sort();
        assert_eq!(
            names,
            [
                "default.ca-builtin-cert-ca-1",
                "default.ca-builtin-key-ca-1",
                "meshca-bootstrap-tls",
                "meshca-token-signing-key",
            ],
        );
        let created: Vec<_> = api
            .writes()
            .into_iter()
            .filter(|w| w.method == "POST" && w.path.ends_with("/secrets"))
            .collect();
        assert!(created.iter().all(|w| w.problems.is_empty()), "{created:?}");

        // One bootstrap CA: every replica's ca.pem is the same, and the admin certificate of
        // each replica is accepted by every other (callers are known by the CA key).
        let ca0 = std::fs::read(servers[0].tls_dir().join("ca.pem")).unwrap();
        for s in &servers {
            assert_eq!(std::fs::read(s.tls_dir().join("ca.pem")).unwrap(), ca0);
        }
        // One builtin CA: the same trust bundle from all three, whoever asks.
        let mut bundles = Vec::new();
        for (i, s) in servers.iter().enumerate() {
            bundles.push(bundle_of(s, &servers[(i + 1) % servers.len()]).await);
        }
        assert!(bundles.iter().all(|b| *b == bundles[0]), "{bundles:?}");
        let stored = api
            .object("secrets", NS, "default.ca-builtin-cert-ca-1")
            .unwrap();
        let stored_pem = base64::engine::general_purpose::STANDARD
            .decode(stored["data"]["value"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            pem::parse_many(&bundles[0]).unwrap(),
            pem::parse_many(stored_pem).unwrap(),
            "the bundle is the CA in the Secret"
        );

        // A certificate from replica 2, asked for with replica 0's admin certificate, verifies
        // against the bundle replica 1 gives (openssl, not only our code).
        issue_across_replicas(&servers, &bundles[1], servers[2].dir.path()).await;

        // The server certificates carry the Service name and chain to the shared ca.pem.
        for s in &servers {
            let pem = std::fs::read(s.tls_dir().join("server.pem")).unwrap();
            let der = pem::parse(&pem).unwrap();
            let (_, c) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
            let sans = format!("{:?}", c.subject_alternative_name().unwrap().unwrap().value);
            assert!(sans.contains("meshca.kuma-system.svc"), "{sans}");
        }

        // A replica that starts later finds both CAs; so does one that restarts after all stop.
        let late = tokio::task::spawn_blocking(move || replica(&kubeconfig))
            .await
            .unwrap();
        assert_eq!(std::fs::read(late.tls_dir().join("ca.pem")).unwrap(), ca0);
        assert_eq!(bundle_of(&late, &servers[0]).await, bundles[0]);
        assert_eq!(api.names("secrets", NS).len(), 4);

        // One token signing key: a token minted by one replica works at another; rotated at
        // one, it stops working at the others once they re-read the Secret.
        let token = create_token(&servers[0]).await;
        assert!(issue_with_token(&servers[1], &token).await.is_ok());
        let tls = servers[0].tls_dir();
        servers[0]
            .client_with(&tls.join("admin.pem"), &tls.join("admin-key.pem"))
            .await
            .rotate_token_key(RotateTokenKeyRequest {})
            .await
            .unwrap();
        loop {
            match issue_with_token(&servers[1], &token).await {
                Ok(()) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
                Err(code) => {
                    assert_eq!(code, tonic::Code::PermissionDenied);
                    break;
                }
            }
        }
        // A new token works everywhere once each replica has the new key.
        let fresh = create_token(&servers[0]).await;
        for s in [&servers[1], &servers[2], &late] {
            while issue_with_token(s, &fresh).await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        let rotations: Vec<_> = api
            .writes()
            .into_iter()
            .filter(|w| w.method == "PUT" && w.path.ends_with("/meshca-token-signing-key"))
            .collect();
        assert_eq!(rotations.len(), 1, "{rotations:?}");
        assert!(rotations[0].body["metadata"]["resourceVersion"].is_string());
    })
    .await;
}

async fn create_token(server: &Server) -> String {
    server
        .admin()
        .await
        .create_token(CreateTokenRequest {
            mesh: "default".into(),
            tags: vec![Tag {
                name: "kuma.io/service".into(),
                value: "web".into(),
            }],
            valid_for_seconds: 600,
        })
        .await
        .unwrap()
        .into_inner()
        .token
}

/// Issues `default`/web on `server` with `token` and no client certificate.
async fn issue_with_token(server: &Server, token: &str) -> Result<(), tonic::Code> {
    server
        .anonymous()
        .await
        .issue_certificate(bearer(
            request("default", &[("kuma.io/service", "web")]),
            token,
        ))
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

/// Runs `meshca serve --store kubernetes` expecting it to refuse to start; returns stderr.
fn serve_fails(kubeconfig: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--store", "kubernetes", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_api_or_its_rbac_serve_says_what_is_missing() {
    bounded(120, async {
        let api = KubeApiServer::start().await;
        let tmp = tempfile::tempdir().unwrap();

        // No permission to read Secrets: the message names the rule to add.
        api.forbid_on("secrets", "get");
        let kubeconfig = write_kubeconfig(tmp.path(), &api.url());
        let k = kubeconfig.clone();
        let err = tokio::task::spawn_blocking(move || serve_fails(&k))
            .await
            .unwrap();
        assert!(
            err.contains("needs get, create and update on secrets in namespace kuma-system"),
            "{err}"
        );
        assert!(api.names("secrets", NS).is_empty());

        // Nothing listening: the message names the Secret it could not read.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let dead = tempfile::tempdir().unwrap();
        let kubeconfig = write_kubeconfig(dead.path(), &url);
        let err = tokio::task::spawn_blocking(move || serve_fails(&kubeconfig))
            .await
            .unwrap();
        assert!(err.contains("meshca-bootstrap-tls"), "{err}");

        // Flags are checked before anything is read or written.
        let (ok, _, err) = run_cli(&[
            "serve",
            "--namespace",
            "Kuma_System",
            "--store",
            "kubernetes",
        ]);
        assert!(!ok);
        assert!(err.contains("--namespace \"Kuma_System\""), "{err}");
        let (ok, _, err) = run_cli(&["serve", "--server-name", "not a name"]);
        assert!(!ok);
        assert!(err.contains("--server-name \"not a name\""), "{err}");
    })
    .await;
}

/// As `deploy/kubernetes` runs it: mesh Secrets in Kuma's namespace (`--namespace`), meshca's
/// own (bootstrap TLS CA, token signing key) in its own (`--own-namespace`), nothing of one in
/// the other, and `meshca token rotate-key` replaces the key where it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_secrets_live_apart_from_the_mesh_secrets() {
    bounded(120, async {
        let api = KubeApiServer::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = write_kubeconfig(tmp.path(), &api.url());
        let server = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            Server::start_with_env(
                dir,
                data,
                &[("default.yaml", mesh_yaml().as_str())],
                &[
                    "--store",
                    "kubernetes",
                    "--namespace",
                    NS,
                    "--own-namespace",
                    "meshca-system",
                ],
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            )
        })
        .await
        .unwrap();
        let mut mesh = api.names("secrets", NS);
        mesh.sort();
        assert_eq!(
            mesh,
            [
                "default.ca-builtin-cert-ca-1",
                "default.ca-builtin-key-ca-1"
            ]
        );
        let mut own = api.names("secrets", "meshca-system");
        own.sort();
        assert_eq!(own, ["meshca-bootstrap-tls", "meshca-token-signing-key"]);

        let token = create_token(&server).await;
        assert!(issue_with_token(&server, &token).await.is_ok());
        server
            .admin()
            .await
            .rotate_token_key(RotateTokenKeyRequest {})
            .await
            .unwrap();
        let rotations: Vec<_> = api
            .writes()
            .into_iter()
            .filter(|w| w.method == "PUT" && w.path.ends_with("/meshca-token-signing-key"))
            .map(|w| w.path)
            .collect();
        assert_eq!(rotations.len(), 1, "{rotations:?}");
        assert!(
            rotations[0].contains("/namespaces/meshca-system/"),
            "{rotations:?}"
        );
    })
    .await;
}

/// Outside a pod and without --namespace, the Secrets go to the namespace of the kubeconfig's
/// context, as kubectl's would (not `kuma-system`); --namespace still wins over it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_a_pod_the_kubeconfig_context_names_the_namespace() {
    bounded(120, async {
        let api = KubeApiServer::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = tmp.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    \
                 server: {}\ncontexts:\n- name: other\n  context:\n    cluster: test\n    \
                 user: test\n    namespace: kuma-system\n- name: ops\n  context:\n    \
                 cluster: test\n    user: test\n    namespace: mesh-ops\n\
                 current-context: ops\nusers:\n- name: test\n  user:\n    token: test-token\n",
                api.url()
            ),
        )
        .unwrap();
        let start = |extra: &'static [&'static str]| {
            let kubeconfig = kubeconfig.clone();
            tokio::task::spawn_blocking(move || {
                let dir = tempfile::tempdir().unwrap();
                let data = dir.path().join("data");
                let mut args = vec!["--store", "kubernetes"];
                args.extend_from_slice(extra);
                Server::start_with_env(
                    dir,
                    data,
                    &[("default.yaml", mesh_yaml().as_str())],
                    &args,
                    &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
                )
            })
        };
        let server = start(&[]).await.unwrap();
        let mut names = api.names("secrets", "mesh-ops");
        names.sort();
        assert_eq!(
            names,
            [
                "default.ca-builtin-cert-ca-1",
                "default.ca-builtin-key-ca-1",
                "meshca-bootstrap-tls",
                "meshca-token-signing-key",
            ],
        );
        assert!(api.names("secrets", NS).is_empty());
        assert!(
            server.log().contains("mesh-ops"),
            "the namespace is logged: {}",
            server.log()
        );
        drop(server);

        let _explicit = start(&["--namespace", "mesh-explicit"]).await.unwrap();
        assert_eq!(api.names("secrets", "mesh-explicit").len(), 4);
        assert!(api.names("secrets", NS).is_empty());
    })
    .await;
}
