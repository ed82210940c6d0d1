//! The paired-proxy mesh end to end with real nginx, on 127.0.0.1 only:
//!
//! ```text
//!  service A ──HTTP──▶ nginx KA ══mTLS══▶ nginx KB ──HTTP──▶ service B ("hello from b")
//!  (this test)          ▲ files            ▲ files              (this test)
//!                 meshca agent a     meshca agent b
//!                           ╲            ╱
//!                      meshca serve (mesh `default`: vault backend, `other`: builtin)
//! ```
//!
//! Each nginx runs as the test's user in its own prefix under the test's temporary directory, and
//! is fed by its own `meshca agent` (files sink, `--on-change "nginx -p … -c … -s reload"`), which
//! holds only the server's CA and a bootstrap token for its identity (`meshca token create`): the
//! token gets the first certificate, the agent's own certificate every renewal after.
//!
//! # What the certificates carry, and why mesh `default` uses the vault backend
//!
//! A builtin (or provided) CA signs leaves with an empty subject and URI SANs only
//! (`spiffe://default/b`, `kuma://kuma.io/service/b`). nginx cannot check those on an upstream:
//! with `proxy_ssl_verify on` it always matches `proxy_ssl_name` against the DNS SANs, or the
//! subject CN when there are none (OpenSSL's `X509_check_host`), so every handshake with a builtin
//! leaf fails verification. Mesh `default` therefore uses a vault backend (the Vault API test
//! server of `meshca-peers`, `mode: sign`, so the agent's key never leaves it) with
//! `commonName: '{{ tag "kuma.io/service" }}.mesh'`. B's certificate then has the URI SANs
//! `spiffe://default/b` and `kuma://kuma.io/service/b`, the subject `CN=b.mesh`, and no DNS SAN;
//! meshca renders the CN from the same validated `kuma.io/service` tag that yields the SPIFFE ID.
//!
//! # Who checks which identity, and how
//!
//! * KA checks that KB is `spiffe://default/b`: `proxy_ssl_verify on` with
//!   `proxy_ssl_trusted_certificate` = KA's bundle.pem (only mesh `default`'s CA) and
//!   `proxy_ssl_name b.mesh` (sent as SNI too): the chain must lead to mesh `default`'s CA, and
//!   the CN, which that CA writes only for service `b`, must be `b.mesh`. The URI SAN itself is not
//!   read by nginx; the CN stands for it. A valid mesh certificate of service `c` is refused (KA
//!   answers 502 and logs `upstream SSL certificate does not match "b.mesh"`).
//! * KB checks that KA is service `a` of mesh `default`: `ssl_verify_client on` with
//!   `ssl_client_certificate` = KB's bundle.pem (a certificate of mesh `other`'s CA gets 400 "The
//!   SSL certificate error"; none at all gets 400 "No required SSL certificate was sent"), then a
//!   `map` of `$ssl_client_s_dn` that lets only `CN=a.mesh` through (service `c` gets 403).
//!
//! # What is shown
//!
//! 1. A's requests reach B through KA and KB.
//! 2. The refusals above, each next to a control that succeeds (so they are about identity).
//! 3. Certificates live 6 s and rotate every ~4.5 s: during three rotations of both agents, a
//!    continuous loop of requests through KA sees only 200s with B's body. The loop outlives the
//!    first certificates, so it also proves that both nginx reloaded them.
//! 4. With `meshca serve` killed, requests keep succeeding for a window shorter than what is left
//!    of the certificates' lifetime; the agents stay up and the files keep their certificates.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use meshca_tests::openbao::Peer;
use meshca_tests::vault::{Auth, Role};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer, ServerName, UnixTime,
};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Lifetime of mesh `default`'s data plane certificates: rotated at ~80%, every ~4.5 s.
const EXPIRATION_SECS: u64 = 6;
/// Rotations of each agent's certificate that the traffic must go through.
const ROTATIONS: usize = 3;
const B_BODY: &str = "hello from b";
const C_BODY: &str = "hello from c";
/// Pause between two of service A's requests (keeps the loop continuous without hogging CPUs).
const PAUSE: Duration = Duration::from_millis(10);

