//! A control plane in ~60 lines: load a Mesh, validate its CA backend the way a global control
//! plane does, issue a data plane certificate, and receive its rotation.
//!
//! `cargo run -p meshca --example control_plane` (it also runs in `cargo test`).

use std::sync::Arc;

use meshca::config::Mesh;
use meshca::rotation::RotationReason;
use meshca::{Identity, Manager, MeshName, OverlaySecretStore, SourcePolicy};

const MESH: &str = r#"
type: Mesh
name: default
mtls:
  enabledBackend: ca-1
  backends:
    - name: ca-1
      type: builtin
      dpCert:
        rotation:
          expiration: 3s   # short, so the example sees a rotation
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Secrets (here: the builtin CA) in memory; a real control plane passes its own SecretStore,
    // e.g. meshca::DirectorySecretStore.
    // `start` runs what a served mesh needs in the background (rotation, bundle refresh, CA
    // switch completion, health) and stops it when `running` is dropped or shut down.
    let store = Arc::new(OverlaySecretStore::new(None));
    let running = Manager::builder(meshca::registry(), store).start();
    let manager = running.manager();

    // 1. What the global control plane does before it accepts a Mesh: every violation, then a
    //    test certificate from the enabled backend (nothing is persisted).
    let mesh = Mesh::from_yaml(MESH, &meshca::registry())?;
    let check = manager.validate(&mesh, SourcePolicy::local(), true).await?;
    let test = check.test_certificate.ok_or("no test certificate")??;
    println!(
        "backend ok: test certificate {}",
        test.certificate.identity()
    );

    // 2. Serve the mesh, and issue a data plane certificate (meshca generates its P-256 key;
    //    pass a CSR instead to keep the key on the data plane).
    manager.apply("example", vec![mesh]).await?;
    let identity = Identity::new(
        MeshName::new("default")?,
        [("kuma.io/service", "web"), ("version", "v1")],
    )?;
    let once = manager.issue(identity.clone(), None).await?;
    println!(
        "issued {:?}, serial {}",
        once.certificate.identity().uri_sans(),
        once.certificate.serial_hex()
    );

    // 3. Watch it: the first certificate at once, then a new one before each expiry (and on a
    //    CA switch).
    let mut watch = running.watch(identity, None).await?;
    let initial = watch.recv().await.ok_or("watch ended")??;
    assert_eq!(initial.reason, RotationReason::Initial);
    let next = tokio::time::timeout(std::time::Duration::from_secs(30), watch.recv())
        .await?
        .ok_or("watch ended")??;
    println!(
        "{}: serial {} from backend {}",
        next.reason,
        next.certificate.serial_hex(),
        next.backend
    );
    assert_eq!(next.reason, RotationReason::Rotation);
    assert_ne!(
        next.certificate.serial_hex(),
        initial.certificate.serial_hex()
    );
    running.shutdown().await;
    Ok(())
}

#[cfg(test)]
#[test]
fn example_runs() {
    main().expect("the example runs");
}
