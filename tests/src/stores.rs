//! What every [`SecretStore`] must do, whatever keeps the secrets (files, Kubernetes Secrets,
//! PostgreSQL rows): one suite, run by each store's tests against its real or test peer.

use std::sync::Arc;

use backend_builtin::BuiltinCa;
use ca_core::config::Mesh;
use ca_core::{
    BackendName, CertificateAuthority, Created, MeshName, Scope, SecretName, SecretStore,
};

/// Runs the store checks against `store`, with names of its own (`<mesh>.conformance-*`,
/// `meshca-conformance-global`) so that it can share a store with other tests:
///
/// - nothing is there until created; `create_if_absent` stores the first value and keeps it
///   against a second;
/// - `put` replaces, and four concurrent `put`s all land (one of them is read back);
/// - a global secret is its own, and the mesh secret is untouched by it;
/// - a value above [`ca_core::SourcePolicy::MAX_BYTES`] is refused and nothing is stored.
///
/// Panics with what failed.
pub async fn conformance(store: Arc<dyn SecretStore>, mesh: &MeshName) {
    let name = SecretName::new(format!("{mesh}.conformance-1")).unwrap();
    let scope = Scope::Mesh(mesh);
    assert!(
        store.get(scope, &name).await.unwrap().is_none(),
        "nothing yet"
    );
    let (v, c) = store
        .create_if_absent(scope, &name, b"first")
        .await
        .unwrap();
    assert_eq!((v.expose(), c), (&b"first"[..], Created::Ours));
    let (v, c) = store
        .create_if_absent(scope, &name, b"second")
        .await
        .unwrap();
    assert_eq!(
        (v.expose(), c),
        (&b"first"[..], Created::Existing),
        "an existing value is never replaced by a create"
    );
    store.put(scope, &name, b"third").await.unwrap();
    assert_eq!(
        store.get(scope, &name).await.unwrap().unwrap().expose(),
        b"third"
    );

    let mut tasks = Vec::new();
    for i in 0..4 {
        let (store, name, mesh) = (store.clone(), name.clone(), mesh.clone());
        tasks.push(tokio::spawn(async move {
            store
                .put(Scope::Mesh(&mesh), &name, format!("v{i}").as_bytes())
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let last = store.get(scope, &name).await.unwrap().unwrap();
    assert!(
        (0..4).any(|i| last.expose() == format!("v{i}").as_bytes()),
        "one of the concurrent values: {:?}",
        String::from_utf8_lossy(last.expose())
    );

    let global = SecretName::new("meshca-conformance-global").unwrap();
    assert!(store.get(Scope::Global, &global).await.unwrap().is_none());
    store.put(Scope::Global, &global, b"global").await.unwrap();
    let (v, c) = store
        .create_if_absent(Scope::Global, &global, b"other")
        .await
        .unwrap();
    assert_eq!((v.expose(), c), (&b"global"[..], Created::Existing));
    assert_eq!(
        store.get(scope, &name).await.unwrap().unwrap().expose(),
        last.expose(),
        "the mesh secret is untouched by the global one"
    );

    let big_name = SecretName::new(format!("{mesh}.conformance-big")).unwrap();
    let big = vec![b'x'; ca_core::SourcePolicy::MAX_BYTES + 1];
    let e = store
        .create_if_absent(scope, &big_name, &big)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    assert!(store.get(scope, &big_name).await.unwrap().is_none());
}

/// Mesh `default`'s builtin backend `ca-1`, its CA kept in `store`.
pub fn builtin_ca(store: Arc<dyn SecretStore>) -> BuiltinCa {
    let yaml = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: builtin\n";
    let m = Mesh::from_yaml(yaml, &crate::all_backends()).unwrap();
    let conf: &backend_builtin::BuiltinConf = m.enabled_backend().unwrap().conf_as().unwrap();
    BuiltinCa::new(
        MeshName::new("default").unwrap(),
        BackendName::new("ca-1").unwrap(),
        conf.clone(),
        store,
    )
}

/// One builtin CA per store in `stores` (each its own client, as replicas in separate
/// processes have), all started at once: asserts they all serve one CA and returns its PEM.
pub async fn replicas_share_one_ca(stores: Vec<Arc<dyn SecretStore>>) -> String {
    let mut tasks = Vec::new();
    for store in stores {
        let ca = builtin_ca(store);
        tasks.push(tokio::spawn(async move {
            ca.ensure().await.unwrap();
            ca.trust_bundle().await.unwrap().to_pem()
        }));
    }
    let mut bundles = Vec::new();
    for t in tasks {
        bundles.push(t.await.unwrap());
    }
    assert!(bundles.iter().all(|b| *b == bundles[0]), "one CA for all");
    bundles.swap_remove(0)
}