#[test]
fn nginx_proxies_fed_by_meshca_agents_keep_the_mesh_up() {
    let nginx = nginx_bin();
    let vault = Vault::start();
    let server = Server::start(
        &[
            ("default.yaml", &vault.mesh_yaml),
            (
                "other.yaml",
                &builtin_mesh("other", &["ca-1"], "ca-1", "1h"),
            ),
        ],
        &[],
    );
    // Outside the server's directory, which goes away with it in part 4.
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let [ka, ka_to_c_as_b, ka_to_c_as_c, kb, kc] = free_ports();
    let b = serve_http(B_BODY);
    let (a_certs, b_certs) = (w.join("a-certs"), w.join("b-certs"));
    let (ka_prefix, kb_prefix) = (w.join("ka"), w.join("kb"));

    // The agents first: nginx needs their files to start (their first --on-change finds no nginx
    // to reload yet, which the agent logs and moves past).
    let agent_a = Agent::start(
        &server,
        "a",
        &a_certs,
        &reload_command(&nginx, &ka_prefix),
        w,
    );
    let agent_b = Agent::start(
        &server,
        "b",
        &b_certs,
        &reload_command(&nginx, &kb_prefix),
        w,
    );
    wait_until(
        "both agents' first certificates",
        Duration::from_secs(30),
        || a_certs.join("cert.pem").exists() && b_certs.join("cert.pem").exists(),
    );
    assert_mesh_identity(&Leaf::of(&a_certs), "a");
    assert_mesh_identity(&Leaf::of(&b_certs), "b");

    let _kb = Nginx::start(&nginx, &kb_prefix, &kb_http(&b_certs, kb, b), &[kb]);
    let proxy_ka = Nginx::start(
        &nginx,
        &ka_prefix,
        &ka_http(&a_certs, ka, kb, ka_to_c_as_b, ka_to_c_as_c, kc),
        &[ka, ka_to_c_as_b, ka_to_c_as_c],
    );

    // 1. A → KA → KB → B.
    assert_eq!(get(ka), Ok((200, B_BODY.to_owned())));

    // 2. Identity checks, both ways.
    let _kc = ka_refuses_a_server_that_is_not_b(
        &server,
        &nginx,
        w,
        &proxy_ka,
        kc,
        kb,
        [ka_to_c_as_b, ka_to_c_as_c],
    );
    kb_refuses_clients_that_are_not_a(&server, w, kb, &a_certs, &b_certs);

    // 3. Rotations under continuous traffic.
    rotations_under_traffic(ka, kb, [&agent_a, &agent_b], &a_certs, &b_certs);

    // 4. The issuer goes away.
    issuer_outage(server, ka, [agent_a, agent_b], &a_certs, &b_certs);
}

/// Part 2, KA's side: a server with a valid mesh `default` certificate of service `c` (nginx KC)
/// is refused by KA's `b.mesh` check, while the same KA settings naming `c.mesh` reach it.
/// Returns KC, to keep it running.
fn ka_refuses_a_server_that_is_not_b(
    server: &Server,
    nginx: &Path,
    work: &Path,
    proxy_ka: &Nginx,
    kc: u16,
    kb: u16,
    [ka_to_c_as_b, ka_to_c_as_c]: [u16; 2],
) -> Nginx {
    // c's certificate lives EXPIRATION_SECS: used at once.
    let c_certs = work.join("c-certs");
    issue(server, "default", "c", &c_certs);
    assert_mesh_identity(&Leaf::of(&c_certs), "c");
    let kc_nginx = Nginx::start(nginx, &work.join("kc"), &kc_http(&c_certs, kc), &[kc]);

    let refused = get(ka_to_c_as_b).unwrap();
    assert_eq!(refused.0, 502, "KA took c for b: {refused:?}");
    assert!(!refused.1.contains(C_BODY), "{refused:?}");
    let log = proxy_ka.error_log();
    assert!(
        log.contains("upstream SSL certificate does not match \"b.mesh\""),
        "KA's refusal is the identity check:\n{log}"
    );
    // Control: KC is reachable and trusted; only the name was wrong.
    assert_eq!(get(ka_to_c_as_c), Ok((200, C_BODY.to_owned())));

    // And KB, for its part, refuses c as a client (chain fine, not service a).
    let (status, body, _) = tls_get(kb, Some(&c_certs)).unwrap();
    assert_eq!(status, 403, "{body}");
    kc_nginx
}

