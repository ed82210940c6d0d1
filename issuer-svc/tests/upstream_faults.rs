//! Upstream faults through the real `meshca` binary and a real peer: OpenBao behind the Vault
//! front, the front killed (listener and every connection gone) and started again with its state, answering 5xx
//! (retried with backoff, a bounded number of times), sealed. Throughout, the issuer keeps the current certificate on an open watch (it never
//! pushes an error or an expired certificate), refuses new issues with `Unavailable`, opens the
//! vault backend's circuit after `--circuit-threshold` distinct failing identities, lets one
//! probe through after the cooldown, and recovers when Vault is back — and `/metrics` says each
//! of those things. The same for certmanager with the Kubernetes API test server killed and
//! started again, and cert-manager denying requests (a refusal, not an outage: the circuit
//! stays closed); and for acmpca against moto (IAM enforced) through a fault proxy that throttles
//! (`ThrottlingException`, retried a bounded number of times) and answers slower than
//! `requestTimeout`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::time::Duration;

use common::*;
use issuer_svc::proto::issuer_client::IssuerClient;
use issuer_svc::proto::{IssuedCertificate, WatchCertificateResponse};
use meshca_tests::vault::{Auth, Peer, Role};
use tonic::transport::Channel;
use tonic::Code;

const ISSUE: Role = Role {
    mode: "issue",
    key_type: "ec",
    allowed_uri_sans: None,
};

const ISSUED: &str = "meshca_issue_duration_seconds_count{mesh=\"default\",backend=\"vault-1\"}";

/// The series of `backend`'s circuit in `state` (1 while it is in that state, else 0).
fn circuit(backend: &str, state: &str) -> String {
    format!(
        "meshca_backend_circuit_state{{mesh=\"default\",backend=\"{backend}\",state=\"{state}\"}}"
    )
}

fn failures(server: &Server, reason: &str) -> f64 {
    server
        .metric(&format!(
            "meshca_issue_failures_total{{mesh=\"default\",reason=\"{reason}\"}}"
        ))
        .unwrap_or(0.0)
}

/// Polls `/metrics` until `series` is `want` (the guard updates it asynchronously).
async fn metric_becomes(server: &Server, series: &str, want: f64) {
    for _ in 0..100 {
        if server.metric(series) == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never became {want}: {:?}", server.metric(series));
}

/// Waits out the circuit's cooldown, then issues for `svc` until it works (bounded): the probe
/// after an outage, and the calls after it.
/// The healthy start of every case: `default`/web issued, and a watch holding its initial
/// certificate.
async fn healthy_watch(
    client: &mut IssuerClient<Channel>,
) -> (
    tonic::Streaming<WatchCertificateResponse>,
    IssuedCertificate,
) {
    client
        .issue_certificate(request("default", &[("kuma.io/service", "web")]))
        .await
        .unwrap();
    let mut watch = client
        .watch_certificate(request("default", &[("kuma.io/service", "web")]))
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.reason, "initial");
    (watch, first.certificate.unwrap())
}

