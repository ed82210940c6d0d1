//! What the remote backends need from the library: the trust bundle is cached (one upstream
//! fetch, not one per certificate), one logical request keeps one idempotency key across its
//! retries, and DNS names a backend is configured with reach every certificate it issues.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use backend_builtin::BuiltinConf;
use meshca::config::{Backend, BackendConfig, Fields, Mesh};
use meshca::rotation::{self, RotationPolicy, RotationReason};
use meshca::{
    BackendFactory, BuildContext, BuildFuture, Built, Identity, Limits, Manager, MeshName,
    OverlaySecretStore, Registry, Violations,
};

fn web(mesh: &str) -> Identity {
    Identity::new(MeshName::new(mesh).unwrap(), [("kuma.io/service", "web")]).unwrap()
}

fn manager(registry: Registry) -> Arc<Manager> {
    Arc::new(
        Manager::builder(registry, Arc::new(OverlaySecretStore::new(None)))
            .limits(Limits::default().with_circuit(100, Duration::from_secs(1)))
            .build(),
    )
}

#[tokio::test]
async fn the_trust_bundle_is_fetched_once_not_per_certificate() {
    let faults = common::Faults::default();
    let m = manager(faults.registry());
    m.apply(
        "t",
        vec![Mesh::from_yaml(&common::mesh_yaml("cached", "1h"), &meshca::registry()).unwrap()],
    )
    .await
    .unwrap();
    let after_build = faults.bundle_calls("cached");
    for i in 0..20 {
        let id = Identity::new(
            MeshName::new("cached").unwrap(),
            [("kuma.io/service", format!("svc-{i}"))],
        )
        .unwrap();
        m.issue(id, None).await.unwrap();
    }
    assert_eq!(
        faults.bundle_calls("cached"),
        after_build,
        "no fetch per certificate"
    );
    assert!(
        after_build <= 2,
        "{after_build} fetches to build one backend"
    );
    // The periodic refresh goes upstream.
    m.refresh_bundles().await;
    assert_eq!(faults.bundle_calls("cached"), after_build + 1);
    assert_eq!(
        m.mesh("cached")
            .unwrap()
            .bundle()
            .as_ref()
            .unwrap()
            .certs()
            .len(),
        1
    );

    // The upstream CA rotated: the next refresh publishes its new root beside the old one, and
    // issuance goes on.
    let generation = m.mesh("cached").unwrap().generation();
    let other =
        Manager::builder(meshca::registry(), Arc::new(OverlaySecretStore::new(None))).build();
    other
        .apply(
            "o",
            vec![Mesh::from_yaml(&common::mesh_yaml("other", "1h"), &meshca::registry()).unwrap()],
        )
        .await
        .unwrap();
    let new_root = other.mesh("other").unwrap().bundle().cloned().unwrap();
    faults.add_upstream_roots("cached", new_root.clone());
    m.refresh_bundles().await;
    let state = m.mesh("cached").unwrap();
    let published = state.bundle().unwrap();
    assert_eq!(published.certs().len(), 2);
    assert!(published.certs().contains(&new_root.certs()[0]));
    assert!(
        state
            .bundle_pem()
            .as_ref()
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2
    );
    assert_eq!(
        state.generation(),
        generation,
        "no re-issue for a bundle change"
    );
    m.issue(web("cached"), None).await.unwrap();
    // Nothing changes on the next refresh.
    m.refresh_bundles().await;
    assert_eq!(
        m.mesh("cached")
            .unwrap()
            .bundle()
            .as_ref()
            .unwrap()
            .certs()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_rotation_keeps_its_idempotency_key_across_retries() {
    let faults = common::Faults::default();
    let m = manager(faults.registry());
    m.apply(
        "t",
        vec![Mesh::from_yaml(&common::mesh_yaml("idem", "3s"), &meshca::registry()).unwrap()],
    )
    .await
    .unwrap();
    let scheduler = rotation::spawn(m.clone(), RotationPolicy::new(0.5, 0.0));
    let first = m.issue(web("idem"), None).await.unwrap();
    let mut watch = scheduler.watch(web("idem"), None, first).unwrap();
    watch.recv().await.unwrap().unwrap();
    let before = faults.keys("idem").len();
    // Down across the rotation time: several retries of the same rotation.
    faults.set_down("idem", true);
    tokio::time::sleep(Duration::from_secs(5)).await;
    faults.set_down("idem", false);
    let next = tokio::time::timeout(Duration::from_secs(15), watch.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.reason, RotationReason::Rotation);
    let keys = faults.keys("idem")[before..].to_vec();
    assert!(keys.len() >= 3, "retries happened: {keys:?}");
    assert!(
        keys.windows(2).all(|w| w[0] == w[1]),
        "one key per rotation: {keys:?}"
    );
    // Client calls are separate logical requests: each its own key.
    let n = faults.keys("idem").len();
    m.issue(web("idem"), None).await.unwrap();
    m.issue(web("idem"), None).await.unwrap();
    let k = faults.keys("idem");
    assert_ne!(k[n], k[n + 1]);
    assert_ne!(k[n], keys[0]);
}

/// A cert-manager stand-in, registered as `certmanager`: a backend type of the test's own whose
/// `conf` has only `dnsNames`, signing like a builtin CA, so the library's handling of DNS names
/// is tested without cert-manager.
#[derive(Debug)]
struct LocalCertmanager;

#[derive(Debug)]
struct DnsNames(Vec<String>);

impl BackendConfig for DnsNames {
    fn dns_names(&self) -> &[String] {
        &self.0
    }
}

impl BackendFactory for LocalCertmanager {
    fn backend_type(&self) -> &str {
        "certmanager"
    }

    fn decode(&self, mut conf: Fields<'_>, v: &mut Violations) -> Option<Arc<dyn BackendConfig>> {
        conf.ignore(&["issuerRef"]);
        let names = conf.dns_name_list("dnsNames", v);
        conf.finish(v);
        Some(Arc::new(DnsNames(names)))
    }

    fn build<'a>(
        &'a self,
        ctx: &'a BuildContext,
        mesh: &'a MeshName,
        _index: usize,
        backend: &'a Backend,
    ) -> BuildFuture<'a> {
        Box::pin(async move {
            let ca = backend_builtin::BuiltinCa::new(
                mesh.clone(),
                backend.name.clone(),
                BuiltinConf::default(),
                ctx.store.clone(),
            );
            Ok(Built::new(Arc::new(ca), Vec::new()))
        })
    }
}