/// Part 2, KB's side: clients of another mesh, or without a certificate, are refused; A's own
/// certificate (the control) gets B's answer, from KB presenting b's current certificate.
fn kb_refuses_clients_that_are_not_a(
    server: &Server,
    work: &Path,
    kb: u16,
    a_certs: &Path,
    b_certs: &Path,
) {
    let other_certs = work.join("other-certs");
    issue(server, "other", "a", &other_certs);
    assert!(Leaf::of(&other_certs)
        .uris
        .contains(&"spiffe://other/a".to_owned()));
    let (status, body, _) = tls_get(kb, Some(&other_certs)).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("The SSL certificate error"), "{body}");

    let (status, body, _) = tls_get(kb, None).unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("No required SSL certificate was sent"),
        "{body}"
    );

    let (status, body, presented) = tls_get(kb, Some(a_certs)).unwrap();
    assert_eq!((status, body.as_str()), (200, B_BODY));
    assert_eq!(presented, Leaf::of(b_certs).serial);
}

/// Part 3: a loop of A's requests through KA runs while both certificates rotate
/// [`ROTATIONS`] times (serials in cert.pem); not one request may fail.
fn rotations_under_traffic(ka: u16, kb: u16, agents: [&Agent; 2], a_certs: &Path, b_certs: &Path) {
    let dirs = [a_certs, b_certs];
    let mut serials: Vec<Vec<String>> = dirs.iter().map(|d| vec![Leaf::of(d).serial]).collect();
    let writes_before = agents.map(Agent::writes);
    let mut traffic = Traffic::start(ka);
    let within = Duration::from_secs(EXPIRATION_SECS * (ROTATIONS as u64 + 2));
    wait_until("three rotations of both certificates", within, || {
        for (seen, dir) in serials.iter_mut().zip(dirs) {
            let now = Leaf::of(dir).serial;
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
        serials.iter().all(|s| s.len() > ROTATIONS)
    });
    let report = traffic.finish();
    report.assert_all_answered("during the rotations", 100);
    eprintln!(
        "rotations: serials a: {:?}, b: {:?}",
        serials[0], serials[1]
    );
    // The agent logs a write after its files are in place (each synced), so the newest serial
    // can be on disk a moment before its log line is read: wait for the lines.
    for (agent, before) in agents.iter().zip(writes_before) {
        wait_until(
            "the agents to report every rotation they wrote",
            Duration::from_secs(5),
            || agent.writes() >= before + ROTATIONS,
        );
    }
    // nginx KB reloaded: it presents the certificate its agent wrote last.
    wait_until(
        "KB presenting b's current certificate",
        Duration::from_secs(5),
        || {
            let current = Leaf::of(b_certs).serial;
            tls_get(kb, Some(a_certs)).map(|r| r.2) == Ok(current)
        },
    );
}

/// Part 4: `meshca serve` is killed when both certificates have a few seconds left; requests
/// through KA keep succeeding for a window that ends before they expire.
fn issuer_outage(server: Server, ka: u16, agents: [Agent; 2], a_certs: &Path, b_certs: &Path) {
    let dirs = [a_certs, b_certs];
    let left = || dirs.iter().map(|d| Leaf::of(d).time_left()).min().unwrap();
    // Right after the later of the two rotations (their phases differ by a few jitters).
    wait_until(
        "both certificates with 3.5 s left",
        Duration::from_secs(2 * EXPIRATION_SECS),
        || left() >= Duration::from_millis(3500),
    );
    let serials = dirs.map(|d| Leaf::of(d).serial);
    let grpc = server.grpc.clone();
    drop(server);
    // Ends a second before the first certificate expires (nginx checks expiry per handshake).
    let window = left().saturating_sub(Duration::from_secs(1));
    assert!(window >= Duration::from_secs(2), "{window:?}");
    assert!(TcpStream::connect(&grpc).is_err(), "the issuer is gone");

    let mut traffic = Traffic::start(ka);
    std::thread::sleep(window);
    traffic
        .finish()
        .assert_all_answered(&format!("in {window:?} without the issuer"), 20);
    for (mut agent, (dir, serial)) in agents.into_iter().zip(dirs.iter().zip(serials)) {
        assert!(agent.running(), "the agent keeps running");
        assert_eq!(
            Leaf::of(dir).serial,
            serial,
            "the files keep the certificate"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// nginx

/// The nginx binary: `$MESHCA_NGINX`, else `nginx` in PATH, /usr/sbin or /usr/local/sbin.
fn nginx_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MESHCA_NGINX") {
        let p = PathBuf::from(p);
        assert!(
            is_executable(&p),
            "MESHCA_NGINX={} is not an executable",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("nginx"))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "nginx not found (MESHCA_NGINX, PATH, /usr/sbin, /usr/local/sbin): scripts/test \
                 installs it (Debian package nginx)"
            )
        })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How a running nginx with prefix `prefix` reloads its configuration and certificates.
fn reload_command(nginx: &Path, prefix: &Path) -> String {
    format!(
        "'{}' -p '{p}' -c '{p}/nginx.conf' -e '{p}/error.log' -s reload",
        nginx.display(),
        p = prefix.display()
    )
}

/// The whole nginx.conf around `http`: foreground master, everything inside the prefix.
fn nginx_conf(prefix: &Path, http: &str) -> String {
    let p = prefix.display();
    // As root, nginx would run its workers as `nobody`, who cannot enter the test's directory.
    let user = if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
        "user root;"
    } else {
        ""
    };
    format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\n{user}\npid {p}/nginx.pid;\n\
         error_log {p}/error.log info;\nevents {{ worker_connections 128; }}\nhttp {{\n\
         access_log off;\nclient_body_temp_path {p}/tmp-body;\nproxy_temp_path {p}/tmp-proxy;\n\
         fastcgi_temp_path {p}/tmp-fastcgi;\nuwsgi_temp_path {p}/tmp-uwsgi;\n\
         scgi_temp_path {p}/tmp-scgi;\n{http}}}\n"
    )
}

