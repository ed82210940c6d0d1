//! Load through the real binary on loopback: 10,000 concurrent `IssueCertificate` calls, then
//! 10,000 concurrent `WatchCertificate` streams (one identity each) held open together. Zero
//! errors; every watch gets its certificate; the server's peak RSS is reported and bounded.
//! Latency figures (p50, p99) are printed, not asserted: these machines are shared.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use issuer_svc::proto::issuer_client::IssuerClient;
use tonic::transport::Channel;

const CALLS: usize = 10_000;
/// HTTP/2 connections the calls are spread over (each multiplexes its share).
const CONNECTIONS: usize = 100;
/// A generous bound on the server's peak RSS for 10,000 watched identities.
const MAX_RSS_MIB: f64 = 1024.0;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn clients(server: &Server) -> Vec<IssuerClient<Channel>> {
    let tls = server.tls_dir();
    let mut out = Vec::new();
    for _ in 0..CONNECTIONS {
        out.push(IssuerClient::new(
            server
                .channel_with(&tls.join("admin.pem"), &tls.join("admin-key.pem"))
                .await,
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_issues_and_ten_thousand_watches() {
    bounded(600, async {
        let server = tokio::task::spawn_blocking(|| Server::start(&[], &[]))
            .await
            .unwrap();
        let clients = Arc::new(clients(&server).await);

        // 10,000 IssueCertificate calls in flight at once.
        let started = Instant::now();
        let mut calls = tokio::task::JoinSet::new();
        for i in 0..CALLS {
            let mut c = clients[i % CONNECTIONS].clone();
            calls.spawn(async move {
                let t = Instant::now();
                let svc = format!("svc-{i}");
                c.issue_certificate(request("default", &[("kuma.io/service", &svc)]))
                    .await
                    .map(|_| t.elapsed())
                    .map_err(|e| format!("{svc}: {e:?}"))
            });
        }
        let mut latencies = Vec::with_capacity(CALLS);
        let mut errors = Vec::new();
        while let Some(r) = calls.join_next().await {
            match r.unwrap() {
                Ok(d) => latencies.push(d),
                Err(e) => errors.push(e),
            }
        }
        let wall = started.elapsed();
        assert!(errors.is_empty(), "{} errors, first: {}", errors.len(), errors[0]);
        latencies.sort();
        let (peak, _) = server.rss_mib();
        println!(
            "load: {CALLS} concurrent IssueCertificate over {CONNECTIONS} connections: {:.1} s, {:.0}/s, p50 {:.0} ms, p99 {:.0} ms, server peak RSS {peak:.0} MiB",
            wall.as_secs_f64(),
            CALLS as f64 / wall.as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        );

        // 10,000 WatchCertificate streams, one identity each, all open at once.
        let started = Instant::now();
        let mut watches = tokio::task::JoinSet::new();
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        for i in 0..CALLS {
            let mut c = clients[i % CONNECTIONS].clone();
            let mut done = done_rx.clone();
            watches.spawn(async move {
                let t = Instant::now();
                let svc = format!("watch-{i}");
                let mut stream = c
                    .watch_certificate(request("default", &[("kuma.io/service", &svc)]))
                    .await
                    .map_err(|e| format!("{svc}: {e:?}"))?
                    .into_inner();
                let first = stream
                    .message()
                    .await
                    .map_err(|e| format!("{svc}: {e:?}"))?
                    .ok_or_else(|| format!("{svc}: the stream ended"))?;
                let elapsed = t.elapsed();
                if first.reason != "initial" || first.certificate.is_none() {
                    return Err(format!("{svc}: {first:?}"));
                }
                // Hold the stream open until every watch has its certificate.
                let _ = done.wait_for(|d| *d).await;
                drop(stream);
                Ok::<Duration, String>(elapsed)
            });
        }
        // Every stream delivered and is still open: the server counts them all.
        let mut watched = 0.0;
        for _ in 0..1200 {
            watched = server.metric("meshca_watched_identities").unwrap_or(0.0);
            if watched >= CALLS as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert_eq!(watched, CALLS as f64, "watched identities");
        let (peak, now) = server.rss_mib();
        done_tx.send(true).unwrap();
        let mut latencies = Vec::with_capacity(CALLS);
        let mut errors = Vec::new();
        while let Some(r) = watches.join_next().await {
            match r.unwrap() {
                Ok(d) => latencies.push(d),
                Err(e) => errors.push(e),
            }
        }
        assert!(errors.is_empty(), "{} errors, first: {}", errors.len(), errors[0]);
        latencies.sort();
        println!(
            "load: {CALLS} concurrent WatchCertificate streams: all delivered and open after {:.1} s, first certificate p50 {:.0} ms, p99 {:.0} ms, server RSS {now:.0} MiB (peak {peak:.0} MiB)",
            started.elapsed().as_secs_f64(),
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        );
        assert!(peak < MAX_RSS_MIB, "server peak RSS {peak:.0} MiB");
    })
    .await;
}
