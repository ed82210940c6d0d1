//! Bounded connections and streams: idle anonymous connections are capped and closed, callers
//! with certificates keep being served, watches are capped per identity and per connection,
//! and a watch opened with a bootstrap token ends when the token stops working.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{bearer, bounded, builtin_mesh, http_get, request, run_cli, Server};
use issuer_svc::proto::issuer_client::IssuerClient;
use issuer_svc::proto::{CreateTokenRequest, RotateTokenKeyRequest, Tag};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tonic::transport::Channel;
use tonic::Code;

/// The descriptor limit the server runs under in the pressure tests.
const NOFILE: u64 = 256;

/// A TLS client that trusts the server's CA and presents no certificate.
fn anonymous_tls(server: &Server) -> tokio_rustls::TlsConnector {
    let ca = std::fs::read(server.tls_dir().join("ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for p in pem::parse_many(ca).unwrap() {
        roots
            .add(rustls_pki_types::CertificateDer::from(p.into_contents()))
            .unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Opens `n` anonymous TLS connections that never send a request; those the server refused or
/// shed already are left out.
async fn idle_anonymous(
    server: &Server,
    n: usize,
) -> Vec<tokio_rustls::client::TlsStream<TcpStream>> {
    let tls = anonymous_tls(server);
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut held = Vec::new();
    for _ in 0..n {
        let Ok(tcp) = TcpStream::connect(&server.grpc).await else {
            continue;
        };
        let handshake =
            tokio::time::timeout(Duration::from_secs(10), tls.connect(name.clone(), tcp));
        if let Ok(Ok(s)) = handshake.await {
            held.push(s);
        }
    }
    held
}

/// Waits (bounded) until the server has closed every one of `conns`.
async fn all_closed(conns: Vec<tokio_rustls::client::TlsStream<TcpStream>>) {
    let mut tasks = tokio::task::JoinSet::new();
    for mut c in conns {
        tasks.spawn(async move {
            let mut buf = [0u8; 256];
            // Server frames (SETTINGS...) may come first; EOF or a reset is the close.
            loop {
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

fn token_request(service: &str, secs: u64) -> CreateTokenRequest {
    CreateTokenRequest {
        mesh: "default".into(),
        tags: vec![Tag {
            name: "kuma.io/service".into(),
            value: service.into(),
        }],
        valid_for_seconds: secs,
    }
}

async fn mint(admin: &mut IssuerClient<Channel>, service: &str, secs: u64) -> String {
    admin
        .create_token(token_request(service, secs))
        .await
        .unwrap()
        .into_inner()
        .token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_anonymous_connections_are_capped_and_closed_while_the_admin_is_served() {
    let server = Server::start_limited(NOFILE, &[], &["--idle-timeout", "2s"]);
    let fds_before = server.open_fds();
    let (_, rss_before) = server.rss_mib();
    bounded(120, async {
        let held = idle_anonymous(&server, 300).await;
        let fds_held = server.open_fds();
        let (_, rss_held) = server.rss_mib();
        println!(
            "300 idle anonymous TLS connections under ulimit -n {NOFILE}: server fds {fds_before} -> {fds_held}, RSS {rss_before:.1} -> {rss_held:.1} MiB"
        );
        assert!(
            fds_held < NOFILE as usize - 32,
            "the server holds {fds_held} descriptors of {NOFILE}"
        );
        // The admin (a client certificate) is served, and so is /healthz.
        let out = server.dir.path().join("certs");
        let (ok, _, stderr) = run_cli(&[
            "issue",
            "--server",
            &server.grpc,
            "--data-dir",
            server.data_dir.to_str().unwrap(),
            "--tag",
            "kuma.io/service=web",
            "--out-dir",
            out.to_str().unwrap(),
        ]);
        assert!(ok, "meshca issue while idle connections are held: {stderr}");
        let (status, body) = server.http_get("/healthz");
        assert!(status.contains("200"), "{status}");
        assert_eq!(body, "ok\n");
        // Every idle anonymous connection is closed after the idle timeout (or shed before).
        all_closed(held).await;
    })
    .await;
    // The descriptors are back.
    bounded(30, async {
        while server.open_fds() > fds_before + 8 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_keeps_serving_under_connection_pressure() {
    let server = Server::start_limited(NOFILE, &[], &[]);
    bounded(120, async {
        // Idle connections that never send a request, beyond the descriptor limit.
        let mut idle = Vec::new();
        for _ in 0..300 {
            if let Ok(s) = TcpStream::connect(&server.metrics).await {
                idle.push(s);
            }
        }
        let server = &server;
        // The accept loop does not spin while they are held (a spinning one burns a core).
        let cpu = cpu_seconds(server.pid());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let burnt = cpu_seconds(server.pid()) - cpu;
        println!("CPU while 300 idle metrics connections are held for 2 s: {burnt:.2} s");
        assert!(burnt < 1.0, "the server burnt {burnt:.2} s of CPU in 2 s");
        // A probe still gets through while they are held.
        let (status, _) = tokio::task::spawn_blocking({
            let metrics = server.metrics.clone();
            move || http_get(&metrics, "/healthz")
        })
        .await
        .unwrap();
        assert!(status.contains("200"), "{status}");
        println!(
            "300 idle metrics connections: server holds {} fds",
            server.open_fds()
        );
        drop(idle);
        // And after the pressure.
        let (status, body) = server.http_get("/healthz");
        assert!(status.contains("200"), "{status}");
        assert_eq!(body, "ok\n");
    })
    .await;
}

/// User plus system CPU time of a process so far, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, man 5 proc).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_hits_the_per_connection_and_per_identity_caps() {
    let server = Server::start(
        &[],
        &[
            "--max-streams-per-connection",
            "3",
            "--max-watches-per-identity",
            "4",
        ],
    );
    bounded(60, async {
        let mut admin = server.admin().await;
        let token = mint(&mut admin, "web", 600).await;
        let web = request("default", &[("kuma.io/service", "web")]);
        let watch = |client: &mut IssuerClient<Channel>| {
            let mut client = client.clone();
            let req = bearer(web.clone(), &token);
            async move { client.watch_certificate(req).await }
        };
        // One connection: three streams, then the per-connection cap.
        let mut first = server.anonymous().await;
        let mut streams = Vec::new();
        for _ in 0..3 {
            let mut s = watch(&mut first).await.unwrap().into_inner();
            s.message().await.unwrap().unwrap();
            streams.push(s);
        }
        let err = watch(&mut first).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
        assert!(
            err.message().contains("--max-streams-per-connection"),
            "{}",
            err.message()
        );
        // Another connection: one more stream, then the per-identity cap.
        let mut second = server.anonymous().await;
        let mut s = watch(&mut second).await.unwrap().into_inner();
        s.message().await.unwrap().unwrap();
        streams.push(s);
        let err = watch(&mut second).await.unwrap_err();
        assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
        assert!(
            err.message().contains("--max-watches-per-identity"),
            "{}",
            err.message()
        );
        // Another identity is not held back by web's watches.
        let mut admin_watch = admin
            .watch_certificate(request("default", &[("kuma.io/service", "db")]))
            .await
            .unwrap()
            .into_inner();
        admin_watch.message().await.unwrap().unwrap();
        // Closing a stream frees its slot (once the server has seen the stream go).
        drop(streams.remove(0));
        loop {
            match watch(&mut second).await {
                Ok(s) => {
                    s.into_inner().message().await.unwrap().unwrap();
                    break;
                }
                Err(e) => {
                    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_watches_end_on_key_rotation_and_expiry_while_certificate_watches_go_on() {
    // Certificates live 4s: watchers get a new one every few seconds.
    let server = Server::start(
        &[(
            "default.yaml",
            &builtin_mesh("default", &["ca-1"], "ca-1", "4s"),
        )],
        &[],
    );
    bounded(90, async {
        let mut admin = server.admin().await;
        let web = request("default", &[("kuma.io/service", "web")]);
        let mut anon = server.anonymous().await;

        // A certificate-authenticated watch (the admin's).
        let mut certified = admin
            .watch_certificate(request("default", &[("kuma.io/service", "db")]))
            .await
            .unwrap()
            .into_inner();
        certified.message().await.unwrap().unwrap();

        // A token watch ends with PermissionDenied once the signing key rotates.
        let token = mint(&mut admin, "web", 600).await;
        let mut by_token = anon
            .watch_certificate(bearer(web.clone(), &token))
            .await
            .unwrap()
            .into_inner();
        by_token.message().await.unwrap().unwrap();
        admin
            .rotate_token_key(RotateTokenKeyRequest {})
            .await
            .unwrap();
        let err = ended(&mut by_token).await;
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
        assert!(err.message().contains("rotated"), "{}", err.message());

        // A token watch ends with PermissionDenied once the token expires.
        let short = mint(&mut admin, "web", 2).await;
        let mut by_short = anon
            .watch_certificate(bearer(web.clone(), &short))
            .await
            .unwrap()
            .into_inner();
        by_short.message().await.unwrap().unwrap();
        let err = ended(&mut by_short).await;
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
        assert!(err.message().contains("expired"), "{}", err.message());

        // The certificate-authenticated watch goes on: it gets certificates issued after both
        // token watches ended (the first may have been queued before).
        let ended_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        loop {
            let next = certified.message().await.unwrap().unwrap();
            if next.certificate.unwrap().not_before + 10 > ended_at {
                break;
            }
        }
    })
    .await;
}

/// Reads a watch until it ends with an error (a bounded number of rotations first).
async fn ended(
    stream: &mut tonic::Streaming<issuer_svc::proto::WatchCertificateResponse>,
) -> tonic::Status {
    for _ in 0..20 {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(e) => return e,
        }
    }
    panic!("the stream did not end")
}