/// KA: A's side. Every server block dials upstreams with a's certificate and trusts only mesh
/// `default`'s CA; the one on `ka` requires `b.mesh` from KB. The two on `ka_to_c_as_*` dial KC
/// (service c) with the same settings, naming `b.mesh` (refused) and `c.mesh` (the control).
fn ka_http(certs: &Path, ka: u16, kb: u16, to_c_as_b: u16, to_c_as_c: u16, kc: u16) -> String {
    let d = certs.display();
    let server = |listen: u16, upstream: u16, name: &str| {
        format!(
            "server {{\n  listen 127.0.0.1:{listen};\n  location / {{\n    \
             proxy_pass https://127.0.0.1:{upstream};\n    proxy_ssl_name {name};\n  }}\n}}\n"
        )
    };
    format!(
        "proxy_ssl_certificate {d}/cert.pem;\nproxy_ssl_certificate_key {d}/key.pem;\n\
         proxy_ssl_trusted_certificate {d}/bundle.pem;\nproxy_ssl_verify on;\n\
         proxy_ssl_verify_depth 2;\nproxy_ssl_server_name on;\n\
         proxy_ssl_protocols TLSv1.2 TLSv1.3;\n\
         # A full handshake, and so a fresh check of KB's certificate, for every request.\n\
         proxy_ssl_session_reuse off;\nproxy_connect_timeout 2s;\nproxy_read_timeout 10s;\n\
         {}{}{}",
        server(ka, kb, "b.mesh"),
        server(to_c_as_b, kc, "b.mesh"),
        server(to_c_as_c, kc, "c.mesh"),
    )
}

