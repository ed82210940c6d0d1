//! The Kubernetes SecretStore against the Kubernetes API test server: Kong Mesh's layout (type
//! `system.kuma.io/secret`, label `kuma.io/mesh`, `data.value`), create-if-absent through `409
//! AlreadyExists`, replace with `resourceVersion`, secrets of other meshes left alone — and
//! three builtin CAs of one mesh started at once on three stores (three issuer replicas) ending
//! with one CA that all of them serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;

use ca_core::config::Mesh;
use ca_core::{CertificateAuthority, Created, Scope, SecretName, SecretStore};
use meshca_peers::kube::KubeApiServer;
use meshca_tests::certmanager::client_of;
use meshca_tests::checks::mesh;
use store_kubernetes::{KubernetesSecretStore, GLOBAL_SECRET_TYPE, MESH_LABEL, SECRET_TYPE};

const NS: &str = "kuma-system";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_suite_passes() {
    let api = KubeApiServer::start().await;
    let store = Arc::new(KubernetesSecretStore::new(client_of(&api.url()), NS));
    meshca_tests::stores::conformance(store, &mesh("default")).await;
    // Every write was a valid core/v1 Secret.
    assert!(api.writes().iter().all(|w| w.problems.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_kong_meshs_layout_created_once() {
    let api = KubeApiServer::start().await;
    let store = KubernetesSecretStore::new(client_of(&api.url()), NS);
    let (m, other) = (mesh("default"), mesh("other"));
    let name = SecretName::new("token-1").unwrap();

    assert!(store.get(Scope::Mesh(&m), &name).await.unwrap().is_none());
    let (v, c) = store
        .create_if_absent(Scope::Mesh(&m), &name, b"first")
        .await
        .unwrap();
    assert_eq!((v.expose(), c), (&b"first"[..], Created::Ours));
    let (v, c) = store
        .create_if_absent(Scope::Mesh(&m), &name, b"second")
        .await
        .unwrap();
    assert_eq!((v.expose(), c), (&b"first"[..], Created::Existing));

    let obj = api.object("secrets", NS, "token-1").unwrap();
    assert_eq!(obj["type"], SECRET_TYPE);
    assert_eq!(obj["metadata"]["labels"][MESH_LABEL], "default");
    assert_eq!(obj["data"]["value"], "Zmlyc3Q=");

    store.put(Scope::Mesh(&m), &name, b"third").await.unwrap();
    assert_eq!(
        store
            .get(Scope::Mesh(&m), &name)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"third"
    );

    // Another mesh's secret of the same name is not this mesh's, and is never overwritten.
    assert!(store
        .get(Scope::Mesh(&other), &name)
        .await
        .unwrap()
        .is_none());
    let e = store
        .create_if_absent(Scope::Mesh(&other), &name, b"x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not mesh `other`'s"), "{e}");
    let e = store
        .put(Scope::Mesh(&other), &name, b"x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("does not overwrite it"), "{e}");
    assert_eq!(
        store
            .get(Scope::Mesh(&m), &name)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"third"
    );

    // Every write was a valid core/v1 Secret (the server checks name, data keys, base64, size).
    let writes = api.writes();
    assert!(writes.len() >= 4, "{writes:?}");
    assert!(writes.iter().all(|w| w.problems.is_empty()), "{writes:?}");
    assert!(writes
        .iter()
        .any(|w| w.method == "PUT" && w.body["metadata"]["resourceVersion"].is_string()));

    // No permission: the error names the RBAC rule, for each verb the store uses.
    let token2 = SecretName::new("token-2").unwrap();
    for verb in ["get", "create", "update"] {
        api.allow_all();
        api.forbid_on("secrets", verb);
        let e = match verb {
            "get" => store.get(Scope::Mesh(&m), &token2).await.unwrap_err(),
            "create" => store
                .create_if_absent(Scope::Mesh(&m), &token2, b"v")
                .await
                .unwrap_err(),
            _ => store.put(Scope::Mesh(&m), &name, b"v").await.unwrap_err(),
        };
        let chain = ca_core::error_chain(&e);
        assert!(
            chain.contains("needs get, create and update on secrets in namespace kuma-system")
                && chain.contains(&format!("cannot {verb} resource \"secrets\"")),
            "{verb}: {chain}"
        );
    }
    api.allow_all();
    // A value above the limit is refused before it is sent.
    let big = vec![b'x'; ca_core::SourcePolicy::MAX_BYTES + 1];
    let e = store
        .create_if_absent(Scope::Mesh(&m), &token2, &big)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    assert!(api.object("secrets", NS, "token-2").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_secrets_are_typed_and_not_any_meshs() {
    let api = KubeApiServer::start().await;
    // Through the trait, as the issuer uses it for its bootstrap CA and token signing key.
    let store: Arc<dyn SecretStore> =
        Arc::new(KubernetesSecretStore::new(client_of(&api.url()), NS));
    let name = SecretName::new("meshca-bootstrap-tls").unwrap();
    assert!(store.get(Scope::Global, &name).await.unwrap().is_none());
    let (v, c) = store
        .create_if_absent(Scope::Global, &name, b"pem")
        .await
        .unwrap();
    assert_eq!((v.expose(), c), (&b"pem"[..], Created::Ours));
    let (v, c) = store
        .create_if_absent(Scope::Global, &name, b"other")
        .await
        .unwrap();
    assert_eq!((v.expose(), c), (&b"pem"[..], Created::Existing));
    // Kong Mesh's global-secret layout: its type, no mesh label, the value under data.value.
    let obj = api.object("secrets", NS, name.as_str()).unwrap();
    assert_eq!(obj["type"], GLOBAL_SECRET_TYPE);
    assert!(obj["metadata"]["labels"].get(MESH_LABEL).is_none());
    assert_eq!(obj["data"]["value"], "cGVt");
    assert_eq!(
        store.location(Scope::Global, &name),
        "Secret kuma-system/meshca-bootstrap-tls"
    );
    // Replaced in place (rotation), still a global secret.
    store.put(Scope::Global, &name, b"pem2").await.unwrap();
    assert_eq!(
        store
            .get(Scope::Global, &name)
            .await
            .unwrap()
            .unwrap()
            .expose(),
        b"pem2"
    );
    let obj = api.object("secrets", NS, name.as_str()).unwrap();
    assert_eq!(obj["type"], GLOBAL_SECRET_TYPE);
    // Not a mesh's secret, even though the name is free for the mesh store to ask about.
    let default = mesh("default");
    assert!(store
        .get(Scope::Mesh(&default), &name)
        .await
        .unwrap()
        .is_none());
    let e = store
        .put(Scope::Mesh(&default), &name, b"x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not mesh `default`'s"), "{e}");
    // A mesh's secret is not a global one.
    let sec = SecretName::new("default.token").unwrap();
    store
        .create_if_absent(Scope::Mesh(&default), &sec, b"t")
        .await
        .unwrap();
    assert!(store.get(Scope::Global, &sec).await.unwrap().is_none());
    let e = store
        .create_if_absent(Scope::Global, &sec, b"x")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not a global secret's"), "{e}");
    let e = store.put(Scope::Global, &sec, b"x").await.unwrap_err();
    assert!(e.to_string().contains("does not overwrite it"), "{e}");
    let writes = api.writes();
    assert!(writes.iter().all(|w| w.problems.is_empty()), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_all_land_through_conflicts() {
    let api = KubeApiServer::start().await;
    let m = mesh("default");
    let name = SecretName::new("default.switch").unwrap();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let store = KubernetesSecretStore::new(client_of(&api.url()), NS);
        let (m, name) = (m.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            store
                .put(Scope::Mesh(&m), &name, format!("v{i}").as_bytes())
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let store = KubernetesSecretStore::new(client_of(&api.url()), NS);
    let v = store.get(Scope::Mesh(&m), &name).await.unwrap().unwrap();
    assert!(["v0", "v1", "v2", "v3"].contains(&std::str::from_utf8(v.expose()).unwrap()));
    // One create; every other write was a replace carrying the version it read.
    let writes = api.writes();
    assert!(writes.iter().any(|w| w.method == "POST"));
    assert!(writes
        .iter()
        .filter(|w| w.method == "PUT")
        .all(|w| w.body["metadata"]["resourceVersion"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_starting_at_once_share_one_builtin_ca() {
    let api = KubeApiServer::start().await;
    // Each replica has its own client and store, as separate processes would.
    let stores = (0..3)
        .map(|_| {
            Arc::new(KubernetesSecretStore::new(client_of(&api.url()), NS)) as Arc<dyn SecretStore>
        })
        .collect();
    meshca_tests::stores::replicas_share_one_ca(stores).await;
    let secrets = api.names("secrets", NS);
    assert_eq!(
        secrets
            .iter()
            .filter(|n| n.contains("ca-builtin-cert"))
            .count(),
        1,
        "{secrets:?}"
    );
}

/// The provided backend of `yaml`'s enabled backend, its data sources read from `store`.
async fn load_provided(
    yaml: &str,
    store: &KubernetesSecretStore,
) -> Result<backend_provided::ProvidedCa, ca_core::Error> {
    let m = Mesh::from_yaml(yaml, &meshca_tests::all_backends()).unwrap();
    let b = m.enabled_backend().unwrap();
    let conf: &backend_provided::ProvidedConf = b.conf_as().unwrap();
    backend_provided::ProvidedCa::load(
        &m.name,
        b.name.clone(),
        conf,
        ca_core::config::DEFAULT_DP_CERT_EXPIRATION,
        store,
        &ca_core::SourcePolicy::local(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_data_sources_read_kong_mesh_secrets() {
    // Secrets as Kong Mesh keeps them (what `kumactl apply` of a Secret resource writes on
    // Kubernetes), made through the API by someone else: a provided CA's cert and key.
    let api = KubeApiServer::start().await;
    let client = client_of(&api.url());
    let (cert_pem, key_pem) = meshca_tests::fixtures::self_signed_ca(
        "kong mesh provided root",
        std::time::Duration::from_secs(86_400 * 30),
        std::time::SystemTime::now() - std::time::Duration::from_secs(60),
    );
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), NS);
    for (name, value) in [("provided-cert", &cert_pem), ("provided-key", &key_pem)] {
        let s: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": NS, "labels": {MESH_LABEL: "default"}},
            "type": SECRET_TYPE,
            "data": {"value": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value)},
        }))
        .unwrap();
        secrets.create(&Default::default(), &s).await.unwrap();
    }
    let yaml = "type: Mesh\nname: default\nmtls:\n  enabledBackend: ca-1\n  backends:\n  - name: ca-1\n    type: provided\n    conf:\n      cert:\n        secret: provided-cert\n      key:\n        secret: provided-key\n";
    let store = KubernetesSecretStore::new(client, NS);
    let ca = load_provided(yaml, &store)
        .await
        .unwrap_or_else(|e| panic!("{}", ca_core::error_chain(&e)));
    let bundle = ca.trust_bundle().await.unwrap().to_pem();
    assert_eq!(
        pem::parse_many(&bundle).unwrap(),
        pem::parse_many(&cert_pem).unwrap()
    );
    ca_core::validate(
        &ca,
        &mesh("default"),
        ca_core::config::DEFAULT_DP_CERT_EXPIRATION,
        None,
    )
    .await
    .unwrap();

    // Another mesh cannot read them: its `secret:` source finds nothing.
    let e = load_provided(&yaml.replace("name: default", "name: other"), &store)
        .await
        .unwrap_err();
    assert!(
        ca_core::error_chain(&e).contains("provided-cert"),
        "{}",
        ca_core::error_chain(&e)
    );
}