async fn recovers(client: &mut IssuerClient<Channel>, svc: &str) {
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..40 {
        if client
            .issue_certificate(request("default", &[("kuma.io/service", svc)]))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("issuing for {svc} never recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_outages_keep_serving_open_the_circuit_and_show_in_metrics() {
    bounded(120, async {
        let peer = Peer::start(Auth::Token).await;
        peer.mount("default", ISSUE).await;
        let auth = peer.auth_yaml(Auth::Token).await;
        let yaml = peer.mesh_yaml("default", "issue", &auth, "");
        let server = tokio::task::spawn_blocking(move || {
            Server::start(
                &[("default.yaml", &yaml)],
                &["--circuit-threshold", "2", "--circuit-cooldown", "1s"],
            )
        })
        .await
        .unwrap();
        let mut client = server.admin().await;

        // Healthy: a certificate, a watch holding it, metrics at rest.
        let (mut watch, current) = healthy_watch(&mut client).await;
        metric_becomes(&server, &circuit("vault-1", "closed"), 1.0).await;
        let issued_before = server.metric(ISSUED).unwrap();
        assert_eq!(issued_before, 2.0);

        // Vault killed: new identities get Unavailable, naming the backend; after two distinct
        // identities the circuit opens and further calls fail fast without reaching Vault.
        peer.vault.stop().await;
        for svc in ["api", "db"] {
            let e = client
                .issue_certificate(request("default", &[("kuma.io/service", svc)]))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{svc}: {e:?}");
            assert!(e.message().contains("vault-1"), "{}", e.message());
        }
        metric_becomes(&server, &circuit("vault-1", "open"), 1.0).await;
        assert!(failures(&server, "unavailable") >= 2.0);
        let requests_before = peer.vault.requests().len();
        let e = client
            .issue_certificate(request("default", &[("kuma.io/service", "queue")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable);
        assert!(failures(&server, "circuit_open") >= 1.0);
        assert_eq!(peer.vault.requests().len(), requests_before);

        // The watch keeps its current certificate: nothing is pushed while Vault is away.
        let pushed = tokio::time::timeout(Duration::from_millis(1500), watch.message()).await;
        assert!(
            pushed.is_err(),
            "the watch got {pushed:?} during the outage"
        );
        assert!(
            server.metric("meshca_watched_identities").unwrap() >= 1.0,
            "the watch is still open"
        );
        let mut expiry = None;
        for _ in 0..100 {
            expiry = server.metric("meshca_earliest_expiry_timestamp_seconds{mesh=\"default\"}");
            if expiry.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let expiry = expiry.expect("the earliest expiry of the watched certificate");
        assert!(
            expiry
                > std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64(),
            "the certificate held is not expired"
        );

        // Vault back (same state): after the cooldown one probe goes through and closes the
        // circuit; issuing works again.
        peer.vault.start_again().await;
        recovers(&mut client, "api").await;
        metric_becomes(&server, &circuit("vault-1", "closed"), 1.0).await;
        assert!(server.metric(ISSUED).unwrap() > issued_before);

        // A 5xx is retried with backoff: two failed answers cost two more attempts, not an
        // error. Four in a row (every attempt) are Unavailable with Vault's status.
        let issues = |log: &[meshca_peers::vault::RequestLog]| {
            log.iter()
                .filter(|r| r.path == "pki-default/issue/dataplane-proxies")
                .count()
        };
        peer.vault.clear_requests();
        peer.vault.fail_next(2, 500);
        client
            .issue_certificate(request("default", &[("kuma.io/service", "cache")]))
            .await
            .unwrap();
        assert_eq!(issues(&peer.vault.requests()), 3, "two retries");
        peer.vault.clear_requests();
        peer.vault.fail_next(4, 502);
        let e = client
            .issue_certificate(request("default", &[("kuma.io/service", "search")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains("502"), "{}", e.message());
        assert_eq!(issues(&peer.vault.requests()), 4, "bounded: four attempts");
        peer.vault.set_sealed(true);
        let e = client
            .issue_certificate(request("default", &[("kuma.io/service", "mail")]))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{e:?}");
        assert!(e.message().contains("sealed"), "{}", e.message());
        metric_becomes(&server, &circuit("vault-1", "open"), 1.0).await;
        peer.vault.set_sealed(false);
        recovers(&mut client, "mail").await;
        metric_becomes(&server, &circuit("vault-1", "closed"), 1.0).await;

        // Through all of it the watch never received anything but its first certificate.
        let pushed = tokio::time::timeout(Duration::from_millis(200), watch.message()).await;
        assert!(pushed.is_err(), "the watch got {pushed:?}");
        assert!(!current.cert_chain_pem.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certmanager_refusals_and_a_dead_api_server_show_in_metrics() {
    bounded(120, async {
        let api = meshca_peers::KubeApiServer::start().await;
        api.add_issuer("kuma-system", meshca_tests::certmanager::ISSUER);
        let tmp = tempfile::tempdir().unwrap();
        let kubeconfig = meshca_tests::certmanager::write_kubeconfig(tmp.path(), &api.url());
        let yaml =
            meshca_tests::certmanager::Peer::mesh_yaml("default", "3s", Some(&api.ca_pem()), "");
        let server = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            Server::start_with_env(
                dir,
                data,
                &[("default.yaml", &yaml)],
                &["--circuit-threshold", "2", "--circuit-cooldown", "1s"],
                &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
            )
        })
        .await
        .unwrap();
        let _kubeconfig_dir = tmp;
        let backend = "cm-1";
        let mut client = server.admin().await;
        let (mut watch, _) = healthy_watch(&mut client).await;

        // cert-manager denies: FailedPrecondition with its reason; a refusal is an answer, not
        // an outage, so the circuit stays closed.
        api.set_behaviour(meshca_peers::Behaviour::Deny);
        for svc in ["api", "db", "queue"] {
            let e = client
                .issue_certificate(request("default", &[("kuma.io/service", svc)]))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            assert!(e.message().contains("denied"), "{}", e.message());
        }
        assert!(failures(&server, "failed_precondition") >= 3.0);
        metric_becomes(&server, &circuit(backend, "closed"), 1.0).await;
        api.set_behaviour(meshca_peers::Behaviour::Issue);

        // The API server killed: Unavailable, the circuit opens, the watch holds its certificate.
        api.stop().await;
        for svc in ["api", "db"] {
            let e = client
                .issue_certificate(request("default", &[("kuma.io/service", svc)]))
                .await
                .unwrap_err();
            assert_eq!(e.code(), Code::Unavailable, "{svc}: {e:?}");
        }
        metric_becomes(&server, &circuit(backend, "open"), 1.0).await;
        assert!(failures(&server, "unavailable") >= 2.0);
        let pushed = tokio::time::timeout(Duration::from_millis(1000), watch.message()).await;
        assert!(
            pushed.is_err(),
            "the watch got {pushed:?} during the outage"
        );

        // Back with its objects: after the cooldown a probe closes the circuit.
        api.start_again().await;
        recovers(&mut client, "api").await;
        metric_becomes(&server, &circuit(backend, "closed"), 1.0).await;
        // Requests of failed and finished issues are all deleted.
        let mut left = api.requests("kuma-system");
        for _ in 0..40 {
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = api.requests("kuma-system");
        }
        assert!(left.is_empty(), "{left:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acmpca_throttling_and_slowness_through_a_proxy_show_in_metrics() {
    use meshca_peers::fault_proxy::ISSUE_CERTIFICATE;
    use meshca_peers::{Fault, FaultProxy};
    bounded(180, async {
        let peer = meshca_tests::acmpca::Peer::start().await;
        let ca = peer.ca_for("default").await;
        let proxy = FaultProxy::start(&peer.moto.endpoint()).await;
        let keys = format!(
            "      auth:\n        awsCredentials:\n          accessKey:\n            inlineString: {}\n          accessKeySecret:\n            inlineString: {}\n",
            peer.user.access_key_id, peer.user.secret_access_key
        );
        let yaml = meshca_tests::acmpca::Peer::mesh_yaml("default", &ca.arn, &ca.root_pem, &keys)
            .replace("requestTimeout: 10s", "requestTimeout: 3s");
        let endpoint = proxy.endpoint();
        let server = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().unwrap();
            let data = dir.path().join("data");
            Server::start_with_env(
                dir,
                data,
                &[("default.yaml", &yaml)],
                &["--circuit-threshold", "2", "--circuit-cooldown", "1s"],
                &[
                    ("AWS_ENDPOINT_URL_ACM_PCA", endpoint.as_str()),
                    ("AWS_REGION", meshca_tests::acmpca::REGION),
                    ("AWS_EC2_METADATA_DISABLED", "true"),
                ],
            )
        })
        .await
        .unwrap();
        let backend = "acmpca-1";
        let mut client = server.admin().await;
        let (mut watch, _) = healthy_watch(&mut client).await;

        // One throttled answer is retried with backoff: the certificate comes, one attempt later.
        let before = proxy.counts(ISSUE_CERTIFICATE);
        proxy.fail_next(ISSUE_CERTIFICATE, 1, Fault::Throttling);
        client
            .issue_certificate(request("default", &[("kuma.io/service", "api")]))
            .await
            .unwrap();
        let after = proxy.counts(ISSUE_CERTIFICATE);
        assert_eq!(after.injected - before.injected, 1);
        assert_eq!(after.forwarded - before.forwarded, 1);

        // Throttled on every attempt: a bounded number of attempts, then an error naming it;
        // two identities open the circuit.
        proxy.fail_always(ISSUE_CERTIFICATE, Fault::Throttling);
        for svc in ["db", "queue"] {
            let before = proxy.counts(ISSUE_CERTIFICATE).total();
            let e = client
                .issue_certificate(request("default", &[("kuma.io/service", svc)]))
                .await
                .unwrap_err();
            assert!(
                matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded),
                "{svc}: {e:?}"
            );
            assert!(e.message().to_lowercase().contains("throttl"), "{}", e.message());
            let attempts = proxy.counts(ISSUE_CERTIFICATE).total() - before;
            assert!((1..=5).contains(&attempts), "{svc}: {attempts} attempts");
        }
        metric_becomes(&server, &circuit(backend, "open"), 1.0).await;
        proxy.clear(ISSUE_CERTIFICATE);

        // Slower than requestTimeout (3 s): DeadlineExceeded in bounded time.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        proxy.set_delay(Duration::from_secs(6));
        let started = std::time::Instant::now();
        let e = client
            .issue_certificate(request("default", &[("kuma.io/service", "slow")]))
            .await
            .unwrap_err();
        assert!(
            matches!(e.code(), Code::DeadlineExceeded | Code::Unavailable),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert!(
            failures(&server, "deadline_exceeded") + failures(&server, "circuit_open") >= 1.0
        );

        // Back to normal: recovery, circuit closed, the watch never saw any of it.
        proxy.set_delay(Duration::ZERO);
        recovers(&mut client, "db").await;
        metric_becomes(&server, &circuit(backend, "closed"), 1.0).await;
        let pushed = tokio::time::timeout(Duration::from_millis(200), watch.message()).await;
        assert!(pushed.is_err(), "the watch got {pushed:?}");
    })
    .await;
}