/// The TLS side of a mesh proxy: b's or c's certificate, clients must chain to mesh `default`.
fn mesh_listener(certs: &Path, port: u16) -> String {
    let d = certs.display();
    format!(
        "  listen 127.0.0.1:{port} ssl;\n  ssl_certificate {d}/cert.pem;\n  \
         ssl_certificate_key {d}/key.pem;\n  ssl_client_certificate {d}/bundle.pem;\n  \
         ssl_verify_client on;\n  ssl_verify_depth 2;\n  ssl_protocols TLSv1.2 TLSv1.3;\n"
    )
}

/// KB: B's side; only service `a` (CN `a.mesh`, see the module doc) is passed to B.
fn kb_http(certs: &Path, kb: u16, b: u16) -> String {
    format!(
        "map $ssl_client_s_dn $mesh_client_is_a {{\n  \"CN=a.mesh\" 1;\n  default 0;\n}}\n\
         server {{\n{}  location / {{\n    \
         if ($mesh_client_is_a = 0) {{ return 403 \"not service a\\n\"; }}\n    \
         proxy_pass http://127.0.0.1:{b};\n  }}\n}}\n",
        mesh_listener(certs, kb)
    )
}

/// KC: a mesh proxy of service `c`, answering by itself.
fn kc_http(certs: &Path, kc: u16) -> String {
    format!(
        "server {{\n{}  location / {{ return 200 \"{C_BODY}\"; }}\n}}\n",
        mesh_listener(certs, kc)
    )
}

/// A running nginx (master in the foreground); stopped with SIGTERM on drop.
struct Nginx {
    child: Child,
    prefix: PathBuf,
}

