//! The certmanager backend against the Kubernetes API test server: the conformance suite, the
//! trust bundle from `status.ca`, the clear errors of denied, failed, invalid and never-approved
//! requests, of RBAC refusals, a missing issuer and an unreachable API server; requests deleted
//! after use and stale ones at start; and every object the backend sent valid against
//! cert-manager's CRD schema (which the server enforces, as a deliberately invalid object shows).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backend_certmanager::{
    certificate_request_resource, CertificateRequest, DEFAULT_NAMESPACE, LABEL_BACKEND, LABEL_MESH,
};
use ca_core::config::DEFAULT_DP_CERT_EXPIRATION;
use ca_core::{validate, CertificateAuthority, Error, MeshName, UpstreamKind};
use meshca::Deadline;
use meshca_peers::Behaviour;
use meshca_tests::certmanager::{build_with, client_of, Certmanager, Peer};
use meshca_tests::vault::chain;
use serde_json::json;

meshca_tests::conformance_suite!(certmanager_kube, Certmanager::new());

fn mesh(name: &str) -> MeshName {
    MeshName::new(name).unwrap()
}

async fn validate_err(ca: &dyn CertificateAuthority) -> Error {
    validate(ca, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .expect_err("validation must fail")
}

/// No object the backend wrote failed the CRD schema.
fn assert_all_valid(peer: &Peer) {
    let writes = peer.server.writes();
    assert!(!writes.is_empty());
    for w in writes {
        assert!(
            w.problems.is_empty(),
            "{} {}: {:?}",
            w.method,
            w.path,
            w.problems
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_validates_and_cleans_up() {
    let peer = Peer::start().await;
    let yaml = Peer::mesh_yaml("default", "10s", None, "");
    let backend = peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    // Without caCert the bundle is status.ca of an issued request: none yet.
    let e = backend.trust_bundle().await.unwrap_err();
    assert!(chain(&e).contains("not known yet"), "{}", chain(&e));
    let t = validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(
        t.certificate.identity().spiffe_id(),
        "spiffe://default/meshca-validation"
    );
    let bundle = backend.trust_bundle().await.unwrap();
    let ca = pem::parse(peer.server.ca_pem()).unwrap();
    assert_eq!(bundle.certs()[0].as_ref(), ca.contents());
    backend.health().await.unwrap();

    // spec.duration is the requested lifetime.
    let leaf = t.certificate.chain()[0].clone();
    let (_, x) = x509_parser::parse_x509_certificate(leaf.as_ref()).unwrap();
    let span = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
    assert_eq!(span as u64, DEFAULT_DP_CERT_EXPIRATION.as_secs());

    // The request had our labels, and is gone.
    let writes = peer.server.writes();
    let post = writes.iter().find(|w| w.method == "POST").unwrap();
    let labels = &post.body["metadata"]["labels"];
    assert_eq!(labels[LABEL_MESH], "default");
    assert_eq!(labels[LABEL_BACKEND], "cm-1");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "meshca");
    assert_eq!(post.body["metadata"]["generateName"], "meshca-");
    assert_eq!(post.body["spec"]["issuerRef"]["kind"], "Issuer");
    assert_eq!(post.body["spec"]["issuerRef"]["group"], "cert-manager.io");
    assert_eq!(
        post.body["spec"]["usages"],
        json!([
            "digital signature",
            "key encipherment",
            "server auth",
            "client auth"
        ])
    );
    assert!(peer.server.requests(DEFAULT_NAMESPACE).is_empty());
    assert_eq!(peer.server.deleted().len(), 1);
    assert_all_valid(&peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_cert_manager_said() {
    let peer = Peer::start().await;
    let yaml = Peer::mesh_yaml("default", "10s", Some(&peer.server.ca_pem()), "");
    let backend = peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    for (b, want) in [
        (
            Behaviour::Deny,
            "the request was denied: policy.cert-manager.io (No policy approved this request)",
        ),
        (
            Behaviour::Fail,
            "issuing failed: Failed (Failed to sign certificate request",
        ),
        (
            Behaviour::Invalid,
            "the request is invalid: RequestParsingError",
        ),
    ] {
        peer.server.set_behaviour(b);
        let e = validate_err(&backend).await;
        let text = chain(&e);
        assert!(
            e.upstream_kind() == Some(UpstreamKind::Refused),
            "{b:?}: {text}"
        );
        assert!(text.contains(want), "{b:?}: {text}");
        assert!(
            text.contains("cert-manager did not issue CertificateRequest kuma-system/meshca-"),
            "{text}"
        );
        assert!(
            peer.server.requests(DEFAULT_NAMESPACE).is_empty(),
            "{b:?}: not deleted"
        );
    }
    assert_eq!(peer.server.deleted().len(), 3);
    assert_all_valid(&peer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_approved_requests_time_out_and_are_deleted() {
    let peer = Peer::start().await;
    peer.server.set_behaviour(Behaviour::NeverApprove);
    let yaml = Peer::mesh_yaml("default", "1s", Some(&peer.server.ca_pem()), "");
    let backend = peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    // Held as the manager holds it: the backend does not time out `issue` itself.
    let backend = Deadline::new(Arc::new(backend), Duration::from_secs(1));
    let started = SystemTime::now();
    let e = validate_err(&backend).await;
    let text = chain(&e);
    assert!(
        matches!(e.upstream_kind(), Some(UpstreamKind::Timeout(_))),
        "{text}"
    );
    assert!(
        text.contains("waiting for cert-manager to approve and issue a CertificateRequest")
            && text.contains("did not finish within 1s"),
        "{text}"
    );
    assert!(text.contains("is an approver running"), "{text}");
    assert!(started.elapsed().unwrap() < Duration::from_secs(30));
    // The cancelled issue's request is deleted in the background.
    for _ in 0..200 {
        if !peer.server.deleted().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(peer.server.requests(DEFAULT_NAMESPACE).is_empty());
    assert_eq!(peer.server.deleted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_approve_issues_where_no_approver_runs() {
    let peer = Peer::start().await;
    peer.server.set_behaviour(Behaviour::NeverApprove);
    let yaml = Peer::mesh_yaml(
        "default",
        "10s",
        Some(&peer.server.ca_pem()),
        "      autoApprove: true\n",
    );
    let backend = peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    // meshca set Approved=True through /status (cmctl's way), valid against the CRD schema.
    let writes = peer.server.writes();
    let approval = writes
        .iter()
        .find(|w| w.method == "PUT" && w.path.ends_with("/status"))
        .expect("a status update from meshca");
    let approved = approval.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Approved")
        .unwrap();
    assert_eq!(approved["status"], "True");
    assert_eq!(approved["reason"], "meshca.io");
    assert!(approval.body["metadata"]["resourceVersion"].is_string());
    assert_all_valid(&peer);
    assert!(peer.server.requests(DEFAULT_NAMESPACE).is_empty());

    // Without the `approve` verb on the issuer's signer, cert-manager's webhook refuses, and the
    // error names the RBAC it takes.
    peer.server.forbid("approve");
    let e = validate_err(&backend).await;
    let text = chain(&e);
    assert!(e.upstream_kind() == Some(UpstreamKind::Refused), "{text}");
    for want in [
        "autoApprove",
        "update on certificaterequests/status",
        "verbs [approve] on resource signers",
        "issuers.cert-manager.io/kuma-system.mesh-ca",
        "does not have permissions to set approved/denied conditions",
    ] {
        assert!(text.contains(want), "{want:?} missing: {text}");
    }
    assert!(peer.server.requests(DEFAULT_NAMESPACE).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_watch_is_started_again_a_bounded_number_of_times() {
    let peer = Peer::start().await;
    let yaml = Peer::mesh_yaml("default", "20s", Some(&peer.server.ca_pem()), "");
    let backend = std::sync::Arc::new(peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap());
    // Requests wait unsigned, so only a watch can deliver the certificate. Two watches fail;
    // the third one is running when cert-manager signs.
    peer.server.set_behaviour(Behaviour::Hold);
    peer.server.fail_watches(2);
    let b = backend.clone();
    let issue = tokio::spawn(async move {
        validate(&*b, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None).await
    });
    tokio::time::timeout(Duration::from_secs(10), peer.server.watches_reach(1))
        .await
        .expect("a watch after the failed ones");
    assert_eq!(peer.server.watch_failures_left(), 0);
    peer.server.release();
    issue
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", chain(&e)));

    // Always failing: Unavailable after three watches, with the API server's message, and the
    // request is deleted.
    peer.server.set_behaviour(Behaviour::Hold);
    peer.server.fail_watches(1000);
    let e = validate_err(&*backend).await;
    let text = chain(&e);
    assert!(
        e.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{text}"
    );
    assert!(text.contains("etcdserver: leader changed"), "{text}");
    assert!(text.contains("watch certificaterequest meshca-"), "{text}");
    assert_eq!(
        peer.server.watch_failures_left(),
        1000 - 3,
        "three watches, no more"
    );
    assert!(peer.server.requests(DEFAULT_NAMESPACE).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_arrives_through_the_watch() {
    let peer = Peer::start().await;
    peer.server.set_behaviour(Behaviour::Hold);
    let yaml = Peer::mesh_yaml("default", "30s", Some(&peer.server.ca_pem()), "");
    let backend = peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let issuing = tokio::spawn(async move {
        validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None).await
    });
    // The backend listed the pending request and now watches it: only an event can end it.
    peer.server.watches_reach(1).await;
    peer.server.release();
    issuing
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert!(peer.server.requests(DEFAULT_NAMESPACE).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_requests_are_cleaned_at_start() {
    let peer = Peer::start().await;
    let ours = json!({LABEL_MESH: "default", LABEL_BACKEND: "cm-1",
        "app.kubernetes.io/managed-by": "meshca"});
    let other_backend = json!({LABEL_MESH: "default", LABEL_BACKEND: "cm-2",
        "app.kubernetes.io/managed-by": "meshca"});
    peer.server
        .insert_request(DEFAULT_NAMESPACE, "meshca-old1", ours.clone());
    peer.server
        .insert_request(DEFAULT_NAMESPACE, "meshca-old2", ours);
    peer.server
        .insert_request(DEFAULT_NAMESPACE, "meshca-keep", other_backend);
    peer.server
        .insert_request(DEFAULT_NAMESPACE, "someone-else", json!({"app": "x"}));
    let yaml = Peer::mesh_yaml("default", "10s", Some(&peer.server.ca_pem()), "");
    let backend = peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(
        peer.server.requests(DEFAULT_NAMESPACE),
        ["meshca-keep", "someone-else"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_enforces_the_crd_schema() {
    let peer = Peer::start().await;
    let api: kube::Api<CertificateRequest> = kube::Api::namespaced_with(
        peer.client(),
        DEFAULT_NAMESPACE,
        &certificate_request_resource(),
    );
    let mut cr: CertificateRequest = serde_json::from_value(json!({
        "apiVersion": "cert-manager.io/v1", "kind": "CertificateRequest",
        "metadata": {"generateName": "bad-"},
        "spec": {"request": "eA==", "issuerRef": {"name": "mesh-ca"}, "usages": ["telepathy"]}
    }))
    .unwrap();
    let e = api
        .create(&Default::default(), &cr)
        .await
        .expect_err("an invalid object must be refused");
    match &e {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert_eq!(s.reason, "Invalid", "{s:?}");
            assert!(
                s.message.contains("spec.usages[0]: Unsupported value"),
                "{s:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    cr.spec.usages = vec!["server auth".into()];
    cr.spec.request = "not base64!".into();
    let e = api.create(&Default::default(), &cr).await.unwrap_err();
    assert!(e.to_string().contains("spec.request"), "{e}");
    assert!(peer.server.requests(DEFAULT_NAMESPACE).is_empty());
    // NotFound is a Kubernetes Status.
    match api.get("nope").await.unwrap_err() {
        kube::Error::Api(s) => {
            assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
            assert_eq!(
                s.message,
                "certificaterequests.cert-manager.io \"nope\" not found"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_refusals_name_the_rule() {
    let peer = Peer::start().await;
    peer.server.forbid("create");
    let yaml = Peer::mesh_yaml("default", "10s", Some(&peer.server.ca_pem()), "");
    let backend = peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    let e = validate_err(&backend).await;
    let text = chain(&e);
    assert!(e.upstream_kind() == Some(UpstreamKind::Refused), "{text}");
    assert!(
        text.contains("Kubernetes forbids create a certificaterequest in namespace kuma-system"),
        "{text}"
    );
    assert!(
        text.contains(
            "resources: [certificaterequests], verbs: [create, get, list, watch, delete]"
        ),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_the_issuer() {
    let peer = Peer::start().await;
    let yaml = Peer::mesh_yaml("default", "10s", Some(&peer.server.ca_pem()), "");
    let good = peer.build(&yaml, DEFAULT_DP_CERT_EXPIRATION).await.unwrap();
    good.health().await.unwrap();

    let cluster = yaml.replace(
        "name: mesh-ca",
        "name: cluster-ca\n        kind: ClusterIssuer",
    );
    let backend = peer
        .build(&cluster, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    let e = backend.health().await.unwrap_err();
    assert!(
        e.to_string()
            .contains("there is no cert-manager ClusterIssuer cluster-ca"),
        "{e}"
    );
    peer.server.add_cluster_issuer("cluster-ca");
    backend.health().await.unwrap();

    // External issuers (another group) are not checked.
    let external = yaml.replace(
        "name: mesh-ca",
        "name: x\n        kind: AWSPCAClusterIssuer\n        group: awspca.cert-manager.io",
    );
    let backend = peer
        .build(&external, DEFAULT_DP_CERT_EXPIRATION)
        .await
        .unwrap();
    backend.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_unavailable() {
    // A port that was free a moment ago.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = Peer::mesh_yaml("default", "10s", None, "");
    let backend = build_with(
        &yaml,
        DEFAULT_DP_CERT_EXPIRATION,
        client_of(&format!("http://127.0.0.1:{port}")),
    )
    .await
    .unwrap();
    let e = validate_err(&backend).await;
    let text = chain(&e);
    assert!(
        e.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{text}"
    );
    assert!(text.contains("cannot be reached"), "{text}");
}

/// Outside a pod with nothing naming a namespace, requests go where the kubeconfig context
/// points (kubectl's choice), not to Kuma's system namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_go_to_the_kubeconfig_contexts_namespace() {
    if ca_core::named_system_namespace().is_some() {
        panic!("MESHCA_NAMESPACE or a pod namespace is set: this test needs neither");
    }
    let peer = Peer::start().await;
    peer.server
        .add_issuer("mesh-ops", meshca_tests::certmanager::ISSUER);
    let mut config = kube::Config::new(peer.server.url().parse().unwrap());
    config.default_namespace = "mesh-ops".to_owned();
    let client = kube::Client::try_from(config).unwrap();
    let yaml = Peer::mesh_yaml("default", "10s", None, "");
    let backend = build_with(&yaml, DEFAULT_DP_CERT_EXPIRATION, client)
        .await
        .unwrap();
    validate(&backend, &mesh("default"), DEFAULT_DP_CERT_EXPIRATION, None)
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(backend.namespace(), "mesh-ops");
    let posts: Vec<_> = peer
        .server
        .writes()
        .into_iter()
        .filter(|w| w.method == "POST")
        .map(|w| w.path)
        .collect();
    assert!(
        !posts.is_empty() && posts.iter().all(|p| p.contains("/namespaces/mesh-ops/")),
        "{posts:?}"
    );
}