#[tokio::test]
async fn configured_dns_names_reach_every_certificate() {
    let registry = Registry::empty().with(LocalCertmanager);
    let m = manager(registry.clone());
    let yaml = "type: Mesh\nname: dns\nmtls:\n  enabledBackend: cm\n  skipValidation: true\n  backends:\n    - name: cm\n      type: certmanager\n      conf:\n        issuerRef: {name: mesh-ca}\n        dnsNames: [web.dns.svc, web.dns.svc.cluster.local]\n";
    m.apply("t", vec![Mesh::from_yaml(yaml, &registry).unwrap()])
        .await
        .unwrap();
    let issued = m.issue(web("dns"), None).await.unwrap();
    assert_eq!(
        issued.certificate.identity().dns_sans(),
        ["web.dns.svc", "web.dns.svc.cluster.local"]
    );
    // And in the certificate itself, checked by x509-parser (core checked it too).
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.certificate.chain()[0]).unwrap();
    let san = cert.subject_alternative_name().unwrap().unwrap();
    let dns: Vec<String> = san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(dns, ["web.dns.svc", "web.dns.svc.cluster.local"]);
}

#[derive(Debug, Default)]
struct Health(std::sync::Mutex<Vec<meshca::HealthReport>>);

impl meshca::Observer for Health {
    fn backend_health(
        &self,
        by_backend: std::collections::BTreeMap<(String, String), Option<String>>,
    ) {
        self.0.lock().unwrap().push(by_backend);
    }
}

#[tokio::test]
async fn backend_health_reaches_the_observer() {
    let health = Arc::new(Health::default());
    let faults = common::Faults::default();
    let m = Manager::builder(faults.registry(), Arc::new(OverlaySecretStore::new(None)))
        .observer(health.clone())
        .build();
    m.apply(
        "t",
        vec![Mesh::from_yaml(&common::mesh_yaml("ailing", "1h"), &meshca::registry()).unwrap()],
    )
    .await
    .unwrap();
    m.check_health().await;
    faults.set_problem(
        "ailing",
        Some("the token is not renewable and expires in 60s"),
    );
    m.check_health().await;
    faults.set_problem("ailing", None);
    let seen = health.0.lock().unwrap().clone();
    let key = ("ailing".to_owned(), "ca-1".to_owned());
    assert_eq!(seen[0].get(&key), Some(&None), "{seen:?}");
    let problem = seen[1].get(&key).cloned().flatten().unwrap();
    assert!(problem.contains("not renewable"), "{problem}");
}
