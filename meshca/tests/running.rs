//! The started library owns its background work: watches issue their own first certificate, and
//! shutting down (or dropping the handle) stops the scheduler, ending open watches.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use meshca::config::Mesh;
use meshca::rotation::RotationReason;
use meshca::{Error, Identity, Manager, MeshName, OverlaySecretStore, Running};

fn web(mesh: &str, service: &str) -> Identity {
    Identity::new(MeshName::new(mesh).unwrap(), [("kuma.io/service", service)]).unwrap()
}

async fn started(mesh: &str) -> Running {
    let running =
        Manager::builder(meshca::registry(), Arc::new(OverlaySecretStore::new(None))).start();
    let yaml = common::mesh_yaml(mesh, "1h");
    running
        .manager()
        .apply(
            "t",
            vec![Mesh::from_yaml(&yaml, &meshca::registry()).unwrap()],
        )
        .await
        .unwrap();
    running
}

#[tokio::test]
async fn a_watch_issues_its_first_certificate_and_ends_at_shutdown() {
    let running = started("run").await;
    let mut watch = running.watch(web("run", "a"), None).await.unwrap();
    let first = watch.recv().await.unwrap().unwrap();
    assert_eq!(first.reason, RotationReason::Initial);
    assert_eq!(first.certificate.identity(), &web("run", "a"));
    running.shutdown().await;
    let end = tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .expect("the watch ends when the scheduler stops");
    assert!(end.is_none(), "no certificate after shutdown: {end:?}");
}

#[tokio::test]
async fn dropping_the_handle_stops_the_background_work() {
    let running = started("dropped").await;
    let mut watch = running.watch(web("dropped", "a"), None).await.unwrap();
    watch.recv().await.unwrap().unwrap();
    drop(running);
    let end = tokio::time::timeout(Duration::from_secs(5), watch.recv())
        .await
        .expect("the watch ends when the handle is dropped");
    assert!(end.is_none());
}

#[tokio::test]
async fn a_first_certificate_of_another_identity_is_refused() {
    let running = started("mixed").await;
    let other = running
        .manager()
        .issue(web("mixed", "b"), None)
        .await
        .unwrap();
    let err = running
        .scheduler()
        .watch(web("mixed", "a"), None, other)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument { field, .. } if field == "first"),
        "{err}"
    );
}
