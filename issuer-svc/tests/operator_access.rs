//! How long operator access lasts, through the real binary: the `--authz` file is reloaded while
//! the server runs (a removed operator loses access, a broken file keeps the previous policy), the
//! bootstrap admin certificate lives a day and is made again at every start, and a data
//! directory others could write is not adopted with whatever CA was planted in it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use issuer_svc::proto::issuer_client::IssuerClient;
use tonic::Code;

/// Issues as the client in (cert, key); the gRPC code of the answer, or of the connection error.
async fn issue_as(server: &Server, cert: &Path, key: &Path) -> Code {
    let Ok(channel) = server.try_channel_with(cert, key).await else {
        return Code::Unavailable;
    };
    match IssuerClient::new(channel)
        .issue_certificate(request("default", &[("kuma.io/service", "web")]))
        .await
    {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Replaces `path` atomically, so the poller never reads half a file.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Polls `check` (every 100 ms, at most 600 times) until it holds.
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..600 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never happened: {what}");
}

const BOTH: &str =
    "callers:\n  - id: zone-cp\n    meshes: [default]\n  - id: other-cp\n    meshes: [default]\n";
const OTHER_ONLY: &str = "callers:\n  - id: other-cp\n    meshes: [default]\n";

#[tokio::test]
async fn an_operator_removed_from_authz_loses_access_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let authz = dir.path().join("authz.yaml");
    std::fs::write(&authz, BOTH).unwrap();
    let server = Server::start(
        &[(
            "default.yaml",
            &builtin_mesh("default", &["ca-1"], "ca-1", "3s"),
        )],
        &["--authz", authz.to_str().unwrap()],
    );
    bounded(120, async {
        let (zone_c, zone_k) = operator_cert(&server, "zone-cp");
        let (other_c, other_k) = operator_cert(&server, "other-cp");
        assert_eq!(issue_as(&server, &zone_c, &zone_k).await, Code::Ok);
        assert_eq!(issue_as(&server, &other_c, &other_k).await, Code::Ok);
        // zone-cp holds a watch (3 s certificates, so rotations come).
        let mut watch = server
            .client_with(&zone_c, &zone_k)
            .await
            .watch_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap()
            .into_inner();
        watch
            .message()
            .await
            .unwrap()
            .expect("the first certificate");

        // zone-cp is removed from the file: refused from then on, without a restart.
        write_atomically(&authz, OTHER_ONLY);
        eventually("zone-cp refused", async || {
            issue_as(&server, &zone_c, &zone_k).await == Code::PermissionDenied
        })
        .await;
        assert_eq!(issue_as(&server, &other_c, &other_k).await, Code::Ok);
        assert_eq!(
            server.metric("meshca_authz_reloads_total{result=\"applied\"}"),
            Some(1.0)
        );
        // Its watch ends with the refusal at the next rotation instead of delivering it.
        let ended = loop {
            match watch.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the watch ended without saying why"),
                Err(s) => break s,
            }
        };
        assert_eq!(ended.code(), Code::PermissionDenied, "{ended:?}");

        // A broken file changes nothing: logged, counted, the previous policy stays.
        write_atomically(&authz, "callers: [{id: zone-cp, mehses: [default]}]\n");
        eventually("the broken file counted", async || {
            server.metric("meshca_authz_reloads_total{result=\"refused\"}") == Some(1.0)
        })
        .await;
        assert!(
            server.log().contains("authz file refused"),
            "{}",
            server.log()
        );
        assert_eq!(issue_as(&server, &other_c, &other_k).await, Code::Ok);
        assert_eq!(
            issue_as(&server, &zone_c, &zone_k).await,
            Code::PermissionDenied
        );
        // A deleted file too.
        std::fs::remove_file(&authz).unwrap();
        eventually("the missing file counted", async || {
            server.metric("meshca_authz_reloads_total{result=\"refused\"}") == Some(2.0)
        })
        .await;
        assert_eq!(issue_as(&server, &other_c, &other_k).await, Code::Ok);

        // Added back: allowed again.
        write_atomically(&authz, BOTH);
        eventually("zone-cp allowed again", async || {
            issue_as(&server, &zone_c, &zone_k).await == Code::Ok
        })
        .await;
    })
    .await;
}

/// (lifetime in seconds, serial) of the admin certificate in `data_dir`.
fn admin_cert(data_dir: &Path) -> (i64, String) {
    let pem = std::fs::read(data_dir.join("tls").join("admin.pem")).unwrap();
    let der = pem::parse(pem).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
    let v = c.validity();
    (
        v.not_after.timestamp() - v.not_before.timestamp(),
        c.raw_serial_as_string(),
    )
}

#[test]
fn the_admin_certificate_lives_a_day_and_is_made_at_every_start() {
    let shared = tempfile::tempdir().unwrap();
    let data = shared.path().join("data");
    let first = Server::start_in(tempfile::tempdir().unwrap(), data.clone(), &[], &[]);
    let (life, serial) = admin_cert(&data);
    assert!(life <= 24 * 3600 + 60, "admin certificate lives {life} s");
    drop(first);
    let again = Server::start_in(tempfile::tempdir().unwrap(), data.clone(), &[], &[]);
    let (life, serial2) = admin_cert(&data);
    assert!(life <= 24 * 3600 + 60, "admin certificate lives {life} s");
    assert_ne!(serial, serial2, "a new admin certificate at every start");
    // `meshca issue` reads the fresh one from the data directory.
    let out = shared.path().join("out");
    let (ok, _, stderr) = run_cli(&[
        "issue",
        "--server",
        &again.grpc,
        "--data-dir",
        data.to_str().unwrap(),
        "--tag",
        "kuma.io/service=web",
        "--out-dir",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
}

/// Runs `meshca serve` on `data_dir` and waits (bounded) for it to exit; a server still running
/// after a minute is killed and reported as such.
fn serve_expecting_exit(data_dir: &Path, log: &Path) -> (bool, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
        .env("KUBECONFIG", NO_KUBECONFIG)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), std::fs::read_to_string(log).unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "meshca serve kept running on an open data directory: {}",
        std::fs::read_to_string(log).unwrap()
    );
}

#[test]
fn a_planted_ca_in_an_open_data_dir_is_refused_unless_adopted() {
    let work = tempfile::tempdir().unwrap();
    // The attacker's CA, which they hold the key of, made with meshca itself.
    let theirs = work.path().join("theirs");
    drop(Server::start_in(
        tempfile::tempdir().unwrap(),
        theirs.clone(),
        &[],
        &[],
    ));
    // A data directory pre-created 0777, with their tls/ set planted in it.
    let data = work.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::rename(theirs.join("tls"), data.join("tls")).unwrap();
    let planted = std::fs::read(data.join("tls").join("ca.pem")).unwrap();

    let (ok, log) = serve_expecting_exit(&data, &work.path().join("serve.log"));
    assert!(!ok, "{log}");
    assert!(
        log.contains("writable by group or others (mode 777)"),
        "{log}"
    );
    assert!(log.contains("--adopt-open-data-dir"), "{log}");
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o777,
        "a refused directory is left as it was"
    );

    // Said explicitly, it is adopted (and closed).
    let adopted = Server::start_in(
        tempfile::tempdir().unwrap(),
        data.clone(),
        &[],
        &["--adopt-open-data-dir"],
    );
    assert_eq!(
        std::fs::read(data.join("tls").join("ca.pem")).unwrap(),
        planted
    );
    assert!(adopted.log().contains("--adopt-open-data-dir"));
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
}
