//! A CA switch survives a restart: a manager starting on the same store resumes it, with both
//! roots trusted, until it completes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use meshca::config::Mesh;
use meshca::{DirectorySecretStore, Manager, SecretStore};

fn mesh(enabled: &str) -> Mesh {
    Mesh::from_yaml(&format!(
        "type: Mesh\nname: sw\nmtls:\n  enabledBackend: {enabled}\n  backends:\n    - name: ca-1\n      type: builtin\n      dpCert:\n        rotation:\n          expiration: 3s\n    - name: ca-2\n      type: builtin\n"
    ), &meshca::registry())
    .unwrap()
}

fn manager(store: &Arc<dyn SecretStore>) -> Manager {
    Manager::builder(meshca::registry(), store.clone()).build()
}

#[tokio::test]
async fn a_switch_in_flight_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn SecretStore> = Arc::new(DirectorySecretStore::new(dir.path()).unwrap());

    let first = manager(&store);
    first.apply("sw.yaml", vec![mesh("ca-1")]).await.unwrap();
    first.apply("sw.yaml", vec![mesh("ca-2")]).await.unwrap();
    let before = first.mesh("sw").unwrap();
    assert!(before.switch_in_progress());
    let both = before.bundle().cloned().unwrap();
    assert_eq!(both.certs().len(), 2);
    drop(first);

    // A restart: a new manager, the same store, the config as it is now.
    let second = manager(&store);
    second.apply("sw.yaml", vec![mesh("ca-2")]).await.unwrap();
    let resumed = second.mesh("sw").unwrap();
    assert!(resumed.switch_in_progress(), "the switch resumed");
    assert_eq!(
        resumed.previous().unwrap().backend().name().as_str(),
        "ca-1"
    );
    assert_eq!(resumed.bundle().as_ref().unwrap().certs(), both.certs());

    // Once ca-1's certificates have expired (3 s) and nobody watches, the switch completes, and
    // a later restart does not bring the old roots back.
    tokio::time::sleep(Duration::from_secs(4)).await;
    second.finish_switches().await;
    assert!(!second.mesh("sw").unwrap().switch_in_progress());
    drop(second);
    let third = manager(&store);
    third.apply("sw.yaml", vec![mesh("ca-2")]).await.unwrap();
    let done = third.mesh("sw").unwrap();
    assert!(!done.switch_in_progress());
    assert_eq!(done.bundle().as_ref().unwrap().certs().len(), 1);
}
