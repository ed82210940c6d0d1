//! The acmpca backend when ACM PCA throttles, is still making a certificate, or answers slowly:
//! what moto never does, injected by a [`FaultProxy`] between the real `AcmpcaCa` (its SDK's
//! endpoint is the proxy) and moto (IAM auth enforced). The proxy counts what reached moto, so
//! each test asserts exactly how many `IssueCertificate` calls a certificate cost — retries are
//! bounded, never a storm — and that the time spent is bounded by `dpCert.requestTimeout`.
//! Each test starts its own moto and proxy. Timings are asserted only as generous upper bounds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_acmpca::{RateLimit, MAX_ATTEMPTS};
use ca_core::{
    issue_certificate, Error, IssueParams, IssuedCertificate, KeySource, KeyType, UpstreamKind,
};
use meshca::Deadline;
use meshca_peers::fault_proxy::{GET_CERTIFICATE, ISSUE_CERTIFICATE};
use meshca_peers::{Fault, FaultProxy};
use meshca_tests::acmpca::{Ca, Peer, REGION};
use meshca_tests::checks::identity;
use meshca_tests::vault::chain;

/// moto with a CA, and the proxy in front of it.
struct Setup {
    peer: Arc<Peer>,
    ca: Ca,
    proxy: FaultProxy,
}

async fn setup() -> Setup {
    let peer = Peer::start().await;
    let ca = peer.ca_for("default").await;
    let proxy = FaultProxy::start(&peer.moto.endpoint()).await;
    Setup { peer, ca, proxy }
}

impl Setup {
    /// The backend of mesh `default` on the CA, through the proxy, with `dpCert.requestTimeout`
    /// `timeout` (e.g. `"10s"`) and `limit` (else the default).
    /// The backend with `requestTimeout: {secs}s`, held in meshca's `Deadline` as the manager
    /// holds it: backends do not time out `issue` themselves.
    async fn backend(&self, secs: u64, limit: Option<RateLimit>) -> Deadline {
        let yaml = Peer::mesh_yaml("default", &self.ca.arn, &self.ca.root_pem, "")
            .replace("requestTimeout: 10s", &format!("requestTimeout: {secs}s"));
        let sdk = Peer::sdk_at(&self.proxy.endpoint(), Some(&self.peer.user), REGION);
        let ca = Peer::build(&yaml, Duration::from_secs(24 * 3600), sdk)
            .await
            .unwrap();
        let ca = match limit {
            Some(l) => ca.with_rate_limit(l),
            None => ca,
        };
        Deadline::new(Arc::new(ca), Duration::from_secs(secs))
    }
}

async fn issue(ca: &Deadline, service: &str) -> Result<IssuedCertificate, Error> {
    issue_certificate(
        ca,
        IssueParams::new(
            identity("default", service),
            KeySource::Generate(KeyType::EcdsaP256),
            Duration::from_secs(24 * 3600),
        ),
    )
    .await
}

