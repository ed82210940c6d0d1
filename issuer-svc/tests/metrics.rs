//! The metrics port against the real binary: the exposition passes Prometheus's own parser and
//! linter (`promtool check metrics`), carries the metrics the README lists, and the HTTP edge
//! keeps its bounds.
//!
//! `promtool` comes from Debian's `prometheus` package: scripts/test extracts it into
//! target/promtool and exports `MESHCA_PROMTOOL`; without it (or `promtool` in PATH) the test
//! fails rather than skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;

/// `$MESHCA_PROMTOOL`, else `promtool` in PATH.
fn promtool() -> PathBuf {
    if let Some(p) = std::env::var_os("MESHCA_PROMTOOL") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "MESHCA_PROMTOOL={} does not exist",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool not found (MESHCA_PROMTOOL, PATH): scripts/test extracts it from \
                 Debian's prometheus package into target/promtool and exports MESHCA_PROMTOOL"
            )
        })
}

/// `promtool check metrics` on `exposition`: (success, its output).
fn promtool_check(exposition: &str) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A raw request on the metrics port: the whole answer (the server closes the connection).
fn raw(addr: &str, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn promtool_parses_and_lints_a_broken_exposition() {
    // The checker itself: a malformed line is refused, so a pass below means something.
    let (ok, out) = promtool_check("# TYPE x gauge\nx{a=\"1\" 2\n");
    assert!(!ok, "promtool accepted a malformed exposition: {out}");
}

#[tokio::test]
async fn the_exposition_passes_promtool_and_has_the_documented_metrics() {
    let server = Server::start(&[], &[]);
    bounded(60, async {
        let mut admin = server.admin().await;
        admin
            .issue_certificate(request("default", &[("kuma.io/service", "web")]))
            .await
            .unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();

        // Prometheus text format 0.0.4 (no Accept header): promtool's parser and linter.
        let (status, body) = server.http_get("/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        let (ok, out) = promtool_check(&body);
        assert!(ok && out.trim().is_empty(), "promtool check metrics: {out}\n{body}");

        let m = |s: &str| server.metric(s);
        let version = env!("CARGO_PKG_VERSION");
        let commit = option_env!("MESHCA_COMMIT").unwrap_or("unknown");
        assert_eq!(
            m(&format!(
                "meshca_build_info{{version=\"{version}\",commit=\"{commit}\"}}"
            )),
            Some(1.0),
            "{body}"
        );
        assert!(m("meshca_issue_duration_seconds_count{mesh=\"default\",backend=\"ca-1\"}")
            .is_some_and(|n| n >= 1.0));
        assert!(m("meshca_grpc_server_handling_seconds_count{service=\"meshca.v1.Issuer\",method=\"IssueCertificate\",code=\"Ok\"}")
            .is_some_and(|n| n >= 1.0), "{body}");
        // The histogram's _count is the issued count: no separate counter duplicates it.
        assert!(!body.contains("meshca_certificates_issued_total"), "{body}");
        for (state, want) in [("closed", 1.0), ("open", 0.0), ("half_open", 0.0)] {
            let series = format!(
                "meshca_backend_circuit_state{{mesh=\"default\",backend=\"ca-1\",state=\"{state}\"}}"
            );
            assert_eq!(m(&series), Some(want), "{series}\n{body}");
        }
        let ca = m("meshca_ca_expiration_timestamp_seconds{mesh=\"default\",backend=\"ca-1\"}")
            .unwrap();
        assert!(ca > now, "CA expiry {ca} is not after {now}");
        let tls = m("meshca_server_certificate_expiration_timestamp_seconds").unwrap();
        assert!(tls > now, "server certificate expiry {tls} is not after {now}");
        let rss = m("process_resident_memory_bytes").unwrap();
        assert!(rss > 1e6, "{rss}");
        assert!(m("process_cpu_seconds_total").is_some_and(|s| s > 0.0));
        let fds = m("process_open_fds").unwrap();
        assert!(fds >= 4.0, "{fds}");
        assert!(m("process_start_time_seconds").is_some_and(|t| t <= now + 1.0));

        // OpenMetrics when asked for it, as Prometheus does.
        let answer = raw(
            &server.metrics,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n",
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        assert!(body.ends_with("# EOF\n"), "{body}");
        assert!(
            body.contains("# TYPE meshca_config_reloads counter"),
            "{body}"
        );
        assert!(
            body.contains("# UNIT meshca_issue_duration_seconds seconds"),
            "{body}"
        );
    })
    .await;
}

#[tokio::test]
async fn the_metrics_port_answers_within_its_bounds() {
    let server = Server::start(&[], &[]);
    bounded(60, async {
        // Probes, and anything else.
        assert_eq!(
            server.http_get("/healthz"),
            ("HTTP/1.1 200 OK".into(), "ok\n".into())
        );
        let (status, body) = server.http_get("/readyz");
        assert_eq!(
            (status.as_str(), body.as_str()),
            ("HTTP/1.1 200 OK", "ready\n")
        );
        let (status, _) = server.http_get("/nope");
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        // One request per connection: the server closes it after answering.
        let answer = raw(
            &server.metrics,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
        // A request head past 8 KiB is refused.
        let big = format!(
            "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: {}\r\n\r\n",
            "a".repeat(16 * 1024)
        );
        let answer = raw(&server.metrics, &big);
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{}",
            answer.lines().next().unwrap_or_default()
        );
    })
    .await;
}
