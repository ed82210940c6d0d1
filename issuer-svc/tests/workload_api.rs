//! `meshca agent --workload-api-socket` against the SPIFFE project's own Python library,
//! py-spiffe (PyPI `spiffe`) and its TLS package (`spiffe-tls`), pinned in
//! scripts/requirements-test.txt: nobody here wrote the client. The script is
//! `tests/py/spiffe_workload.py`; the issuer is the real `meshca serve`.
//!
//! - an SVID (exactly one URI SAN, for the agent's key) and bundles that verify it, also with
//!   `openssl verify`; every rotation arrives on `stream_x509_contexts`, never expired;
//! - the security header is required (InvalidArgument), JWT methods are Unimplemented;
//! - the socket's modes, and callers of another uid refused (when the tests run as root);
//! - while the issuer is away the last SVID is served until it expires, then withdrawn;
//! - two py-spiffe workloads complete mutual TLS and check each other's SPIFFE ID;
//! - a CA switch reaches a streaming client: both roots, then a leaf of the new CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use common::*;
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/spiffe_workload.py");

/// `meshca agent` serving the Workload API for `service` on `socket`; killed on drop.
struct Agent {
    child: Child,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Agent {
    /// Authenticated by the admin's certificate.
    fn start(server: &Server, service: &str, socket: &Path) -> Self {
        Self::start_with(server, service, socket, &[])
    }

    fn start_with(server: &Server, service: &str, socket: &Path, extra: &[&str]) -> Self {
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("agent.log");
        let child = Command::new(BIN)
            .args(["agent", "--server", &server.grpc, "--data-dir"])
            .arg(&server.data_dir)
            .args(["--tag", &format!("kuma.io/service={service}")])
            .args(extra)
            .arg("--workload-api-socket")
            .arg(socket)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            log,
            _log_dir: log_dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- agent stderr ----\n{}", self.log());
        }
    }
}

/// Runs the script to the end; its one JSON line.
fn run(py: &Path, args: &[&str]) -> Value {
    let out = Command::new(py)
        .arg(SCRIPT)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// Connects to `socket` (as `uid`, through `setpriv`, when given), sends the HTTP/2 client
/// preface and an empty SETTINGS frame, and returns how many bytes came back before the agent
/// closed the connection (0) or 10 s passed. The system's Python, so that another uid can run
/// it; the standard library only.
fn probe(socket: &Path, uid: Option<u32>) -> usize {
    const PROBE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    print(len(s.recv(100)))
except OSError:  # closed by the agent: a broken pipe or a reset
    print(0)
"#;
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "/usr/bin/python3",
            ]);
            c
        }
        None => Command::new("/usr/bin/python3"),
    };
    let out = cmd.args(["-c", PROBE]).arg(socket).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// A script that prints JSON lines as it goes (`stream`, `bundles`); killed on drop.
struct Lines {
    child: Child,
    rx: mpsc::Receiver<Value>,
}

