//! Watchers never miss a certificate: a slow reader gets the newest one, a removed mesh ends its
//! watches with NotFound, and a half-open circuit lets exactly one call test the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshca::config::Mesh;
use meshca::rotation::{self, RotationPolicy, RotationReason, WATCH_BUFFER};
use meshca::{
    CircuitState, Error, Identity, Limits, Manager, ManagerError, MeshName, OverlaySecretStore,
};

fn manager(limits: Limits) -> (Arc<Manager>, common::Faults) {
    let faults = common::Faults::default();
    let manager = Arc::new(
        Manager::builder(faults.registry(), Arc::new(OverlaySecretStore::new(None)))
            .limits(limits)
            .build(),
    );
    (manager, faults)
}

fn web(mesh: &str) -> Identity {
    Identity::new(MeshName::new(mesh).unwrap(), [("kuma.io/service", "web")]).unwrap()
}

#[tokio::test]
async fn a_slow_reader_gets_the_newest_certificate() {
    let (m, _faults) = manager(Limits::default());
    m.apply(
        "t",
        vec![Mesh::from_yaml(&common::mesh_yaml("slow", "2s"), &meshca::registry()).unwrap()],
    )
    .await
    .unwrap();
    let scheduler = rotation::spawn(m.clone(), RotationPolicy::new(0.5, 0.0));
    let first = m.issue(web("slow"), None).await.unwrap();
    let mut watch = scheduler.watch(web("slow"), None, first).unwrap();
    // Not reading while about eight rotations happen: more than the buffer holds.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut read = Vec::new();
    while let Ok(Some(r)) = tokio::time::timeout(Duration::from_millis(100), watch.recv()).await {
        read.push(r.unwrap());
    }
    assert!(read.len() <= WATCH_BUFFER, "{} read", read.len());
    assert!(read.iter().all(|r| r.reason == RotationReason::Rotation));
    // The newest is current: what was dropped were the older ones, not it.
    let newest = read.last().expect("rotations were pushed");
    assert!(newest.certificate.not_after() > SystemTime::now());
}

#[tokio::test]
async fn watches_of_a_removed_mesh_end_with_not_found() {
    let (m, _faults) = manager(Limits::default());
    m.apply(
        "gone.yaml",
        vec![Mesh::from_yaml(&common::mesh_yaml("gone", "1h"), &meshca::registry()).unwrap()],
    )
    .await
    .unwrap();
    let scheduler = rotation::spawn(m.clone(), RotationPolicy::default());
    let first = m.issue(web("gone"), None).await.unwrap();
    let mut watch = scheduler.watch(web("gone"), None, first).unwrap();
    assert!(watch.recv().await.unwrap().is_ok());
    assert_eq!(m.remove_source("gone.yaml").await, ["gone"]);
    let end = tokio::time::timeout(Duration::from_secs(10), watch.recv())
        .await
        .expect("the watch ends promptly");
    assert!(
        matches!(
            end,
            Some(Err(Error::Manager(ManagerError::MeshNotFound(_))))
        ),
        "{end:?}"
    );
    assert!(watch.recv().await.is_none());
}

#[tokio::test]
async fn a_half_open_circuit_lets_one_probe_through() {
    let (m, faults) = manager(Limits::default().with_circuit(1, Duration::from_millis(500)));
    m.apply(
        "t",
        vec![Mesh::from_yaml(&common::mesh_yaml("probe", "1h"), &meshca::registry()).unwrap()],
    )
    .await
    .unwrap();
    faults.set_down("probe", true);
    let before = faults.calls("probe");
    assert!(m.issue(web("probe"), None).await.is_err());
    assert_eq!(m.guard().circuit_states()[0].1, CircuitState::Open);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(m.guard().circuit_states()[0].1, CircuitState::HalfOpen);
    // Twenty callers at once after the cooldown: one reaches the backend, the rest fail fast.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let m = m.clone();
        set.spawn(async move {
            let id = Identity::new(
                MeshName::new("probe").unwrap(),
                [("kuma.io/service", format!("svc-{i}"))],
            )
            .unwrap();
            m.issue(id, None).await
        });
    }
    let results = set.join_all().await;
    assert_eq!(
        faults.calls("probe") - before,
        2,
        "one failure, then one probe"
    );
    let fast = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Manager(ManagerError::CircuitOpen { .. }))))
        .count();
    assert_eq!(fast, 19);
    // The probe failed: open again. After the next cooldown a successful probe closes it.
    assert_eq!(m.guard().circuit_states()[0].1, CircuitState::Open);
    faults.set_down("probe", false);
    tokio::time::sleep(Duration::from_millis(600)).await;
    m.issue(web("probe"), None).await.unwrap();
    assert_eq!(m.guard().circuit_states()[0].1, CircuitState::Closed);
}