impl Nginx {
    /// Writes `prefix/nginx.conf` around `http`, starts nginx and waits for `ports` to accept.
    fn start(nginx: &Path, prefix: &Path, http: &str, ports: &[u16]) -> Self {
        std::fs::create_dir_all(prefix).unwrap();
        let conf = prefix.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(prefix, http)).unwrap();
        let child = Command::new(nginx)
            .arg("-p")
            .arg(prefix)
            .arg("-c")
            .arg(&conf)
            .arg("-e")
            .arg(prefix.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(prefix.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let mut n = Nginx {
            child,
            prefix: prefix.to_owned(),
        };
        wait_until("nginx to listen", Duration::from_secs(10), || {
            if let Some(status) = n.child.try_wait().unwrap() {
                panic!(
                    "nginx ({}) exited with {status}:\n{}",
                    n.prefix.display(),
                    n.error_log()
                );
            }
            ports
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
        });
        n
    }

    /// error.log and what nginx printed before it had one.
    fn error_log(&self) -> String {
        let read = |f: &str| std::fs::read_to_string(self.prefix.join(f)).unwrap_or_default();
        format!("{}{}", read("stderr.log"), read("error.log"))
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to our own child, the master: it stops its workers before exiting.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- nginx {} ----\n{}",
                self.prefix.display(),
                self.error_log()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// meshca

/// Real OpenBao (on its own runtime: this test is synchronous) with mesh `default`'s
/// PKI mount, and the Mesh YAML of a `mode: sign` vault backend with a CN template.
struct Vault {
    mesh_yaml: String,
    _peer: Arc<Peer>,
    _rt: tokio::runtime::Runtime,
}

impl Vault {
    fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (peer, mesh_yaml) = rt.block_on(async {
            let peer = Peer::start(Auth::Token).await;
            let role = Role {
                mode: "sign",
                key_type: "any",
                allowed_uri_sans: None,
            };
            peer.mount("default", role).await;
            let auth = peer.auth_yaml(Auth::Token).await;
            let cn = "        commonName: '{{ tag \"kuma.io/service\" }}.mesh'\n";
            let yaml = peer.mesh_yaml("default", "sign", &auth, cn);
            (peer, yaml)
        });
        let mesh_yaml = mesh_yaml.replace(
            "expiration: 24h",
            &format!("expiration: {EXPIRATION_SECS}s"),
        );
        assert!(mesh_yaml.contains(&format!("expiration: {EXPIRATION_SECS}s")));
        Vault {
            mesh_yaml,
            _peer: peer,
            _rt: rt,
        }
    }
}

/// A `meshca agent` for `kuma.io/service=<service>` in mesh `default`, writing to `out` and
/// running `on_change`; killed on drop.
struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    log: PathBuf,
}

impl Agent {
    fn start(server: &Server, service: &str, out: &Path, on_change: &str, work: &Path) -> Self {
        let log = work.join(format!("agent-{service}.log"));
        // The proxy's side holds only the server's CA and a bootstrap token for its identity.
        let token = work.join(format!("agent-{service}.token"));
        token_file(server, service, &token);
        let mut child = Command::new(BIN)
            .args(["agent", "--server", &server.grpc, "--token-file"])
            .arg(&token)
            .arg("--ca-cert")
            .arg(server.tls_dir().join("ca.pem"))
            .args(["--data-dir", "/nonexistent/meshca-agent"])
            .args(["--mesh", "default", "--tag"])
            .arg(format!("kuma.io/service={service}"))
            .arg("--out-dir")
            .arg(out)
            .args(["--on-change", on_change])
            .env("KUBECONFIG", NO_KUBECONFIG)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Agent { child, lines, log }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many certificates the agent says it wrote.
    fn writes(&self) -> usize {
        self.lines()
            .iter()
            .filter(|l| l.starts_with("meshca agent: wrote"))
            .count()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!(
                "---- {} ----\n{}\n{log}",
                self.log.display(),
                self.lines().join("\n")
            );
        }
    }
}

/// `meshca issue` for `kuma.io/service=<service>` in `mesh` into `out` (key made by meshca).
fn issue(server: &Server, mesh: &str, service: &str, out: &Path) {
    let data_dir = server.data_dir.display().to_string();
    let out_dir = out.display().to_string();
    let tag = format!("kuma.io/service={service}");
    let (ok, stdout, stderr) = run_cli(&[
        "issue",
        "--server",
        &server.grpc,
        "--data-dir",
        &data_dir,
        "--mesh",
        mesh,
        "--tag",
        &tag,
        "--out-dir",
        &out_dir,
    ]);
    assert!(
        ok,
        "meshca issue --mesh {mesh} --tag {tag}: {stdout}{stderr}"
    );
}

/// What a leaf (first certificate of `dir/cert.pem`) says.
#[derive(Debug)]
struct Leaf {
    serial: String,
    cn: Option<String>,
    uris: Vec<String>,
    dns: Vec<String>,
    not_after: i64,
}

impl Leaf {
    fn of(dir: &Path) -> Self {
        let chain = std::fs::read(dir.join("cert.pem")).unwrap();
        Self::from_der(pem::parse_many(&chain).unwrap()[0].contents())
    }

    fn from_der(der: &[u8]) -> Self {
        use x509_parser::extensions::GeneralName;
        let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
        let names = c
            .subject_alternative_name()
            .unwrap()
            .map(|s| s.value.general_names.clone())
            .unwrap_or_default();
        let cn = c
            .subject()
            .iter_common_name()
            .next()
            .map(|a| a.as_str().unwrap().to_owned());
        Leaf {
            serial: c.raw_serial_as_string(),
            cn,
            uris: names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some((*u).to_owned()),
                    _ => None,
                })
                .collect(),
            dns: names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect(),
            not_after: c.validity().not_after.timestamp(),
        }
    }

    fn time_left(&self) -> Duration {
        let not_after = UNIX_EPOCH + Duration::from_secs(self.not_after.max(0) as u64);
        not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    }
}

/// The certificate is mesh `default`'s for `service`: its SPIFFE ID and tag SAN, the CN nginx
/// checks, no DNS SAN.
fn assert_mesh_identity(leaf: &Leaf, service: &str) {
    assert_eq!(
        leaf.uris,
        [
            format!("spiffe://default/{service}"),
            format!("kuma://kuma.io/service/{service}")
        ],
        "{leaf:?}"
    );
    assert_eq!(leaf.cn.as_deref(), Some(format!("{service}.mesh").as_str()));
    assert!(leaf.dns.is_empty(), "{leaf:?}");
}