impl Lines {
    fn spawn(py: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(py)
            .arg(SCRIPT)
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str(&line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Self { child, rx }
    }

    /// The next line, waiting at most until `deadline`.
    fn next(&self, deadline: Instant) -> Value {
        let left = deadline.saturating_duration_since(Instant::now());
        self.rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no line from the script: {e}"))
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a `stream` script until three different SVIDs of `spiffe://default/web` have come (40 s
/// at most): each with one URI SAN, for the key served with it, signed by a root of its bundle,
/// and not expired when it arrived.
fn three_svids_of_web(stream: &Lines) {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut serials = BTreeSet::new();
    while serials.len() < 3 {
        let line = stream.next(deadline);
        let Some(update) = line.get("update") else {
            panic!("the stream failed: {line}");
        };
        assert_eq!(update["spiffe_id"], "spiffe://default/web");
        assert_eq!(strings(&update["uris"]), ["spiffe://default/web"]);
        assert_eq!(update["verified"], true);
        assert_eq!(update["key_matches"], true);
        assert!(
            update["now"].as_f64().unwrap() < update["not_after"].as_f64().unwrap(),
            "never an expired SVID: {update}"
        );
        serials.insert(update["serial"].as_str().unwrap().to_owned());
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn start_server(meshes: Vec<(String, String)>) -> Server {
    tokio::task::spawn_blocking(move || {
        let meshes: Vec<(&str, &str)> = meshes
            .iter()
            .map(|(n, y)| (n.as_str(), y.as_str()))
            .collect();
        Server::start(&meshes, &[])
    })
    .await
    .unwrap()
}

/// A directory others may enter (the socket's own directory is the agent's to make).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn py_spiffe_gets_a_verified_svid_its_bundles_and_every_rotation() {
    let Some(py) = python() else { return };
    // 4 s SVIDs: a rotation about every 3 s.
    let mesh = builtin_mesh("default", &["ca-1"], "ca-1", "4s");
    let server = start_server(vec![("default.yaml".into(), mesh)]).await;
    let work = open_dir();
    let socket = work.path().join("spire-like/agent/api.sock");
    let agent = Agent::start(&server, "web", &socket);
    let sock = socket.to_str().unwrap();

    let got = tokio::task::spawn_blocking({
        let py = py.clone();
        let sock = sock.to_owned();
        move || run(&py, &["fetch", &sock])
    })
    .await
    .unwrap();
    assert_eq!(got["spiffe_id"], "spiffe://default/web");
    assert_eq!(
        strings(&got["uris"]),
        ["spiffe://default/web"],
        "an X.509-SVID has exactly one URI SAN"
    );
    assert_eq!(got["key_matches"], true, "the key served is the SVID's");
    assert_eq!(
        got["verified"], true,
        "a root of the bundle signed the leaf"
    );
    let roots = strings(&got["roots"]);
    assert_eq!(roots.len(), 1);
    assert_eq!(
        strings(&got["bundles"]["default"]),
        roots,
        "FetchX509Bundles serves the same trust domain bundle"
    );
    openssl_verify(
        work.path(),
        &strings(&got["chain"]).concat(),
        &roots.concat(),
    );

    // As SPIRE's agent: the directory made 0755, the socket 0777.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(socket.parent().unwrap()), 0o755);
    assert_eq!(mode(&socket), 0o777);

    // The security header, with the generated stub py-spiffe ships.
    let raw = run(&py, &["raw", sock]);
    assert_eq!(raw["x509svid_without_header"], "INVALID_ARGUMENT");
    assert_eq!(raw["bundles_without_header"], "INVALID_ARGUMENT");
    assert_eq!(raw["wrong_header_value"], "INVALID_ARGUMENT");
    assert_eq!(raw["x509svid_with_header"], "OK");
    assert_eq!(raw["jwt"], "UNIMPLEMENTED");

    // Rotations arrive on the stream, each for the same ID, verified, not expired on arrival.
    let stream = Lines::spawn(&py, &["stream", sock, "60"]);
    three_svids_of_web(&stream);
    drop(stream);

    // A caller of another uid is disconnected before any gRPC (another uid needs root).
    assert!(
        probe(&socket, None) > 0,
        "our own uid is answered (SETTINGS)"
    );
    if rustix::process::geteuid().is_root() {
        assert_eq!(probe(&socket, Some(65534)), 0, "uid 65534 is disconnected");
        let log = agent.log();
        assert!(
            log.contains("refused a caller whose uid is not allowed") && log.contains("uid=65534"),
            "{log}"
        );
    } else {
        eprintln!("not root: the refusal of another uid is not exercised");
    }
}

/// A workload's agent as it is deployed: a bootstrap token for its first SVID, then it renews
/// presenting that SVID (an identity of one SPIFFE ID, which the issuer accepts for exactly that
/// SVID and nothing more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_bootstrapped_agent_renews_with_its_own_svid() {
    let Some(py) = python() else { return };
    let mesh = builtin_mesh("default", &["ca-1"], "ca-1", "4s");
    let server = start_server(vec![("default.yaml".into(), mesh)]).await;
    let work = open_dir();
    let token = work.path().join("web.token");
    let server = tokio::task::spawn_blocking(move || {
        token_file(&server, "web", &token);
        server
    })
    .await
    .unwrap();
    let socket = work.path().join("api.sock");
    let token = work.path().join("web.token");
    let agent = Agent::start_with(
        &server,
        "web",
        &socket,
        &["--token-file", token.to_str().unwrap()],
    );
    let stream = Lines::spawn(&py, &["stream", socket.to_str().unwrap(), "60"]);
    three_svids_of_web(&stream);
    // The issuer's log names who asked: the token holder first, then the data plane by its SVID.
    let log = server.log();
    assert!(
        log.contains("bootstrap token holder for spiffe://default/web"),
        "{log}"
    );
    assert!(log.contains("data plane spiffe://default/web"), "{log}");
    assert!(
        !agent.log().contains("watch failed"),
        "renewals with the SVID were accepted: {}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_svid_is_served_while_the_issuer_is_away_until_it_expires() {
    let Some(py) = python() else { return };
    let mesh = builtin_mesh("default", &["ca-1"], "ca-1", "10s");
    let server = start_server(vec![("default.yaml".into(), mesh)]).await;
    let work = open_dir();
    let socket = work.path().join("api.sock");
    let _agent = Agent::start(&server, "web", &socket);
    let sock = socket.to_str().unwrap().to_owned();
    let first = {
        let (py, sock) = (py.clone(), sock.clone());
        tokio::task::spawn_blocking(move || run(&py, &["fetch", &sock]))
            .await
            .unwrap()
    };
    assert_eq!(first["spiffe_id"], "spiffe://default/web");
    drop(server);

    // The issuer is gone: the SVID the agent holds is still served, the same each time.
    let held = run(&py, &["once", &sock]);
    assert!(held.get("error").is_none(), "{held}");
    let again = run(&py, &["once", &sock]);
    assert_eq!(again["serial"], held["serial"]);
    let not_after = held["not_after"].as_f64().unwrap();
    assert!(held["now"].as_f64().unwrap() < not_after);

    // Past its expiry it is withdrawn: Unavailable, as while the agent had none.
    let wait = not_after + 1.0 - unix_now();
    if wait > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let gone = run(&py, &["once", &sock]);
    assert_eq!(gone["error"], "UNAVAILABLE", "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_py_spiffe_workloads_authenticate_each_other_with_meshca_svids() {
    let Some(py) = python() else { return };
    let server = start_server(Vec::new()).await;
    let work = open_dir();
    let (web, api) = (work.path().join("web.sock"), work.path().join("api.sock"));
    let _a = Agent::start(&server, "web", &web);
    let _b = Agent::start(&server, "api", &api);
    let (w, a) = (
        web.to_str().unwrap().to_owned(),
        api.to_str().unwrap().to_owned(),
    );
    let got = tokio::task::spawn_blocking(move || run(&py, &["mtls", &w, &a]))
        .await
        .unwrap();
    assert_eq!(got["a"], "spiffe://default/web");
    assert_eq!(got["b"], "spiffe://default/api");
    // Each side saw the other's SPIFFE ID, and each checked it (authorize_id).
    assert_eq!(strings(&got["server_saw"]), ["spiffe://default/api"]);
    assert_eq!(strings(&got["client_saw"]), ["spiffe://default/web"]);
    assert_eq!(got["reply"], "pong:ping");
    // A client expecting another SPIFFE ID refuses the server.
    assert_eq!(got["wrong_id"], "TLSConnectionError");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_switch_reaches_a_streaming_client() {
    let Some(py) = python() else { return };
    let mesh = builtin_mesh("default", &["ca-1", "ca-2"], "ca-1", "1h");
    let server = start_server(vec![("default.yaml".into(), mesh)]).await;
    let work = open_dir();
    let socket = work.path().join("api.sock");
    let _agent = Agent::start(&server, "web", &socket);
    let sock = socket.to_str().unwrap();
    let svids = Lines::spawn(&py, &["stream", sock, "60"]);
    let bundles = Lines::spawn(&py, &["bundles", sock, "60"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let before = svids.next(deadline);
    let before = &before["update"];
    assert_eq!(strings(&before["roots"]).len(), 1, "{before}");
    let first_bundle = bundles.next(deadline);
    assert_eq!(
        strings(&first_bundle["bundles"]["spiffe://default"]).len(),
        1
    );

    server.write_mesh(
        "default.yaml",
        &builtin_mesh("default", &["ca-1", "ca-2"], "ca-2", "1h"),
    );
    // The SVID stream: a new SVID, of the new CA, with both roots.
    let after = loop {
        let line = svids.next(deadline);
        let update = line
            .get("update")
            .unwrap_or_else(|| panic!("the stream failed: {line}"))
            .clone();
        if update["serial"] != before["serial"] {
            break update;
        }
    };
    let roots = strings(&after["roots"]);
    assert_eq!(roots.len(), 2, "both roots during the switch: {after}");
    assert!(
        roots.contains(&strings(&before["roots"])[0]),
        "the old root stays"
    );
    assert_eq!(after["verified"], true);
    let new_root: Vec<String> = roots
        .iter()
        .filter(|r| **r != strings(&before["roots"])[0])
        .cloned()
        .collect();
    assert_eq!(new_root.len(), 1);
    // The new SVID is ca-2's: it verifies against the new root alone.
    openssl_verify(
        work.path(),
        &strings(&after["chain"]).concat(),
        &new_root[0],
    );
    openssl_verify(
        work.path(),
        &strings(&after["chain"]).concat(),
        &roots.concat(),
    );
    // The old leaf still verifies against the new bundle: no workload is cut off.
    openssl_verify(
        work.path(),
        &strings(&before["chain"]).concat(),
        &roots.concat(),
    );
    // The bundles stream: the same two roots.
    let line = bundles.next(deadline);
    let mut got = strings(&line["bundles"]["spiffe://default"]);
    let mut want = roots.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