fn max_attempts() -> usize {
    MAX_ATTEMPTS as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_passes_signed_requests_through() {
    let s = setup().await;
    let ca = s.backend(10, None).await;
    let cert = issue(&ca, "web")
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(cert.identity().spiffe_id(), "spiffe://default/web");
    let issued = s.proxy.counts(ISSUE_CERTIFICATE);
    assert_eq!((issued.forwarded, issued.injected), (1, 0));
    assert!(s.proxy.counts(GET_CERTIFICATE).forwarded >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_certificate_throttled_twice_then_issued() {
    let s = setup().await;
    let ca = s.backend(10, None).await;
    s.proxy.fail_next(ISSUE_CERTIFICATE, 2, Fault::Throttling);
    let cert = issue(&ca, "web")
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(cert.identity().spiffe_id(), "spiffe://default/web");
    let issued = s.proxy.counts(ISSUE_CERTIFICATE);
    assert_eq!(issued.injected, 2, "{issued:?}");
    assert_eq!(
        issued.forwarded, 1,
        "one IssueCertificate reached moto: {issued:?}"
    );
    assert!(issued.total() <= max_attempts(), "{issued:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_beyond_max_attempts_fails_clearly_and_soon() {
    let s = setup().await;
    // A long requestTimeout: the retries must give up long before it.
    let ca = s.backend(60, None).await;
    // DescribeCertificateAuthority first, so that only IssueCertificate is throttled.
    issue(&ca, "warm").await.unwrap();
    s.proxy.reset_counts();
    s.proxy.fail_always(ISSUE_CERTIFICATE, Fault::Throttling);
    let started = Instant::now();
    let e = issue(&ca, "web").await.expect_err("throttled for good");
    let elapsed = started.elapsed();
    let text = chain(&e);
    assert!(
        e.upstream_kind() == Some(UpstreamKind::Unavailable),
        "{e:?}"
    );
    assert!(text.contains("throttled"), "{text}");
    assert!(text.contains("rate limit"), "{text}");
    assert!(text.contains(&s.ca.arn), "the CA is named: {text}");
    assert!(text.contains("ThrottlingException"), "{text}");
    let issued = s.proxy.counts(ISSUE_CERTIFICATE);
    assert_eq!(issued.forwarded, 0, "{issued:?}");
    assert_eq!(
        issued.injected,
        max_attempts(),
        "no retry storm: {issued:?}"
    );
    // Backoff totals under 3 s; the bound only says "not the 60 s requestTimeout".
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    // Nothing else was retried meanwhile.
    assert_eq!(s.proxy.counts(GET_CERTIFICATE).total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_certificate_in_progress_three_times_then_issued() {
    let s = setup().await;
    let ca = s.backend(10, None).await;
    s.proxy
        .fail_next(GET_CERTIFICATE, 3, Fault::RequestInProgress);
    let cert = issue(&ca, "web")
        .await
        .unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(cert.identity().spiffe_id(), "spiffe://default/web");
    let got = s.proxy.counts(GET_CERTIFICATE);
    assert_eq!((got.injected, got.forwarded), (3, 1), "{got:?}");
    let issued = s.proxy.counts(ISSUE_CERTIFICATE);
    assert_eq!((issued.forwarded, issued.injected), (1, 0), "{issued:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_forever_or_a_slow_endpoint_hit_the_request_timeout() {
    let s = setup().await;
    let timeout = Duration::from_secs(3);
    let ca = s.backend(3, None).await;
    issue(&ca, "warm").await.unwrap();
    s.proxy.reset_counts();

    s.proxy
        .fail_always(GET_CERTIFICATE, Fault::RequestInProgress);
    let started = Instant::now();
    let e = issue(&ca, "web").await.expect_err("never ready");
    let elapsed = started.elapsed();
    match e.as_upstream().map(|u| (u.kind(), u.what())) {
        Some((UpstreamKind::Timeout(t), operation)) => {
            assert_eq!(t, timeout);
            assert!(operation.contains(&s.ca.arn), "{operation}");
        }
        _ => panic!("{}", chain(&e)),
    }
    assert!(elapsed < timeout + Duration::from_secs(10), "{elapsed:?}");
    let issued = s.proxy.counts(ISSUE_CERTIFICATE);
    assert_eq!((issued.forwarded, issued.injected), (1, 0), "{issued:?}");
    let polls = s.proxy.counts(GET_CERTIFICATE);
    assert!(
        polls.injected >= 2 && polls.forwarded == 0,
        "polled with backoff: {polls:?}"
    );

    // An endpoint slower than requestTimeout.
    s.proxy.clear(GET_CERTIFICATE);
    s.proxy.set_delay(timeout + Duration::from_secs(2));
    let started = Instant::now();
    let e = issue(&ca, "api").await.expect_err("too slow");
    let elapsed = started.elapsed();
    assert!(
        matches!(e.upstream_kind(), Some(UpstreamKind::Timeout(_))),
        "{}",
        chain(&e)
    );
    assert!(elapsed < timeout + Duration::from_secs(10), "{elapsed:?}");
    s.proxy.set_delay(Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_issues_are_paced_and_retried_without_a_storm() {
    const CERTS: usize = 40;
    const THROTTLES: usize = 6;
    let s = setup().await;
    let ca = Arc::new(s.backend(30, Some(RateLimit::new(20.0, 4))).await);
    issue(&ca, "warm").await.unwrap();
    s.proxy.reset_counts();
    s.proxy
        .fail_next(ISSUE_CERTIFICATE, THROTTLES, Fault::Throttling);
    let tasks: Vec<_> = (0..CERTS)
        .map(|i| {
            let ca = ca.clone();
            tokio::spawn(async move { issue(&ca, &format!("svc-{i}")).await })
        })
        .collect();
    let mut failures = Vec::new();
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            failures.push(chain(&e));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let issued = s.proxy.counts(ISSUE_CERTIFICATE);
    assert_eq!(s.proxy.pending_faults(ISSUE_CERTIFICATE), 0);
    assert_eq!(issued.injected, THROTTLES, "{issued:?}");
    assert_eq!(
        issued.forwarded, CERTS,
        "one IssueCertificate per certificate: {issued:?}"
    );
    assert!(issued.total() <= CERTS + THROTTLES, "{issued:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_time_out_waiting_for_the_rate_limit_do_not_starve_later_ones() {
    // 1 call/s and 16 callers at once with a 4 s requestTimeout: a few are issued, the others
    // time out waiting for their turn. Their turns must not stay reserved: a caller right after
    // waits for the limit, not for the turns of callers that are gone.
    const CALLERS: usize = 16;
    let s = setup().await;
    let ca = Arc::new(s.backend(4, Some(RateLimit::new(1.0, 1))).await);
    issue(&ca, "warm").await.unwrap();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|i| {
            let ca = ca.clone();
            tokio::spawn(async move { issue(&ca, &format!("svc-{i}")).await })
        })
        .collect();
    let mut timed_out = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => {}
            Err(e) if matches!(e.upstream_kind(), Some(UpstreamKind::Timeout(_))) => timed_out += 1,
            Err(e) => panic!("{}", chain(&e)),
        }
    }
    assert!(timed_out > 0, "the burst exceeds what 4 s at 1/s admits");
    // Only turns within the timeout were used: the warm-up's, the burst's, one a second for
    // 4 s (and one at the edge). A caller may still time out after its IssueCertificate (a slow
    // GetCertificate), so this bounds by the limit, not by the callers that succeeded.
    let issued = s.proxy.counts(ISSUE_CERTIFICATE);
    assert!(
        issued.forwarded <= 1 + 1 + 4 + 1,
        "callers sent only in their turns: {issued:?}"
    );
    issue(&ca, "after")
        .await
        .unwrap_or_else(|e| panic!("a caller after the burst: {}", chain(&e)));
}
