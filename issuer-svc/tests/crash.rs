//! Crash safety: `meshca serve` killed with SIGKILL at random points while it creates builtin CAs
//! at start, while a config reload creates them for new meshes, and in the middle of a CA switch. After a restart every mesh has exactly one CA (the same one
//! if it had been written), nothing half-written is taken as valid, and a switch resumes with
//! both roots trusted. Bounded loops on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use issuer_svc::proto::GetTrustBundleRequest;

const MESHES: [&str; 4] = ["m1", "m2", "m3", "m4"];

/// The builtin CA certificate files in the data directory, by mesh.
fn ca_files(data: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for m in MESHES {
        let f = data
            .join("secrets")
            .join(m)
            .join(format!("{m}.ca-builtin-cert-ca-1"));
        if let Ok(b) = std::fs::read(&f) {
            out.insert(m.to_owned(), b);
        }
    }
    out
}

/// After a restart: every mesh serves the one CA on disk, a CA written before the kill is the
/// one kept, and every mesh issues.
async fn one_ca_each(server: &Server, data: &Path, before: &BTreeMap<String, Vec<u8>>, round: u64) {
    let mut admin = server.admin().await;
    for m in MESHES {
        let bundle = admin
            .get_trust_bundle(GetTrustBundleRequest { mesh: m.into() })
            .await
            .unwrap()
            .into_inner();
        let on_disk = ca_files(data).remove(m).expect("the CA is persisted");
        assert_eq!(
            bundle.trust_bundle_pem.as_bytes(),
            on_disk.as_slice(),
            "round {round}: {m} serves the CA on disk"
        );
        if let Some(b) = before.get(m) {
            assert_eq!(b, &on_disk, "round {round}: {m}'s CA was replaced");
        }
        admin
            .issue_certificate(request(m, &[("kuma.io/service", "web")]))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn killed_during_ca_creation_the_mesh_keeps_one_ca() {
    for round in 0..6u64 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let meshes_dir = dir.path().join("meshes");
        std::fs::create_dir_all(&meshes_dir).unwrap();
        for m in MESHES {
            // RSA keys take long enough to generate that the kill lands mid-creation.
            let yaml = format!(
                "type: Mesh\nname: {m}\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      conf:\n        caCert:\n          RSAbits: 2048\n"
            );
            std::fs::write(meshes_dir.join(format!("{m}.yaml")), yaml).unwrap();
        }
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(&data)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .arg("--mesh-config")
            .arg(&meshes_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A different point of the start each round.
        std::thread::sleep(Duration::from_millis(40 + round * 90));
        child.kill().unwrap();
        child.wait().unwrap();
        let before = ca_files(&data);

        let meshes: Vec<(String, String)> = MESHES
            .iter()
            .map(|m| {
                (
                    format!("{m}.yaml"),
                    std::fs::read_to_string(meshes_dir.join(format!("{m}.yaml"))).unwrap(),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = meshes
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let server = Server::start_in(tempfile::tempdir().unwrap(), data.clone(), &refs, &[]);
        bounded(60, one_ca_each(&server, &data, &before, round)).await;
    }
}

#[tokio::test]
async fn killed_during_a_config_reload_nothing_is_lost() {
    let rsa = |m: &str| {
        format!(
            "type: Mesh\nname: {m}\nmtls:\n  enabledBackend: ca-1\n  backends:\n    - name: ca-1\n      type: builtin\n      conf:\n        caCert:\n          RSAbits: 2048\n"
        )
    };
    for round in 0..5u64 {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Running with m1; then m2..m4 arrive in the watched directory and the reload creates
        // their CAs. SIGKILL (the Server's drop) lands at a different point of it each round.
        let m1 = rsa("m1");
        let server = Server::start_in(
            tempfile::tempdir().unwrap(),
            data.clone(),
            &[("m1.yaml", m1.as_str())],
            &[],
        );
        let m1_ca = ca_files(&data).remove("m1").expect("m1's CA");
        for m in &MESHES[1..] {
            server.write_mesh(&format!("{m}.yaml"), &rsa(m));
        }
        // (The reload polls every 200 ms.)
        std::thread::sleep(Duration::from_millis(150 + round * 60));
        let mesh_dir = server.mesh_dir.clone();
        let files: Vec<(String, String)> = MESHES
            .iter()
            .map(|m| {
                let name = format!("{m}.yaml");
                let text = std::fs::read_to_string(mesh_dir.join(&name)).unwrap();
                (name, text)
            })
            .collect();
        drop(server);
        let before = ca_files(&data);
        assert_eq!(before.get("m1"), Some(&m1_ca), "round {round}");

        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let server = Server::start_in(tempfile::tempdir().unwrap(), data.clone(), &refs, &[]);
        bounded(60, one_ca_each(&server, &data, &before, round)).await;
    }
}

fn switch_mesh(enabled: &str) -> String {
    format!(
        "type: Mesh\nname: default\nmtls:\n  enabledBackend: {enabled}\n  backends:\n    - name: ca-1\n      type: builtin\n    - name: ca-2\n      type: builtin\n"
    )
}

#[tokio::test]
async fn killed_during_a_ca_switch_the_switch_resumes() {
    let first = Server::start(&[("default.yaml", &switch_mesh("ca-1"))], &[]);
    let data = first.data_dir.clone();
    let mesh_dir = first.mesh_dir.clone();
    let both = bounded(60, async {
        let mut admin = first.admin().await;
        first.write_mesh("default.yaml", &switch_mesh("ca-2"));
        loop {
            let b = admin
                .get_trust_bundle(GetTrustBundleRequest {
                    mesh: "default".into(),
                })
                .await
                .unwrap()
                .into_inner();
            if b.switch_in_progress {
                assert_eq!(b.backends, ["ca-2", "ca-1"]);
                break b.trust_bundle_pem;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // SIGKILL (Server's drop kills the child), keeping the directories.
    let keep = tempfile::tempdir().unwrap();
    let kept_data = keep.path().join("data");
    let kept_meshes = keep.path().join("meshes");
    copy_dir(&data, &kept_data);
    copy_dir(&mesh_dir, &kept_meshes);
    drop(first);

    let yaml = std::fs::read_to_string(kept_meshes.join("default.yaml")).unwrap();
    let second = Server::start_in(
        tempfile::tempdir().unwrap(),
        kept_data,
        &[("default.yaml", &yaml)],
        &[],
    );
    bounded(60, async {
        let b = second
            .admin()
            .await
            .get_trust_bundle(GetTrustBundleRequest {
                mesh: "default".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(b.switch_in_progress, "the switch resumed after the crash");
        assert_eq!(b.backends, ["ca-2", "ca-1"]);
        assert_eq!(b.trust_bundle_pem, both, "both roots still trusted");
    })
    .await;
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