// ---------------------------------------------------------------------------------------------
// Services A and B, and a TLS client

/// Service B: answers every request on a free port with `body`; returns the port.
fn serve_http(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    port
}

/// One request of service A: plain HTTP to `port` on a new connection; (status, body) or why
/// there is none.
fn get(port: u16) -> Result<(u16, String), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: b.mesh\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<(u16, String), String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// A GET to a mesh proxy's TLS port, as another proxy would dial it, with `certs`' cert.pem and
/// key.pem as the client certificate (none: no certificate). It does not check the server: what
/// is tested is what the server does with the client. Returns (status, body, serial of the
/// server's certificate).
fn tls_get(port: u16, certs: Option<&Path>) -> Result<(u16, String, String), String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let config = match certs {
        Some(dir) => {
            let chain = pem::parse_many(std::fs::read(dir.join("cert.pem")).unwrap()).unwrap();
            let chain = chain
                .into_iter()
                .map(|p| CertificateDer::from(p.into_contents()))
                .collect();
            let key = pem::parse(std::fs::read(dir.join("key.pem")).unwrap()).unwrap();
            let key = match key.tag() {
                "PRIVATE KEY" => {
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.into_contents()))
                }
                "EC PRIVATE KEY" => {
                    PrivateKeyDer::Sec1(PrivateSec1KeyDer::from(key.into_contents()))
                }
                other => panic!("key.pem holds a {other}"),
            };
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("b.mesh").unwrap())
            .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut raw = Vec::new();
    {
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        tls.write_all(b"GET / HTTP/1.1\r\nHost: b.mesh\r\nConnection: close\r\n\r\n")
            .map_err(|e| format!("TLS write: {e}"))?;
        match tls.read_to_end(&mut raw) {
            Ok(_) => {}
            // A server that closes without close_notify after a complete answer.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof && !raw.is_empty() => {}
            Err(e) => return Err(format!("TLS read: {e}")),
        }
    }
    let presented = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Leaf::from_der(c).serial)
        .unwrap_or_default();
    let (status, body) = parse_response(&raw)?;
    Ok((status, body, presented))
}

/// Accepts any server certificate (signatures still checked): see [`tls_get`].
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Service A's traffic: sequential requests through KA (a new connection each) until
/// [`Traffic::finish`]; any answer but 200 with B's body is a failure.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Report>>,
}

#[derive(Default)]
struct Report {
    requests: usize,
    failures: Vec<String>,
}

impl Report {
    /// Every request got B's answer, and there were at least `at_least` of them.
    fn assert_all_answered(&self, during: &str, at_least: usize) {
        let shown: Vec<&str> = self.failures.iter().take(10).map(String::as_str).collect();
        assert!(
            self.failures.is_empty(),
            "{} of {} requests failed {during}; the first:\n{}",
            self.failures.len(),
            self.requests,
            shown.join("\n")
        );
        assert!(
            self.requests >= at_least,
            "only {} requests {during}",
            self.requests
        );
        eprintln!("{} requests {during}, all answered by B", self.requests);
    }
}

impl Traffic {
    fn start(port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut report = Report::default();
            while !flag.load(Ordering::Relaxed) {
                let outcome = get(port);
                report.requests += 1;
                let what = match outcome {
                    Ok((200, body)) if body == B_BODY => None,
                    Ok((status, body)) => {
                        Some(format!("HTTP {status}: {:.60}", body.escape_debug()))
                    }
                    Err(e) => Some(e),
                };
                if let Some(what) = what {
                    let at = started.elapsed().as_secs_f64();
                    report
                        .failures
                        .push(format!("request {} at +{at:.2}s: {what}", report.requests));
                }
                std::thread::sleep(PAUSE);
            }
            report
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(&mut self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// `N` distinct free loopback ports (all held until every one is chosen).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// Polls `done` every 50 ms; panics naming `what` after `within`.
fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
